"""Onboarding (issue 17, point 4): ``energylake devices add`` checks a device against the
devices contract, the decoder catalogue and the registry, writes the registry and issues
its secret once; ``devices show`` shows it without the secret; ``devices retire`` marks it
retired and revokes it, a dry run unless --apply. Every change is audited."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.query import read_records
from cli.app import app
from contracts import load_registry
from gateway.identity import IdentityBook
from gateway.provisioning import BOOK_FILE, PASSWORD_FILE, read_credentials
from lake.reference import load_device_registry, load_reference
from lake.storage import Store
from simulator.config import SimConfig
from simulator.reference import build_fleet
from simulator.run import write_reference

pytestmark = pytest.mark.timeout(180)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def lake(tmp_path: Path) -> tuple[Path, str, str]:
    """DATA_DIR with a small fleet's reference data loaded; (data_dir, client, branch)."""
    data_dir = tmp_path / "data"
    fleet = build_fleet(SimConfig(clients=1, branches=1, seed=3))
    registry = load_registry()
    write_reference(fleet, registry, tmp_path / "reference")
    load_reference(Store.from_uri(data_dir / "lake"), tmp_path / "reference", registry)
    device = fleet.devices[0]
    return data_dir, device.client_id, device.branch_id


def _registry(data_dir: Path) -> dict[str, dict[str, object]]:
    table = load_device_registry(Store.from_uri(data_dir / "lake"))
    return {str(r["device_id"]): r for r in table.to_pylist()}


def _add(data_dir: Path, *args: str) -> tuple[int, str]:
    return _run("devices", "add", "--data-dir", str(data_dir), *args)


def test_a_tasmota_plug_is_onboarded_shown_provisioned_and_retired(
    lake: tuple[Path, str, str], tmp_path: Path
) -> None:
    data_dir, client, branch = lake
    creds = tmp_path / "creds.json"
    code, out = _add(
        data_dir,
        "plug-7",
        "--kind", "meter",
        "--client", client,
        "--branch", branch,
        "--manufacturer", "Itead",
        "--model", "Sonoff POW R2",
        "--rated-power-kw", "3.5",
        "--format", "tasmota",
        "--mqtt-name", "tasmota_5A9AE8",
        "--profile", "single_phase+no_export",
        "--cadence-s", "300",
        "--credentials", str(creds),
    )  # fmt: skip
    assert code == 0, out
    row = _registry(data_dir)["plug-7"]
    assert (row["kind"], row["payload_format"], row["mqtt_name"], row["status"]) == (
        "meter",
        "tasmota",
        "tasmota_5A9AE8",
        "active",
    )
    secret = read_credentials(creds)["plug-7"]
    assert hashlib.sha256(secret.encode()).hexdigest() == row["http_token_sha256"]
    assert secret not in out  # issued once, into the 0600 file, never on screen
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    # show: the topics it publishes on, under its MQTT name; no secret, no digest
    code, out = _run("devices", "show", "plug-7", "--data-dir", str(data_dir))
    assert code == 0, out
    assert "tele/tasmota_5A9AE8/SENSOR" in out
    assert str(row["http_token_sha256"]) not in out
    assert "provisioned" in out
    # provision: the broker account is its MQTT name, checked against the digest
    code, out = _run(
        "devices", "provision", "--data-dir", str(data_dir), "--credentials", str(creds)
    )
    assert code == 0, out
    folder = data_dir / "gateway"
    assert "tasmota_5A9AE8:" in (folder / PASSWORD_FILE).read_text()
    book = IdentityBook.load(folder / BOOK_FILE)
    ident = book.authenticate(secret)
    assert ident is not None
    assert ident.device_id == "tasmota_5A9AE8"
    # retire: a dry run first, then --apply
    code, out = _run("devices", "retire", "plug-7", "--data-dir", str(data_dir))
    assert code == 0, out
    assert "dry run" in out
    assert _registry(data_dir)["plug-7"]["status"] == "active"
    code, out = _run("devices", "retire", "plug-7", "--apply", "--data-dir", str(data_dir))
    assert code == 0, out
    assert _registry(data_dir)["plug-7"]["status"] == "retired"
    revoked = IdentityBook.load(folder / BOOK_FILE).device("tasmota_5A9AE8")
    assert revoked is not None
    assert revoked.revoked
    assert "tasmota_5A9AE8:" not in (folder / PASSWORD_FILE).read_text()
    events = [
        (r["event"], r.get("device_id")) for r in read_records(data_dir / "audit" / "devices")
    ]
    assert events == [("device_added", "plug-7"), ("device_retired", "plug-7")]
    code, out = _run("devices", "retire", "plug-7", "--apply", "--data-dir", str(data_dir))
    assert code == 1
    assert "already retired" in out


