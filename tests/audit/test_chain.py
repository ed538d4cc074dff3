"""The audit chain on disk (issue 14, point 8): every kind of tampering is named by
``verify_chain`` (edited, deleted, reordered, truncated), a crash is told from tampering,
several processes append to one chain, a fail-closed log raises, and retention keeps a year."""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
from datetime import date
from pathlib import Path
from typing import Any

import orjson
import pytest

from audit.chain import GENESIS, TORN_EVENT, ChainWriter, anchor_path
from audit.errors import AuditRetentionError, AuditWriteError
from audit.log import AuditLog
from audit.retention import prune
from audit.verify import verify_chain


def _access(folder: Path, n: int, **kw: Any) -> None:
    log = AuditLog(folder, component="access", fail_closed=True, **kw)
    for i in range(n):
        log.append(
            "query",
            {
                "principal": "analyst-1",
                "purpose": "billing",
                "datasets": [{"dataset": "meter_readings", "table_version": i}],
                "rows": i,
                "outcome": "ok",
            },
        )
    log.close()


def _file(folder: Path) -> Path:
    (path,) = sorted(folder.glob("*.jsonl"))
    return path


def _lines(folder: Path) -> list[bytes]:
    return _file(folder).read_bytes().splitlines()


def _put(folder: Path, lines: list[bytes]) -> None:
    _file(folder).write_bytes(b"".join(line + b"\n" for line in lines))


def test_an_intact_chain_links_every_line_and_verifies_with_its_head(tmp_path: Path) -> None:
    _access(tmp_path, 10)
    lines = _lines(tmp_path)
    records = [orjson.loads(line) for line in lines]
    assert [r["seq"] for r in records] == list(range(1, 11))
    assert records[0]["prev"] == GENESIS
    for before, line in zip(lines, records[1:], strict=False):
        assert line["prev"] == hashlib.sha256(before).hexdigest()
    assert all(
        orjson.dumps(r, option=orjson.OPT_SORT_KEYS) == b
        for r, b in zip(records, lines, strict=False)
    )
    verdict = verify_chain(tmp_path)
    assert verdict.ok, verdict.summary()
    assert (verdict.records, verdict.head_seq) == (10, 10)
    assert verdict.head_sha256 == hashlib.sha256(lines[-1]).hexdigest()
    assert verdict.anchors_checked == 1  # the close anchored the head
    assert verdict.head_sha256 in verdict.summary()


def test_an_edited_value_is_named(tmp_path: Path) -> None:
    _access(tmp_path, 10)
    lines = _lines(tmp_path)
    record = orjson.loads(lines[4])
    record["rows"] = 999_999  # written back in the writer's own canonical form
    lines[4] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    _put(tmp_path, lines)
    verdict = verify_chain(tmp_path)
    assert (verdict.problem, verdict.line, verdict.seq) == ("edited", 5, 5)
    assert verdict.file == _file(tmp_path).name


def test_a_hand_edit_that_keeps_the_bytes_length_is_still_named(tmp_path: Path) -> None:
    _access(tmp_path, 3)
    lines = _lines(tmp_path)
    lines[1] = lines[1].replace(b'"billing"', b'"billinG"')
    _put(tmp_path, lines)
    verdict = verify_chain(tmp_path)
    assert (verdict.problem, verdict.line, verdict.seq) == ("edited", 2, 2)


def test_an_edited_last_line_is_caught_by_its_anchor(tmp_path: Path) -> None:
    _access(tmp_path, 5)
    lines = _lines(tmp_path)
    record = orjson.loads(lines[-1])
    record["outcome"] = "denied"
    lines[-1] = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    _put(tmp_path, lines)
    verdict = verify_chain(tmp_path)
    assert (verdict.problem, verdict.line, verdict.seq) == ("rewritten", 5, 5)


def test_a_deleted_middle_line_is_named(tmp_path: Path) -> None:
    _access(tmp_path, 10)
    lines = _lines(tmp_path)
    del lines[4]
    _put(tmp_path, lines)
    verdict = verify_chain(tmp_path)
    assert (verdict.problem, verdict.line, verdict.seq) == ("missing", 5, 6)
    assert "seq 5 deleted" in verdict.detail


def test_deleted_first_lines_are_missing_unless_pruned(tmp_path: Path) -> None:
    _access(tmp_path, 6)
    _put(tmp_path, _lines(tmp_path)[2:])
    verdict = verify_chain(tmp_path)
    assert (verdict.problem, verdict.line, verdict.seq) == ("missing", 1, 3)


