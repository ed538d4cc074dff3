"""Two lakes compared table by table, row by row: "the same segments give the same lake".

Every Delta table under ``tenants/`` (readings, quarantine incl. the unassigned tenant's,
``quality_results``, reference tables such as ``devices``) and ``platform/`` is read whole
from each lake (a ``Store``: a folder or S3) and its rows compared as multisets, every
column included (flags, reason codes, details), except what legitimately differs between
two runs over the same segments: when the quality gate ran (``IGNORED_COLUMNS``) and what
its freshness rule measured against the clock (``CLOCK_RULES``). Built twice from the same
segments a few seconds apart, the benchmark day's lakes differed in quality_results' ``ts``
alone; the freshness figures move too when the runs are further apart. File names, Delta
versions and commit metadata are not rows and are not compared.

    python -m analytics.compare A B [--json] [--examples N]

exits 0 when the lakes hold the same rows, 1 when they differ (a report per table: rows on
each side, rows only in A, only in B, with examples), 2 when a lake cannot be read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from contracts.errors import EnergylakeError
from lake.delta import read_table
from lake.storage import Store

__all__ = [
    "CLOCK_RULES",
    "IGNORED_COLUMNS",
    "LakeDiff",
    "TableDiff",
    "compare_lakes",
    "delta_tables",
    "freeze",
    "main",
    "table_rows",
]

# Per table name (the last part of its path): columns two runs over the same segments fill
# differently. quality_results: when the gate ran (ts) and when a person decided on a held
# batch (decided_at): wall-clock times.
IGNORED_COLUMNS: Mapping[str, frozenset[str]] = {
    "quality_results": frozenset({"ts", "decided_at"}),
}
# Per table and rule: columns of that rule's rows derived from the wall clock, left out on
# those rows only. The freshness rule measures the age of the newest reading against the
# clock of the run, so its figure, its counts and its reason move with the run's time.
CLOCK_RULES: Mapping[str, Mapping[str, frozenset[str]]] = {
    "quality_results": {
        "freshness": frozenset({"observed", "reason", "unexpected_count", "unexpected_pct"}),
    },
}
_TABLE_ROOTS = ("tenants", "platform")
_DELTA_LOG = "/_delta_log/"

Rows = Counter[tuple[Any, ...]]
_CLOCKED = "<clock>"  # a cell left out of the comparison (CLOCK_RULES)


def freeze(value: Any) -> Any:
    """A cell as a hashable, comparable value: NaN equals NaN, lists and maps are tuples."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    return value


@dataclass(frozen=True, slots=True)
class TableDiff:
    """One table of the two lakes: its rows on each side and the rows of one side only."""

    table: str
    rows_a: int
    rows_b: int
    only_a: int
    only_b: int
    columns_a: list[str]
    columns_b: list[str]
    ignored: list[str]
    examples_a: list[dict[str, Any]] = field(default_factory=list)
    examples_b: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.only_a == 0 and self.only_b == 0 and self.columns_a == self.columns_b


@dataclass(frozen=True, slots=True)
class LakeDiff:
    lake_a: str
    lake_b: str
    tables: list[TableDiff]

    @property
    def identical(self) -> bool:
        return all(t.identical for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lake_a": self.lake_a,
            "lake_b": self.lake_b,
            "identical": self.identical,
            "tables": [{**asdict(t), "identical": t.identical} for t in self.tables],
        }


def delta_tables(store: Store) -> list[str]:
    """The paths (relative to the lake) of every Delta table under tenants/ and platform/."""
    return sorted(
        {
            rel.split(_DELTA_LOG, 1)[0]
            for root in _TABLE_ROOTS
            for rel in store.list(root)
            if _DELTA_LOG in rel
        }
    )


def table_rows(store: Store, rel: str) -> tuple[list[str], Rows]:
    """A table's compared columns (sorted names, ``IGNORED_COLUMNS`` left out) and its rows
    as a multiset of frozen tuples in that column order."""
    table = read_table(store, rel)
    skip = IGNORED_COLUMNS.get(rel.rsplit("/", 1)[-1], frozenset())
    names = sorted(n for n in table.column_names if n not in skip)
    columns = [table.column(n).to_pylist() for n in names]
    rules = CLOCK_RULES.get(rel.rsplit("/", 1)[-1], {})
    if rules:
        rule_of = table.column("rule").to_pylist()
        for rule, clocked in rules.items():
            at = [i for i, r in enumerate(rule_of) if r == rule]
            for k, name in enumerate(names):
                if name in clocked:
                    for i in at:
                        columns[k][i] = _CLOCKED
    rows: Rows = Counter(tuple(freeze(c) for c in row) for row in zip(*columns, strict=True))
    return names, rows


