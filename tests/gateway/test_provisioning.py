"""`energylake devices provision / revoke / list` from a real registry in a real Delta lake."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from contracts import load_registry
from devstack.mosquitto import MOSQUITTO, Mosquitto, fleet_registry
from gateway.config import DEFAULT_TOPIC_PATTERNS
from gateway.identity import IdentityBook
from gateway.provisioning import (
    ACL_FILE,
    BOOK_FILE,
    BROKER_CONF_FILE,
    GATEWAY_CREDENTIALS_FILE,
    PASSWORD_FILE,
    BrokerOptions,
    ProvisionError,
    mosquitto_hash,
    provision,
    read_password_file,
    session_memory_bytes,
    verify_mosquitto_hash,
    write_credentials,
)
from gateway.sessions import SESSION_STATE_FILE, SessionState, read_session_book
from lake.reference import load_reference
from lake.storage import Store
from simulator.config import SimConfig
from simulator.reference import Fleet, build_fleet
from simulator.run import write_reference
from tests.infra.test_mosquitto import _close, _connect, _two_devices

pytestmark = pytest.mark.timeout(120)

CONFIG = SimConfig(clients=2, branches=2, seed=11)
FILES = (PASSWORD_FILE, ACL_FILE, BOOK_FILE, GATEWAY_CREDENTIALS_FILE, BROKER_CONF_FILE)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


@pytest.fixture
def lake_fleet(tmp_path: Path) -> tuple[Path, Fleet]:
    """DATA_DIR with the simulated fleet's reference data loaded into its Delta lake."""
    data_dir = tmp_path / "data"
    fleet = build_fleet(CONFIG)
    registry = load_registry()
    write_reference(fleet, registry, tmp_path / "reference")
    load_reference(Store.from_uri(data_dir / "lake"), tmp_path / "reference", registry)
    return data_dir, fleet


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILES if (folder / name).exists()}


def test_provision_from_the_lake_writes_every_file_and_no_secret_on_screen(
    lake_fleet: tuple[Path, Fleet], tmp_path: Path
) -> None:
    data_dir, fleet = lake_fleet
    creds = write_credentials(tmp_path / "creds.json", fleet.tokens)
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    code, output = _run(
        "devices", "provision", "--data-dir", str(data_dir), "--credentials", str(creds)
    )
    assert code == 0, output
    folder = data_dir / "gateway"
    for token in fleet.tokens.values():
        assert token not in output
    gateway_password = json.loads((folder / GATEWAY_CREDENTIALS_FILE).read_text())["password"]
    assert gateway_password not in output
    assert stat.S_IMODE((folder / PASSWORD_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / GATEWAY_CREDENTIALS_FILE).stat().st_mode) == 0o600
    entries = read_password_file(folder / PASSWORD_FILE)
    tenants = {d.client_id for d in fleet.devices}
    # one session per tenant, and the shared one (topics without a tenant)
    accounts = {f"energylake-gateway.{t}" for t in tenants} | {"energylake-gateway"}
    assert len(accounts) == 3
    assert set(entries) == {*fleet.tokens, *accounts}
    sessions = read_session_book(folder / GATEWAY_CREDENTIALS_FILE)
    assert {s.username for s in sessions.sessions} == accounts
    for session in sessions.sessions:
        assert verify_mosquitto_hash(sessions.password, entries[session.username])
        assert session.scope == ("shared" if session.tenant is None else "tenant")
    for device_id, token in fleet.tokens.items():
        assert verify_mosquitto_hash(token, entries[device_id])
        assert not verify_mosquitto_hash(token + "x", entries[device_id])
    book = IdentityBook.load(folder / BOOK_FILE)
    assert len(book) == len(fleet.devices)
    for device in fleet.devices:
        ident = book.device(device.device_id)
        assert ident is not None
        assert (ident.client_id, ident.branch_id, ident.kind) == (
            device.client_id,
            device.branch_id,
            device.kind,
        )
        assert book.authenticate(fleet.tokens[device.device_id]) == ident
    acl = (folder / ACL_FILE).read_text()
    assert "emaas/v1/+/+/%u" not in acl  # no device may write under another tenant
    # every tenant-less pattern of the decoder catalogue, the device segment its account
    for line in (
        "pattern write tele/%u/+\n",
        "pattern write v1/devices/%u/+\n",
        "pattern write %u/status/+\n",
        "pattern write spBv1.0/+/NDATA/%u\n",
        "pattern write spBv1.0/+/DDATA/%u/+\n",
        "pattern read spBv1.0/+/NCMD/%u\n",
    ):
        assert line in acl
    for device in fleet.devices:  # each pinned to its own tenant and device segments
        assert (
            f"user {device.device_id}\ntopic write "
            f"emaas/v1/{device.client_id}/+/{device.device_id}/telemetry\n"
        ) in acl
    reads = "".join(
        "topic read " + "/".join("+" if s.startswith("{") else s for s in p.split("/")) + "\n"
        for p in DEFAULT_TOPIC_PATTERNS
    )
    assert "topic read emaas/v1/+/+/+/telemetry\ntopic read spBv1.0/+/NBIRTH/+\n" in reads
    for account in accounts:
        block = acl.split(f"user {account}\n", 1)[1]
        assert block.startswith(f"{reads}topic write spBv1.0/+/NCMD/+\n")
    assert "spBv1.0/#" not in acl  # the gateway does not read its own NCMD back
    conf = (folder / BROKER_CONF_FILE).read_text()
    for line in (
        "upgrade_outgoing_qos true",  # QoS 0 queued for the gateway, within the bounds
        "queue_qos0_messages false",  # (which would queue QoS 0 without any bound)
        "retain_available true",  # Tasmota's retained will must not be refused
        "max_queued_messages 300000",
        f"log_dest file {(folder / 'mosquitto.log').resolve()}",
    ):
        assert f"\n{line}\n" in conf, line