def test_two_swapped_lines_are_named(tmp_path: Path) -> None:
    _access(tmp_path, 10)
    lines = _lines(tmp_path)
    lines[3], lines[4] = lines[4], lines[3]
    _put(tmp_path, lines)
    verdict = verify_chain(tmp_path)
    assert (verdict.problem, verdict.line, verdict.seq) == ("reordered", 4, 5)
    assert "before seq 4" in verdict.detail


def test_a_cut_tail_is_caught_by_an_anchor(tmp_path: Path) -> None:
    _access(tmp_path, 10, anchor_every_records=4)  # anchors at 4, 8 and 10 (the close)
    assert len(anchor_path(tmp_path).read_bytes().splitlines()) == 3
    _put(tmp_path, _lines(tmp_path)[:6])
    verdict = verify_chain(tmp_path)
    assert (verdict.problem, verdict.seq, verdict.line) == ("truncated", 6, 6)
    assert "names seq 10" in verdict.detail
    # the anchors can live elsewhere (audit_anchor_dir); the log's folder then holds none
    other = tmp_path / "other"
    _access(other / "access", 3, anchor_dir=tmp_path / "worm")
    assert (tmp_path / "worm" / "access.anchors.jsonl").exists()
    assert not (other / "access" / "anchors").exists()
    assert verify_chain(other / "access", tmp_path / "worm").anchors_checked == 1


def test_a_torn_tail_is_a_crash_and_the_next_writer_records_it(tmp_path: Path) -> None:
    _access(tmp_path, 4)
    whole = _file(tmp_path).read_bytes()
    # what a crash mid-write leaves: the first part of a line, no newline
    torn = b'{"component":"access","event":"query","outcome":"ok","prev":"ab'
    _file(tmp_path).write_bytes(whole + torn)
    verdict = verify_chain(tmp_path)
    assert (verdict.problem, verdict.line) == ("torn", 5)
    assert "crash" in verdict.detail
    log = AuditLog(tmp_path, component="access", fail_closed=True)
    written = log.append("query", {"principal": "analyst-2"})
    assert written is not None
    assert written[0] == 6
    log.close()
    data = _file(tmp_path).read_bytes()
    assert data.startswith(whole + torn + b"\n")  # the torn bytes are kept, not repaired
    lines = data.splitlines()
    recovery = orjson.loads(lines[5])
    assert recovery["event"] == TORN_EVENT
    assert (recovery["seq"], recovery["torn_bytes"]) == (5, len(torn))
    assert recovery["torn_sha256"] == hashlib.sha256(torn).hexdigest()
    assert recovery["prev"] == hashlib.sha256(lines[3]).hexdigest()  # from the last whole line
    verdict = verify_chain(tmp_path)
    assert verdict.ok, verdict.summary()
    assert verdict.crashes == [f"{_file(tmp_path).name} line 5"]
    assert verdict.head_seq == 6
    # a line of garbage that no recovery record owns is not a crash
    lines[4] = b"garbage"
    _put(tmp_path, [*lines[:5], *lines[6:]])
    assert verify_chain(tmp_path).problem == "malformed"


def _worker(folder: str, worker: int, n: int, start: Any) -> None:
    log = AuditLog(Path(folder), component="access", anchor_every_records=50)
    start.wait(30)  # all four append at once, not one after the other as they come up
    for i in range(n):
        log.append("query", {"worker": worker, "i": i})
    log.close()


