"""Security events the pipeline finds, as audit records.

The gateway audits what it refuses at the edge (audit/log.py). Some security events
can only be seen after decoding: an MQTT message whose topic or payload claims another
client or branch than its authenticated device (``BRANCH_MISMATCH``), or a device the
registry does not know (``UNKNOWN_DEVICE``). Those rows are quarantined; this module adds
one audit record per row, in the same format as the gateway's, under
``<data_dir>/audit/pipeline/YYYY-MM-DD.jsonl``.

Once per batch: a marker in the batch's state (``audited.json``) is written after the
records, so a batch finished after a crash does not audit twice -- unless the crash falls
between the records and the marker; then records repeat, each carrying its
``quarantine_id`` so a reader can tell.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pds

from audit.log import AuditLog
from batch.records import Plan
from lake.storage import Store

__all__ = ["AUDITED_REASONS", "audit_batch"]

AUDITED_REASONS = ("BRANCH_MISMATCH", "UNKNOWN_DEVICE")
_COLUMNS = [  # branch_id is the file's partition value, not a column in it
    "quarantine_id",
    "reason_code",
    "client_id",
    "device_id",
    "identity",
    "source",
    "topic",
    "detail",
    "batch_id",
    "claimed_device_id",
    "claimed_device_sha256",
]


def audit_batch(
    store: Store, plan: Plan, marker: str, audit_dir: Path, anchor_dir: Path | None = None
) -> int:
    """Audit the batch's security quarantines (once, ``marker``: the batch's audited
    marker in the lake, ``batch.state.BatchState.audited_rel``); records written.
    ``anchor_dir``: the ``audit_anchor_dir`` setting."""
    if store.exists(marker):
        return 0
    fs, base = store.filesystem()
    log = AuditLog(audit_dir, component="pipeline", anchor_dir=anchor_dir)
    written = 0
    try:
        for rel, entry in sorted(plan.tables.items()):
            if entry.dataset != "quarantine" or not entry.files:
                continue
            # One scan of the table's new files (not a read per file: a batch writes one
            # per branch); each row's file names its branch (the partition value).
            branches = {
                f"{base}/{rel}/{file['path']}": (file.get("partition_values") or {}).get(
                    "branch_id"
                )
                or None
                for file in entry.files
            }
            files = pds.dataset(list(branches), filesystem=fs, format="parquet")
            # (a quarantine contract older than the claim columns: without them)
            columns = [c for c in _COLUMNS if c in files.schema.names]
            table = (
                files.scanner(
                    columns=[*columns, "__filename"],
                    filter=pc.field("reason_code").isin(list(AUDITED_REASONS)),
                )
                .to_table()
                .sort_by([("__filename", "ascending"), ("quarantine_id", "ascending")])
            )
            for row in table.to_pylist():
                device = row["device_id"] or row["identity"]
                claim = row.get("claimed_device_id")
                digest = row.get("claimed_device_sha256")
                claimed = (
                    f"; payload claimed device_id {claim} (sha256 {digest})"
                    if claim is not None and claim != device
                    else ""
                )
                log.record(
                    row["reason_code"].lower(),
                    device_id=device,
                    client_id=row["client_id"],
                    branch_id=branches[row["__filename"]],
                    remote=row["source"],
                    detail=(
                        f"{row['detail']}{claimed}; topic {row['topic']}; quarantine_id "
                        f"{row['quarantine_id']}; batch {row['batch_id']}"
                    ),
                )
                written += 1
    finally:
        log.close()
    store.put_bytes(marker, (json.dumps({"records": written}) + "\n").encode())
    return written
