"""Rich tables for the CLI: contracts, purpose plans, simulation summaries."""

from __future__ import annotations

import json
import re
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from contracts import Action, Contract, ContractRegistry, PurposePlan

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "access_lines",
    "acked_reconciliation",
    "batch_line",
    "batch_report",
    "compact_table",
    "compare_table",
    "contracts_table",
    "fields_table",
    "gate_summary",
    "lake_tables_table",
    "landing_written",
    "lineage_trace",
    "plan_table",
    "print_command",
    "publish_summary",
    "quarantine_vs_manifest",
    "record_table",
    "reference_table",
    "show_sql_hint",
    "side_by_side",
    "simulation_summary",
    "sql_command",
    "totals_vs_truth",
]

_ACTION_STYLE = {
    Action.CLEAR: "green",
    Action.PSEUDONYMISED: "cyan",
    Action.MASKED: "yellow",
    Action.GENERALISED: "magenta",
    Action.DROPPED: "red",
}


def contracts_table(registry: ContractRegistry) -> Table:
    table = Table(
        "dataset",
        "contract",
        "fields",
        "personal/location/confidential",
        "hot d",
        "archive d",
        "basis",
        "quality rules",
        title="contracts",
    )
    for contract in registry:
        sensitive = sum(
            f.classification in ("personal", "location", "confidential", "secret")
            for f in contract.fields
        )
        r = contract.retention
        table.add_row(
            contract.dataset,
            contract.ref,
            str(len(contract.fields)),
            str(sensitive),
            str(r.hot_days),
            str(r.archive_days),
            r.basis,
            str(len(contract.quality)),
        )
    return table


def _range(field: Any) -> str:
    if field.allowed_values:
        return "{" + ", ".join(str(v) for v in field.allowed_values) + "}"
    if field.minimum is not None or field.maximum is not None:
        return f"[{field.minimum}, {field.maximum}]"
    return ""


def fields_table(contract: Contract) -> Table:
    table = Table(
        "field",
        "type",
        "unit",
        "range / values",
        "req",
        "class",
        "purposes in clear",
        "protection otherwise",
        title=f"{contract.ref}: {contract.purpose[:90]}",
    )
    for f in contract.fields:
        table.add_row(
            f.name,
            f.physical_type,
            f.unit or "",
            _range(f),
            "yes" if f.required else "",
            f.classification,
            ", ".join(sorted(f.purposes)) or "(none)",
            f.protection.describe() if f.protection else ("drop" if len(f.purposes) < 7 else ""),
        )
    r = contract.retention
    table.caption = (
        f"retention: {r.hot_days} d hot, {r.archive_days} d archive, then {r.then} "
        f"(from {r.basis}); key {', '.join(contract.primary_key)}"
    )
    return table


def plan_table(contract: Contract, plan: PurposePlan) -> Table:
    table = Table(
        "field",
        "class",
        "what the purpose sees",
        "why",
        title=f"{contract.ref} for purpose {plan.purpose}",
    )
    for fp in plan.fields:
        field = contract.field(fp.field)
        table.add_row(
            fp.field,
            field.classification,
            Text(str(fp.action), style=_ACTION_STYLE[fp.action]),
            fp.reason,
        )
    return table


def compare_table(contract: Contract, plans: list[PurposePlan]) -> Table:
    table = Table(
        "field",
        "class",
        *[p.purpose for p in plans],
        title=f"{contract.ref}: what each purpose sees",
    )
    for index, field in enumerate(contract.fields):
        cells = [
            Text(str(p.fields[index].action), style=_ACTION_STYLE[p.fields[index].action])
            for p in plans
        ]
        table.add_row(field.name, field.classification, *cells)
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "∅"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "…"


def record_table(contract: Contract, shaped: dict[str, pa.Table], title: str) -> Table:
    """One record, field by field, as each purpose receives it (purposes side by side)."""
    out = Table("field", *shaped, title=title)
    first = {purpose: (t.slice(0, 1).to_pylist() or [{}])[0] for purpose, t in shaped.items()}
    for field in contract.fields:
        cells = []
        for record in first.values():
            if field.name in record:
                cells.append(Text(_cell(record[field.name])))
            else:
                cells.append(Text("(dropped)", style="red"))
        out.add_row(field.name, *cells)
    return out


