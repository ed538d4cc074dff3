"""The demo's sustainability step: the shipped emission factors loaded, a principal granted
``regulatory_reporting`` on one tenant, a BRSR report of the simulated day (JSON, CSV, HTML,
PDF) with its paths, the figures next to the simulator's truth, and ``report verify``'s
verdict; said plainly: a day is not a financial year. Then the CAQM DG operation log of the
same day (shipped rules, an example GRAP calendar), its chained log and its verdict."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from analytics.access import connect
from analytics.grants import GrantBook
from cli.access import access_log
from cli.report import _csv, _figures_table, _html, _pdf
from contracts import ContractRegistry
from lake.keys import KeyStore
from lake.reference import load_platform_reference
from lake.storage import Store
from lineage.emitter import LineageEmitter
from lineage.runs import uri_of
from pipelines.settings import Settings
from reporting.dglog import append_log, dg_log_document, log_folder
from reporting.document import BrsrRequest, brsr_document
from reporting.factors import fy_of
from reporting.mart import ist_day_start
from reporting.record import write_report
from reporting.render import render_dg_files
from reporting.shipped import shipped_file
from reporting.verify import verify_report

__all__ = ["PRINCIPAL", "show_dg_log", "show_reports"]

PRINCIPAL = "sustainability.team"


def show_reports(
    settings: Settings,
    console: Console,
    store: Store,
    registry: ContractRegistry,
    tenant: str,
    manifest: dict[str, Any],
) -> Path:
    """Make and verify the tenant's BRSR report of the simulated period; its folder."""
    factors = shipped_file("emission_factors")
    assert factors is not None  # shipped with the package
    load = load_platform_reference(store, factors, registry.get("emission_factors"))
    console.print(
        f"energylake reference load-platform emission_factors: {load.rows} factors"
        f" (platform/emission_factors version {load.version})"
    )
    start = str(manifest["created_for"]["start"])
    days = int(manifest["created_for"]["days"])
    fy = fy_of(date.fromisoformat(start))
    log = access_log(settings)
    keys = KeyStore(settings.keys)
    try:
        GrantBook(store, registry, log).grant(
            PRINCIPAL, tenants=[tenant], purposes=["regulatory_reporting"], actor="demo"
        )
        with connect(
            store, registry, keys, log, principal=PRINCIPAL, purpose="regulatory_reporting",
            tenant=tenant,
        ) as session:  # fmt: skip
            doc, _ = brsr_document(
                session, store, registry, BrsrRequest(tenant, fy, allow_proxy=True)
            )
            written = write_report(
                session,
                registry,
                doc,
                settings.data_dir / "reports",
                [("csv", _csv), ("html", _html), ("pdf", _pdf)],
                lake_uri=uri_of(settings.lake),
                emitter=LineageEmitter.from_settings(settings),
                label=f"fy{fy}",
            )
        verdict = verify_report(
            doc,
            written.folder,
            store,
            registry,
            keys,
            log,
            settings.data_dir / "audit" / "access",
            principal=PRINCIPAL,
            anchor_dir=settings.audit_anchor_dir,
        )
    finally:
        log.close()
    console.print(
        f"NOTE: the simulation covers {days} day(s) from {start}, not a financial year: the"
        f" figures below are the FY {fy} report of the data the lake holds, nothing more."
        f" Scope 2 uses the latest published grid factor as a proxy [P] when FY {fy} has"
        " none of its own yet.",
        soft_wrap=True,
    )
    console.print(_figures_table(doc))
    truth = sum(
        float(b.get("grid_import_kwh", 0.0))  # a live vendor device's branch: none
        for b in manifest["branches"].values()
        if b.get("client_id") == tenant
    )
    got = float(doc["quantities"][fy]["grid_import_kwh"])
    console.print(
        f"grid import in the report {got:.2f} kWh; the simulator's truth {truth:.2f} kWh"
        " (the difference: readings the pipeline quarantined, and the first reading of each"
        " meter, which closes no interval)",
        soft_wrap=True,
    )
    for name in ("report.json", "report.html", "report.pdf"):
        console.print(f"  {written.folder / name}")
    console.print(
        f"energylake report verify {written.folder} --as {PRINCIPAL}: {verdict.summary()}",
        soft_wrap=True,
        markup=False,
    )
    return written.folder


