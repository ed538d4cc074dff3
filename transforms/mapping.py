"""The mapping decoder: a parsed vendor payload to reading records, by a stream's rules.

Runs a ``Stream`` of the catalogue (``transforms/catalogue.py``) over one parsed JSON
payload. Vendor formats are low-rate (Tasmota every 300 s, a Shelly every few seconds at
most), so this walks Python objects record by record; the canonical envelope, the high-rate
format, has its own columnar path. What cannot be mapped is refused with a reason code and
a detail naming the path; the pipeline quarantines it.

A record's event time is resolved here when the payload carries it with its zone (ISO 8601
with an offset, epoch seconds or milliseconds, or local time in a fixed zone); local time in
the branch's zone is left as ``ts_local`` for ``normalise`` (the branch is known only once
the device is). A time or seq taken from reception is marked (``_ts_received``,
``_seq_unit_s``) and filled in by ``normalise`` from the envelope's ``received_at``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any
from zoneinfo import ZoneInfo

from transforms.catalogue import FieldRule, PathPart, Stream

__all__ = ["Mapped", "Refused", "map_payload"]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class Refused:
    """A record (or the whole payload, ``elem`` 0) that cannot be mapped, and why."""

    elem: int
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Mapped:
    """One mapped record: its place in the payload and its columns."""

    elem: int
    columns: dict[str, Any]


def _get(obj: Any, path: tuple[PathPart, ...]) -> Any:
    for part in path:
        if isinstance(part, int):
            if not isinstance(obj, list) or part >= len(obj):
                return _MISSING
            obj = obj[part]
        else:
            if not isinstance(obj, dict) or part not in obj:
                return _MISSING
            obj = obj[part]
    return obj


def _text(path: tuple[PathPart, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(the record)"


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _shaped(rule: FieldRule, value: Any) -> Any:
    """The rule's value from what the path holds, or _MISSING when the rule does not apply."""
    if value is _MISSING or value is None:
        return _MISSING
    if isinstance(value, list):
        if rule.shape == "number":
            return _MISSING
        if rule.reduce is None:
            return value  # refused below: a list where a number belongs
        if not value or not all(_is_number(v) for v in value):
            return value
        total = float(sum(value))
        return total if rule.reduce == "sum" else total / len(value)
    if rule.shape == "list":
        return _MISSING
    return value


def map_payload(
    stream: Stream,
    obj: Any,
    *,
    numeric: frozenset[str],
    strings: frozenset[str],
    reasons: frozenset[str] = frozenset(),
) -> list[Mapped | Refused]:
    """Map one parsed payload; every record is either Mapped or Refused."""
    if stream.refuse is not None:
        return [Refused(0, stream.refuse, f"{stream.key}: carries no reading")]
    root = _get(obj, stream.record_path)
    if isinstance(root, dict) and stream.records in ("object", "either"):
        records: list[Any] = [root]
    elif isinstance(root, list) and stream.records in ("list", "either") and root:
        records = root
    else:
        want = {"object": "a JSON object", "list": "a non-empty JSON array of objects"}.get(
            stream.records, "a JSON object or a non-empty array of objects"
        )
        return [
            Refused(
                0, "MALFORMED_PAYLOAD", f"{stream.key}: {_text(stream.record_path)} is not {want}"
            )
        ]
    out: list[Mapped | Refused] = []
    for elem, record in enumerate(records):
        out.append(_record(stream, elem, record, numeric, strings, reasons))
    return out


def _record(
    stream: Stream,
    elem: int,
    record: Any,
    numeric: frozenset[str],
    strings: frozenset[str],
    reasons: frozenset[str],
) -> Mapped | Refused:
    if not isinstance(record, dict):
        return Refused(elem, "MALFORMED_PAYLOAD", f"{stream.key}: record {elem} is not an object")
    if stream.problem_code:
        code = _get(record, stream.problem_code)
        if code is not _MISSING and code is not None:
            detail = _get(record, stream.problem_detail)
            text = str(detail)[:1500] if detail is not _MISSING and detail is not None else ""
            if isinstance(code, str) and code in reasons:
                return Refused(elem, code, f"{stream.key}: the sender reports {code}: {text}")
            return Refused(
                elem,
                "MALFORMED_PAYLOAD",
                f"{stream.key}: the sender reports a problem {str(code)[:40]!r}: {text}",
            )
    for path in stream.require:
        if _get(record, path) in (_MISSING, None):
            return Refused(
                elem,
                "MALFORMED_PAYLOAD",
                f"{stream.key}: payload without {_text(path)} (required by the decoder)",
            )
    columns: dict[str, Any] = {}
    problem = _time(stream, record, columns)
    if problem is not None:
        return Refused(elem, "SCHEMA_MISMATCH", f"{stream.key}: {problem}")
    problem = _seq(stream, record, columns)
    if problem is not None:
        return Refused(elem, "SCHEMA_MISMATCH", f"{stream.key}: {problem}")
    wrong: list[str] = []
    unknown: list[str] = []
    used = {p[0] for p in (stream.time_path, stream.seq_path, stream.boot_path) if p}
    for rule in stream.fields:
        if rule.wildcard:
            _wildcard(rule, record, columns, used, numeric, strings, wrong, unknown)
            continue
        value = _shaped(rule, _get(record, rule.path))
        if value is _MISSING:
            continue
        for kind, name in rule.targets.items():
            column = name if kind == "*" else f"{kind}@{name}"
            if column in columns:
                continue  # an earlier rule gave it
            if name in strings:
                if not isinstance(value, str):
                    wrong.append(f"{_text(rule.path)} ({name}) is not a string")
                    continue
                columns[column] = value
            elif _is_number(value):
                number = float(value) * rule.factor
                columns[column] = abs(number) if rule.absolute else number
            else:
                wrong.append(f"{_text(rule.path)} ({name}) is not a number: {str(value)[:40]!r}")
    if wrong:
        return Refused(elem, "SCHEMA_MISMATCH", f"{stream.key}: {'; '.join(wrong)}"[:2000])
    for derived in stream.derive:
        for kind, name in derived.targets.items():
            column = name if kind == "*" else f"{kind}@{name}"
            if column in columns:
                continue
            num = columns.get(derived.numerator, columns.get(f"{kind}@{derived.numerator}"))
            den = columns.get(derived.denominator, columns.get(f"{kind}@{derived.denominator}"))
            if isinstance(num, float) and isinstance(den, float) and den > 0:
                columns[column] = round(min(1.0, abs(num) / den), 3)
    if unknown:
        columns["_unknown"] = ", ".join(sorted(unknown))[:500]
    elif not any(k in numeric or k in strings or "@" in k for k in columns):
        # nothing to land (an edge node's BIRTH with only Sparkplug's own metrics, an empty
        # ENERGY object): said, not stored as a row of nulls
        return Refused(
            elem, "MISSING_FIELD", f"{stream.key}: no field of the contract in this message"
        )
    return Mapped(elem, columns)


