"""Reading an HTTP body safely: size limits while streaming, bounded gzip, strict JSON.

Every limit is applied before the work it protects: the declared length before reading,
the byte count while reading, the decompressed size while inflating (a gzip bomb stops
at the limit, not at its end), and orjson parses only a bounded body (it refuses nesting
past 1024 levels with an error, never a RecursionError or a crash; it refuses NaN and
Infinity, which are not JSON, and invalid UTF-8). The parsed tree is then checked for
depth, node count and shape; Python's ``json`` runs last, on a small bounded tree, only to
refuse duplicate keys (orjson keeps the last one silently).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any, Final

import orjson

from contracts.errors import EnergylakeError

__all__ = ["ECHO_CHARS", "BodyError", "BodyReader", "BodyRules", "parse_readings", "shown"]

_NON_FINITE: Final = (b"NaN", b"Infinity", b"-Infinity")
ECHO_CHARS: Final = 64  # a client's value echoed or audited longer than this is cut


def shown(value: Any) -> str:
    """A client's value as echoed in an answer or written to the audit: whole (repr) if
    short, else its first ``ECHO_CHARS`` characters, its length and the SHA-256 of all of
    it (so the full value stays identifiable without being stored)."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if len(text) <= ECHO_CHARS:
        return repr(text)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{text[:ECHO_CHARS]!r}... ({len(text)} chars, sha256 {digest})"


class BodyError(EnergylakeError):
    """A body refused: HTTP status, stable reason code, and what to fix."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class BodyRules:
    max_body_bytes: int
    max_decompressed_bytes: int
    max_depth: int
    max_readings: int

    @property
    def max_nodes(self) -> int:
        """Every value in the tree counts; a reading has a few dozen."""
        return self.max_readings * 64


class BodyReader:
    """Accumulates a body chunk by chunk, inflating gzip, refusing past the limits.

    A gzip body may hold several members (RFC 1952; what ``cat a.gz b.gz`` gives): each
    is inflated in turn, the decompressed limit counting them all. Bytes after a member
    that do not form a valid member are refused, never ignored.
    """

    def __init__(self, rules: BodyRules, *, gzip: bool) -> None:
        self._rules = rules
        self._raw = 0
        self._parts: list[bytes] = []
        self._size = 0
        self._members = 0
        self._inflate = zlib.decompressobj(wbits=31) if gzip else None

    def feed(self, chunk: bytes) -> None:
        self._raw += len(chunk)
        if self._raw > self._rules.max_body_bytes:
            raise BodyError(
                413, "body_too_large", f"body exceeds {self._rules.max_body_bytes} bytes"
            )
        inflate = self._inflate
        if inflate is None:
            self._keep(chunk)
            return
        data = chunk
        while data:
            if inflate.eof:  # the previous member ended: these bytes must be the next one
                self._members += 1
                inflate = self._inflate = zlib.decompressobj(wbits=31)
            room = self._rules.max_decompressed_bytes - self._size
            try:
                out = inflate.decompress(data, room + 1)
            except zlib.error as exc:
                where = f"after gzip member {self._members}" if self._members else "gzip body"
                raise BodyError(
                    400, "bad_gzip", f"{where}: not a valid gzip member ({exc})"
                ) from exc
            self._keep(out)
            # max_length leaves input in unconsumed_tail; input past a member's end is in
            # unused_data (the next member, or bytes that must be refused)
            data = inflate.unused_data if inflate.eof else inflate.unconsumed_tail

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._rules.max_decompressed_bytes:
            raise BodyError(
                413,
                "body_too_large",
                f"decompressed body exceeds {self._rules.max_decompressed_bytes} bytes",
            )
        if data:
            self._parts.append(data)

    def finish(self) -> bytes:
        if self._inflate is not None and not self._inflate.eof:
            raise BodyError(400, "bad_gzip", f"gzip member {self._members + 1} is truncated")
        return b"".join(self._parts)


def _explain(body: bytes, exc: orjson.JSONDecodeError) -> BodyError:
    message = str(exc)
    if "UTF-8" in message or "surrogate" in message:
        return BodyError(400, "bad_utf8", f"body is not valid UTF-8: {message}")
    if "depth limit" in message or "recursion" in message:
        return BodyError(400, "too_deep", f"JSON nesting exceeds the limit: {message}")
    pos = exc.pos
    for start in range(max(0, pos - 1), pos + 1):
        if body[start : start + 9].startswith(_NON_FINITE):
            return BodyError(400, "non_finite", "NaN and Infinity are not JSON numbers")
    if "after document" in message:
        return BodyError(400, "trailing_data", f"bytes after the JSON document: {message}")
    if "infinity" in message:
        return BodyError(400, "non_finite", f"number out of range: {message}")
    return BodyError(400, "malformed_json", f"body is not valid JSON: {message}")


def _check_tree(value: Any, rules: BodyRules) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > rules.max_depth:
            raise BodyError(400, "too_deep", f"JSON nesting exceeds {rules.max_depth} levels")
        nodes += len(children)
        if nodes > rules.max_nodes:
            raise BodyError(
                400, "too_many_values", f"body holds more than {rules.max_nodes} values"
            )
        stack.extend((child, depth + 1) for child in children)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise BodyError(400, "duplicate_key", f"key {shown(dup)} appears twice in one object")
    return out


def _parse_one(text: bytes, rules: BodyRules) -> Any:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _explain(text, exc) from None
    if isinstance(value, list) and len(value) > rules.max_readings:
        raise BodyError(
            400, "too_many_readings", f"more than {rules.max_readings} readings in one request"
        )
    _check_tree(value, rules)
    if b'"' in text:  # only objects with keys can repeat one
        json.loads(text, object_pairs_hook=_no_duplicates)
    return value


def parse_readings(body: bytes, rules: BodyRules, *, ndjson: bool) -> list[dict[str, Any]]:
    """The readings of a body: one object, an array of objects, or NDJSON lines of objects."""
    if ndjson:
        lines = [line for line in body.split(b"\n") if line.strip()]
        if len(lines) > rules.max_readings:
            raise BodyError(
                400, "too_many_readings", f"more than {rules.max_readings} lines in one request"
            )
        values = [_parse_one(line, rules) for line in lines]
    else:
        if not body.strip():
            raise BodyError(400, "malformed_json", "body is empty")
        value = _parse_one(body, rules)
        values = value if isinstance(value, list) else [value]
    if not values:
        raise BodyError(400, "no_readings", "the body holds no reading")
    if len(values) > rules.max_readings:
        raise BodyError(
            400, "too_many_readings", f"more than {rules.max_readings} readings in one request"
        )
    for index, item in enumerate(values):
        if not isinstance(item, dict):
            raise BodyError(
                400,
                "not_a_reading",
                f"reading {index} is a {type(item).__name__}, expected a JSON object",
            )
    return values
