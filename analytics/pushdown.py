"""What of the lake a statement needs: the columns it names, and the time range, branches
and devices its WHERE clause bounds (so a session reads a week of one device, not the
tenant's whole history).

The statement is parsed by DuckDB itself (``json_serialize_sql``, on a connection that
holds nothing). Only what cannot change the answer is pushed down:

- columns: every column name the statement mentions, ``USING`` lists included (all of a
  view's when it has ``*``, ``COLUMNS(...)`` or a join other than a plain one, or when it
  is not a single SELECT; and the session reads all of them again and retries once if
  DuckDB still finds a column missing);
- rows: top-level ``AND``-ed comparisons of a view's own column with constants, in the
  ``WHERE`` of a SELECT whose ``FROM`` is that view alone (no join, no other mention of
  the view anywhere in the statement): ``ts`` ranges (``>=``, ``>``, ``<``, ``<=``,
  ``=``, ``BETWEEN``; widened by a day each way, so no time zone reading of a literal can
  cut a matching row), and ``branch_id`` / ``device_id`` equality or ``IN``.

DuckDB applies the statement's own filters again to what was read, so a bound only
narrows the read, never the answer. And only columns the purpose sees **in clear** are
used to bound a read: how much is read (and how long it takes) then depends on values
the analyst may see anyway, never on a protected one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

__all__ = ["Read", "parser", "plan_reads"]

_WIDEN = timedelta(days=1)
_KEYS = ("branch_id", "device_id")
_TIME = "ts"


@dataclass(frozen=True, slots=True)
class Read:
    """What to read of one view: ``columns`` (None: all), a ``ts`` range, key values."""

    columns: frozenset[str] | None = None
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    keys: tuple[tuple[str, frozenset[str]], ...] = ()  # (column, allowed values)

    def covers(self, other: Read) -> bool:
        """Whether what this read holds answers everything ``other`` asks for."""
        if self.columns is not None and (other.columns is None or other.columns - self.columns):
            return False
        if self.since is not None and (other.since is None or other.since < self.since):
            return False
        if self.until is not None and (other.until is None or other.until > self.until):
            return False
        theirs = dict(other.keys)
        return all(column in theirs and theirs[column] <= values for column, values in self.keys)

    def union(self, other: Read) -> Read:
        """A read that covers both (what a session holds grows; it is not read twice)."""
        columns = (
            None if self.columns is None or other.columns is None else self.columns | other.columns
        )
        since = None if self.since is None or other.since is None else min(self.since, other.since)
        until = None if self.until is None or other.until is None else max(self.until, other.until)
        mine, theirs = dict(self.keys), dict(other.keys)
        keys = tuple(sorted((c, mine[c] | theirs[c]) for c in mine.keys() & theirs.keys()))
        return Read(columns, since, until, keys)

    def describe(self) -> dict[str, Any]:
        return {
            "columns": None if self.columns is None else sorted(self.columns),
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
            "keys": {c: sorted(v) for c, v in self.keys},
        }


def parser() -> duckdb.DuckDBPyConnection:
    """A connection to parse statements with (it holds nothing and reaches nothing)."""
    return duckdb.connect(config={"enable_external_access": False, "lock_configuration": True})


def _parse(sql: str, con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    try:
        text = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    except duckdb.Error:
        return None
    if text is None:
        return None
    parsed: dict[str, Any] = json.loads(text[0])
    if parsed.get("error") or len(parsed.get("statements", [])) != 1:
        return None
    return parsed


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _constant(node: dict[str, Any]) -> Any:
    if node.get("class") == "CAST":
        node = node.get("child") or {}
    if node.get("class") != "CONSTANT":
        return None
    value = node.get("value") or {}
    return None if value.get("is_null") else value.get("value")


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _column(node: dict[str, Any], alias: str) -> str | None:
    if node.get("class") != "COLUMN_REF":
        return None
    names = node.get("column_names") or []
    if len(names) == 1 or (len(names) == 2 and names[0] == alias):
        return str(names[-1])
    return None


_FLIP = {
    "COMPARE_GREATERTHANOREQUALTO": "COMPARE_LESSTHANOREQUALTO",
    "COMPARE_GREATERTHAN": "COMPARE_LESSTHAN",
    "COMPARE_LESSTHANOREQUALTO": "COMPARE_GREATERTHANOREQUALTO",
    "COMPARE_LESSTHAN": "COMPARE_GREATERTHAN",
    "COMPARE_EQUAL": "COMPARE_EQUAL",
}


def _bounds(
    where: dict[str, Any] | None, alias: str, clear: frozenset[str]
) -> tuple[datetime | None, datetime | None, dict[str, frozenset[str]]]:
    since: datetime | None = None
    until: datetime | None = None
    keys: dict[str, frozenset[str]] = {}
    if where is None:
        return since, until, keys
    conjuncts = where["children"] if where.get("type") == "CONJUNCTION_AND" else [where]
    for c in conjuncts:
        kind = c.get("type")
        lows: list[datetime] = []
        highs: list[datetime] = []
        if kind == "COMPARE_BETWEEN":
            if _column(c.get("input") or {}, alias) == _TIME and _TIME in clear:
                low, high = _time(_constant(c["lower"])), _time(_constant(c["upper"]))
                lows += [low] if low else []
                highs += [high] if high else []
        elif kind == "COMPARE_IN":
            children = c.get("children") or []
            column = _column(children[0], alias) if children else None
            values = [_constant(v) for v in children[1:]]
            if column in _KEYS and column in clear and all(isinstance(v, str) for v in values):
                keys[column] = keys.get(column, frozenset(values)) & frozenset(values)
        elif kind in _FLIP:
            left, right = c.get("left") or {}, c.get("right") or {}
            column = _column(left, alias)
            if column is None:
                column, left, right, kind = _column(right, alias), right, left, _FLIP[kind]
            value = _constant(right)
            if column == _TIME and _TIME in clear and (moment := _time(value)) is not None:
                if kind in ("COMPARE_GREATERTHANOREQUALTO", "COMPARE_GREATERTHAN"):
                    lows.append(moment)
                elif kind in ("COMPARE_LESSTHANOREQUALTO", "COMPARE_LESSTHAN"):
                    highs.append(moment)
                else:
                    lows.append(moment)
                    highs.append(moment)
            elif (
                column in _KEYS
                and column in clear
                and kind == "COMPARE_EQUAL"
                and isinstance(value, str)
            ):
                keys[column] = keys.get(column, frozenset([value])) & {value}
        for low in lows:
            since = low - _WIDEN if since is None else max(since, low - _WIDEN)
        for high in highs:
            until = high + _WIDEN if until is None else min(until, high + _WIDEN)
    return since, until, keys


def plan_reads(
    sql: str,
    views: dict[str, frozenset[str]],
    clear: dict[str, frozenset[str]],
    con: duckdb.DuckDBPyConnection,
) -> dict[str, Read]:
    """For each view (name -> its columns) the statement names: what to read. ``clear``:
    each view's columns the purpose sees in clear (the only ones that may bound a read);
    ``con``: a ``parser()`` connection."""
    parsed = _parse(sql, con)
    if parsed is None:
        return {name: Read() for name in views}
    tables = [
        n for n in _walk(parsed) if n.get("type") == "BASE_TABLE" and n.get("table_name") in views
    ]
    nodes = list(_walk(parsed))
    star = any(
        n.get("class") == "STAR" or (n.get("type") == "JOIN" and n.get("ref_type") != "REGULAR")
        for n in nodes
    )  # SELECT *, COLUMNS(...), NATURAL / positional / ASOF joins: every column
    mentioned = {
        str(n["column_names"][-1])
        for n in nodes
        if n.get("class") == "COLUMN_REF" and n.get("column_names")
    }
    mentioned |= {
        str(c) for n in nodes if n.get("type") == "JOIN" for c in n.get("using_columns") or []
    }
    reads: dict[str, Read] = {}
    for name in {str(t["table_name"]) for t in tables}:
        columns = None if star else frozenset(mentioned & views[name]) or None
        refs = [t for t in tables if t["table_name"] == name]
        since = until = None
        keys: dict[str, frozenset[str]] = {}
        if len(refs) == 1:
            owner = next(
                (
                    n
                    for n in _walk(parsed)
                    if n.get("type") == "SELECT_NODE" and n.get("from_table") is refs[0]
                ),
                None,
            )
            if owner is not None:
                alias = str(refs[0].get("alias") or name)
                since, until, keys = _bounds(owner.get("where_clause"), alias, clear[name])
        reads[name] = Read(columns, since, until, tuple(sorted(keys.items())))
    return reads
