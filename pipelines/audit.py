"""Security events the pipeline finds, as audit records.

The gateway audits what it refuses at the edge (gateway/audit.py). Some security events
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
from typing import Any

import pyarrow.parquet as pq

from gateway.audit import AuditLog
from lake.layout import state_rel
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
]


def audit_batch(
    store: Store, plan: dict[str, Any], pipeline_id: str, n: int, audit_dir: Path
) -> int:
    """Audit the batch's security quarantines (once); the number of records written."""
    marker = state_rel(pipeline_id, "batches", f"{n:010d}", "audited.json")
    if store.exists(marker):
        return 0
    fs, base = store.filesystem()
    log = AuditLog(audit_dir, component="pipeline")
    written = 0
    try:
        for rel, entry in sorted(plan["tables"].items()):
            if entry["dataset"] != "quarantine":
                continue
            for file in entry["files"]:
                branch = (file.get("partition_values") or {}).get("branch_id") or None
                table = pq.read_table(
                    f"{base}/{rel}/{file['path']}",
                    filesystem=fs,
                    columns=_COLUMNS,
                    filters=[("reason_code", "in", list(AUDITED_REASONS))],
                )
                for row in table.to_pylist():
                    log.record(
                        row["reason_code"].lower(),
                        device_id=row["identity"] or row["device_id"],
                        client_id=row["client_id"],
                        branch_id=branch,
                        remote=row["source"],
                        detail=(
                            f"{row['detail']}; topic {row['topic']}; quarantine_id "
                            f"{row['quarantine_id']}; batch {row['batch_id']}"
                        ),
                    )
                    written += 1
    finally:
        log.close()
    store.put_bytes(marker, (json.dumps({"records": written}) + "\n").encode())
    return written
