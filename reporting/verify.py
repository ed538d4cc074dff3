"""``report verify``: is this report the one that was made, and does the lake, read at the
versions the report recorded, give the same figures today?

Two checks, both reported:

1. *Integrity*: every file of the report folder against the SHA-256 the access record of
   the report names (the access log is hash-chained: ``energylake audit verify``); a file
   changed, missing or added is named.
2. *Reproduction*: the report is computed again through a governed session pinned to the
   recorded table versions (Delta time travel) and the recorded factor table version, with
   the recorded parameters; every fact, quantity, branch, month and factor is compared. A
   version that can no longer be read (vacuumed past its retention) is said plainly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from analytics.access import AccessRecorder, connect
from audit.verify import verify_chain
from contracts import ContractRegistry
from lake.keys import KeyStore
from lake.storage import Store
from reporting.brsr import Denominators
from reporting.dglog import dg_log_document
from reporting.document import BrsrRequest, brsr_document
from reporting.errors import ReportError
from reporting.esg import LEVELS, esg_document
from reporting.record import DOCUMENT, file_sha256, recorded_files

__all__ = ["Verdict", "compare_documents", "reproduce", "verify_report"]

PURPOSE = "regulatory_reporting"


@dataclass(slots=True)
class Verdict:
    report: Path
    integrity: list[str] = field(default_factory=list)  # problems with the files
    differences: list[str] = field(default_factory=list)  # recomputed vs recorded
    compared: int = 0  # values compared

    @property
    def identical(self) -> bool:
        return not self.integrity and not self.differences

    def summary(self) -> str:
        if self.identical:
            return (
                f"identical: {self.compared} values recomputed from the recorded versions"
                " match, and every file matches its recorded SHA-256"
            )
        parts = []
        if self.integrity:
            parts.append(f"{len(self.integrity)} file problem(s)")
        if self.differences:
            parts.append(f"{len(self.differences)} difference(s)")
        return "DIFFERS: " + ", ".join(parts)


def request_of(doc: dict[str, Any]) -> BrsrRequest:
    p = doc.get("parameters") or {}
    return BrsrRequest(
        tenant=str(doc["tenant"]),
        fy=str(doc["fy"]),
        denominators=Denominators(
            turnover_inr={str(k): float(v) for k, v in (p.get("turnover_inr") or {}).items()},
            ppp_factor=None if p.get("ppp_factor") is None else float(p["ppp_factor"]),
            physical_output={str(k): float(v) for k, v in (p.get("physical_output") or {}).items()},
            output_unit=p.get("output_unit"),
        ),
        allow_proxy=bool(p.get("allow_proxy_factor")),
        factor_version=(doc.get("factor_table") or {}).get("version"),
    )


def reproduce(
    doc: dict[str, Any],
    store: Store,
    registry: ContractRegistry,
    keys: KeyStore,
    audit: AccessRecorder,
    *,
    principal: str,
    token: str | None = None,
) -> dict[str, Any]:
    """The report's document computed again from the versions it recorded."""
    if doc.get("kind") not in ("brsr", "esg", "dg-log"):
        raise ReportError(f"reports of kind {doc.get('kind')!r} are not recomputed here")
    versions = {str(i["table"]): i["version"] for i in doc.get("inputs") or []}
    with connect(
        store,
        registry,
        keys,
        audit,
        principal=principal,
        purpose=PURPOSE,
        tenant=str(doc["tenant"]),
        token=token,
        versions=versions,
    ) as session:
        try:
            first, end = _days(doc)
            if doc["kind"] == "dg-log":
                again = dg_log_document(
                    session,
                    store,
                    registry,
                    str(doc["tenant"]),
                    first,
                    end,
                    branch=doc.get("branch"),
                    versions={str(r["table"]): r["version"] for r in doc.get("reference") or []},
                )
            elif doc["kind"] == "esg":
                again = esg_document(
                    session,
                    store,
                    registry,
                    str(doc["tenant"]),
                    first,
                    end,
                    allow_proxy=bool((doc.get("parameters") or {}).get("allow_proxy_factor")),
                    factor_version=(doc.get("factor_table") or {}).get("version"),
                )
            else:
                again, _ = brsr_document(session, store, registry, request_of(doc))
        except ReportError:
            raise
        except Exception as exc:  # a vacuumed version, a log cleaned up: say which
            raise ReportError(
                f"the report cannot be recomputed: a recorded table version can no longer be"
                f" read ({type(exc).__name__}: {exc}); versions are kept while the tables'"
                " retention keeps them (docs/REPORTING.md, limits)"
            ) from exc
    return again


def _days(doc: dict[str, Any]) -> tuple[date, date]:
    """The IST days ``[first, end)`` a report document covers (its ``period``)."""
    period = doc["period"]
    return date.fromisoformat(period["from"]), date.fromisoformat(period["to"]) + timedelta(days=1)