def test_a_version_1_account_keeps_its_password_and_becomes_the_shared_session(
    tmp_path: Path,
) -> None:
    fleet, registry = fleet_registry(CONFIG)
    folder = tmp_path / "gw"
    folder.mkdir()
    kept = "kept-" + hashlib.sha256(b"v1").hexdigest()[:8]
    (folder / GATEWAY_CREDENTIALS_FILE).write_text(
        json.dumps({"username": "energylake-gateway", "password": kept})
    )
    rows = registry.to_pylist()
    revoked = rows[0]["device_id"]
    rows[0]["status"] = "retired"
    report = provision(rows, folder, credentials=fleet.tokens)
    book = read_session_book(folder / GATEWAY_CREDENTIALS_FILE)
    assert book.password == kept
    assert report.gateway_sessions == len(book.sessions) == 3
    assert book.retired == ()  # the version 1 account lives on as the shared session
    entries = read_password_file(folder / PASSWORD_FILE)
    for session in book.sessions:
        assert verify_mosquitto_hash(kept, entries[session.username])
    assert revoked not in (folder / ACL_FILE).read_text()
    bad = [dict(r) for r in rows]
    bad[1]["device_id"] = "energylake-gateway.x"
    with pytest.raises(ProvisionError, match="collides with the gateway"):
        provision(bad, tmp_path / "other")


@pytest.mark.parametrize("client_id", ["a/b", "+", "#", "a b", "", "x" * 200, "-a"])
def test_a_client_id_that_cannot_name_an_account_or_a_topic_segment_is_refused(
    tmp_path: Path, client_id: str
) -> None:
    _fleet, registry = fleet_registry(CONFIG)
    rows = registry.to_pylist()
    rows[1]["client_id"] = client_id
    with pytest.raises(ProvisionError, match="client id") as info:
        provision(rows, tmp_path / "gw")
    assert "fix the registry" in str(info.value)
    assert not (tmp_path / "gw").exists()


def test_a_removed_tenant_keeps_its_account_until_the_gateway_drained_it(
    tmp_path: Path,
) -> None:
    fleet, registry = fleet_registry(CONFIG)
    folder = tmp_path / "gw"
    provision(registry, folder, credentials=fleet.tokens)
    rows = registry.to_pylist()
    gone = rows[-1]["client_id"]
    kept = [r for r in rows if r["client_id"] != gone]
    report = provision(kept, folder)
    session = f"energylake-gateway.{gone}"
    assert report.retired_sessions == (session,)
    assert session in read_password_file(folder / PASSWORD_FILE)
    assert f"user {session}\n" in (folder / ACL_FILE).read_text()
    assert provision(kept, folder).retired_sessions == (session,)  # not drained yet
    SessionState(folder / SESSION_STATE_FILE).mark_drained(session)  # what the gateway does
    report = provision(kept, folder)
    assert report.retired_sessions == ()
    assert session not in read_password_file(folder / PASSWORD_FILE)
    assert f"user {session}\n" not in (folder / ACL_FILE).read_text()


