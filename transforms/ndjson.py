"""Strict NDJSON parsing of payload lines against an explicit Arrow schema, in blocks, on a
thread pool, at a cost in proportion to the bytes whatever keys the lines carry.

Arrow's JSON reader parses a block of lines against the schema the contracts give. It names
the row of what it refuses (a string where a number belongs, a number beyond double range,
a key twice): that line fails, and the lines before and after it are read again (blocks
bound that re-read). A key the schema does not know is skipped by the reader
(``unexpected_field_behavior="ignore"``) and found by counting: every key of a line is
followed by a colon, so a block whose colons equal the values the table holds has no
unknown key (nor a null value, nor a colon inside a string). That is one vectorised count
per block. Otherwise the lines with more colons than values are looked at one by one in
Python (orjson): their unknown keys are named in ``unknown`` (``"fw,readings.x"``), and the
row, which the reader already made without them, is kept; a line with more than
``MAX_KEYS`` keys, or with an unknown key given twice, fails.

Arrow used to infer a column for each unknown key instead (``"infer"``), and a block's table
had a column per distinct unknown key, each as long as the block: 150 messages with 2,000
distinct unknown keys each took 35 s and 4.4 GB to decode, growing with the square of the
lines (tests/transforms/test_decode_unknown_keys.py). Now unknown keys cost the bytes they
take, and what becomes of a line does not depend on the lines it is read with.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.json as pj

__all__ = ["MAX_KEYS", "PARSE_BLOCK", "BlockParser", "Parsed", "explain_arrow"]

PARSE_BLOCK = 2048  # lines per strict Arrow read (bounds the re-read after a bad line)
# Keys in one reading object (top level, readings and units together): a canonical reading
# has at most about 40; a line with more fails as SCHEMA_MISMATCH.
MAX_KEYS = 256
_ROW_IN_ERROR = re.compile(r"in row (\d+)")
_COLON = ord(":")
_NAMES_SHOWN = 20  # unknown keys named in a line's note; the rest are counted


@dataclass(slots=True)
class Parsed:
    """What a parser made of its lines: ``table`` (the schema's columns), ``lines`` (the line
    each row came from, ascending), ``failed`` (line, reason code, detail) and ``unknown``
    (line -> its unknown keys, named, for lines read without them)."""

    table: pa.Table
    lines: npt.NDArray[np.int64]
    failed: list[tuple[int, str, str]]
    unknown: dict[int, str]


@dataclass(slots=True)
class _Part:
    tables: list[pa.Table] = field(default_factory=list)
    lines: list[npt.NDArray[np.int64]] = field(default_factory=list)
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    unknown: dict[int, str] = field(default_factory=dict)


class BlockParser:
    """Parse ``lines`` in blocks of PARSE_BLOCK on the parse pool as the lines come
    (``submit_upto``); ``result()`` puts the blocks together in line order."""

    def __init__(self, lines: list[bytes], schema: pa.Schema) -> None:
        self._lines = lines
        self._schema = schema
        self._top = frozenset(schema.names)
        self._nested = {
            f.name: frozenset(c.name for c in f.type) for f in schema if pa.types.is_struct(f.type)
        }
        self._submitted = 0
        self._parts: list[Future[_Part]] = []

    def submit_upto(self, end: int) -> None:
        """Parse lines [submitted, end) (those lines are final: only appends follow)."""
        while end > self._submitted:
            stop = min(end, self._submitted + PARSE_BLOCK)
            self._parts.append(_parse_pool().submit(self._parse, self._submitted, stop))
            self._submitted = stop

    def result(self) -> Parsed:
        parts = [p.result() for p in self._parts]
        tables = [t for p in parts for t in p.tables]
        at = np.concatenate([a for p in parts for a in p.lines] or [np.zeros(0, np.int64)])
        failed = sorted(f for p in parts for f in p.failed)
        unknown = {k: v for p in parts for k, v in p.unknown.items()}
        if not tables:
            return Parsed(self._schema.empty_table(), at, failed, unknown)
        table = pa.concat_tables(tables)
        if (at[1:] < at[:-1]).any():  # parts read again after a bad line come out of order
            order = np.argsort(at, kind="stable")
            table = table.take(pa.array(order))
            at = at[order]
        return Parsed(table, at, failed, unknown)

    # -- on the pool ------------------------------------------------------------------------

    def _parse(self, start: int, end: int) -> _Part:
        part = _Part()
        try:
            table, data = _read(self._lines[start:end], self._schema)
        except pa.ArrowInvalid as exc:
            self._recover(part, list(range(start, end)), str(exc))
        else:
            self._keep(part, range(start, end), table, data)
        return part

    def _recover(self, part: _Part, first: list[int], error: str) -> None:
        """Read what can be read of lines ``first``, whose read failed with ``error``."""
        work: list[tuple[list[int], str | None]] = [(first, error)]
        while work:
            idx, err = work.pop()
            if err is None:
                try:
                    table, data = _read([self._lines[k] for k in idx], self._schema)
                except pa.ArrowInvalid as exc:
                    err = str(exc)
                else:
                    self._keep(part, idx, table, data)
                    continue
            named = _ROW_IN_ERROR.search(err)
            if named is not None:
                bad = int(named.group(1))
                part.failed.append((idx[bad], *explain_arrow(err)))
                if bad:
                    work.append((idx[:bad], None))
                if bad + 1 < len(idx):
                    work.append((idx[bad + 1 :], None))
            elif len(idx) == 1:
                part.failed.append((idx[0], *explain_arrow(err)))
            else:  # no row named (rare): halves until it is one line
                half = len(idx) // 2
                work += [(idx[:half], None), (idx[half:], None)]

    def _keep(self, part: _Part, idx: Sequence[int], table: pa.Table, data: pa.Buffer) -> None:
        """Add a block's table; first look at the lines that may hold unknown keys."""
        colons = int(np.count_nonzero(np.frombuffer(data, np.uint8) == _COLON))
        if colons != _values(table):
            per_line = np.fromiter(
                (self._lines[k].count(b":") for k in idx), np.int64, count=len(idx)
            )
            suspects = np.flatnonzero(per_line > _values_per_row(table)).tolist()
            failed = [at for at in suspects if not self._screen(part, idx[at])]
            if failed:
                keep = np.ones(len(idx), dtype=bool)
                keep[failed] = False
                table = table.filter(pa.array(keep))
                part.tables.append(table)
                part.lines.append(np.asarray(idx, dtype=np.int64)[keep])
                return
        part.tables.append(table)
        part.lines.append(
            np.arange(idx.start, idx.stop, dtype=np.int64)
            if isinstance(idx, range)
            else np.asarray(idx, dtype=np.int64)
        )

    def _screen(self, part: _Part, k: int) -> bool:
        """Name line ``k``'s unknown keys in ``part.unknown``; False (and the line in
        ``part.failed``) if it has more than MAX_KEYS keys or an unknown key twice."""
        obj: dict[str, Any] = orjson.loads(self._lines[k])
        nested = {n: v for n in self._nested if type(v := obj.get(n)) is dict}
        count = len(obj) + sum(len(v) for v in nested.values())
        if count > MAX_KEYS:
            detail = f"{count} keys in one reading; at most {MAX_KEYS}"
            part.failed.append((k, "SCHEMA_MISMATCH", detail))
            return False
        # An unknown key with a null value counts as absent (as a known one does).
        unknown = [key for key, v in obj.items() if key not in self._top and v is not None]
        for name, value in nested.items():
            known = self._nested[name]
            unknown += [
                f"{name}.{key}" for key, v in value.items() if key not in known and v is not None
            ]
        if unknown:
            duplicate = _duplicate_key(self._lines[k])
            if duplicate is not None:
                part.failed.append((k, "MALFORMED_PAYLOAD", f"duplicate key: {duplicate}"))
                return False
            part.unknown[k] = _named(unknown)
        return True


