"""Device sentinels (a "not available / fault" code is stored as NULL plus a quality flag,
never as the number): GenComm register codes in DG readings become NULL
with the SENTINEL flag; in a required field the reading is MISSING_FIELD, with a detail
that says why. Through the real pipeline, on a simulated day."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from contracts import load_registry
from contracts.model import sentinel_values
from lake.delta import read_table
from lake.layout import table_rel
from landing.reader import read_segment
from landing.writer import LandingWriter
from pipelines.process import process_once
from simulator.config import FaultRates, SimConfig
from tests.pipeline.conftest import land

# field -> the value the device sends (its register's "not available" code, scaled)
OPTIONAL = {
    "oil_pressure_kpa": 65535.0,  # u16
    "coolant_temp_degc": 32767.0,  # s16
    "battery_voltage_v": 6553.5,  # u16 / 10
    "frequency_hz": 6553.4,  # u16 / 10, another code of the eight (0xFFFE)
}
REQUIRED = {
    "engine_speed_rpm": 65535.0,
    "power_kw": 2147483.647,  # s32 W -> kW
    "run_hours_h": 1193046.47,  # u32 seconds -> hours, rounded by the device
}


def test_sentinel_specs_give_the_eight_gencomm_codes() -> None:
    assert sentinel_values("u16") == tuple(float(v) for v in range(0xFFF8, 0x10000))
    assert sentinel_values("u16/10")[-1] == 6553.5
    assert min(sentinel_values("s16")) == 32760.0
    from contracts.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sentinel 'u8'.*its contract") as caught:
        sentinel_values("u8")
    assert (caught.value.setting, caught.value.value) == ("sentinel", "u8")
    dg = load_registry().get("dg_readings")
    declared = {f.name for f in dg.fields if f.sentinels}
    assert set(OPTIONAL) | set(REQUIRED) <= declared


@pytest.mark.slow
def test_sentinels_are_stored_as_null_with_the_flag_never_the_number(tmp_path: Path) -> None:
    config = SimConfig(clients=1, branches=3, days=1, seed=11, faults=FaultRates.none())
    settings, _, segments = land(tmp_path, config)
    records = [e for seg in segments for e in read_segment(seg).envelopes()]
    dg_at = [
        i
        for i, e in enumerate(records)
        if e.payload.startswith(b"{") and b'"engine_speed_rpm"' in e.payload
    ]
    assert len(dg_at) > 10
    # one reading per optional field, then one per required field, spread over the day
    targets: dict[int, tuple[str, float]] = {}
    for k, (name, value) in enumerate([*OPTIONAL.items(), *REQUIRED.items()]):
        targets[dg_at[(k + 1) * len(dg_at) // 10]] = (name, value)
    changed: dict[tuple[str, int], tuple[str, float]] = {}
    for seg in segments:
        seg.unlink()
    with LandingWriter(settings.landing, "sentinel-test", clock=None) as writer:
        for i, envelope in enumerate(records):
            if i in targets:
                body: dict[str, Any] = orjson.loads(envelope.payload)
                name, value = targets[i]
                body["readings"][name] = value
                changed[(body["device_id"], body["seq"])] = (name, value)
                envelope = type(envelope)(
                    envelope.received_at_us,
                    envelope.source,
                    envelope.topic,
                    envelope.identity,
                    orjson.dumps(body),
                )
            writer.append(envelope)
    report = process_once(settings)
    assert report is not None
    store_rows = pl.from_arrow(
        read_table(_store(settings), table_rel(_tenant(records), "dg_readings"))
    )
    assert isinstance(store_rows, pl.DataFrame)
    for (device, seq), (name, value) in changed.items():
        row = store_rows.filter((pl.col("device_id") == device) & (pl.col("seq") == seq))
        if name in OPTIONAL:
            assert row.height == 1, (name, value, _why(settings, records, device, seq))
            assert row[name][0] is None, f"{name}: the number {value} was stored"
            assert "SENTINEL" in row["quality_flags"][0].to_list()
        else:
            assert row.height == 0, f"{name}: a reading without its required value was stored"
    quarantine = pl.from_arrow(
        read_table(_store(settings), table_rel(_tenant(records), "quarantine"))
    )
    assert isinstance(quarantine, pl.DataFrame)
    missing = quarantine.filter(pl.col("reason_code") == "MISSING_FIELD")
    for name in REQUIRED:
        hits = missing.filter(pl.col("detail").str.contains(name, literal=True))
        assert hits.height == 1, name
        assert "not available" in hits["detail"][0]
    # the other rows carry no SENTINEL flag
    flagged = store_rows.filter(pl.col("quality_flags").list.contains("SENTINEL"))
    assert flagged.height == len(OPTIONAL)
    assert sum(report.quarantined.values()) == len(REQUIRED)


def _store(settings: Any) -> Any:
    from lake.storage import Store

    return Store.from_uri(settings.lake)


def _tenant(records: list[Any]) -> str:
    topic = next(e.topic for e in records if e.topic.startswith("emaas/v1/"))
    return str(topic.split("/")[2])


def _why(settings: Any, records: list[Any], device: str, seq: int) -> Any:
    q = pl.from_arrow(read_table(_store(settings), table_rel(_tenant(records), "quarantine")))
    assert isinstance(q, pl.DataFrame)
    return (
        q.filter((pl.col("device_id") == device) & (pl.col("seq") == seq))
        .select("reason_code", "detail")
        .rows()
    )