def verify_report(
    doc: dict[str, Any],
    folder: Path,
    store: Store,
    registry: ContractRegistry,
    keys: KeyStore,
    audit: AccessRecorder,
    access_dir: Path,
    *,
    principal: str,
    token: str | None = None,
    anchor_dir: Path | None = None,
) -> Verdict:
    verdict = Verdict(folder)
    recorded = recorded_files(access_dir, str(doc.get("session")))
    if recorded is None:
        verdict.integrity.append(
            "no access record names this report (session "
            f"{doc.get('session')}): it was not made here, or the access log was lost"
        )
    else:
        present = {p.name for p in folder.iterdir() if p.is_file()}
        for name, sha in sorted(recorded.items()):
            path = folder / name
            if not path.is_file():
                verdict.integrity.append(f"{name}: missing (recorded sha256 {sha[:12]}...)")
            elif file_sha256(path) != sha:
                verdict.integrity.append(f"{name}: changed since the report was made")
        for name in sorted(present - set(recorded)):
            verdict.integrity.append(f"{name}: not part of the report as recorded")
    log = (doc.get("log") or {}).get("folder")
    if log is not None:  # a DG log report: the chain it appended to
        chain = verify_chain(Path(log), anchor_dir)
        if not chain.ok:
            verdict.integrity.append(f"DG log {log}: {chain.summary()}")
    again = reproduce(doc, store, registry, keys, audit, principal=principal, token=token)
    verdict.compared, verdict.differences = compare_documents(doc, again)
    if DOCUMENT not in (recorded or {DOCUMENT: ""}):
        verdict.integrity.append(f"{DOCUMENT}: not named by the access record")
    return verdict


def compare_documents(old: dict[str, Any], new: dict[str, Any]) -> tuple[int, list[str]]:
    """(values compared, differences) between a recorded and a recomputed document."""
    diffs: list[str] = []
    count = 0

    def same(a: Any, b: Any, tol: float, unit: float = 0.0) -> bool:
        """Equal, numbers within ``tol`` (relative) or one ``unit`` in the last place kept
        (a figure rounded to its decimals may round the other way after a float sum)."""
        if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
            return abs(float(a) - float(b)) <= max(tol * max(1.0, abs(float(a))), unit)
        return bool(a == b)

    def table(name: str, keys: list[str], tol: float) -> None:
        compare_rows(name, old.get(name) or [], new.get(name) or [], keys, tol)

    def compare_rows(
        name: str,
        a_rows: list[dict[str, Any]],
        b_rows: list[dict[str, Any]],
        keys: list[str],
        tol: float = 1e-9,
    ) -> None:
        nonlocal count
        a = {tuple(r.get(k) for k in keys): r for r in a_rows}
        b = {tuple(r.get(k) for k in keys): r for r in b_rows}
        for key in sorted(set(a) | set(b), key=str):
            where = f"{name}[{', '.join(str(k) for k in key)}]"
            if key not in b:
                diffs.append(f"{where}: in the report, not in the recomputation")
                continue
            if key not in a:
                diffs.append(f"{where}: in the recomputation, not in the report")
                continue
            decimals = a[key].get("decimals")
            last = 10.0 ** -int(decimals) if isinstance(decimals, int) else 0.0
            for column in sorted(set(a[key]) | set(b[key])):
                count += 1
                unit = last if column in ("value", "estimated") else 0.0
                if not same(a[key].get(column), b[key].get(column), tol, unit):
                    diffs.append(
                        f"{where}.{column}: report {a[key].get(column)!r},"
                        f" recomputed {b[key].get(column)!r}"
                    )

    for name, keys in LEVELS.items():  # an ESG pack's tables
        if name in (old.get("tables") or {}) or name in (new.get("tables") or {}):
            a_rows = (old.get("tables") or {}).get(name) or []
            b_rows = (new.get("tables") or {}).get(name) or []
            compare_rows(f"tables.{name}", a_rows, b_rows, [*keys, "month"])
    table("runs", ["run_key"], 1e-9)
    table("facts", ["key", "fy"], 1e-9)
    table("branches", ["branch_id", "fy"], 1e-9)
    table("months", ["month"], 1e-9)
    table("factors", ["factor", "version", "variant", "fy", "for_fy"], 0.0)
    for fy in sorted(set(old.get("quantities") or {}) | set(new.get("quantities") or {})):
        qa = (old.get("quantities") or {}).get(fy) or {}
        qb = (new.get("quantities") or {}).get(fy) or {}
        for q in sorted(set(qa) | set(qb)):
            count += 1
            if not same(qa.get(q), qb.get(q), 1e-9):
                diffs.append(
                    f"quantities[{fy}].{q}: report {qa.get(q)!r}, recomputed {qb.get(q)!r}"
                )
    return count, diffs
