"""Splitting a writer's uncommitted data files in two by a row predicate.

Two steps of the batch protocol need it, both before a commit and both rare: the commit
guard leaves out readings another writer committed first (``lake.guard``), and the quality
gate holds the rows of the devices a failed rule is about while the rest of the table is
published (``pipelines.batch_commit``). Files whose rows all fall on one side keep their
name; the others are rewritten under names derived from the original and a tag, so a
replay rewrites the same names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from contracts.model import Contract
from lake.delta import DataFile, write_data_file
from lake.storage import Store

__all__ = ["Split", "split_files", "table_filesystem"]

_TAG = re.compile(r"[a-z]\d*")


@dataclass(frozen=True, slots=True)
class Split:
    """The two sides of :func:`split_files`."""

    kept: list[DataFile]
    taken: list[DataFile]  # empty when the taken rows were not to be written
    taken_rows: pl.DataFrame  # the taken rows (every column, partition columns included)


def table_filesystem(store: Store, rel: str) -> pafs.FileSystem:
    """A pyarrow filesystem rooted at the table (data file paths are relative to it)."""
    fs, base = store.filesystem()
    return pafs.SubTreeFileSystem(f"{base}/{rel}", fs)


def split_files(
    store: Store,
    rel: str,
    contract: Contract,
    files: Sequence[DataFile],
    take: Callable[[pl.DataFrame], pl.Series],
    *,
    kept_tag: str,
    taken_tag: str | None,
    taken_folder: str = "",
) -> Split:
    """Split every file's rows by ``take(rows)`` (a boolean mask): the rows not taken stay
    (a rewritten file gets ``-<kept_tag>``), the taken ones are written as files tagged
    ``-<taken_tag>`` (under the table's ``taken_folder``, when given), or dropped when
    ``taken_tag`` is None. Tags are a letter and digits."""
    schema = contract.arrow_schema()
    fs = table_filesystem(store, rel)
    kept: list[DataFile] = []
    taken: list[DataFile] = []
    rows: list[pl.DataFrame] = []
    for data_file in files:
        raw = pl.from_arrow(pq.read_table(data_file.path, filesystem=fs))
        assert isinstance(raw, pl.DataFrame)
        mask = take(raw).fill_null(False)
        if not mask.any():
            kept.append(data_file)
            continue
        parts = {k: pl.lit(v, pl.String) for k, v in data_file.partition_values.items()}
        full = raw.with_columns(**parts)
        out, gone = full.filter(~mask), full.filter(mask)
        rows.append(gone)
        sides = ((out, kept_tag, kept, ""), (gone, taken_tag, taken, taken_folder))
        for side, tag, into, folder in sides:
            if tag is None or side.height == 0:
                continue
            table = side.to_arrow().select(schema.names).cast(schema)
            name = _tagged(data_file.path, tag)
            into.append(
                write_data_file(store, rel, table, data_file.partition_values, name, folder=folder)
            )
    frame = pl.concat(rows, how="vertical_relaxed") if rows else pl.DataFrame()
    return Split(kept, taken, frame)


def _tagged(path: str, tag: str) -> str:
    """``part-...-0000.zstd.parquet`` -> ``part-...-0000-<tag>.zstd.parquet``."""
    if not _TAG.fullmatch(tag):
        raise ValueError(f"a file tag is a letter and digits, not {tag!r}")
    stem, _, suffix = path.rsplit("/", 1)[-1].partition(".")
    return f"{stem}-{tag}.{suffix}"
