"""The simulator's own invariants, checked from its output files by an independent reader."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from contracts import load_registry
from simulator.config import FAULTS, FaultRates, SimConfig
from simulator.physics import simulate_branch
from simulator.reference import build_fleet, rng_for
from simulator.run import SimResult, simulate

REGISTRY = load_registry()
HEAVY = FaultRates().with_overrides(
    {name: 0.01 for name in FAULTS if name not in ("counter_reset", "stuck_sensor")}
    | {"counter_reset": 1.0, "stuck_sensor": 1.0}
)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> SimResult:
    config = SimConfig(clients=2, branches=3, days=1, seed=7, faults=HEAVY)
    return simulate(config, tmp_path_factory.mktemp("faulty"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> SimResult:
    config = SimConfig(clients=2, branches=3, days=2, seed=11, faults=FaultRates.none())
    return simulate(config, tmp_path_factory.mktemp("clean"))


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _lines(result: SimResult) -> list[dict[str, Any]]:
    """Every line of every telemetry file, in delivery order per file."""
    out = []
    for path in sorted(result.telemetry_dir.rglob("*.ndjson")):
        rel = str(path.relative_to(result.out))
        topic = str(path.parent.relative_to(result.telemetry_dir))
        hour = datetime.strptime(path.stem, "%Y%m%dT%H").replace(tzinfo=UTC).timestamp()
        for number, raw in enumerate(path.read_bytes().split(b"\n")[:-1], start=1):
            out.append({"file": rel, "line": number, "topic": topic, "hour": hour, "raw": raw})
    return out


def _devices(result: SimResult) -> dict[str, dict[str, Any]]:
    table = pq.read_table(result.reference_dir / "devices.parquet")
    return {row["device_id"]: row for row in table.to_pylist()}


def _strict(raw: bytes) -> Any:
    def refuse(token: str) -> None:
        raise ValueError(token)

    return json.loads(raw, parse_constant=refuse)


def _classify(line: dict[str, Any], devices: dict[str, dict[str, Any]], limit: int) -> str | None:
    """Which fault a line shows, judged from the line alone (None: a clean reading)."""
    raw = line["raw"]
    if len(raw) > limit:
        return "oversized"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bad_utf8"
    try:
        msg = _strict(raw)
    except ValueError:
        try:
            json.loads(raw)
        except ValueError:
            return "malformed_json"
        return "non_finite"
    device = devices.get(msg["device_id"])
    if device is None:
        return "unknown_device"
    _, _, client, branch, _, _ = line["topic"].split("/")
    if (client, branch) != (device["client_id"], device["branch_id"]):
        return "wrong_branch"
    ts = msg["ts"]
    if ts > 1e11:
        return "epoch_ms"
    if ts > line["hour"] + 3600 + 600:
        return "timestamp_future"
    if ts < line["hour"] - 7 * 86400:
        return "timestamp_ancient"
    contract = REGISTRY.get(REGISTRY.dataset_of_kind[device["kind"]])
    readings = msg["readings"]
    known = set(contract.field_names)
    if any(k not in known for k in readings) or any(
        isinstance(v, str) and k != "status" for k, v in readings.items()
    ):
        return "schema_drift"
    for field in contract.fields:
        if (
            field.required
            and field.name
            not in (
                "client_id",
                "branch_id",
                "device_id",
                "seq",
                "ts",
                "received_at",
                "event_month",
            )
            and readings.get(field.name) is None
        ):
            return "missing_field"
    if "units" in msg:
        return "unit_declared"
    if device["kind"] == "meter" and abs(readings["power_kw"]) > device["rated_power_kw"] * 1.5:
        return "unit_undeclared"
    for field in contract.fields:
        value = readings.get(field.name)
        if value is None:
            continue
        if field.allowed_values is not None:
            assert value in field.allowed_values, (field.name, value)
        if field.minimum is not None:
            assert field.minimum <= value <= (field.maximum or math.inf), (field.name, value)
    return None


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    config = SimConfig(clients=1, branches=2, days=1, seed=5)
    simulate(config, tmp_path / "a")
    simulate(config, tmp_path / "b")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    simulate(SimConfig(clients=1, branches=2, days=1, seed=6), tmp_path / "c")
    a, c = _digest(tmp_path / "a"), _digest(tmp_path / "c")
    assert a["manifest.json"] != c["manifest.json"]


def test_manifest_fault_counts_equal_what_the_files_contain(faulty: SimResult) -> None:
    manifest = faulty.manifest
    devices = _devices(faulty)
    limit = manifest["created_for"]["payload_limit_bytes"]
    ledger = {
        (e["file"], e["line"]): e
        for e in map(json.loads, (faulty.out / "faults.ndjson").read_text().splitlines())
    }
    lines = _lines(faulty)
    assert len(lines) == manifest["lines"]
    detectable = {
        "oversized",
        "bad_utf8",
        "malformed_json",
        "non_finite",
        "unknown_device",
        "wrong_branch",
        "epoch_ms",
        "timestamp_future",
        "timestamp_ancient",
        "schema_drift",
        "missing_field",
        "unit_declared",
        "unit_undeclared",
    }
    seen: Counter[str] = Counter()
    by_device: dict[str, list[tuple[float, int, dict[str, Any], dict[str, Any]]]] = defaultdict(
        list
    )
    for line in lines:
        entry = ledger.get((line["file"], line["line"]))
        found = _classify(line, devices, limit)
        fault = entry["fault"] if entry else None
        if fault in detectable:
            assert found == fault, (line["file"], line["line"], fault, found)
        else:
            assert found is None, (line["file"], line["line"], fault, found)
        if fault:
            seen[fault] += 1
        if fault == "wrong_branch":
            continue  # another topic's file: no delivery order relative to this device's file
        try:
            msg = json.loads(line["raw"])
            by_device[msg["device_id"]].append((line["hour"], line["line"], msg, line))
        except (ValueError, KeyError, UnicodeDecodeError):
            pass  # malformed lines have no order to check
    assert len(ledger) == sum(seen.values())

    for msgs in by_device.values():
        msgs.sort(key=lambda item: (item[0], item[1]))  # delivery order
        highest = -1
        first_copy: dict[int, bytes] = {}
        for _hour, _line, msg, line in msgs:
            entry = ledger.get((line["file"], line["line"]))
            fault = entry["fault"] if entry else None
            if fault == "duplicate":
                assert first_copy.get(msg["seq"]) == line["raw"], "a duplicate repeats a message"
            elif fault == "late" and isinstance(msg["ts"], int):
                assert msg["ts"] < line["hour"], "a late message arrives at least an hour on"
            elif fault == "out_of_order":
                assert msg["seq"] < highest, "an out-of-order message follows a later one"
            first_copy.setdefault(msg["seq"], line["raw"])
            highest = max(highest, msg["seq"])

    state = Counter(f["fault"] for f in manifest["state_faults"])
    for name, spec in manifest["faults"].items():
        expected = seen[name] + state[name]
        assert spec["count"] == expected, (name, spec["count"], expected)
        assert spec["count"] > 0, f"fault {name} was not injected at all"
    per_branch = Counter(line["topic"].split("/")[3] for line in lines)
    for branch_id, info in manifest["branches"].items():
        records = info["records"]
        assert records["lines"] == per_branch[branch_id]
        assert records["lines"] == (
            sum(records["lake"].values())
            + sum(records["quarantine"].values())
            + records["duplicates"]
        )
    quarantine = Counter(e["reason_code"] for e in ledger.values() if e["route"] == "quarantine")
    assert dict(quarantine) == manifest["expected"]["quarantine"]


def _series(result: SimResult) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in _lines(result):
        msg = _strict(line["raw"])
        out[msg["device_id"]].append(msg)
    for msgs in out.values():
        msgs.sort(key=lambda m: m["seq"])
    return out


def test_seq_increases_by_one_per_device(clean: SimResult) -> None:
    for msgs in _series(clean).values():
        seqs = [m["seq"] for m in msgs]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_counters_monotonic_except_injected_resets(faulty: SimResult) -> None:
    resets = {
        (f["device_id"], f["first_seq"])
        for f in faulty.manifest["state_faults"]
        if f["fault"] == "counter_reset"
    }
    assert resets
    jumps = {
        (e["device_id"], e["seq"])
        for e in map(json.loads, (faulty.out / "faults.ndjson").read_text().splitlines())
    }
    devices = _devices(faulty)
    found = set()
    for device_id, msgs in _series_lenient(faulty).items():
        kind = devices[device_id]["kind"]
        counters = [
            f.name for f in REGISTRY.get(REGISTRY.dataset_of_kind[kind]).fields if f.counter
        ]
        good = [m for m in msgs if (device_id, m["seq"]) not in jumps]
        for prev, cur in itertools.pairwise(good):
            for name in counters:
                if cur["readings"][name] < prev["readings"][name]:
                    assert (device_id, cur["seq"]) in resets, (device_id, cur["seq"], name)
                    found.add((device_id, cur["seq"]))
    assert found == resets


def _series_lenient(result: SimResult) -> dict[str, list[dict[str, Any]]]:
    """Readable messages of registered devices, one per seq (faulty lines skipped)."""
    devices = _devices(result)
    out: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for line in _lines(result):
        try:
            msg = _strict(line["raw"])
        except ValueError:
            continue
        if (
            msg.get("device_id") in devices
            and isinstance(msg.get("readings"), dict)
            and all(isinstance(v, int | float | str) for v in msg["readings"].values())
        ):
            out[msg["device_id"]][msg["seq"]] = msg
    return {d: [m[s] for s in sorted(m)] for d, m in out.items()}


def test_energy_counters_agree_with_the_integral_of_power(clean: SimResult) -> None:
    devices = _devices(clean)
    checked = 0
    for device_id, msgs in _series(clean).items():
        kind = devices[device_id]["kind"]
        cadence_h = devices[device_id]["cadence_s"] / 3600.0
        power = np.array([m["readings"]["power_kw"] for m in msgs[1:]])
        pairs = {
            "meter": [
                ("energy_import_kwh", np.maximum(power, 0)),
                ("energy_export_kwh", np.maximum(-power, 0)),
            ],
            "dg": [("energy_generated_kwh", power)],
            "solar": [("energy_generated_kwh", power)],
        }[kind]
        for counter, flow in pairs:
            delta = msgs[-1]["readings"][counter] - msgs[0]["readings"][counter]
            integral = float(flow.sum() * cadence_h)
            if integral < 1.0:
                assert abs(delta - integral) < 0.05
                continue
            assert abs(delta - integral) / integral < 0.01, (device_id, counter, delta, integral)
            checked += 1
        if kind == "dg":
            running = sum(m["readings"]["status"] != "stopped" for m in msgs[1:]) * cadence_h
            hours = msgs[-1]["readings"]["run_hours_h"] - msgs[0]["readings"]["run_hours_h"]
            assert abs(hours - running) < 0.01
    assert checked >= 6


def test_truth_totals_match_the_counters(clean: SimResult) -> None:
    devices = _devices(clean)
    series = _series(clean)
    for branch_id, info in clean.manifest["branches"].items():
        meter = series[info["devices"]["meter"]]
        delta = (
            meter[-1]["readings"]["energy_import_kwh"] - meter[0]["readings"]["energy_import_kwh"]
        )
        first = (
            max(meter[0]["readings"]["power_kw"], 0)
            * devices[meter[0]["device_id"]]["cadence_s"]
            / 3600
        )
        assert math.isclose(delta + first, info["grid_import_kwh"], rel_tol=2e-3, abs_tol=0.01), (
            branch_id
        )
        if "dg" in info["devices"]:
            dg = series[info["devices"]["dg"]]
            tank = devices[dg[0]["device_id"]]["tank_capacity_l"]
            levels = [m["readings"]["fuel_level_pct"] for m in dg]
            burned = sum(max(a - b, 0) for a, b in itertools.pairwise(levels)) * tank / 100
            assert burned <= info["dg_fuel_l"] + 0.01
            assert info["dg_fuel_l"] - burned < 0.02 * max(info["dg_fuel_l"], 1.0)


def test_reference_data_is_valid_under_the_contracts(clean: SimResult) -> None:
    for dataset in ("clients", "branches", "devices", "contacts", "work_orders"):
        table = pq.read_table(clean.reference_dir / f"{dataset}.parquet")
        contract = REGISTRY.get(dataset)
        assert table.schema.equals(contract.arrow_schema(), check_metadata=False)
        assert table.num_rows > 0
        for field in contract.fields:
            values = [v for v in table.column(field.name).to_pylist() if v is not None]
            if field.required:
                assert len(values) == table.num_rows, (dataset, field.name)
            if field.pattern:
                import re

                assert all(re.fullmatch(field.pattern, v) for v in values), (dataset, field.name)
            if field.allowed_values:
                assert set(values) <= set(field.allowed_values)
    contacts = pq.read_table(clean.reference_dir / "contacts.parquet").to_pylist()
    assert all(c["email"] is None or c["email"].endswith(".example") for c in contacts)
    branches = {
        b["branch_id"] for b in pq.read_table(clean.reference_dir / "branches.parquet").to_pylist()
    }
    assert {d["branch_id"] for d in _devices(clean).values()} <= branches


# --- physics ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def week() -> list[tuple[Any, Any]]:
    config = SimConfig(clients=2, branches=4, days=7, start=date(2026, 11, 9), seed=3)
    fleet = build_fleet(config)
    return [
        (b, simulate_branch(b, config.start, 7, 60, rng_for(3, "physics", b.branch_id)))
        for b in fleet.branches
    ]


def test_grid_is_plausible(week: list[tuple[Any, Any]]) -> None:
    for _branch, s in week:
        on = ~s.outage
        v = s.meter["voltage_l1_v"][on]
        assert 225 < v.mean() < 240
        assert v.min() > 170
        assert v.max() < 260
        f = s.meter["frequency_hz"][on]
        assert abs(f.mean() - 50) < 0.05
        assert f.min() > 49.5
        assert f.max() < 50.5
        loaded = on & (np.abs(s.meter["power_kw"]) > 0.5)
        pf = s.meter["power_factor"][loaded]
        assert pf.min() >= 0.8
        assert pf.max() <= 0.99
        total = np.abs(s.meter["power_kw"][loaded])
        for phase in ("power_l1_kw", "power_l2_kw", "power_l3_kw"):
            share = np.abs(s.meter[phase][loaded]) / total
            assert 0.2 < share.mean() < 0.45, "three phases roughly balanced"
        # no grid, no import: the counter stands still through every outage interval
        steps = np.diff(s.meter["energy_import_kwh"])
        assert (steps[s.outage[1:]] == 0).all()
        assert (s.meter["power_kw"][s.outage] == 0).all()


def test_bank_load_follows_business_hours_and_weekends(week: list[tuple[Any, Any]]) -> None:
    bank = next((b, s) for b, s in week if b.sector == "bank")
    _branch, s = bank
    load = s.meter["power_kw"] + (s.solar.get("power_kw", 0) if s.solar else 0)
    minutes = np.arange(s.n) % 1440
    day = np.arange(s.n) // 1440  # 2026-11-09 is a Monday
    on = ~s.outage
    open_hours = on & (minutes >= 11 * 60) & (minutes < 15 * 60) & (day < 5)
    night = on & ((minutes < 5 * 60) | (minutes > 23 * 60))
    sunday = on & (day == 6) & (minutes >= 11 * 60) & (minutes < 15 * 60)
    assert load[open_hours].mean() > 3 * load[night].mean()
    assert load[sunday].mean() < 0.5 * load[open_hours].mean()


def test_dg_runs_through_outages_and_burns_in_proportion(week: list[tuple[Any, Any]]) -> None:
    with_dg = [(b, s) for b, s in week if s.dg and s.outage.any()]
    assert with_dg
    for branch, s in with_dg:
        status = s.dg["_status"]
        covered = s.outage & (np.roll(s.outage, 1))  # after the first (warm-up) interval
        assert (status[covered] == 3).all(), "running during outages"
        assert (s.dg["power_kw"][~s.outage] == 0).all(), "no load while the grid is on"
        running = status != 0
        burn = s.dg["_fuel_burn_l"]
        dg = branch.device("dg")
        expected = (0.07 * dg.rated_power_kw + 0.26 * s.dg["power_kw"]) / 60.0
        assert np.allclose(burn[running], expected[running])
        assert (burn[~running] == 0).all()
        level = s.dg["fuel_level_pct"]
        rises = np.flatnonzero(np.diff(level) > 0) + 1
        assert all(status[k] == 0 for k in rises), "refills only while stopped"


def test_solar_follows_the_sun_and_trips_on_outage(week: list[tuple[Any, Any]]) -> None:
    for _branch, s in week:
        if not s.solar:
            continue
        minutes = np.arange(s.n) % 1440
        power = s.solar["power_kw"]
        assert (power[(minutes < 5 * 60) | (minutes > 19 * 60)] == 0).all()
        assert (power[s.outage] == 0).all()
        daily = power.reshape(7, 1440)
        noon = np.argmax(daily.mean(axis=0))
        assert 10 * 60 < noon < 14 * 60, "peak near solar noon (IST)"


def test_dg_sets_carry_an_emission_control_and_certificates_deterministically() -> None:
    """The asset register the DG log's rules need (issue 16): every DG set has an emission
    control; CPCB IV+ sets and most RECD retrofits have a certificate; other kinds carry
    neither; the same seed gives the same register."""
    config = SimConfig(clients=3, branches=20, days=1, seed=13, dg_share=1.0)
    first = [d.row for d in build_fleet(config).devices]
    again = [d.row for d in build_fleet(config).devices]
    assert first == again
    sets = [r for r in first if r["kind"] == "dg"]
    assert len(sets) == 60
    controls = Counter(r["emission_control"] for r in sets)
    assert set(controls) <= {"none", "dual_fuel", "recd", "cpcb_iv_plus", "gas"}
    assert len(controls) >= 3, controls
    for r in sets:
        if r["emission_control"] == "cpcb_iv_plus":
            assert str(r["certificate_ref"]).startswith("TA-")
        if r["emission_control"] in ("none", "dual_fuel"):
            assert r["certificate_ref"] is None
    assert any(r["emission_control"] == "recd" and r["certificate_ref"] for r in sets)
    others = [r for r in first if r["kind"] != "dg"]
    assert all(r["emission_control"] is None and r["certificate_ref"] is None for r in others)