def test_provision_is_idempotent(lake_fleet: tuple[Path, Fleet], tmp_path: Path) -> None:
    data_dir, fleet = lake_fleet
    creds = str(write_credentials(tmp_path / "creds.json", fleet.tokens))
    args = ("devices", "provision", "--data-dir", str(data_dir), "--credentials", creds)
    assert _run(*args)[0] == 0
    folder = data_dir / "gateway"
    first = _snapshot(folder)
    assert set(first) == set(FILES)
    code, output = _run(*args)
    assert code == 0
    assert "nothing (already up to date)" in output
    assert _snapshot(folder) == first
    # Without the secrets, existing MQTT accounts are kept as they are.
    code, _ = _run("devices", "provision", "--data-dir", str(data_dir))
    assert code == 0
    assert _snapshot(folder) == first


def test_a_secret_not_matching_the_registry_is_refused_and_nothing_is_written(
    lake_fleet: tuple[Path, Fleet], tmp_path: Path
) -> None:
    data_dir, fleet = lake_fleet
    victim = sorted(fleet.tokens)[0]
    bad = dict(fleet.tokens, **{victim: hashlib.sha256(b"guess").hexdigest()})
    creds = write_credentials(tmp_path / "bad.json", bad)
    code, output = _run(
        "devices", "provision", "--data-dir", str(data_dir), "--credentials", str(creds)
    )
    assert code == ProvisionError.exit_code  # the root's one catch of EnergylakeError
    assert victim in output
    assert "does not match" in output
    assert bad[victim] not in output
    assert not (data_dir / "gateway").exists()


def test_a_secret_for_an_unknown_device_is_refused(
    lake_fleet: tuple[Path, Fleet], tmp_path: Path
) -> None:
    data_dir, fleet = lake_fleet
    creds = write_credentials(tmp_path / "c.json", dict(fleet.tokens, **{"em-00000000": "x"}))
    code, output = _run(
        "devices", "provision", "--data-dir", str(data_dir), "--credentials", str(creds)
    )
    assert code == ProvisionError.exit_code
    assert "not in the registry" in output


def test_an_empty_registry_is_a_clear_error(tmp_path: Path) -> None:
    code, output = _run("devices", "provision", "--data-dir", str(tmp_path))
    assert code == 2
    assert "energylake reference load" in output


def test_device_ids_that_would_widen_the_acl_are_refused(tmp_path: Path) -> None:
    _, registry = fleet_registry()
    rows = registry.to_pylist()
    rows[0]["device_id"] = "em-1/+"
    with pytest.raises(ProvisionError, match="cannot be an MQTT account"):
        provision(rows, tmp_path / "gw")
    assert not (tmp_path / "gw").exists()


def test_revocation_and_retirement_survive_provisioning_again(tmp_path: Path) -> None:
    fleet, registry = fleet_registry()
    rows = registry.to_pylist()
    retired = rows[1]["device_id"]
    rows[1]["status"] = "retired"
    folder = tmp_path / "gw"
    provision(rows, folder, credentials=fleet.tokens)
    revoked = rows[0]["device_id"]
    code, output = _run("devices", "revoke", revoked, "--out", str(folder))
    assert code == 0, output
    report = provision(rows, folder, credentials=fleet.tokens)
    assert set(report.revoked) == {revoked, retired}
    entries = read_password_file(folder / PASSWORD_FILE)
    assert revoked not in entries
    assert retired not in entries
    book = IdentityBook.load(folder / BOOK_FILE)
    assert book.authenticate(fleet.tokens[revoked]) is None
    assert book.authenticate(fleet.tokens[rows[2]["device_id"]]) is not None
    code, output = _run("devices", "list", "--out", str(folder))
    assert code == 0
    assert output.count("REVOKED") == 2


def test_revoking_an_unknown_device_is_a_clear_error(tmp_path: Path) -> None:
    fleet, registry = fleet_registry()
    provision(registry, tmp_path / "gw", credentials=fleet.tokens)
    code, output = _run("devices", "revoke", "em-nope", "--out", str(tmp_path / "gw"))
    assert code == ProvisionError.exit_code
    assert "not in the identity book" in output


