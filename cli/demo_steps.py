"""``make demo``: the real path on one machine. A private Mosquitto (production config,
provisioned from the registry), ``energylake run`` (gateway + ``process --follow``); the
simulator publishes a day over MQTT and HTTP as real clients; then the demo shows what
landed next to what was acknowledged and to the simulator's truth, the lineage of one
table version, and what three purposes see of one dataset. ``--via landing`` skips the
network and writes landing segments directly (no services needed).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.rule import Rule

from analytics.access import connect
from analytics.errors import AccessDeniedError
from analytics.grants import GrantBook
from analytics.queries import branch_totals, table_counts
from audit.query import read_records
from audit.verify import verify_chain
from cli import render
from cli.access import access_log
from cli.demo_reports import show_dg_log, show_reports
from cli.demo_vendors import start_live, stop_live, vendor_table
from cli.lineage import emit_reference_lineage
from contracts import ContractRegistry, apply_plan, load_registry, plan_for
from contracts.errors import EnergylakeError
from contracts.policy import mask_value
from devstack.stack import LocalStack, free_port
from lake.delta import open_table, read_table, table_exists
from lake.keys import KeyStore
from lake.layout import table_rel, tenants
from lake.reference import load_reference
from lake.storage import Store
from lineage.config import LineageConfig
from lineage.store import LineageStore
from pipelines.batch_hooks import wait_for_data_docs
from pipelines.process import ingest_stats, process_once
from pipelines.settings import Settings
from simulator.config import VENDOR_FORMATS, FaultRates, SimConfig
from simulator.landing import simulate_to_landing
from simulator.publish import DELIVERIES_NAME, Publisher, PublishTargets
from simulator.reference import build_fleet
from simulator.run import simulate
from transforms.quality_results import read_results

__all__ = ["DemoError", "run_demo"]

# Enough of every fault that each one shows up in a one-day demo.
_DEMO_FAULT_OVERRIDES = (("counter_reset", 0.5), ("stuck_sensor", 0.5))
_MARKER = ".energylake-demo"
_LIVE_S = 12.0  # the live vendor devices run at least this long


class DemoError(EnergylakeError, ValueError):
    """The demo cannot run (its data folder holds something it did not make, a setting it
    cannot use) or its stack did not come up; also a ``ValueError``, as before the hierarchy."""


def _reset(settings: Settings) -> None:
    """The demo starts clean, but only ever removes what an earlier demo made."""
    root = settings.data_dir
    marker = root / _MARKER
    root_owned = (
        "gateway",
        "mosquitto-data",
        "logs",
        "audit",
        "lineage",
        "quality",
        "metrics",
        "modbus",
    )
    owned = [settings.sim_dir, settings.landing, Path(settings.lake)]
    owned += [root / name for name in root_owned]
    if settings.lake_uri and "://" in settings.lake_uri:
        raise DemoError("the demo runs on local disk; unset lake_uri (or ENERGYLAKE_LAKE_URI)")
    present = [p for p in owned if p.exists() and any(p.iterdir())]
    if present and not marker.exists():
        raise DemoError(
            f"{', '.join(map(str, present))} exist and were not made by the demo; "
            "use another --data-dir"
        )
    for path in owned:
        if path.exists():
            shutil.rmtree(path)
    root.mkdir(parents=True, exist_ok=True)
    names = ", ".join(p.name + "/" for p in owned)
    marker.write_text(f"made by energylake demo; the next demo may delete {names}\n")


def run_demo(
    settings: Settings,
    console: Console,
    *,
    clients: int,
    branches: int,
    days: int,
    seed: int,
    dataset: str,
    purposes: list[str],
    via: str = "network",
) -> None:
    started = time.perf_counter()
    registry = load_registry(settings.contracts_dir)
    contract = registry.get(dataset)
    plans = [plan_for(contract, p, registry.vocabulary) for p in purposes]  # fail fast
    if via not in ("network", "landing"):
        raise DemoError(f"--via must be network or landing, not {via!r}")
    _reset(settings)
    store = settings.lake_store()
    # The simulated period ends at the start of today (UTC): the gateway stamps reception
    # with the real clock, and the contract refuses event times more than 7 days old.
    start = datetime.now(UTC).date() - timedelta(days=days)
    config = SimConfig(
        clients=clients,
        branches=branches,
        days=days,
        seed=seed,
        start=start,
        faults=FaultRates().with_overrides(dict(_DEMO_FAULT_OVERRIDES)),
    )
    if via == "network":  # one device of each vendor kind (issue 17): they need the broker
        config = replace(
            config,
            vendor_devices=VENDOR_FORMATS,
            modbus_endpoint=f"127.0.0.1:{free_port()}",
        )
    title = f"{clients} clients x {branches} branches x {days} day(s) from {start}"
    if via == "landing":
        console.print(Rule(f"1. simulate {title} into landing segments"))
        result = simulate_to_landing(config, settings.sim_dir, settings.landing, registry=registry)
        telemetry = render.landing_written(result.out, settings.landing)
        console.print(render.simulation_summary(result.manifest, result.out, telemetry=telemetry))
        console.print(Rule("2. energylake reference load + energylake process"))
        loads = load_reference(store, result.reference_dir, registry)
        emit_reference_lineage(settings, result.reference_dir, loads)  # as the CLI's load does
        console.print(render.reference_table(loads))
        while process_once(settings) is not None:
            pass
        manifest = result.manifest
        acked: dict[str, Any] | None = None
    else:
        manifest, acked = _network(settings, console, store, registry, config, title)

    console.print(Rule("3. what the lake holds, next to what was acknowledged and the truth"))
    console.print(render.lake_tables_table(table_counts(store, registry)))
    totals = _ingest_totals(settings)
    console.print(
        render.quarantine_vs_manifest(
            totals["quarantined"],
            manifest["expected"]["quarantine"],
            edge_refusals(settings.sim_dir / DELIVERIES_NAME) if acked is not None else None,
        )
    )
    if acked is not None:
        console.print(render.acked_reconciliation(acked, totals))
    console.print(render.totals_vs_truth(branch_totals(store), manifest["branches"]))
    if manifest.get("vendor_devices"):
        console.print(vendor_table(settings, store, manifest))
        console.print(
            "held: rows the quality gate holds (`energylake quality release` publishes them); "
            "partial readings (Sparkplug DATA by exception, a Shelly's em:0 and emdata:0) "
            "land: their device's and message's profiles say what they may omit",
            soft_wrap=True,
        )

    console.print(Rule("4. lineage: where one table version came from"))
    _show_lineage(settings, console, store)
    console.print(Rule("5. the quality gate's results for the day"))
    console.print(render.gate_summary(read_results(store)))
    wait_for_data_docs(60)
    docs = settings.data_dir / "quality" / "index.html"
    if docs.is_file():
        console.print(f"Great Expectations Data Docs: {docs}")

    console.print(Rule(f"6. purpose limitation: {dataset} as each purpose sees it"))
    console.print(render.compare_table(contract, plans))
    table = pq.read_table(settings.sim_dir / "reference" / f"{dataset}.parquet")
    tenant = str(table.column("client_id")[0]) if "client_id" in table.column_names else "default"
    rows = (
        table.filter(pc.equal(table.column("client_id"), tenant)) if tenant != "default" else table
    )
    key = KeyStore(settings.keys).get(tenant)
    shaped = {plan.purpose: apply_plan(plan, rows, key, contract) for plan in plans}
    console.print(render.record_table(contract, shaped, f"one {dataset} record of tenant {tenant}"))

    console.print(Rule("7. governed access: one query, two principals, two purposes"))
    _governed(settings, console, store, registry, tenant)
    console.print(Rule("8. a data subject's rights: find, export, erase, and the proof"))
    _subject_request(settings, console, store, tenant)
    console.print(Rule("9. sustainability reports: BRSR (EI 1 and EI 7) and its verification"))
    show_reports(settings, console, store, registry, tenant, manifest)
    console.print(
        Rule("10. the CAQM DG operation log of the day, hash-chained, and its verification")
    )
    show_dg_log(settings, console, store, registry, tenant, manifest)
    console.print(f"demo finished in {time.perf_counter() - started:.1f} s")


def _subject_request(settings: Settings, console: Console, store: Store, tenant: str) -> None:
    """A technician asks what the platform holds on them and then to be forgotten: find,
    export, erase (applied), and the byte scan of the whole data folder as the verdict."""
    from cli.subject import (
        erase_request,
        export_request,
        find_request,
        show_findings,
        subjects_log,
    )

    # a technician of another tenant than step 7's, when there is one: its query, which
    # the reader may paste after the demo, shows the same rows then
    phones: list[str] = []
    for owner in sorted(tenants(store), key=lambda t: t == tenant):
        rel = table_rel(owner, "work_orders")
        if table_exists(store, rel):
            column = read_table(store, rel, columns=["technician_phone"]).column(0)
            phones = sorted(p for p in column.to_pylist() if p)
        if phones:
            break
    if not phones:
        console.print("no technician in the work orders: no request to show")
        return
    mobile = phones[0]
    options: dict[str, str | None] = {"mobile": mobile}
    findings, who = find_request(settings, options)
    subjects_log(settings).append("SUBJECT_FIND", {"subject": who, "actor": "demo"})
    console.print(f"energylake subject find --mobile {mask_value(mobile, 2)}  ({who})")
    show_findings(console, findings, "where the technician appears")
    with tempfile.TemporaryDirectory(prefix="energylake-export-") as folder:
        report = export_request(settings, options, Path(folder))
        console.print(
            f"energylake subject export: {sum(report.rows.values())} rows of "
            f"{', '.join(sorted(report.rows))}, as JSON and Parquet, with manifest.json "
            "(purposes, categories, recipients, retention, source); handed over, then deleted"
        )
    _found, receipt, _who = erase_request(settings, options, apply=True)
    verdict = "zero bytes left" if receipt.verified else f"{len(receipt.residues)} residues"
    console.print(
        f"energylake subject erase --apply: {len(receipt.places)} places erased and checked; "
        f"byte scan of {receipt.scanned_files:,} files ({receipt.scanned_bytes:,} bytes) "
        f"under {settings.data_dir}: {verdict}",
        soft_wrap=True,  # one line whatever the path's length: the verdict stays whole
    )
    console.print(
        f"the receipt (each place, the check that proved it empty): "
        f"{settings.data_dir / 'erasure' / 'receipts'}",
        soft_wrap=True,
    )


# Two principals of one tenant, one query, two purposes (``analytics.access``).
_PRINCIPALS = (("field.lead", "field_service"), ("benchmark.team", "benchmarking"))
_QUERY = (
    "SELECT status, opened_at, device_id, technician_name, technician_phone,"
    " visit_latitude_deg FROM work_orders ORDER BY opened_at, device_id LIMIT 3"
)


def _governed(
    settings: Settings, console: Console, store: Store, registry: ContractRegistry, tenant: str
) -> None:
    """Grant two principals, run one query as each, show both results, the access records
    they left and the audit chains' verdicts, and the command to run it yourself."""
    log = access_log(settings)
    keys = KeyStore(settings.keys)
    results = []
    sessions = set()
    try:
        book = GrantBook(store, registry, log)
        for principal, purpose in _PRINCIPALS:
            book.grant(principal, tenants=[tenant], purposes=[purpose], actor="demo")
        console.print(
            "granted: " + "; ".join(f"{p} may read {tenant} for {u}" for p, u in _PRINCIPALS)
        )
        for principal, purpose in _PRINCIPALS:
            with connect(
                store, registry, keys, log, principal=principal, purpose=purpose
            ) as session:
                sessions.add(session.id)
                results.append((principal, purpose, session.sql(_QUERY)))
        try:  # a purpose not granted: refused, and recorded
            connect(store, registry, keys, log, principal="benchmark.team", purpose="field_service")
        except AccessDeniedError as denied:
            console.print(f"refused: {denied}")
    finally:
        log.close()
    console.print(_QUERY, soft_wrap=True, markup=False, highlight=False)
    console.print(render.side_by_side([(f"{p}\n({u})", result) for p, u, result in results]))
    records = [
        r
        for r in read_records(settings.data_dir / "audit" / "access")
        if r.get("session") in sessions or r.get("event") in ("access_denied", "grant")
    ]
    console.print("the access records they left (audit/access, hash-chained):")
    for line in render.access_lines(records[-12:]):
        console.print("  " + line, soft_wrap=True, markup=False, highlight=False)
    for name in ("access", "gateway", "pipeline"):
        folder = settings.data_dir / "audit" / name
        if folder.is_dir():
            verdict = verify_chain(folder, settings.audit_anchor_dir)
            console.print(f"energylake audit verify ({name}): {verdict.summary()}", soft_wrap=True)
    principal, purpose = _PRINCIPALS[1]
    render.show_sql_hint(console, settings.data_dir, principal, purpose, _QUERY)


