"""Quarantine rows name the authenticated device, never the payload's claim."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from contracts import load_registry
from transforms.frames import CLAIM_CHARS, DETAIL_CHARS, quarantine_rows

REGISTRY = load_registry(Path(__file__).resolve().parents[2] / "contracts")
DEVICES = pl.DataFrame(
    {"device_id": ["m-1", "m-9"], "client_id": ["c1", "c2"], "branch_id": ["b1", "b9"]}
)
LONG = "m-9" + "x" * 59_997  # another tenant's device id, padded to 60,000 characters


def _rows(identity: list[str], source: list[str], claims: list[str | None]) -> pl.DataFrame:
    n = len(claims)
    return pl.DataFrame(
        {
            "_elem": [0] * n,
            "reason_code": ["BRANCH_MISMATCH"] * n,
            "detail": ["x" * 5000] * n,
            "pipeline_step": ["enforce"] * n,
            "dataset": ["meter_readings"] * n,
            "device_id": claims,
            "seq": [1] * n,
            "received_at": [datetime(2024, 1, 1, tzinfo=UTC)] * n,
            "source": source,
            "topic": ["emaas/v1/c1/b1/m-1/telemetry"] * n,
            "identity": identity,
            "payload": [b"{}"] * n,
            "segment": ["seg"] * n,
            "offset_bytes": list(range(n)),
        },
        schema_overrides={"_elem": pl.Int32, "seq": pl.Int64},
    )


def test_device_is_the_identity_and_the_claim_is_cut_with_a_hash_of_all_of_it() -> None:
    frame = _rows(["m-1", "m-1", "m-1"], ["mqtt"] * 3, [LONG, "m-9", None])
    q = quarantine_rows(frame, REGISTRY, DEVICES, batch_id="t:1")
    assert q["device_id"].to_list() == ["m-1"] * 3
    assert q["client_id"].to_list() == ["c1"] * 3  # the identity's tenant, never the claim's
    assert q["claimed_device_id"].to_list() == [LONG[:CLAIM_CHARS] + "…", "m-9", None]
    assert q["claimed_device_sha256"].to_list() == [
        hashlib.sha256(LONG.encode()).hexdigest(),
        hashlib.sha256(b"m-9").hexdigest(),
        None,
    ]
    assert q["detail"].str.len_chars().to_list() == [DETAIL_CHARS] * 3


def test_a_file_import_has_no_identity_so_only_a_well_formed_claim_names_the_device() -> None:
    frame = _rows(["", ""], ["file", "file"], ["m-9", LONG])
    q = quarantine_rows(frame, REGISTRY, DEVICES, batch_id="t:1")
    assert q["device_id"].to_list() == ["m-9", None]
    assert q["client_id"].to_list() == ["c2", None]  # None: the unassigned tenant
    assert q["claimed_device_id"].to_list() == ["m-9", LONG[:CLAIM_CHARS] + "…"]