def _examples(names: list[str], rows: Rows, limit: int) -> list[dict[str, Any]]:
    out = []
    for row in sorted(rows.elements(), key=repr)[:limit]:
        out.append(dict(zip(names, row, strict=True)))
    return out


def _diff(
    rel: str, names_a: list[str], rows_a: Rows, names_b: list[str], rows_b: Rows, examples: int
) -> TableDiff:
    if names_a != names_b and names_a and names_b:
        # Compare on the common columns; the difference in columns is reported on its own.
        common = [n for n in names_a if n in set(names_b)]
        rows_a = _project(names_a, rows_a, common)
        rows_b = _project(names_b, rows_b, common)
        shown_a = shown_b = common
    else:
        shown_a, shown_b = names_a, names_b
    only_a, only_b = rows_a - rows_b, rows_b - rows_a
    return TableDiff(
        table=rel,
        rows_a=rows_a.total(),
        rows_b=rows_b.total(),
        only_a=only_a.total(),
        only_b=only_b.total(),
        columns_a=names_a,
        columns_b=names_b,
        ignored=sorted(IGNORED_COLUMNS.get(rel.rsplit("/", 1)[-1], frozenset())),
        examples_a=_examples(shown_a, only_a, examples),
        examples_b=_examples(shown_b, only_b, examples),
    )


def _project(names: list[str], rows: Rows, keep: list[str]) -> Rows:
    index = [names.index(n) for n in keep]
    out: Rows = Counter()
    for row, n in rows.items():
        out[tuple(row[i] for i in index)] += n
    return out


def compare_lakes(store_a: Store, store_b: Store, *, examples: int = 5) -> LakeDiff:
    """Every table of either lake, compared row by row (a table on one side only: all its
    rows are rows of that side only). ``examples``: rows shown per side and table."""
    tables_a, tables_b = set(delta_tables(store_a)), set(delta_tables(store_b))
    diffs = []
    for rel in sorted(tables_a | tables_b):
        names_a, rows_a = table_rows(store_a, rel) if rel in tables_a else ([], Counter())
        names_b, rows_b = table_rows(store_b, rel) if rel in tables_b else ([], Counter())
        diffs.append(_diff(rel, names_a, rows_a, names_b, rows_b, examples))
    return LakeDiff(store_a.url(), store_b.url(), diffs)


def _render(diff: LakeDiff) -> str:
    lines = [f"A: {diff.lake_a}", f"B: {diff.lake_b}"]
    for t in diff.tables:
        state = "same" if t.identical else "DIFFERENT"
        lines.append(
            f"{state:9} {t.table}: rows A {t.rows_a}, B {t.rows_b}; "
            f"only in A {t.only_a}, only in B {t.only_b}"
            + (f" (ignored: {', '.join(t.ignored)})" if t.ignored else "")
        )
        if t.columns_a != t.columns_b:
            lines.append(f"          columns A {t.columns_a}")
            lines.append(f"          columns B {t.columns_b}")
        lines += [f"          only in A: {row}" for row in t.examples_a]
        lines += [f"          only in B: {row}" for row in t.examples_b]
    total = sum(1 for t in diff.tables if not t.identical)
    lines.append(
        f"identical: {len(diff.tables)} tables"
        if diff.identical
        else f"DIFFERENT: {total} of {len(diff.tables)} tables"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analytics.compare",
        description="Compare two lakes table by table, row by row (exit 1 when they differ).",
    )
    parser.add_argument("lake_a", help="the first lake: a folder or an s3:// URI")
    parser.add_argument("lake_b", help="the second lake")
    parser.add_argument("--json", action="store_true", help="the report as JSON")
    parser.add_argument("--examples", type=int, default=5, help="rows shown per side and table")
    args = parser.parse_args(argv)
    try:
        stores = [Store.from_uri(uri) for uri in (args.lake_a, args.lake_b)]
        for uri, store in zip((args.lake_a, args.lake_b), stores, strict=True):
            if not delta_tables(store):
                print(
                    f"no Delta table under tenants/ or platform/ in {uri}: "
                    "pass the lake's root (the folder holding tenants/)",
                    file=sys.stderr,
                )
                return 2
        diff = compare_lakes(*stores, examples=args.examples)
    except (OSError, EnergylakeError) as exc:
        print(f"cannot read the lakes: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(diff.as_dict(), default=str, indent=1) if args.json else _render(diff))
    return 0 if diff.identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