def simulation_summary(manifest: dict[str, Any], out: Path, *, telemetry: str | None) -> Group:
    """The injected faults, the true totals, and where the output is. ``telemetry``: where
    the messages went (a folder, landing segments), or None when they were handed on (the
    publisher sends them later): only folders that exist are named."""
    faults = Table("fault", "count", "ends in", "reason code / flag", title="injected faults")
    for name, spec in manifest["faults"].items():
        faults.add_row(
            name,
            str(spec["count"]),
            spec["route"],
            spec["reason_code"] or spec["flag"] or "counted",
        )
    totals = Table(title="true totals per branch")
    totals.add_column("branch", no_wrap=True)
    for name in ("grid kWh", "solar kWh", "DG L", "DG h", "outage min", "lines"):
        totals.add_column(name, justify="right")
    for branch_id, b in manifest["branches"].items():
        if "grid_import_kwh" not in b:
            continue
        totals.add_row(
            branch_id,
            f"{b['grid_import_kwh']:.2f}",
            f"{b['solar_kwh']:.2f}",
            f"{b['dg_fuel_l']:.2f}",
            f"{b['dg_run_hours']:.2f}",
            f"{b['outage_minutes']:.0f}",
            str(b["records"]["lines"]),
        )
    expected = manifest["expected"]
    lines = [
        f"{manifest['lines']} messages from {manifest['devices']} devices; expected: "
        f"{sum(expected['lake_rows'].values())} to the lake, "
        f"{sum(expected['quarantine'].values())} to quarantine, "
        f"{expected['duplicates']} duplicates",
        *([f"telemetry: {telemetry}"] if telemetry else []),
        f"reference: {out / 'reference'}",
        f"manifest:  {out / 'manifest.json'}   fault ledger: {out / 'faults.ndjson'}",
    ]
    return Group(faults, totals, *[Text(line) for line in lines])


def landing_written(out: Path, landing: Path) -> str:
    """Where ``simulate_to_landing`` put the telemetry (its summary, ``out/landing.json``)."""
    summary = json.loads((out / "landing.json").read_text())
    return (
        f"{landing / 'closed'} ({len(summary['segments'])} landing segments, "
        f"{summary['records']:,} records)"
    )


def batch_line(report: Any) -> str:
    """One line per batch for ``process --follow``."""
    rows = sum(report.rows.values())
    quarantined = sum(report.quarantined.values())
    return (
        f"batch {report.batch_no}{' (resumed)' if report.resumed else ''}: "
        f"{len(report.segments)} segment(s), {rows} rows, {quarantined} quarantined, "
        f"{report.duplicates} duplicates, {report.late} late, {report.seconds:.1f} s"
    )


def batch_report(report: Any) -> Group:
    """What one batch did: rows per table, quarantine by reason, duplicates, commits."""
    rows = Table("table", "rows written", "committed now", title=f"batch {report.batch_no}")
    for rel, n in sorted(report.rows.items()):
        rows.add_row(rel, f"{n:,}", "yes" if rel in report.committed else "already")
    reasons = Table("reason", "rows", title="quarantined")
    for reason, n in sorted(report.quarantined.items()):
        reasons.add_row(reason, f"{n:,}")
    summary = Text(
        f"{len(report.segments)} segment(s){' (resumed after a crash)' if report.resumed else ''}; "
        f"{report.duplicates:,} duplicates dropped, {report.late:,} late rows accepted, "
        f"{report.damaged_bytes:,} damaged bytes; {report.seconds:.1f} s"
    )
    return Group(rows, reasons, summary)


def reference_table(loads: dict[str, Any]) -> Table:
    table = Table("dataset", "rows", "tables", "changed", title="reference data")
    for dataset, load in sorted(loads.items()):
        table.add_row(
            dataset,
            f"{load.rows:,}",
            str(len(getattr(load, "tables", []) or [])) or "1",
            "yes" if load.changed else "no (same content)",
        )
    return table


def compact_table(reports: list[tuple[str, Any]]) -> Table:
    table = Table("table", "partitions", "files removed", "files added", title="compaction")
    for rel, report in reports:
        table.add_row(
            rel,
            str(report.partitions),
            str(report.files_removed),
            str(report.files_added),
        )
    return table


def lake_tables_table(counts: list[tuple[str, int, int]]) -> Table:
    table = Table("table", "rows", "files", title="lake tables")
    for rel, rows, files in counts:
        table.add_row(rel, f"{rows:,}", str(files))
    return table


def quarantine_vs_manifest(
    got: dict[str, int], expected: dict[str, int], edge: dict[str, int] | None = None
) -> Table:
    """Quarantine counts by reason next to what the simulator injected; over the network,
    also what the edge refused (never acknowledged, so never quarantined)."""
    columns = ["reason", "quarantined"] + (["refused at the edge"] if edge is not None else [])
    table = Table(*columns, "simulator injected", "", title="quarantine by reason")
    edge_counts = edge or {}
    for reason in sorted(set(got) | set(expected) | set(edge_counts)):
        g, e, r = got.get(reason, 0), expected.get(reason, 0), edge_counts.get(reason, 0)
        ok = g + r == e
        cells = [reason, str(g)] + ([str(r)] if edge is not None else [])
        table.add_row(*cells, str(e), "[green]ok[/]" if ok else "[red]differs[/]")
    return table


