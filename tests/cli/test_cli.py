"""The command line as a user runs it (a real process), and the settings precedence."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from contracts import ContractNotFoundError, UnknownPurposeError
from devstack.gateway import make_book, running_gateway, wait_for
from pipelines.settings import load_settings

ENERGYLAKE = str(Path(sys.executable).with_name("energylake"))
COMMANDS = [
    [],
    ["contracts"],
    ["contracts", "lint"],
    ["contracts", "list"],
    ["contracts", "show"],
    ["contracts", "purposes"],
    ["config"],
    ["config", "show"],
    ["simulate"],
    ["demo"],
]


def run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ENERGYLAKE, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def open_to_others(root: Path) -> list[str]:
    """Every file or folder under ``root`` (itself included) that group or others may read,
    write or enter, with its mode; symlinks are not followed."""
    found = []
    for folder, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(folder) / name
            mode = stat.S_IMODE(path.lstat().st_mode)
            if not stat.S_ISLNK(path.lstat().st_mode) and mode & 0o077:
                found.append(f"{path.relative_to(root)} {mode:04o}")
    return found


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == "energylake 0.1.0"


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert "--help" in result.stdout


def test_show_plan_for_a_purpose() -> None:
    result = run("contracts", "show", "contacts", "--purpose", "benchmarking")
    assert result.returncode == 0, result.stderr
    assert "contacts@1.2.0 for purpose benchmarking" in result.stdout
    rows = {
        line.split("│")[1].strip(): line
        for line in result.stdout.splitlines()
        if line.count("│") >= 4
    }
    assert "pseudonymised" in rows["name"]
    assert "masked" in rows["mobile"]
    assert "dropped" in rows["role"]


def test_show_refuses_an_unknown_purpose_and_dataset() -> None:
    result = run("contracts", "show", "contacts", "--purpose", "marketing")
    assert result.returncode == UnknownPurposeError.exit_code  # the root's one catch
    assert "unknown purpose 'marketing'" in result.stderr
    result = run("contracts", "show", "invoices")
    assert result.returncode == ContractNotFoundError.exit_code
    assert "no contract for dataset 'invoices'" in result.stderr


def test_simulate_writes_files_and_a_manifest(tmp_path: Path) -> None:
    result = run(
        "simulate",
        "--clients",
        "1",
        "--branches",
        "1",
        "--out",
        str(tmp_path / "sim"),
        "--fault",
        "duplicate=0.05",
        "--faults",
        "none",
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "sim" / "manifest.json").read_text())
    assert manifest["faults"]["duplicate"]["count"] > 0
    assert manifest["faults"]["malformed_json"]["count"] == 0
    assert list((tmp_path / "sim" / "telemetry").rglob("*.ndjson"))


@pytest.mark.slow
def test_simulate_rejects_bad_options(tmp_path: Path) -> None:
    assert run("simulate", "--fault", "gremlins=0.1", "--out", str(tmp_path)).returncode == 2
    assert run("simulate", "--fault", "duplicate", "--out", str(tmp_path)).returncode == 2
    assert run("simulate", "--clients", "0", "--out", str(tmp_path)).returncode == 2


def test_settings_precedence_flag_env_file_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ENERGYLAKE_DATA_DIR", raising=False)
    monkeypatch.delenv("ENERGYLAKE_CONFIG", raising=False)
    assert load_settings().data_dir == Path("data")
    (tmp_path / "energylake.toml").write_text('data_dir = "from-file"\nlog_level = "DEBUG"\n')
    assert load_settings().data_dir == Path("from-file")
    monkeypatch.setenv("ENERGYLAKE_DATA_DIR", "from-env")
    settings = load_settings()
    assert settings.data_dir == Path("from-env")
    assert settings.log_level == "DEBUG"  # the file still fills what env does not set
    assert load_settings(data_dir=Path("from-flag")).data_dir == Path("from-flag")
    assert load_settings(data_dir=None).data_dir == Path("from-env")
    assert load_settings().lake == str(Path("from-env") / "lake")


def test_explicit_config_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENERGYLAKE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(FileNotFoundError, match=r"missing\.toml"):
        load_settings()
    result = run("--config", str(tmp_path / "nope.toml"), "config", "show")
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def test_unknown_setting_in_the_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('data_dri = "typo"\n')
    result = run("--config", str(config), "config", "show")
    assert result.returncode == 2
    assert "data_dri" in result.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    old = os.umask(0o022)  # what a login shell usually has: the demo sets its own
    try:
        result = run(
            # two tenants: a device's claim of the other tenant's topic is refused by the
            # broker's ACL (MQTT 5: PUBACK 0x87), counted as refused, never acknowledged
            "demo", "--clients", "2", "--branches", "1", "--data-dir", str(tmp_path),
            cwd=tmp_path, env={**os.environ, "COLUMNS": "80"},
        )  # fmt: skip
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    # The governed query it prints is one line (at 80 columns) that runs as pasted, as the
    # principal the demo granted: masked phones, pseudonymised technicians.
    (command,) = [line for line in result.stdout.splitlines() if " sql --data-dir " in line]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
    pasted = subprocess.run(
        ["bash", "-c", command + " --format csv"],
        capture_output=True, text=True, check=False, timeout=60, cwd="/", env=env,
    )  # fmt: skip
    assert pasted.returncode == 0, (command, pasted.stderr)
    lines = pasted.stdout.splitlines()
    assert lines[0].startswith('"status","opened_at","device_id","technician_name"')
    assert len(lines) >= 2  # the header and at least one work order
    assert all(',"ps_' in line and "*" in line for line in lines[1:]), lines
    assert "zero bytes left" in result.stdout  # the subject request's byte scan
    assert "what each purpose sees" in result.stdout
    assert "access: intact" in result.stdout  # audit verify's verdict on the access log
    assert "access_denied benchmark.team for field_service: denied" in result.stdout
    # Over the real path every injected fault is accounted for: quarantined, or refused
    # at the edge; and everything acknowledged is in the lake, the quarantine or counted.
    assert "differs" not in result.stdout, result.stdout
    assert "= acknowledged" in result.stdout
    deliveries = (tmp_path / "sim" / "deliveries.ndjson").read_text()
    assert '"detail":"PUBACK Not authorized"' in deliveries
    # The lineage of one table version, back to its landing segments, and the gate's day.
    assert "producing run(s)" in result.stdout
    assert "segments: " in result.stdout
    assert "gateway-" in result.stdout  # a segment the gateway wrote
    assert "quality gate over the day" in result.stdout
    assert (tmp_path / "quality" / "index.html").is_file()
    assert (tmp_path / "sim" / "manifest.json").exists()
    keys = list((tmp_path / "keys").glob("*.key"))
    assert len(keys) == 1
    assert keys[0].stat().st_mode & 0o777 == 0o600
    # Nothing the demo made (landing segments, raw archive, quarantine, audit with client
    # addresses, contacts, the broker's files and database, logs) is open to group or others.
    assert open_to_others(tmp_path) == []
    # and every file it made belongs to a storage area with an owner and a retention
    from contracts import load_registry
    from retention.areas import uncovered

    settings = load_settings(data_dir=tmp_path)
    assert uncovered(settings, load_registry(), settings.lake_store()) == []
    # The sustainability reports of the day: a BRSR report (saying a day is not a year) and
    # the DG log, each verified; a figure explained down to the landing segments that
    # carried its readings through the gateway
    assert "not a financial year" in result.stdout
    assert result.stdout.count("report verify") == 2
    assert result.stdout.count(": identical: ") == 2
    (brsr,) = (tmp_path / "reports").glob("brsr-*")
    assert {"report.json", "report.html", "report.pdf"} <= {p.name for p in brsr.iterdir()}
    assert list((tmp_path / "reports").glob("dg-log-*/*.pdf"))
    doc = orjson.loads((brsr / "report.json").read_bytes())
    branch = max(doc["branches"], key=lambda b: b["grid_import_kwh"])
    manifest = orjson.loads((tmp_path / "sim" / "manifest.json").read_bytes())
    explained = run(
        "report", "explain", str(brsr), "--figure", "D", "--branch", branch["branch_id"],
        "--day", str(manifest["created_for"]["start"]), "--as", "sustainability.team",
        "--json", "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert explained.returncode == 0, explained.stderr
    found = orjson.loads(explained.stdout)
    steps = sum(r["energy_import_kwh_step"] or 0.0 for r in found["readings"])
    assert steps > 0
    segments = [s for run_segments in found["segments"].values() for s in run_segments]
    assert segments
    assert any("gateway-" in s for s in segments)  # what the gateway wrote to the landing log


def test_simulate_landing_creates_nothing_others_can_read(tmp_path: Path) -> None:
    # The test's own umask lets files be 0644: the command sets its own, once, at start.
    old = os.umask(0o022)
    try:
        result = run(
            "simulate", "--landing", "--clients", "1", "--branches", "1",
            "--data-dir", str(tmp_path / "data"),
        )  # fmt: skip
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "data" / "landing" / "closed").glob("*.seg"))
    assert open_to_others(tmp_path / "data") == []


def test_the_gateway_module_entry_point_creates_nothing_others_can_read(tmp_path: Path) -> None:
    # `python -m cli` (what `energylake run` supervises, and the tests run):
    # landing segments and the audit log (client addresses) are the owner's only.
    data = tmp_path / "data"
    tokens = make_book(data / "gateway" / "identities.json", [("m-1", "c-1", "b-1")])
    body = orjson.dumps(
        {"device_id": "m-1", "seq": 1, "ts": 1_795_000_000_000_000, "readings": {"power_kw": 1.0}}
    )
    old = os.umask(0o022)
    try:
        with running_gateway(data, {"ENERGYLAKE_GATEWAY_ROLL_SECONDS": "0.2"}, ["--no-mqtt"]) as gw:
            assert gw.post(body, tokens["m-1"]).status == 202
            assert gw.post(body, "not-a-token").status == 401
            assert gw.terminate() == 0
    finally:
        os.umask(old)
    assert wait_for(lambda: list((data / "audit").rglob("*.jsonl")), 5)
    assert list((data / "landing" / "closed").glob("*.seg"))
    assert open_to_others(data / "landing") == []
    assert open_to_others(data / "audit") == []


def test_s3_encryption_settings(tmp_path: Path) -> None:
    assert load_settings().s3_encryption().put_args() == {"ServerSideEncryption": "AES256"}
    kms = load_settings(s3_sse="aws:kms", s3_sse_kms_key_id="alias/lake").s3_encryption()
    assert kms.put_args() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/lake"}
    assert load_settings(s3_sse="none").s3_encryption().put_args() == {}
    config = tmp_path / "bad.toml"
    config.write_text('s3_sse = "AES256"\ns3_sse_kms_key_id = "alias/lake"\n')
    result = run("--config", str(config), "config", "show")
    assert result.returncode == 2
    assert "s3_sse_kms_key_id is set but s3_sse is AES256" in result.stderr
    config.write_text('s3_sse = "aes"\n')
    result = run("--config", str(config), "config", "show")
    assert result.returncode == 2
    assert "s3_sse" in result.stderr


def test_simulate_landing_prints_only_what_exists_and_ledgers_its_faults(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {**os.environ, "COLUMNS": "1000"}  # one line per path, whatever their length
    result = subprocess.run(
        [ENERGYLAKE, "simulate", "--landing", "--clients", "1", "--branches", "2",
         "--data-dir", str(data)],
        capture_output=True, text=True, check=False, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = [w.rstrip(",;)") for w in result.stdout.split() if w.startswith(str(tmp_path))]
    assert len(printed) >= 4, result.stdout  # segments, reference, manifest, ledger
    assert [p for p in printed if not Path(p).exists()] == [], result.stdout
    assert not (data / "sim" / "telemetry").exists()  # no NDJSON on this route
    assert str(data / "landing" / "closed") in printed
    ledger = (data / "sim" / "faults.ndjson").read_text().splitlines()
    assert ledger
    assert {"segment", "offset"} <= set(json.loads(ledger[0]))


@pytest.mark.parametrize("width", [80, 200])
def test_the_sql_command_is_one_line_that_runs(tmp_path: Path, width: int) -> None:
    import io

    from rich.console import Console

    from cli import render

    # A data folder whose path needs quoting for the shell; a query with quotes of its own.
    data = tmp_path / "it's a $HOME lake"
    out = io.StringIO()
    query = "SELECT count(*) FROM work_orders WHERE status = 'open'"
    render.show_sql_hint(
        Console(file=out, width=width), data, "benchmark.team", "benchmarking", query
    )
    lines = [line for line in out.getvalue().splitlines() if " sql " in line]
    assert len(lines) == 1, out.getvalue()
    (command,) = lines
    assert len(command) > width  # it would have been wrapped
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
    result = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, check=False, timeout=60,
        cwd="/", env=env,
    )  # fmt: skip
    # No grant in an empty lake: refused (exit 6), and the refusal recorded in THAT folder,
    # so the quoted --data-dir arrived whole.
    assert result.returncode == 6, (command, result.stderr)
    assert "'benchmark.team' has no grant" in result.stderr
    assert list((data / "audit" / "access").glob("*.jsonl"))


def _groups() -> list[tuple[list[str], Any]]:
    """Every command group of the app (the root included) with its path, walking typer's
    click tree."""
    import typer

    from cli.app import app

    found: list[tuple[list[str], Any]] = []

    def walk(command: Any, path: list[str]) -> None:
        if hasattr(command, "commands"):
            found.append((path, command))
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def _leaf_names() -> set[str]:
    return {
        name
        for _path, group in _groups()
        for name, sub in group.commands.items()
        if not hasattr(sub, "commands")
    }


def test_every_command_a_help_lists_exists() -> None:
    from typer.testing import CliRunner

    from cli.app import app

    runner = CliRunner()
    leaves = _leaf_names()
    assert len(_groups()) >= 8
    for path, group in _groups():
        shown = runner.invoke(app, [*path, "--help"])
        assert shown.exit_code == 0, (path, shown.output)
        # The commands panel: one row per command, then each one's own --help.
        panel = shown.output.split("Commands ", 1)[1].split("╰", 1)[0]
        listed = re.findall(r"^│ (\S+) ", panel, flags=re.MULTILINE)
        assert sorted(listed) == sorted(group.commands), path
        for name in listed:
            sub = runner.invoke(app, [*path, name, "--help"])
            assert sub.exit_code == 0, ([*path, name], sub.output)
            assert "Usage:" in sub.output
        # The group's own description: when it enumerates commands ("X: a, b, c."),
        # every one of them is a command of this group.
        _head, colon, rest = (group.help or "").partition(": ")
        items = [i.strip().split(" ")[0].strip(".") for i in rest.split(",")] if colon else []
        if any(i in leaves for i in items):
            assert [i for i in items if i not in group.commands] == [], (path, group.help)


def test_the_broker_reads_its_private_files_at_start_and_on_reload(tmp_path: Path) -> None:
    # What a command's umask makes of provisioning (files 0600, folders 0700): the broker
    # (started as root with `user` = the provisioning account) still reads its config,
    # password file and ACL, at start and again on SIGHUP after a revocation.
    from devstack.mosquitto import start_mosquitto
    from tests.e2e.conftest import connack

    old = os.umask(0o077)
    try:
        broker = start_mosquitto(tmp_path / "data" / "gateway")
        try:
            first, second = list(broker.devices.values())[:2]
            assert connack(broker, first.username, first.password) == "Success"
            broker.revoke(first.device_id)
            assert connack(broker, first.username, first.password) != "Success"
            assert connack(broker, second.username, second.password) == "Success"
            assert broker.proc is not None
            assert broker.proc.poll() is None
        finally:
            broker.close()
    finally:
        os.umask(old)
    assert open_to_others(tmp_path / "data") == []