def test_four_processes_append_to_one_chain(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(4)
    workers = [spawn.Process(target=_worker, args=(str(tmp_path), w, 200, start)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    records = [orjson.loads(line) for line in _lines(tmp_path)]
    assert [r["seq"] for r in records] == list(range(1, 801))
    for w in range(4):
        assert [r["i"] for r in records if r["worker"] == w] == list(range(200))
    # they did run at once: the workers' records interleave
    switches = sum(a["worker"] != b["worker"] for a, b in itertools.pairwise(records))
    assert switches > 3
    verdict = verify_chain(tmp_path)
    assert verdict.ok, verdict.summary()
    assert (verdict.records, verdict.head_seq) == (800, 800)
    assert verdict.anchors_checked >= 16  # every 50th seq, whichever process wrote it


def test_edge_events_and_structured_records_share_one_chain(tmp_path: Path) -> None:
    gateway = AuditLog(tmp_path, repeat_window_s=3600)
    other = AuditLog(tmp_path, component="quality")
    gateway.record("http_unauthorized", remote="10.0.0.1")
    gateway.record("http_unauthorized", remote="10.0.0.1")  # folded
    other.record("release", actor="operator-1", detail="released")
    gateway.close()
    other.close()
    records = [orjson.loads(line) for line in _lines(tmp_path)]
    assert [(r["seq"], r["event"], r.get("count")) for r in records] == [
        (1, "http_unauthorized", 1),
        (2, "release", None),
        (3, "http_unauthorized", 1),
    ]
    assert verify_chain(tmp_path).ok


def test_a_fail_closed_log_raises_and_a_lenient_one_does_not(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the audit folder should be")
    strict = AuditLog(blocker / "access", component="access", fail_closed=True)
    with pytest.raises(AuditWriteError, match="could not be made durable") as caught:
        strict.append("query", {"principal": "analyst-1", "outcome": "ok"})
    assert caught.value.folder == blocker / "access"
    lenient = AuditLog(blocker / "gateway")
    assert lenient.append("probe", {"x": 1}) is None
    lenient.record("http_unauthorized", remote="10.0.0.1")  # logged, never raised
    # a value that is not JSON is refused the same way, and nothing is written
    ok = AuditLog(tmp_path / "access", component="access", fail_closed=True)
    with pytest.raises(AuditWriteError):
        ok.append("query", {"principal": object()})
    with pytest.raises(AuditWriteError, match="the log's own"):
        ok.append("query", {"seq": 7})
    written = ok.append("query", {"principal": "analyst-1"})
    assert written is not None
    assert written[0] == 1
    ok.close()


def _old_chain(folder: Path) -> None:
    writer = ChainWriter(folder, component="access", fsync=True)
    for day in ("2024-01-01", "2024-06-01", "2026-01-10"):
        for i in range(3):
            writer.append({"ts": f"{day}T00:00:0{i}.000000Z", "event": "query", "i": i})
    writer.close()


def test_retention_keeps_a_year_and_records_what_it_pruned(tmp_path: Path) -> None:
    _old_chain(tmp_path)
    with pytest.raises(AuditRetentionError) as caught:
        prune(tmp_path, 364, dry_run=False)
    assert type(caught.value).exit_code == 2
    today = date(2026, 1, 20)
    dry = prune(tmp_path, 366, today=today)
    assert dry.dry_run
    assert dry.files == ["2024-01-01.jsonl", "2024-06-01.jsonl"]
    assert len(list(tmp_path.glob("*.jsonl"))) == 3  # a dry run deletes nothing
    done = prune(tmp_path, 366, dry_run=False, today=today, actor="auditor-1")
    assert (done.through_seq, done.record_seq) == (6, 10)
    left = [p.name for p in sorted(tmp_path.glob("*.jsonl"))]
    assert left[0] == "2026-01-10.jsonl"
    assert "2024-06-01.jsonl" not in left
    verdict = verify_chain(tmp_path)
    assert verdict.ok, verdict.summary()
    assert (verdict.first_seq, verdict.head_seq) == (7, 10)
    assert "pruned before seq 7" in verdict.summary()


def test_a_deleted_old_file_without_a_prune_record_is_missing(tmp_path: Path) -> None:
    _old_chain(tmp_path)
    (tmp_path / "2024-06-01.jsonl").unlink()
    verdict = verify_chain(tmp_path)
    assert (verdict.problem, verdict.file, verdict.seq) == ("missing", "2026-01-10.jsonl", 7)
    (tmp_path / "2024-01-01.jsonl").unlink()
    verdict = verify_chain(tmp_path)
    assert (verdict.problem, verdict.seq) == ("missing", 7)
    assert "no audit_pruned record" in verdict.detail


def test_a_crash_that_cut_only_the_newline_loses_nothing(tmp_path: Path) -> None:
    _access(tmp_path, 3)
    data = _file(tmp_path).read_bytes()
    _file(tmp_path).write_bytes(data[:-1])  # the last record whole, its newline not written
    assert verify_chain(tmp_path).ok  # the record is whole: nothing to report
    _access(tmp_path, 1)  # the next writer completes the line, not a torn-line record
    verdict = verify_chain(tmp_path)
    assert verdict.ok, verdict.summary()
    assert (verdict.head_seq, verdict.crashes) == (4, [])
    assert TORN_EVENT.encode() not in _file(tmp_path).read_bytes()
