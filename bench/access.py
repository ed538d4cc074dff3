"""Governed access against raw DuckDB: typical analyst queries through ``energylake sql``'s
layer (``analytics.access``) and the same queries in raw DuckDB over ``delta_scan``, on the
same lake, in the same run.

    .venv/bin/python -m bench.access [--clients 2] [--branches 5] [--days 30] [--repeat 5]

The lake: a simulated month (default 2 clients x 5 branches x 30 days), processed by
``energylake process``. The queries, for one tenant:

- ``daily_kwh``: daily kWh per branch over the month (energy_monitoring);
- ``device_week``: one device's readings for a week (energy_monitoring);
- ``orders_joined``: work orders joined to the readings of their device: readings and mean
  power per order (field_service).

Raw: a DuckDB connection with the delta extension, each view name replaced by
``delta_scan('<lake>/tenants/<tenant>/<dataset>')`` (one tenant's table: no tenant filter
needed, no protection). Governed: a session of a granted principal; its access records are
written (fsynced) as in production. Printed per query: *cold* (a fresh connection or
session and its first query: the session's grant check, lake read, shaping and access
records included) and *warm* (the same query again on the open connection or session,
best of ``--repeat``), and the ratio governed speed / raw speed (goal: at least 0.5 warm,
cold within a second of raw).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from analytics.access import connect
from analytics.grants import GrantBook
from audit.log import AuditLog
from bench.pipeline import prepare
from contracts import load_registry
from lake.delta import read_table
from lake.duck import connect as duck_connect
from lake.keys import KeyStore
from lake.layout import table_rel
from lake.storage import Store
from simulator.config import SimConfig

QUERIES: dict[str, tuple[str, str]] = {
    "daily_kwh": (
        "energy_monitoring",
        "SELECT branch_id, date_trunc('day', ts) AS day,"
        " max(energy_import_kwh) - min(energy_import_kwh) AS kwh"
        " FROM meter_readings GROUP BY ALL ORDER BY 1, 2",
    ),
    "device_week": (
        "energy_monitoring",
        "SELECT ts, power_kw, energy_import_kwh FROM meter_readings"
        " WHERE device_id = '{device}' AND ts >= TIMESTAMPTZ '{start}'"
        " AND ts < TIMESTAMPTZ '{end}' ORDER BY ts",
    ),
    "orders_joined": (
        "field_service",
        "SELECT w.ticket_id, w.status, count(*) AS readings, avg(m.power_kw) AS kw"
        " FROM work_orders w JOIN meter_readings m USING (device_id)"
        " GROUP BY ALL ORDER BY 1",
    ),
}


def _process(data_dir: Path) -> None:
    exe = Path(sys.executable).parent / "energylake"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
    env["ENERGYLAKE_QUALITY_GATE"] = "false"
    subprocess.run(  # noqa: S603 - our own console script, our own arguments
        [str(exe), "process", "--data-dir", str(data_dir)],
        check=True,
        env=env,
        capture_output=True,
    )


def _raw_sql(sql: str, store: Store, tenant: str) -> str:
    for dataset in ("meter_readings", "work_orders"):
        path = store.url(table_rel(tenant, dataset))
        sql = sql.replace(f"FROM {dataset}", f"FROM delta_scan('{path}')")
        sql = sql.replace(f"JOIN {dataset}", f"JOIN delta_scan('{path}')")
    return sql


def _run_raw(con: Any, sql: str) -> Any:
    return con.execute(sql).to_arrow_table()


def _best(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--branches", type=int, default=5)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="bench-access-"))
    try:
        started = time.perf_counter()
        config = SimConfig(clients=args.clients, branches=args.branches, days=args.days, seed=11)
        records = prepare(root, config)
        _process(root)
        print(
            f"lake: {records:,} records simulated and processed in"
            f" {time.perf_counter() - started:.1f} s ({root})"
        )
        store = Store.from_uri(str(root / "lake"))
        registry = load_registry()
        audit = AuditLog(root / "audit" / "access", component="access", fail_closed=True)
        book = GrantBook(store, registry, audit)
        tenant = book.known_tenants()[0]
        book.grant(
            "bench.analyst",
            tenants=[tenant],
            purposes=["energy_monitoring", "field_service"],
            actor="bench",
        )
        readings = read_table(
            store, table_rel(tenant, "meter_readings"), columns=["device_id", "ts"]
        )
        rows = readings.num_rows
        device = str(readings["device_id"][0])
        first = min(readings["ts"].to_pylist())
        start = (first + timedelta(days=7)).astimezone(UTC)
        params = {
            "device": device,
            "start": start.isoformat(),
            "end": (start + timedelta(days=7)).isoformat(),
        }
        print(f"tenant {tenant}: meter_readings {rows:,} rows; --repeat {args.repeat}")
        keys = KeyStore(root / "keys")
        print(
            f"{'query':14} {'raw cold':>9} {'gov cold':>9} {'diff':>7} "
            f"{'raw warm':>9} {'gov warm':>9} {'speed ratio':>11}  rows"
        )
        ratios = []
        for name, (purpose, template) in QUERIES.items():
            sql = template.format(**params)
            raw_sql = _raw_sql(sql, store, tenant)

            def raw_cold(raw_sql: str = raw_sql) -> Any:
                con = duck_connect(store)
                try:
                    return con.execute(raw_sql).to_arrow_table()
                finally:
                    con.close()

            def gov_cold(sql: str = sql, purpose: str = purpose) -> Any:
                with connect(
                    store, registry, keys, audit, principal="bench.analyst", purpose=purpose
                ) as session:
                    return session.sql(sql)

            raw_cold_s = statistics.median(_best(raw_cold, 1)[0] for _ in range(args.repeat))
            gov_cold_s = statistics.median(_best(gov_cold, 1)[0] for _ in range(args.repeat))
            con = duck_connect(store)
            raw_warm_s, raw_result = _best(functools.partial(_run_raw, con, raw_sql), args.repeat)
            con.close()
            with connect(
                store, registry, keys, audit, principal="bench.analyst", purpose=purpose
            ) as session:
                session.sql(sql)
                gov_warm_s, gov_result = _best(functools.partial(session.sql, sql), args.repeat)
            assert gov_result.num_rows == raw_result.num_rows, (name, gov_result, raw_result)
            ratio = raw_warm_s / gov_warm_s
            ratios.append(ratio)
            print(
                f"{name:14} {raw_cold_s:9.3f} {gov_cold_s:9.3f} {gov_cold_s - raw_cold_s:+7.3f}"
                f" {raw_warm_s:9.4f} {gov_warm_s:9.4f} {ratio:11.2f}  {raw_result.num_rows}"
            )
        audit.close()
        print(
            f"governed / raw speed, warm: min {min(ratios):.2f} (goal >= 0.5); cold: the"
            " 'diff' column (goal: within 1 s)"
        )
        print(f"measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