def _network(
    settings: Settings,
    console: Console,
    store: Store,
    registry: ContractRegistry,
    config: SimConfig,
    title: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Simulate, provision, start the stack, publish over MQTT and HTTP, drain, stop."""
    with LocalStack(settings) as stack:
        targets = PublishTargets(
            mqtt=("127.0.0.1", stack.mqtt_port), http=stack.http_url, http_share=0.3
        )
        fleet = build_fleet(config)
        home = {d.device_id: (d.client_id, d.branch_id) for d in fleet.devices}
        publisher = Publisher(targets, fleet.tokens, home)
        console.print(Rule(f"1. simulate {title}; provision; start Mosquitto and energylake run"))
        result = simulate(config, settings.sim_dir, registry=registry, sink=publisher)
        console.print(render.simulation_summary(result.manifest, result.out, telemetry=None))
        loads = load_reference(store, result.reference_dir, registry)
        emit_reference_lineage(settings, result.reference_dir, loads)  # as the CLI's load does
        console.print(render.reference_table(loads))
        report = stack.provision(dict(fleet.tokens))
        console.print(
            f"provisioned {report.mqtt_accounts} MQTT accounts, {report.devices} identities "
            f"into {report.out_dir}"
        )
        stack.start_broker()
        stack.start_run()
        console.print(
            f"mosquitto on 127.0.0.1:{stack.mqtt_port}, gateway HTTP on {stack.http_url}, "
            f"logs in {stack.logs}"
        )
        console.print(Rule("2. the simulator publishes over MQTT and HTTP (real clients)"))
        live = start_live(settings, stack, config, fleet) if config.vendor_devices else None
        published = publisher.publish()
        published.write(settings.sim_dir)
        console.print(render.publish_summary(published.summary()))
        manifest = result.manifest
        if live is not None:
            manifest = stop_live(live, settings, manifest, min_live_s=_LIVE_S)
            console.print(
                f"live vendor devices ran {time.monotonic() - live.started:.0f} s: a Shelly "
                "Pro 3EM over MQTT, an SDM630 polled by energylake modbus poll (stopped by "
                "its PID)"
            )
        if not stack.wait_caught_up(timeout_s=180):
            raise DemoError("the processor did not catch up within 180 s; see the logs")
        code = stack.stop()
        if code != 0:
            raise DemoError(f"energylake run exited with {code} on SIGTERM; see {stack.logs}")
        console.print("energylake run drained and exited 0; mosquitto stopped")
    while process_once(settings) is not None:  # anything a drain closed after the last batch
        pass
    return manifest, _with_live(published.summary(), manifest)


def _with_live(acked: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """The publisher's outcomes plus the live vendor devices' (not the publisher's clients):
    a Shelly's messages its broker acknowledged (PUBACK), and the SDM630's readings the
    poller landed (on disk: what a 202 or a PUBACK means for the others)."""
    outcomes = dict(acked["outcomes"])
    added = 0
    for entry in manifest.get("vendor_devices", {}).values():
        if not entry.get("live"):
            continue
        key = "modbus:acked" if entry["format"] == "modbus" else "mqtt (live):acked"
        outcomes[key] = outcomes.get(key, 0) + int(entry["messages"])
        added += int(entry["messages"])
    return {**acked, "acked": acked["acked"] + added, "outcomes": outcomes}


# What the edge answers, as the pipeline's reason code for the same defect.
_EDGE_REASONS = {
    "identity_mismatch": "BRANCH_MISMATCH",
    "bad_token": "UNKNOWN_DEVICE",
    "missing_token": "UNKNOWN_DEVICE",
    "non_finite": "NON_FINITE",
    "body_too_large": "PAYLOAD_TOO_LARGE",
}


def edge_refusals(deliveries: Path) -> dict[str, int]:
    """Messages the gateway or the broker refused, by the reason code the pipeline would
    have given them (never acknowledged, so never in the lake or the quarantine)."""
    counts: dict[str, int] = {}
    for line in deliveries.read_text().splitlines():
        d = json.loads(line)
        if d["status"] == "acked":
            continue
        if d["status"] == "not_sent":  # above the broker's packet limit
            code = "PAYLOAD_TOO_LARGE"
        elif d["transport"] == "mqtt" and str(d.get("detail", "")).startswith("PUBACK"):
            # the broker's ACL refused the topic: it claims another tenant's client
            code = "BRANCH_MISMATCH"
        elif d["transport"] == "mqtt":  # the broker refused the login: not in the registry
            code = "UNKNOWN_DEVICE"
        else:
            status, _, reason = d["detail"].partition(" ")
            code = _EDGE_REASONS.get(reason) or (
                "PAYLOAD_TOO_LARGE" if status == "413" else "MALFORMED_PAYLOAD"
            )
        counts[code] = counts.get(code, 0) + 1
    return counts


def _ingest_totals(settings: Settings) -> dict[str, Any]:
    """Where every record went, from the batches' and the decisions' counts (see
    ``ingest_stats``): in the lake = written - held + released."""
    sums: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for kind, _tenant, dataset, _branch, key, n in ingest_stats(settings):
        if dataset == "quarantine" and kind != "quarantined":
            continue
        sums[kind] = sums.get(kind, 0) + n
        if kind == "quarantined":
            reasons[key] = reasons.get(key, 0) + n
    get = sums.get
    return {
        "written": get("written", 0) - get("held", 0) + get("released", 0),
        "quarantine": get("quarantined", 0),
        "quarantined": reasons,
        "duplicates": get("duplicates", 0),
        "held": get("held", 0) - get("decided", 0),
        "discarded": get("discarded", 0),
    }


def _show_lineage(settings: Settings, console: Console, store: Store) -> None:
    rels = [t[0] for t in table_counts(store) if t[0].endswith("/meter_readings")]
    if not rels:
        console.print("no meter_readings table to trace")
        return
    rel = rels[0]
    version = open_table(store, rel).version()
    lineage = LineageStore(LineageConfig.from_settings(settings).directory)
    console.print(render.lineage_trace(lineage.trace(rel, version), rel, version))