def test_a_device_that_cannot_be_added_is_refused_with_every_reason(
    lake: tuple[Path, str, str],
) -> None:
    data_dir, client, branch = lake
    existing = next(iter(_registry(data_dir)))
    before = _registry(data_dir)
    code, out = _add(
        data_dir,
        "Bad_ID",
        "--kind", "solar",
        "--client", client,
        "--branch", "nowhere",
        "--manufacturer", "Shelly",
        "--model", "Pro 3EM",
        "--rated-power-kw", "9000",
        "--format", "shelly_pro3em",
        "--profile", "half_phase",
        "--register-map", "eastron_sdm630",
    )  # fmt: skip
    assert code == 1
    out = " ".join(out.split())  # rich wraps long lines
    for reason in (
        "device_id: 'Bad_ID' does not match",
        "rated_power_kw: 9000.0 is above 5000",
        f"branch_id: client {client} has no branch nowhere",
        "the shelly_pro3em decoder never supplies energy_generated_kwh, voltage_v, current_a",
        "profile: half_phase is not a profile of solar_readings",
        "a Modbus device needs modbus_endpoint, modbus_unit_id and register_map together",
        "register_map: eastron_sdm630 serves meter, not solar",
    ):
        assert reason in out, (reason, out)
    for args, reason in (
        ((existing, "--format", "canonical"), f"device_id: {existing} is already registered"),
        (("tele", "--format", "tasmota"), "'tele' is a literal segment of a topic pattern"),
        (("m-77", "--format", "acme"), "payload_format: no decoder 'acme' in the catalogue"),
        (
            ("m-78", "--format", "sparkplug_b", "--edge-node", "edge-9"),
            "edge_node: edge-9 is not an active registered device",
        ),
        (
            ("m-79", "--mqtt-name", existing),
            f"mqtt_name: {existing} is already the name device {existing} publishes under",
        ),
        (("m-80", "--mqtt-name", "meter_80"), "the canonical envelope names its device by id"),
    ):
        code, out = _add(
            data_dir,
            args[0],
            "--kind", "meter",
            "--client", client,
            "--branch", branch,
            "--manufacturer", "Acme",
            "--model", "M1",
            "--rated-power-kw", "50",
            *args[1:],
        )  # fmt: skip
        assert code == 1, out
        assert reason in " ".join(out.split()), (reason, out)
    assert _registry(data_dir) == before  # nothing written
    assert not (data_dir / "audit" / "devices").exists() or not list(
        read_records(data_dir / "audit" / "devices")
    )


def test_a_modbus_meter_and_a_sparkplug_device_behind_its_edge_node(
    lake: tuple[Path, str, str], tmp_path: Path
) -> None:
    data_dir, client, branch = lake
    common = ["--client", client, "--branch", branch, "--credentials", str(tmp_path / "c.json")]
    code, out = _add(
        data_dir,
        "sdm-1",
        "--kind", "meter",
        "--manufacturer", "Eastron",
        "--model", "SDM630",
        "--rated-power-kw", "80",
        "--modbus-endpoint", "10.1.2.3:502",
        "--modbus-unit-id", "1",
        "--register-map", "eastron_sdm630",
        *common,
    )  # fmt: skip
    assert code == 0, out
    assert "polled by `energylake modbus poll`" in out
    edge = ["--manufacturer", "Acme", "--model", "Edge", "--rated-power-kw", "10"]
    code, out = _add(
        data_dir, "edge-1", "--kind", "meter", "--format", "sparkplug_b",
        "--profile", "by_exception", *edge, *common,
    )  # fmt: skip
    assert code == 0, out
    code, out = _add(
        data_dir, "m-21", "--kind", "meter", "--format", "sparkplug_b", "--edge-node", "edge-1",
        *edge, *common,
    )  # fmt: skip
    assert code == 0, out
    code, out = _run("devices", "show", "m-21", "--data-dir", str(data_dir))
    assert "spBv1.0/+/DDATA/edge-1/m-21" in out
    assert set(json.loads((tmp_path / "c.json").read_text())["devices"]) == {
        "sdm-1",
        "edge-1",
        "m-21",
    }