def _pair(got: float, truth: float) -> str:
    if truth == 0 and got == 0:
        return "0 / 0"
    off = abs(got - truth) / truth * 100 if truth else float("inf")
    return f"{got:,.2f} / {truth:,.2f} ({off:.2f} %)"


def totals_vs_truth(totals: dict[str, Any], branches: dict[str, Any]) -> Table:
    table = Table(title="per branch, from the lake's counters / simulator truth (error)")
    table.add_column("branch", no_wrap=True)
    for name in ("grid kWh", "DG hours", "DG litres", "solar kWh"):
        table.add_column(name, justify="right")
    for branch_id, truth in branches.items():
        if "grid_import_kwh" not in truth:
            continue
        got = totals.get(branch_id)
        table.add_row(
            branch_id,
            _pair(got.grid_import_kwh if got else 0.0, truth["grid_import_kwh"]),
            _pair(got.dg_run_hours if got else 0.0, truth["dg_run_hours"]),
            _pair(got.dg_fuel_l if got else 0.0, truth["dg_fuel_l"]),
            _pair(got.solar_kwh if got else 0.0, truth["solar_kwh"]),
        )
    return table


def sql_command(
    data_dir: Path, principal: str, purpose: str, query: str, energylake: str = "energylake"
) -> str:
    """A shell command, one line, that runs ``query`` in a governed session
    (``energylake sql``) as ``principal`` for ``purpose``; every word quoted for the shell."""
    words = [
        energylake,
        "sql",
        "--data-dir",
        str(Path(data_dir).resolve()),
        "--as",
        principal,
        "--purpose",
        purpose,
        "-c",
        query,
    ]
    return " ".join(_shell_quote(w) if not re.fullmatch(r"[\w./@:=-]+", w) else w for w in words)


def _py_str(text: str) -> str:
    """A Python string literal of ``text`` (JSON's double-quoted form is one)."""
    return json.dumps(text, ensure_ascii=False)


def _shell_quote(text: str) -> str:
    """``text`` as one shell word: in double quotes when that is safe to read and paste
    (``$``, backquote, backslash and ``"`` escaped), else ``shlex.quote``'s single quotes
    (a ``!`` would be history expansion in an interactive shell's double quotes)."""
    if "!" in text or "\n" in text:
        return shlex.quote(text)
    return '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'


def print_command(console: Console, command: str) -> None:
    """Print a command meant for pasting as one line, whatever the console's width: never
    wrapped or cropped by rich (the terminal may fold it on screen; a copy is one line),
    no markup or highlighting read into it."""
    console.print(command, soft_wrap=True, markup=False, highlight=False, emoji=False)


def show_sql_hint(
    console: Console, data_dir: Path, principal: str, purpose: str, query: str
) -> None:
    """How to query the lake as an analyst: an ``energylake sql`` command to paste (one
    line), and the interactive form."""
    exe = str(Path(sys.executable).with_name("energylake"))
    console.print(
        "Query the lake as an analyst (a governed session; every statement is audited), paste:"
    )
    print_command(console, sql_command(data_dir, principal, purpose, query, exe))
    console.print("or, for an interactive session, the same without -c (.tables, .schema NAME).")


def side_by_side(results: list[tuple[str, pa.Table]], rows: int = 2) -> Table:
    """The same query's results under several purposes, value by value: one line per
    (row, column), one column per purpose."""
    table = Table("row", "column", *(title for title, _ in results), title_justify="left")
    first = results[0][1]
    for i in range(min(rows, first.num_rows)):
        for name in first.column_names:
            values = [
                _cell(r.column(name)[i].as_py())
                if name in r.column_names and i < r.num_rows
                else "-"
                for _, r in results
            ]
            table.add_row(str(i + 1), name, *values)
    return table


def access_lines(records: list[dict[str, Any]]) -> list[str]:
    """Access records (``audit/access``), one line each: who, for what, what happened,
    how the columns read were shaped, and the statement with its literals redacted."""
    lines = []
    for r in records:
        read = {
            c for d in r.get("datasets") or [] for c in (d.get("read") or {}).get("columns") or []
        }
        shaped: dict[str, list[str]] = {}
        for c in r.get("columns") or []:
            if c["action"] not in ("clear", "dropped") and (not read or c["column"] in read):
                shaped.setdefault(c["action"], []).append(c["column"])
        how = "; ".join(f"{a}: {', '.join(sorted(cs))}" for a, cs in sorted(shaped.items()))
        outcome = str(r.get("outcome", "")) + (f" ({r['reason']})" if r.get("reason") else "")
        line = (
            f"seq {r.get('seq')} {r.get('event')} {r.get('principal')} for {r.get('purpose')}:"
            f" {outcome}"
        )
        if r.get("rows") is not None:
            line += f", {r['rows']} rows"
        if how:
            line += f"; {how}"
        if r.get("sql_redacted"):
            line += f" | {r['sql_redacted']}"
        lines.append(line)
    return lines