def _wildcard(
    rule: FieldRule,
    record: dict[str, Any],
    columns: dict[str, Any],
    used: set[PathPart],
    numeric: frozenset[str],
    strings: frozenset[str],
    wrong: list[str],
    unknown: list[str],
) -> None:
    """Every key of the object at the rule's path to the contract field of its name."""
    values = _get(record, rule.path)
    if not isinstance(values, dict):
        return
    top = not rule.path
    for key, value in values.items():
        if top and (key in used or isinstance(value, dict)):
            continue  # the record's own time, seq or nested objects other rules read
        if rule.ignore and any(fnmatchcase(str(key), glob) for glob in rule.ignore):
            continue
        if key in strings:
            if value is not None and not isinstance(value, str):
                wrong.append(f"{key} is not a string")
            elif value is not None:
                columns.setdefault(key, value)
        elif key in numeric:
            if value is None:
                continue
            if not _is_number(value):
                wrong.append(f"{key} is not a number: {str(value)[:40]!r}")
            else:
                columns.setdefault(key, float(value) * rule.factor)
        else:
            unknown.append(str(key)[:64])


def _time(stream: Stream, record: Mapping[str, Any], columns: dict[str, Any]) -> str | None:
    fmt = stream.time_format
    if fmt == "received":
        columns["_ts_received"] = True
        return None
    value = _get(record, stream.time_path)
    if value is _MISSING or value is None:
        if stream.time_fallback == "received":
            columns["_ts_received"] = True
        return None  # no time: MISSING_FIELD ts, in enforce
    where = _text(stream.time_path)
    if fmt in ("epoch_s", "epoch_ms"):
        if not _is_number(value):
            return f"{where} {str(value)[:40]!r} is not a number of {fmt[6:]}"
        columns["ts"] = float(value) / (1000.0 if fmt == "epoch_ms" else 1.0)
        return None
    if not isinstance(value, str):
        return f"{where} {str(value)[:40]!r} is not an ISO 8601 time"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return f"{where} {value[:40]!r} is not ISO 8601"
    if fmt == "iso":
        if parsed.tzinfo is None:
            return f"{where} {value[:40]!r} has no zone offset (the decoder expects one)"
        columns["ts"] = parsed.timestamp()
        return None
    # local
    if parsed.tzinfo is not None:
        columns["ts"] = parsed.timestamp()  # a device that adds its offset: exact
    elif stream.time_zone == "branch":
        columns["ts_local"] = value
    else:
        columns["ts"] = parsed.replace(tzinfo=ZoneInfo(stream.time_zone)).timestamp()
    return None


def _seq(stream: Stream, record: Mapping[str, Any], columns: dict[str, Any]) -> str | None:
    if stream.boot_path:
        boot = _get(record, stream.boot_path)
        if boot is not _MISSING and boot is not None:
            if not _is_number(boot):
                return f"{_text(stream.boot_path)} {str(boot)[:40]!r} is not a number"
            columns["boot"] = float(boot)
    if stream.seq_from == "path":
        seq = _get(record, stream.seq_path)
        if seq is _MISSING or seq is None:
            return None  # MISSING_FIELD seq, in enforce
        if not _is_number(seq):
            return f"{_text(stream.seq_path)} {str(seq)[:40]!r} is not a number"
        columns["seq"] = float(seq)
        return None
    # from the event time or the reception time, in normalise (the zone may be the branch's)
    columns["_seq_unit_s"] = stream.seq_unit_s
    if stream.seq_from == "received":
        columns["_seq_received"] = True
    return None
