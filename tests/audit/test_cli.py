"""``energylake audit verify | log | prune`` as an operator runs them (issue 14, point 8)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from typer.testing import CliRunner

from audit.chain import ChainWriter
from audit.log import AuditLog
from cli.app import app

ENERGYLAKE = str(Path(sys.executable).with_name("energylake"))


def _accesses(data_dir: Path) -> Path:
    folder = data_dir / "audit" / "access"
    writer = ChainWriter(folder, component="access", fsync=True)
    rows = [
        ("2025-03-01T09:00:00.000000Z", "analyst-1", "billing", "meter_readings", "ok"),
        ("2025-03-02T09:00:00.000000Z", "analyst-2", "field_service", "work_orders", "ok"),
        ("2025-03-03T09:00:00.000000Z", "analyst-2", "billing", "meter_readings", "denied"),
    ]
    for ts, principal, purpose, dataset, outcome in rows:
        writer.append(
            {
                "ts": ts,
                "component": "access",
                "event": "query",
                "principal": principal,
                "purpose": purpose,
                "datasets": [{"dataset": dataset, "table": f"t/c-1/{dataset}"}],
                "outcome": outcome,
                "sql_redacted": "SELECT * FROM readings WHERE device_id = ?",
            }
        )
    writer.close()
    gateway = AuditLog(data_dir / "audit" / "gateway")
    gateway.record("http_unauthorized", remote="10.0.0.1", detail="no bearer token")
    gateway.close()
    return folder


def test_verify_prints_each_head_and_exits_5_naming_a_tampered_record(tmp_path: Path) -> None:
    folder = _accesses(tmp_path)
    ok = CliRunner().invoke(app, ["audit", "verify", "--data-dir", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    lines = ok.output.splitlines()
    assert lines[0].startswith("gateway: intact, 1 records, head seq 1 sha256 ")
    assert lines[1].startswith("pipeline: no records yet")
    assert lines[2].startswith("access: intact, 3 records, head seq 3 sha256 ")
    path = folder / "2025-03-02.jsonl"
    path.write_bytes(path.read_bytes().replace(b"analyst-2", b"analyst-9"))
    run = subprocess.run(
        [ENERGYLAKE, "audit", "verify", "--component", "access", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert run.returncode == 5, run.stderr
    assert run.stdout.startswith("access: EDITED at 2025-03-02.jsonl line 1 (seq 2)")
    assert run.stderr.startswith("error: audit chain ")
    assert "does not verify" in run.stderr


def _log(tmp_path: Path, *args: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(
        app, ["audit", "log", "--format", "json", "--data-dir", str(tmp_path), *args]
    )
    assert result.exit_code == 0, result.output
    return [orjson.loads(line) for line in result.output.splitlines()]


def test_log_filters_by_principal_purpose_dataset_event_and_time(tmp_path: Path) -> None:
    _accesses(tmp_path)
    assert len(_log(tmp_path)) == 4  # the gateway's record too, in time order
    assert [r["seq"] for r in _log(tmp_path, "--principal", "analyst-2")] == [2, 3]
    assert [r["seq"] for r in _log(tmp_path, "--purpose", "billing")] == [1, 3]
    assert [r["seq"] for r in _log(tmp_path, "--dataset", "work_orders")] == [2]
    both = _log(tmp_path, "--principal", "analyst-2", "--dataset", "meter_readings")
    assert [r["outcome"] for r in both] == ["denied"]
    window = _log(
        tmp_path, "--component", "access", "--since", "2025-03-02", "--until", "2025-03-03"
    )
    assert [r["seq"] for r in window] == [2]
    assert [r["event"] for r in _log(tmp_path, "--event", "http_unauthorized")] == [
        "http_unauthorized"
    ]
    table = CliRunner().invoke(
        app,
        ["audit", "log", "--principal", "analyst-1", "--data-dir", str(tmp_path)],
        env={"COLUMNS": "200"},
    )
    assert table.exit_code == 0, table.output
    assert "analyst-1" in table.output
    assert "analyst-2" not in table.output
    bad = CliRunner().invoke(app, ["audit", "log", "--since", "yesterday"])
    assert bad.exit_code == 2


def test_prune_is_a_dry_run_by_default_and_keeps_a_year(tmp_path: Path) -> None:
    folder = _accesses(tmp_path)
    before = sorted(p.name for p in folder.glob("*.jsonl"))
    dry = CliRunner().invoke(app, ["audit", "prune", "--data-dir", str(tmp_path)])
    assert dry.exit_code == 0, dry.output
    assert "access: would delete 2 file(s) (through seq 2)" in dry.output
    assert sorted(p.name for p in folder.glob("*.jsonl")) == before
    short = CliRunner().invoke(
        app, ["audit", "prune", "--older-than-days", "30", "--data-dir", str(tmp_path)]
    )
    assert short.exit_code == 2
    done = CliRunner().invoke(
        app, ["audit", "prune", "--component", "access", "--apply", "--data-dir", str(tmp_path)]
    )
    assert done.exit_code == 0, done.output
    assert "access: deleted 2 file(s) (through seq 2)" in done.output
    ok = CliRunner().invoke(app, ["audit", "verify", "--data-dir", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert "pruned before seq 3" in ok.output
