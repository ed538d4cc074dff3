"""The readings datasets come from the contracts: a contract that names a ``deviceKind`` is
one, so a new kind of device is a new contract (and a kind in the device registry's enum),
with no code to change. A copy of solar_readings as ``wind_readings`` (kind ``wind``) is
picked up by the registry, the pipeline (its table set), the lake operations and the status.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from analytics.gaps import seq_gaps
from analytics.queries import lake_tables, read_frame
from contracts import CONTRACTS_DIR, ContractInvalidError, lint_file, lint_paths, load_registry
from lake.layout import tenants
from lake.reference import load_reference
from lake.storage import Store
from pipelines.process import process_once
from pipelines.settings import load_settings
from pipelines.status import collect_status
from simulator.config import FaultRates, SimConfig
from simulator.landing import simulate_to_landing

_KINDS = "enum: [{value: meter}, {value: dg}, {value: solar}]"


def _contracts(to: Path, *, kind: str = "wind", enum_kinds: str = ", {value: wind}") -> Path:
    """The packaged contracts, plus wind_readings (solar_readings under another name and
    kind), with ``enum_kinds`` added to the device registry's kinds."""
    shutil.copytree(CONTRACTS_DIR, to, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    solar = (to / "solar_readings.odcs.yaml").read_text()
    assert solar.count("value: solar") == 1
    wind = solar.replace("solar_readings", "wind_readings").replace(
        "value: solar", f"value: {kind}"
    )
    (to / "wind_readings.odcs.yaml").write_text(wind)
    devices = (to / "devices.odcs.yaml").read_text()
    assert devices.count(_KINDS) == 1
    (to / "devices.odcs.yaml").write_text(
        devices.replace(_KINDS, _KINDS.replace("}]", "}" + enum_kinds + "]"))
    )
    return to


def test_the_packaged_readings_datasets_are_the_contracts_with_a_device_kind() -> None:
    registry = load_registry()
    assert registry.dataset_of_kind == {
        "meter": "meter_readings",
        "dg": "dg_readings",
        "solar": "solar_readings",
    }
    assert registry.readings_datasets == ("meter_readings", "dg_readings", "solar_readings")
    assert registry.get("quarantine").device_kind is None
    assert registry.get("devices").device_kind is None


def test_a_new_readings_contract_is_a_new_readings_dataset(tmp_path: Path) -> None:
    registry = load_registry(_contracts(tmp_path / "contracts"))
    assert registry.dataset_of_kind["wind"] == "wind_readings"
    # in the order of the device registry's kind enum (wind was added last)
    assert registry.readings_datasets[-1] == "wind_readings"
    assert registry.get("wind_readings").device_kind == "wind"


def test_a_kind_no_device_can_have_is_refused(tmp_path: Path) -> None:
    folder = _contracts(tmp_path / "contracts", enum_kinds="")
    with pytest.raises(ContractInvalidError) as caught:
        load_registry(folder)
    (issue,) = caught.value.issues
    assert issue.code == "E065"
    assert issue.file.endswith("wind_readings.odcs.yaml")
    assert "devices.kind" in str(caught.value)
    # `energylake contracts lint` on the folder says the same
    assert [(i.code, i.file) for i in lint_paths([folder])] == [(issue.code, issue.file)]


def test_a_kind_of_device_without_a_readings_contract_is_refused(tmp_path: Path) -> None:
    folder = _contracts(tmp_path / "contracts")
    (folder / "wind_readings.odcs.yaml").unlink()
    with pytest.raises(ContractInvalidError) as caught:
        load_registry(folder)
    (issue,) = caught.value.issues
    assert issue.code == "E066"
    assert issue.file.endswith("devices.odcs.yaml")
    assert "'wind'" in issue.message
    assert lint_paths([folder]) == [issue]
    assert lint_paths([folder / "devices.odcs.yaml"]) == []  # one file: no folder checks


def test_two_contracts_of_one_kind_are_refused(tmp_path: Path) -> None:
    folder = _contracts(tmp_path / "contracts", kind="solar", enum_kinds="")
    with pytest.raises(ContractInvalidError) as caught:
        load_registry(folder)
    (issue,) = caught.value.issues
    assert issue.code == "E064"
    assert "solar_readings" in issue.message


def test_a_device_kind_that_is_not_a_name_is_a_lint_error(tmp_path: Path) -> None:
    folder = _contracts(tmp_path / "contracts", kind="'Wind Turbine'")
    codes = [issue.code for issue in lint_file(folder / "wind_readings.odcs.yaml")]
    assert codes == ["E063"]


def test_the_pipeline_lake_and_status_pick_up_a_new_readings_contract(tmp_path: Path) -> None:
    """The simulator's solar inverters registered as kind ``wind``: their readings land in
    wind_readings, which the lake operations and the status then list, with no code change."""
    folder = _contracts(tmp_path / "contracts")
    registry = load_registry(folder)
    settings = load_settings(data_dir=tmp_path / "data", contracts_dir=folder, quality_gate=False)
    yesterday = datetime.now(UTC) - timedelta(days=1)  # inside the status window
    config = SimConfig(
        clients=1,
        branches=1,
        days=1,
        start=yesterday.date(),
        cadence_s=900,
        solar_share=1.0,
        faults=FaultRates(),
    )
    result = simulate_to_landing(config, settings.sim_dir, settings.landing)
    devices_file = result.reference_dir / "devices.parquet"
    devices = pl.read_parquet(devices_file)
    assert (devices["kind"] == "solar").sum() == 1
    devices.with_columns(pl.col("kind").replace("solar", "wind")).write_parquet(devices_file)
    store = Store.from_uri(settings.lake)
    load_reference(store, result.reference_dir, registry)

    assert process_once(settings) is not None

    (tenant,) = tenants(store)
    wind = read_frame(store, tenant, "wind_readings")
    assert wind.height > 0
    assert wind.columns == registry.get("wind_readings").field_names
    assert read_frame(store, tenant, "solar_readings").is_empty()
    assert (tenant, "wind_readings") in lake_tables(store, registry)
    since = datetime.combine(config.start, datetime.min.time(), UTC)
    gaps = seq_gaps(store, since, registry=registry)
    (inverter,) = gaps.filter(pl.col("dataset") == "wind_readings").iter_rows(named=True)
    assert inverter["device_id"] in wind["device_id"].to_list()
    assert inverter["readings"] > 0
    # `energylake status` counts the inverter: it reads the settings' contracts
    status = collect_status(settings, window=timedelta(days=3))
    seen = {d for t, d in lake_tables(store, registry) if d != "quarantine"}
    in_lake = pl.concat([read_frame(store, tenant, d, ["device_id"]) for d in seen])
    assert status.devices == in_lake["device_id"].n_unique() == gaps.height
