"""AuditLog on disk: repeats folded into counted records, nothing lost, memory bounded;
and the failed-authentication buckets stay bounded whatever the number of addresses."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from audit.log import AuditLog, address_group


def _records(folder: Path) -> list[dict[str, object]]:
    return [
        orjson.loads(line)
        for f in sorted(folder.glob("*.jsonl"))
        for line in f.read_bytes().splitlines()
    ]


def test_repeats_are_counted_and_written_when_their_window_ends(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path, repeat_window_s=0.2)
    for i in range(5):
        audit.record("http_unauthorized", remote="10.0.0.1", detail=f"attempt {i}")
    audit.record("http_unauthorized", remote="10.0.0.2", detail="other address")
    first = _records(tmp_path)
    assert [(r["remote"], r["count"]) for r in first] == [("10.0.0.1", 1), ("10.0.0.2", 1)]
    audit.flush_due()  # the window has not ended: nothing more yet
    assert len(_records(tmp_path)) == 2
    time.sleep(0.25)
    audit.flush_due()
    records = _records(tmp_path)
    assert len(records) == 3
    folded = records[2]
    assert (folded["remote"], folded["count"]) == ("10.0.0.1", 4)
    assert "attempt 4" in str(folded["detail"])
    assert str(folded["first_ts"]) <= str(folded["last_ts"])
    # a new window starts with a record written at once again
    audit.record("http_unauthorized", remote="10.0.0.1", detail="later")
    audit.close()
    assert [r["count"] for r in _records(tmp_path)] == [1, 1, 4, 1]


def test_close_writes_pending_counts_and_too_many_kinds_flush_early(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path, repeat_window_s=3600, max_kinds=3)
    for remote in ("a", "b", "c"):
        audit.record("http_unauthorized", remote=remote)
        audit.record("http_unauthorized", remote=remote)
    assert len(_records(tmp_path)) == 3
    audit.record("http_unauthorized", remote="d")  # a fourth kind: the held counts go out
    records = _records(tmp_path)
    assert [r["remote"] for r in records] == ["a", "b", "c", "a", "b", "c", "d"]
    assert ["first_ts" in r for r in records] == [False] * 3 + [True] * 3 + [False]
    audit.record("http_unauthorized", remote="d")
    audit.close()
    assert sum(int(str(r["count"])) for r in _records(tmp_path)) == 8  # every event counted


def test_without_a_window_every_event_is_a_record_as_before(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path, component="pipeline")
    for _ in range(3):
        audit.record("branch_mismatch", device_id="m-1", detail="same")
    audit.close()
    records = _records(tmp_path)
    assert len(records) == 3
    assert all("count" not in r for r in records)  # the pipeline's format is unchanged


def test_addresses_rotated_inside_one_ipv6_64_fold_into_one_kind(tmp_path: Path) -> None:
    # the rate limiter groups an IPv6 client by its /64; the audit groups it the same way
    audit = AuditLog(tmp_path, repeat_window_s=3600)
    for i in range(1, 51):
        audit.record("http_unauthorized", remote=f"2001:db8:1:2::{i:x}", detail=f"try {i}")
    assert [(r["remote"], r["count"]) for r in _records(tmp_path)] == [("2001:db8:1:2::1", 1)]
    audit.record("http_unauthorized", remote="2001:db8:1:3::1")  # the next /64: its own
    audit.close()
    records = _records(tmp_path)
    assert [r["count"] for r in records] == [1, 1, 49]
    folded = records[2]
    assert folded["remote"] == "2001:db8:1:2::32"  # a real address (the last), not the group
    assert folded["address_group"] == "2001:db8:1:2::/64"
    assert folded["addresses"] == 50
    assert "try 50" in str(folded["detail"])


def test_first_records_per_window_have_a_budget_past_it_one_summary(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path, repeat_window_s=0.3, max_first_records=5)
    for i in range(40):  # 40 addresses, each a new kind
        audit.record("http_unauthorized", remote=f"10.0.{i >> 8}.{i & 255}")
    for i in range(3):
        audit.record("http_forbidden", device_id="m-1", remote=f"10.1.0.{i}")
    audit.record("http_unauthorized", remote="10.0.0.0")  # a repeat of a first: counted
    assert len(_records(tmp_path)) == 5  # the budget, not one record per address
    time.sleep(0.35)
    audit.flush_due()
    records = _records(tmp_path)
    summary = [r for r in records if r["event"] == "audit_summary"]
    assert len(summary) == 1
    assert summary[0]["count"] == 38
    assert summary[0]["addresses"] == 38
    assert summary[0]["kinds"] == {"http_unauthorized": 35, "http_forbidden": 3}
    assert "38 events from 38 addresses" in str(summary[0]["detail"])
    repeats = [r for r in records if "first_ts" in r and r["event"] != "audit_summary"]
    assert [(r["remote"], r["count"]) for r in repeats] == [("10.0.0.0", 1)]
    assert len(records) == 7
    # every event is accounted for: 5 firsts + 1 repeat + 38 in the summary
    assert sum(int(str(r["count"])) for r in records) == 44
    # a new window has a new budget
    audit.record("http_unauthorized", remote="10.9.9.9")
    audit.close()
    assert _records(tmp_path)[-1]["remote"] == "10.9.9.9"


def test_address_groups() -> None:
    assert address_group("192.0.2.7") == "192.0.2.7"
    assert address_group("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    # a dual-stack socket shows IPv4 clients mapped: each keeps its own address
    assert address_group("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_group("::ffff:192.0.2.8") == "192.0.2.8"
    assert address_group(None) == "unknown"
    assert address_group("not an address:") == "not an address:"
