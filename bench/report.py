"""A BRSR report over one simulated year for 100 branches (the lake of ``bench.year_lake``),
against the same totals computed directly in DuckDB over the lake, in the same run.

    .venv/bin/python -m bench.report [--branches 100] [--days 365] [--interval-min 15]

The lake: two tenants, a meter per branch read every 15 minutes from 1 January 2025 for a
year (FY 2024-25's last quarter and most of FY 2025-26). Per tenant:

* **report**: ``reporting.document.brsr_document`` through a governed session (grant
  check, purpose shaping, access records), the consumption mart (counter steps split at IST
  midnight, coverage of every device-day of both years, months, branches), every figure of
  EI 1 and EI 7 for FY 2025-26 and FY 2024-25; then the report folder (``report.json``,
  and CSV/HTML/PDF when ``--render``) with its access record and lineage run;
* **baseline**: one DuckDB statement over ``delta_scan`` of the tenant's table: the
  reset-aware counter step per reading (``lag`` over each device), summed per branch and
  IST financial year; the GJ and t CO2e are the same products of those sums.

The totals are compared (they must agree to 1e-6 of the grid kWh per branch and year: the
mart splits steps at midnight, which moves energy between days but never out of a year
unless a step straddles 1 April). Ratio: baseline seconds / report seconds (the goal: 0.5
or more). The last line is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import write_deltalake

from analytics.access import connect
from analytics.grants import GrantBook
from audit.log import AuditLog
from bench.year_lake import TENANTS, build_year_lake
from contracts import load_registry
from lake.delta import ensure_table, read_table
from lake.duck import connect as duck_connect
from lake.keys import KeyStore
from lake.layout import table_rel
from lake.reference import load_platform_reference
from lake.storage import Store
from pipelines.settings import load_settings
from reporting.document import BrsrRequest, brsr_document
from reporting.record import write_report
from reporting.shipped import shipped_file

FY = "2025-26"
PRINCIPAL = "sustainability"

_BASELINE = """
WITH r AS (
  SELECT branch_id, ts, energy_import_kwh AS v,
         lag(energy_import_kwh) OVER (PARTITION BY device_id ORDER BY ts, seq) AS p
  FROM delta_scan('{path}')
), s AS (
  SELECT branch_id, timezone('Asia/Kolkata', ts) AS local,
         CASE WHEN p IS NULL OR v IS NULL THEN 0
              WHEN v >= p THEN v - p
              WHEN p > 0 AND v < p * 0.9 THEN v
              ELSE 0 END AS step
  FROM r
)
SELECT branch_id,
       CASE WHEN month(local) >= 4 THEN year(local) ELSE year(local) - 1 END AS fy_start,
       sum(step) AS kwh
FROM s GROUP BY ALL ORDER BY ALL
"""


def _register(store: Store, registry: Any, branches: int, interval_min: int) -> None:
    """Register the year lake's meters (``em-<branch hex>`` in ``b<branch>``) and their
    branches, each from a template row of its tenant, so the report's coverage is computed
    as in production."""
    for tenant_no, tenant in enumerate(TENANTS):
        numbers = [b for b in range(branches) if b % 2 == tenant_no]
        for dataset in ("branches", "devices"):
            rel = table_rel(tenant, dataset)
            current = read_table(store, rel)
            template = current.slice(0, 1).to_pylist()[0]
            rows = []
            for b in numbers:
                row = dict(template)
                row["branch_id"] = f"b{b:03d}"
                if dataset == "devices":
                    row |= {"device_id": f"em-{b:06x}", "kind": "meter",
                            "cadence_s": interval_min * 60, "installed_on": date(2024, 1, 1),
                            "tank_capacity_l": None}  # fmt: skip
                else:
                    row["site_name"] = f"Bench branch {b}"
                rows.append(row)
            table = ensure_table(store, rel, registry.get(dataset))
            schema = registry.get(dataset).arrow_schema()
            write_deltalake(table, pa.Table.from_pylist(rows, schema=schema), mode="append")


def _renderers(render: bool) -> list[Any]:
    if not render:
        return []
    from cli.report import _csv, _html, _pdf

    return [("csv", _csv), ("html", _html), ("pdf", _pdf)]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--branches", type=int, default=100)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--interval-min", type=int, default=15)
    parser.add_argument("--render", action="store_true", help="Also write CSV, HTML and PDF.")
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args(argv)

    source = build_year_lake(args.root, args.branches, args.days, args.interval_min)
    work = Path(tempfile.mkdtemp(prefix="energylake-bench-report-", dir=args.root))
    try:
        data = work / "data"
        shutil.copytree(source, data)
        settings = load_settings(data_dir=data)
        registry = load_registry()
        store = Store.from_uri(settings.lake)
        factors = shipped_file("emission_factors")
        assert factors is not None
        load_platform_reference(store, factors, registry.get("emission_factors"))
        _register(store, registry, args.branches, args.interval_min)
        audit = AuditLog(data / "audit" / "access", component="access", fail_closed=True)
        GrantBook(store, registry, audit).grant(
            PRINCIPAL, tenants=list(TENANTS), purposes=["regulatory_reporting"], actor="bench"
        )
        report_s = baseline_s = 0.0
        worst = 0.0
        rows = 0
        for tenant in TENANTS:
            started = time.perf_counter()
            with connect(
                store,
                registry,
                KeyStore(settings.keys),
                audit,
                principal=PRINCIPAL,
                purpose="regulatory_reporting",
                tenant=tenant,
            ) as session:
                doc, mart = brsr_document(
                    session, store, registry, BrsrRequest(tenant, FY, allow_proxy=True)
                )
                write_report(
                    session, registry, doc, data / "reports", _renderers(args.render),
                    lake_uri=str(settings.lake), emitter=None, label=f"fy{FY}",
                )  # fmt: skip
            report_s += time.perf_counter() - started
            rows += int(mart.device_days["readings"].sum())

            started = time.perf_counter()
            con = duck_connect(store)
            path = store.url(table_rel(tenant, "meter_readings"))
            direct = con.execute(_BASELINE.format(path=path)).fetchall()
            con.close()
            baseline_s += time.perf_counter() - started

            ours = {
                (b["branch_id"], int(b["fy"][:4])): b["grid_import_kwh"] for b in doc["branches"]
            }
            for branch, fy_start, kwh in direct:
                got = ours.get((branch, int(fy_start)), 0.0)
                worst = max(worst, abs(got - float(kwh)) / max(abs(float(kwh)), 1.0))
        summary = {
            "bench": "report.brsr",
            "branches": args.branches,
            "days": args.days,
            "interval_min": args.interval_min,
            "readings": rows,
            "render": args.render,
            "report_s": round(report_s, 3),
            "baseline_duckdb_s": round(baseline_s, 3),
            "ratio_baseline_over_report": round(baseline_s / report_s, 3),
            "worst_relative_difference": worst,
        }
        print(
            f"BRSR report, {len(TENANTS)} tenants, {args.branches} branches, {args.days} days,"
            f" {rows} readings: report {report_s:.2f} s, DuckDB totals {baseline_s:.2f} s,"
            f" ratio {baseline_s / report_s:.2f} (goal >= 0.5); totals agree to {worst:.1e}"
        )
        print(json.dumps(summary))
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