def publish_summary(summary: dict[str, Any]) -> Table:
    """What the publisher sent and what became of it, per transport."""
    table = Table(
        "transport: outcome",
        "messages",
        title=f"published {summary['messages']:,} messages in {summary['elapsed_s']} s "
        f"({summary['rate_per_s']} msg/s)",
    )
    for key, n in summary["outcomes"].items():
        table.add_row(key, f"{n:,}")
    return table


def acked_reconciliation(acked: dict[str, Any], totals: dict[str, Any]) -> Table:
    """Every acknowledged message ends in exactly one place: lake, quarantine or duplicate."""
    table = Table("", "messages", title="every acknowledged message, accounted for")
    table.add_row("acknowledged (MQTT PUBACK, HTTP 202)", f"{acked['acked']:,}")
    for key, n in sorted(acked["outcomes"].items()):
        if key.endswith(":acked") and key not in ("mqtt:acked", "http:acked"):
            table.add_row(f"  of which {key.removesuffix(':acked')}", f"{n:,}")
    table.add_row("in the lake", f"{totals['written']:,}")
    table.add_row("quarantined (with a reason)", f"{totals['quarantine']:,}")
    table.add_row("counted duplicates", f"{totals['duplicates']:,}")
    parts = ["lake", "quarantine", "duplicates"]
    placed = totals["written"] + totals["quarantine"] + totals["duplicates"]
    for key, label in (
        ("held", "held for a quality decision"),
        ("discarded", "kept out by a decision"),
    ):
        if totals.get(key):
            table.add_row(label, f"{totals[key]:,}")
            parts.append(key)
            placed += totals[key]
    ok = placed == acked["acked"]
    table.add_row(
        " + ".join(parts),
        f"{placed:,} " + ("[green]= acknowledged[/]" if ok else "[red]differs[/]"),
    )
    refused = {k: v for k, v in acked["outcomes"].items() if not k.endswith(":acked")}
    for key, n in sorted(refused.items()):
        table.add_row(f"not acknowledged: {key}", f"{n:,}")
    return table


def lineage_trace(trace: Any, rel: str, version: int | None, show: int = 5) -> Group:
    """A table version's upstream: the runs that wrote it and the segments they read."""
    at = "" if version is None else f"@{version}"
    head = Text(
        f"{rel}{at}: {len(trace.producers)} producing run(s), {len(trace.segments)} landing "
        f"segment(s) upstream, {len(trace.downstream)} derived",
        style="bold",
    )
    runs = Table(
        "job", "run id", "version", "rows", "at", title="runs that wrote it (newest first)"
    )
    for p in sorted(trace.producers, key=lambda p: str(p["at"]), reverse=True)[:show]:
        runs.add_row(p["job"], p["run_id"], str(p["version"]), str(p["rows"]), str(p["at"]))
    more = len(trace.segments) - show
    segments = Text(
        "segments: "
        + ", ".join(trace.segments[:show])
        + (f" ... and {more} more" if more > 0 else "")
    )
    return Group(head, runs, segments)


def gate_summary(results: Any) -> Table:
    """The quality gate over the day, per tenant and dataset (``quality_results`` rows)."""
    import polars as pl

    rows = results.filter(pl.col("record_kind") == "result")
    failed = ~pl.col("success")
    summary = (
        rows.group_by("client_id", "dataset")
        .agg(
            pl.col("batch_id").n_unique().alias("batches"),
            pl.len().alias("checks"),
            pl.col("rule")
            .filter(failed & (pl.col("severity") == "error"))
            .unique()
            .sort()
            .alias("blocking"),
            pl.col("rule")
            .filter(failed & (pl.col("severity") != "error"))
            .unique()
            .sort()
            .alias("warned"),
            pl.col("batch_id").filter(pl.col("held")).n_unique().alias("held"),
        )
        .sort("client_id", "dataset")
    )
    table = Table(
        "tenant", "dataset", "batches", "checks", "blocking failed", "warnings", "held",
        title="quality gate over the day (quality_results)",
    )  # fmt: skip
    for row in summary.iter_rows():
        tenant, dataset, batches, checks, blocking, warned, held = row
        table.add_row(
            tenant,
            dataset,
            str(batches),
            str(checks),
            ", ".join(blocking) or "-",
            ", ".join(warned) or "-",
            f"[red]{held}[/]" if held else "0",
        )
    return table