def show_dg_log(
    settings: Settings,
    console: Console,
    store: Store,
    registry: ContractRegistry,
    tenant: str,
    manifest: dict[str, Any],
) -> Path:
    """The tenant's CAQM DG operation log of the simulated period, with the shipped rules
    and an EXAMPLE GRAP calendar (stage II over the period: energylake ships no calendar),
    appended to the chained log, and ``report verify``'s verdict; its report folder."""
    rules = shipped_file("dg_rules")
    assert rules is not None  # shipped with the package
    load_platform_reference(store, rules, registry.get("dg_rules"))
    start = date.fromisoformat(str(manifest["created_for"]["start"]))
    days = int(manifest["created_for"]["days"])
    calendar = settings.sim_dir / "reference" / "grap_calendar.example.csv"
    calendar.parent.mkdir(parents=True, exist_ok=True)
    begins = ist_day_start(start).isoformat()
    ends = ist_day_start(start + timedelta(days=days)).isoformat()
    calendar.write_text(
        "region,starts_at,ends_at,stage,order_reference,source\n"
        f"NCR,{begins},{ends},2,EXAMPLE-GRAP-II,an example for the demo (not an order)\n"
    )
    load_platform_reference(store, calendar, registry.get("grap_calendar"))
    console.print(
        "loaded: dg_rules (shipped, CAQM Directions 73 and 76) and an EXAMPLE GRAP calendar"
        f" (stage II over the simulated {days} day(s); energylake ships no calendar)",
        soft_wrap=True,
    )
    log = access_log(settings)
    keys = KeyStore(settings.keys)
    folder = log_folder(settings.data_dir, tenant)
    try:
        with connect(
            store, registry, keys, log, principal=PRINCIPAL, purpose="regulatory_reporting",
            tenant=tenant,
        ) as session:  # fmt: skip
            doc = dg_log_document(
                session, store, registry, tenant, start, start + timedelta(days=days)
            )
            appended = append_log(doc, folder, anchor_dir=settings.audit_anchor_dir)
            doc["log"] = {"folder": str(folder), "appended": appended.appended,
                          "corrected": appended.corrected, "unchanged": appended.unchanged,
                          "head_seq": appended.head_seq}  # fmt: skip
            written = write_report(
                session, registry, doc, settings.data_dir / "reports",
                [("dg", render_dg_files)], lake_uri=uri_of(settings.lake),
                emitter=LineageEmitter.from_settings(settings),
                label=f"{start.isoformat()}_{(start + timedelta(days=days - 1)).isoformat()}",
            )  # fmt: skip
        verdict = verify_report(
            doc, written.folder, store, registry, keys, log,
            settings.data_dir / "audit" / "access", principal=PRINCIPAL,
            anchor_dir=settings.audit_anchor_dir,
        )  # fmt: skip
    finally:
        log.close()
    runs = doc["runs"]
    console.print(
        f"DG sets of {tenant}: {len(doc['sets'])}; closed runs in the period: {len(runs)}"
        f" (a day of data: a few outages and weekly exercise runs, not a month's log);"
        f" appended to {folder}: {appended.appended}",
        soft_wrap=True,
    )
    for run in runs[:8]:
        console.print(
            f"  {run['device_id']} {run['start'][:16]} -> {run['stop'][11:16]} UTC"
            f" {run['duration_h']:.2f} h {run['kwh']:.1f} kWh {run['fuel_l']:.1f} L"
            f" stage {run['stage']} rule {run['rule']} flags {', '.join(run['flags']) or '-'}",
            markup=False,
            soft_wrap=True,
        )
    pdfs = sorted(written.folder.glob("*.pdf"))
    for path in pdfs[:2]:
        console.print(f"  {path}")
    console.print(
        f"energylake report verify {written.folder} --as {PRINCIPAL}: {verdict.summary()}",
        soft_wrap=True,
        markup=False,
    )
    return written.folder
