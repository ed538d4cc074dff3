"""Who released a held batch is recorded in the audit log, and nowhere else outside the
governed quality_results row: not in Delta commit metadata, lineage facets, file or folder
names, Data Docs or any state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.app import app
from pipelines.batch_hooks import wait_for_data_docs
from tests.pipeline.conftest import CONFIG
from tests.quality.conftest import Day, firmware_fault, process_day

pytestmark = pytest.mark.slow
PERSON = "Asha Verma-Iyer"


def _governed(path: Path) -> bool:
    """quality_results' data files hold decided_by (personal, under its contract)."""
    return "/quality_results/" in path.as_posix() and path.suffix == ".parquet"


def test_the_person_who_decides_is_only_in_the_audit_log(tmp_path: Path, clean_day: Day) -> None:
    by_tenant = clean_day.branches.sort("branch_id").group_by("client_id", maintain_order=True)
    firsts = [str(part["branch_id"][0]) for _, part in by_tenant]
    day = process_day(tmp_path, CONFIG, firmware_fault(firsts[0], firsts[1]), gate=True)
    args = ["quality", "release", "1", "--by", PERSON, "--reason", "CT fault fixed", "--apply"]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(day.settings.data_dir)])
    assert result.exit_code == 0, result.output
    wait_for_data_docs(60)

    needle = PERSON.encode()
    audit = day.settings.data_dir / "audit"
    found_in_audit = []
    leaks = []
    for path in sorted(tmp_path.rglob("*")):
        assert PERSON not in path.name, f"a file or folder is named after the person: {path}"
        if not path.is_file():
            continue
        if needle not in path.read_bytes():
            continue
        if audit in path.parents:
            found_in_audit.append(path)
        elif not _governed(path):
            leaks.append(path)
    assert leaks == [], f"the person's name leaked into {leaks}"
    records = [json.loads(line) for p in found_in_audit for line in p.read_text().splitlines()]
    decisions = [r for r in records if r.get("actor") == PERSON]
    assert [r["event"] for r in decisions] == ["quality_release"]
    assert decisions[0]["component"] == "quality"