def test_our_hash_format_is_mosquitto_passwds(tmp_path: Path) -> None:
    """mosquitto_passwd's entries verify with our code (ours are accepted by the broker:
    see test_mosquitto)."""
    tool = MOSQUITTO.with_name("mosquitto_passwd")
    found = shutil.which("mosquitto_passwd") or (str(tool) if tool.exists() else None)
    if found is None:
        pytest.fail("mosquitto_passwd not found: `make test` installs mosquitto")
    path = tmp_path / "pw"
    path.touch()
    subprocess.run([found, "-b", str(path), "dev", "s3cret"], check=True, capture_output=True)
    theirs = read_password_file(path)["dev"]
    assert verify_mosquitto_hash("s3cret", theirs)
    assert not verify_mosquitto_hash("s3creT", theirs)
    ours = mosquitto_hash("s3cret")
    assert ours.split("$")[1:3] == theirs.split("$")[1:3]  # $7$, same rounds
    assert len(ours) == len(theirs)


def test_revoke_cli_reloads_a_running_broker_and_drops_the_device(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    first, second = _two_devices(mosquitto)
    live = _connect(mosquitto, first.username, first.password)
    assert live.connected.is_set()
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{mosquitto.pid}\n")
    code, output = _run(
        "devices", "revoke", first.device_id, "--out", str(mosquitto.folder),
        "--pid-file", str(pid_file),
    )  # fmt: skip
    assert code == 0, output
    assert f"pid {mosquitto.pid}" in output
    assert live.disconnected.wait(5), "the broker kept the revoked device's connection"
    time.sleep(0.1)
    again = _connect(mosquitto, first.username, first.password)
    other = _connect(mosquitto, second.username, second.password)
    try:
        assert again.refused
        assert other.connected.is_set()
    finally:
        _close(live, again, other)


def test_the_gateway_sessions_queues_must_fit_the_brokers_memory_limit(tmp_path: Path) -> None:
    fleet, registry = fleet_registry(CONFIG)
    tight = BrokerOptions(memory_limit_bytes=256 * 1024 * 1024)  # 3 sessions x ~274 MiB
    with pytest.raises(ProvisionError, match="--broker-memory") as info:
        provision(registry, tmp_path / "gw", credentials=fleet.tokens, broker=tight)
    assert "3 gateway session(s)" in str(info.value)
    assert not (tmp_path / "gw").exists()
    fits = BrokerOptions(
        memory_limit_bytes=256 * 1024 * 1024,
        max_queued_messages=50_000,
        max_queued_bytes=32 * 1024 * 1024,
    )
    assert 3 * session_memory_bytes(fits) <= 0.75 * fits.memory_limit_bytes
    provision(registry, tmp_path / "gw", credentials=fleet.tokens, broker=fits)
    conf = (tmp_path / "gw" / BROKER_CONF_FILE).read_text()
    assert f"\nmemory_limit {256 * 1024 * 1024}\n" in conf
    assert "\nmax_queued_bytes 33554432\n" in conf


def test_a_new_tenants_devices_wait_for_a_gateway_session_holding_its_topics(
    tmp_path: Path,
) -> None:
    """Without a state file no gateway has run: every device gets its account. Once one
    has, a new tenant's devices get theirs only when a session holds the tenant's filter
    (else the broker would accept their messages with nobody subscribed)."""
    fleet, registry = fleet_registry(CONFIG)
    rows = registry.to_pylist()
    known, new = sorted({r["client_id"] for r in rows})
    folder = tmp_path / "gw"
    first = [r for r in rows if r["client_id"] == known]
    tokens = {r["device_id"]: fleet.tokens[r["device_id"]] for r in first}
    assert provision(first, folder, credentials=tokens).pending == ()
    state = SessionState(folder / SESSION_STATE_FILE)  # what the gateway records on SUBACK
    state.update(f"energylake-gateway.{known}", added=[f"emaas/v1/{known}/+/+/telemetry"])
    report = provision(rows, folder, credentials=fleet.tokens)
    newcomers = {r["device_id"] for r in rows if r["client_id"] == new}
    assert set(report.pending) == newcomers
    assert not newcomers & set(read_password_file(folder / PASSWORD_FILE))
    assert f"energylake-gateway.{new}" in read_password_file(folder / PASSWORD_FILE)
    state.update(f"energylake-gateway.{new}", added=[f"emaas/v1/{new}/+/+/telemetry"])
    assert provision(rows, folder, credentials=fleet.tokens).pending == ()
    assert newcomers <= set(read_password_file(folder / PASSWORD_FILE))
