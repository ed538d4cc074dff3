"""The proof of an erasure: read every byte of a folder (or every object of a bucket) and
look for a person's identifiers in every stored form.

A file is searched as raw bytes (lower-cased: case variants), and, when it is Parquet --
lake data files, Delta checkpoints, extracts -- also as its decoded values, because
compressed pages hide the bytes (every column, footer statistics included, as text). A
gzip file is searched decompressed. The file's own path is searched too (partition folder
names). What is searched for: ``Subject.matcher`` -- clear identifiers, the last ten digits
of a mobile, and the person's pseudonyms, in any case; a mobile's digits also with separators.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lake.storage import Store
from retention.subject import Matcher

__all__ = ["ScanHit", "ScanReport", "parquet_text", "scan_bytes", "scan_folder", "scan_store"]


@dataclass(frozen=True, slots=True)
class ScanHit:
    path: str
    form: str  # "name", "bytes", "parquet values", "gzip"


@dataclass(slots=True)
class ScanReport:
    files: int = 0
    size_bytes: int = 0
    hits: list[ScanHit] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.hits


def _value_bytes(array: pa.Array) -> bytes:
    """The values of a string-like or integer column, back to back, as UTF-8 bytes (the
    data buffer itself: no per-value Python work). Other types hold no identifier."""
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        array = array.flatten()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary
    kind = array.type
    if pa.types.is_integer(kind):
        array = pc.cast(array, pa.large_string())
    elif pa.types.is_string(kind) or pa.types.is_binary(kind):
        array = pc.cast(array, pa.large_binary())
    elif not (pa.types.is_large_string(kind) or pa.types.is_large_binary(kind)):
        return b""
    if len(array) == 0:
        return b""
    offsets = array.buffers()[1]
    data = array.buffers()[2]
    if data is None or offsets is None:
        return b""
    ends = pa.Array.from_buffers(pa.int64(), len(array) + 1, [None, offsets], offset=array.offset)
    first, last = (int(v.as_py()) for v in pc.min_max(ends).values())
    whole: bytes = data.to_pybytes()
    return whole[first:last]


def parquet_text(data: bytes) -> str:
    """Every string and integer value of a Parquet file, and its footer metadata and
    statistics, as text (values back to back; a match across two values is possible and
    only ever reported, never missed)."""
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except (pa.ArrowException, OSError, ValueError):
        return ""
    parts: list[bytes] = [str(parquet.metadata.metadata or b"").encode()]
    for group in range(parquet.metadata.num_row_groups):
        meta = parquet.metadata.row_group(group)
        for column in range(meta.num_columns):
            stats = meta.column(column).statistics
            if stats is not None and stats.has_min_max:
                parts.append(f"{stats.min!r} {stats.max!r}".encode())
    try:
        table = parquet.read()
    except (pa.ArrowException, OSError, ValueError):
        return b"\n".join(parts).decode("utf-8", "replace")
    for column in table.columns:
        for chunk in column.chunks:
            parts.append(_value_bytes(chunk))
    return b"\n".join(parts).decode("utf-8", "replace")


def scan_bytes(name: str, data: bytes, matcher: Matcher) -> list[ScanHit]:
    """Where in one file (its name, bytes, decoded values) an identifier appears."""
    hits: list[ScanHit] = []
    if matcher.found_text(name):
        hits.append(ScanHit(name, "name"))
    if matcher.found(data):
        hits.append(ScanHit(name, "bytes"))
    if data[:4] == b"PAR1":
        if matcher.found_text(parquet_text(data)):
            hits.append(ScanHit(name, "parquet values"))
    elif data[:2] == b"\x1f\x8b":
        try:
            inflated = gzip.decompress(data)
        except (OSError, EOFError):
            inflated = b""
        if matcher.found(inflated):
            hits.append(ScanHit(name, "gzip"))
    return hits


def _walk(root: Path, skip: tuple[Path, ...]) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if (
            path.is_file()
            and not path.is_symlink()
            and not any(path.is_relative_to(s) for s in skip)
        ):
            yield path


def scan_folder(root: Path, wanted: Matcher, skip: tuple[Path, ...] = ()) -> ScanReport:
    """Every file under ``root`` but those under ``skip`` (names of folders included,
    through the files' paths)."""
    report = ScanReport()
    for path in _walk(root, skip):
        data = path.read_bytes()
        report.files += 1
        report.size_bytes += len(data)
        report.hits.extend(scan_bytes(str(path.relative_to(root)), data, wanted))
    return report


def scan_store(store: Store, wanted: Matcher, prefix: str = "") -> ScanReport:
    """Every object (S3) or file (local) of a lake store under ``prefix``."""
    report = ScanReport()
    for rel in store.list(prefix):
        data = store.get_bytes(rel) or b""
        report.files += 1
        report.size_bytes += len(data)
        report.hits.extend(scan_bytes(rel, data, wanted))
    return report
