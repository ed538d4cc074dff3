"""Verifying an audit folder's chain against itself and its anchors (``energylake audit verify``).

One pass over the day files, oldest first, one file in memory at a time. The first bad
record is named (file, line, seq) with what is wrong:

- ``edited``: a record's bytes are not what the next record's ``prev`` says (or not in the
  canonical form the writer uses): it was changed after it was written;
- ``missing``: a seq is absent (a line or a file deleted) and does not come later;
- ``reordered``: a seq comes before a smaller one, or twice;
- ``malformed``: a whole line that is not a record;
- ``rewritten``: a record differs from an anchor of its seq (history rewritten and re-chained);
- ``truncated``: an anchor names a seq past the end of the log (the tail was cut);
- ``torn``: the last line of the newest file is incomplete: a crash mid-write, not tampering
  (the next append closes it and records the recovery; such recovered lines are counted).

A chain pruned by ``audit.retention.prune`` starts after seq 1: its first record must be the
one an ``audit_pruned`` record of the chain names. Records after the newest anchor are held
only by the chain: a cut there is invisible until the next anchor would have covered it
(``anchor_interval_s`` bounds that window).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from audit.chain import GENESIS, TORN_EVENT, anchor_path, day_files, encode, line_hash
from audit.errors import AuditChainError

__all__ = ["PRUNED_EVENT", "Verdict", "verify_chain"]

PRUNED_EVENT = "audit_pruned"

_Entry = tuple[str, int, bytes, bool]  # file name, line number (1-based), bytes, whole line


@dataclass(slots=True)
class Verdict:
    """What ``verify_chain`` found for one folder."""

    folder: Path
    records: int = 0
    head_seq: int = 0
    head_sha256: str = GENESIS
    first_seq: int = 1  # > 1 after a prune
    anchors_checked: int = 0
    anchor_file: Path | None = None
    crashes: list[str] = field(default_factory=list)  # torn lines a writer recorded
    problem: str | None = None
    file: str | None = None
    line: int | None = None
    seq: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        """One line: the verdict and, when intact, the head to note elsewhere."""
        name = self.folder.name
        if not self.ok:
            where = f" at {self.file} line {self.line}" if self.file else ""
            seq = f" (seq {self.seq})" if self.seq is not None else ""
            return f"{name}: {str(self.problem).upper()}{where}{seq}: {self.detail}"
        notes = [f"{self.anchors_checked} anchor(s) checked"]
        if self.anchor_file is None:
            notes = ["no anchors yet: a cut tail cannot be seen"]
        if self.first_seq > 1:
            notes.append(f"pruned before seq {self.first_seq}")
        if self.crashes:
            notes.append(f"{len(self.crashes)} line(s) torn by a crash, recorded")
        return (
            f"{name}: intact, {self.records} records, head seq {self.head_seq} "
            f"sha256 {self.head_sha256} ({'; '.join(notes)})"
        )

    def error(self) -> AuditChainError:
        return AuditChainError(
            f"audit chain {self.folder} does not verify: {self.summary()}; keep the files as "
            "they are and compare them with a backup or the anchors (docs/AUDIT.md)",
            folder=self.folder,
            problem=self.problem or "",
            file=self.file,
            line=self.line,
            seq=self.seq,
        )


def _entries(folder: Path) -> Iterator[_Entry]:
    for path in day_files(folder):
        pieces = path.read_bytes().split(b"\n")
        last = pieces.pop()  # b"" when the file ends with a newline
        for no, raw in enumerate(pieces, 1):
            yield path.name, no, raw, True
        if last:
            yield path.name, len(pieces) + 1, last, False


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    if not isinstance(record.get("seq"), int) or not isinstance(record.get("prev"), str):
        return None
    return record


def _anchors(path: Path) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    for raw in path.read_bytes().split(b"\n"):
        try:
            anchor = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # an anchor torn by a crash (or the empty piece after the last newline)
        if isinstance(anchor, dict) and isinstance(anchor.get("seq"), int):
            found.setdefault(anchor["seq"], []).append(anchor)
    return found


def _fail(verdict: Verdict, problem: str, entry: _Entry | None, seq: Any, detail: str) -> Verdict:
    verdict.problem = problem
    if entry is not None:
        verdict.file, verdict.line = entry[0], entry[1]
    verdict.seq = seq if isinstance(seq, int) else None
    verdict.detail = detail
    return verdict


def _anchor_differs(
    verdict: Verdict, anchors: dict[int, list[dict[str, Any]]], entry: _Entry, seq: int
) -> bool:
    """Check the anchors of a record whose successor agreed with it (or the head)."""
    for anchor in anchors.get(seq, ()):
        verdict.anchors_checked += 1
        if anchor.get("sha256") != line_hash(entry[2]):
            _fail(
                verdict,
                "rewritten",
                entry,
                seq,
                f"the anchor of {anchor.get('ts')} holds another hash for this seq: the "
                "history up to here was rewritten and chained again",
            )
            return True
    return False


def verify_chain(folder: Path, anchor_dir: Path | None = None) -> Verdict:
    """Verify one audit folder; the verdict names the first bad record, if any."""
    verdict = Verdict(Path(folder))
    anchors_file = anchor_path(verdict.folder, anchor_dir)
    anchors = _anchors(anchors_file) if anchors_file.exists() else {}
    verdict.anchor_file = anchors_file if anchors_file.exists() else None
    entries = _entries(verdict.folder)
    expect_seq, expect_prev = 1, GENESIS
    start: tuple[_Entry, int, str] | None = None  # a first record after a prune, unconfirmed
    previous: _Entry | None = None
    pending: _Entry | None = None
    while True:
        entry = pending if pending is not None else next(entries, None)
        pending = None
        if entry is None:
            break
        name, no, raw, whole = entry
        record = _parse(raw)
        if record is None:
            if not whole:
                return _fail(
                    verdict,
                    "torn",
                    entry,
                    None,
                    f"the last line ({len(raw)} bytes) is incomplete: a crash mid-write, not "
                    "an edit; the next append records it and the chain goes on",
                )
            pending = next(entries, None)
            after = _parse(pending[2]) if pending is not None else None
            if (
                after is not None
                and after.get("event") == TORN_EVENT
                and after.get("torn_bytes") == len(raw)
                and after.get("torn_sha256") == line_hash(raw)
            ):
                verdict.crashes.append(f"{name} line {no}")
                continue
            return _fail(verdict, "malformed", entry, None, "the line is not an audit record")
        seq, prev = record["seq"], record["prev"]
        if encode(record) != raw:
            return _fail(
                verdict, "edited", entry, seq, "the line is not in the writer's canonical form"
            )
        if previous is None and seq == 1 and prev != GENESIS:
            return _fail(verdict, "edited", entry, seq, "seq 1 does not start from the genesis")
        if previous is None and (seq, prev) != (1, GENESIS):
            start = (entry, seq, prev)  # pruned before? an audit_pruned record must say so
            expect_seq, expect_prev = seq, prev
        if seq != expect_seq:
            rest = list(entries)
            later = any((r := _parse(e[2])) is not None and r["seq"] == expect_seq for e in rest)
            if seq < expect_seq:
                what, detail = "reordered", f"seq {seq} comes after seq {expect_seq - 1}"
            elif later:
                what, detail = "reordered", f"seq {seq} comes before seq {expect_seq}"
            else:
                gone = f"seq {expect_seq}" + (f" to {seq - 1}" if seq - 1 > expect_seq else "")
                what, detail = "missing", f"{gone} deleted before this line"
            return _fail(verdict, what, entry, seq, detail)
        if prev != expect_prev:
            assert previous is not None  # seq 1 with another prev is caught as a start above
            return _fail(
                verdict,
                "edited",
                previous,
                seq - 1,
                f"the record changed after it was written: its hash is not the prev of seq {seq}",
            )
        if previous is not None and _anchor_differs(verdict, anchors, previous, seq - 1):
            return verdict  # checked once the next record's prev agreed: not a plain edit
        sha = line_hash(raw)
        if (
            start is not None
            and record.get("event") == PRUNED_EVENT
            and record.get("through_seq") == start[1] - 1
            and record.get("through_sha256") == start[2]
        ):
            verdict.first_seq, start = start[1], None
        previous = entry
        verdict.records += 1
        verdict.head_seq, verdict.head_sha256 = seq, sha
        expect_seq, expect_prev = seq + 1, sha
    if previous is not None and _anchor_differs(verdict, anchors, previous, verdict.head_seq):
        return verdict
    if start is not None:
        return _fail(
            verdict,
            "missing",
            start[0],
            start[1],
            f"the chain starts at seq {start[1]} and no {PRUNED_EVENT} record says seq 1 to "
            f"{start[1] - 1} were pruned: deleted",
        )
    cut = [s for s in anchors if s > verdict.head_seq]
    if cut:
        anchor = anchors[max(cut)][0]
        return _fail(
            verdict,
            "truncated",
            previous,
            verdict.head_seq,
            f"the log ends at seq {verdict.head_seq} but the anchor of {anchor.get('ts')} "
            f"names seq {anchor['seq']} ({anchor.get('file')}): records were cut from the end",
        )
    return verdict