def _values(table: pa.Table) -> int:
    """How many values (keys with a non-null value) the table holds, struct children too."""
    total = 0
    for column in table.columns:
        for chunk in column.chunks:
            total += len(chunk) - chunk.null_count
            if pa.types.is_struct(chunk.type):
                total += sum(
                    len(chunk) - chunk.field(k).null_count for k in range(chunk.type.num_fields)
                )
    return total


def _values_per_row(table: pa.Table) -> npt.NDArray[np.int64]:
    """``_values`` per row."""
    counts = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        array = column.combine_chunks()
        arrays = [array]
        if pa.types.is_struct(array.type):
            arrays += [array.field(k) for k in range(array.type.num_fields)]
        for a in arrays:
            nulls = a.null_count
            if nulls == 0:
                counts += 1
            elif nulls < len(a):  # (all null: nothing to add)
                counts += a.is_valid().to_numpy(zero_copy_only=False)
    return counts


def _named(keys: list[str]) -> str:
    """Unknown keys, sorted, comma-separated; past _NAMES_SHOWN, the rest counted."""
    keys.sort()
    shown = ",".join(k[:64] for k in keys[:_NAMES_SHOWN])
    more = len(keys) - _NAMES_SHOWN
    return shown if more <= 0 else f"{shown} and {more} more"


class _DuplicateKeyError(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return out


def _duplicate_key(line: bytes) -> str | None:
    """A key given twice in one object of ``line`` (orjson keeps the last silently)."""
    try:
        json.loads(line, object_pairs_hook=_no_duplicates)
    except _DuplicateKeyError as exc:
        return str(exc.args[0])[:64]
    return None


@cache
def _parse_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="json-parse")


def _read(lines: list[bytes], schema: pa.Schema) -> tuple[pa.Table, pa.Buffer]:
    data = pa.py_buffer(b"\n".join(lines))
    table = pj.read_json(
        pa.BufferReader(data),
        read_options=pj.ReadOptions(use_threads=False, block_size=max(1 << 16, data.size + 1)),
        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )
    return table, data


def explain_arrow(message: str) -> tuple[str, str]:
    """Reason code and detail for an Arrow JSON error."""
    # "in row N" counts lines of the block Arrow was given: meaningless to a reader.
    text = _ROW_IN_ERROR.sub("", message.replace("JSON parse error: ", "").split("\n", 1)[0])
    text = text.rstrip()
    if "too big" in text:
        return "NON_FINITE", f"number out of the double range: {text}"[:300]
    if "specified twice" in text:
        return "MALFORMED_PAYLOAD", f"duplicate key: {text}"[:300]
    return "SCHEMA_MISMATCH", text[:300]
