"""Where things are inside a store: pure functions from ids to relative paths.

::

    tenants/<tenant>/<dataset>/            a Delta table per tenant and dataset
    tenants/_unassigned/quarantine/        quarantined records whose tenant is unknown
    platform/clients/                      the clients table (the platform's own)
    platform/<dataset>/                    other platform-wide reference (emission factors, ...)
    archive/<tenant>/<dataset>/            the archive tier of a tenant's dataset (retention)
    raw/<YYYY>/<MM>/<DD>/<segment>         raw archive of landing segments
    _state/<pipeline_id>/...               pipeline state (checkpoints, plans)

Every id is validated: a path is never built from an unchecked string.
"""

from __future__ import annotations

import re
from datetime import date

from lake.errors import LayoutError
from lake.storage import Store

__all__ = [
    "HELD_FOLDER",
    "QUARANTINE_DATASET",
    "RETENTION_BEFORE_KEY",
    "RETENTION_TXN",
    "UNASSIGNED_TENANT",
    "archive_rel",
    "check_dataset",
    "check_tenant",
    "clients_rel",
    "months_between",
    "platform_rel",
    "raw_archive_rel",
    "retention_source_txn",
    "state_rel",
    "table_rel",
    "tenants",
]

UNASSIGNED_TENANT = "_unassigned"
QUARANTINE_DATASET = "quarantine"
# Held rows wait here, in the table's folder (the tenant's prefix) but out of its data: a
# folder whose name starts with "_" is never touched by vacuum (delta-rs, Spark).
HELD_FOLDER = "_held"

_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{1,31}$")
_DATASET = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_PIPELINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=@+-]{0,254}$")


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant id (``^[a-z0-9][a-z0-9-]{1,31}$``)."""
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise LayoutError(f"invalid tenant id {tenant!r} (expected ^[a-z0-9][a-z0-9-]{{1,31}}$)")
    return tenant


def check_dataset(dataset: str) -> str:
    """``dataset`` if it is a valid dataset name (a contract's dataset)."""
    if not isinstance(dataset, str) or not _DATASET.match(dataset):
        raise LayoutError(f"invalid dataset name {dataset!r}")
    return dataset


def _component(value: str, what: str) -> str:
    if not isinstance(value, str) or not _COMPONENT.match(value) or value in (".", ".."):
        raise LayoutError(f"invalid {what} {value!r}")
    return value


def table_rel(tenant: str, dataset: str) -> str:
    """``tenants/<tenant>/<dataset>``; the unassigned tenant only holds quarantine."""
    check_dataset(dataset)
    if tenant == UNASSIGNED_TENANT:
        if dataset != QUARANTINE_DATASET:
            raise LayoutError(
                f"only {QUARANTINE_DATASET!r} may be stored for the unassigned tenant, "
                f"not {dataset!r}"
            )
    else:
        check_tenant(tenant)
    return f"tenants/{tenant}/{dataset}"


def archive_rel(tenant: str, dataset: str) -> str:
    """``archive/<tenant>/<dataset>``: the archive tier of ``table_rel(tenant, dataset)``
    (a Delta table of its own, partitioned by the month of the retention basis)."""
    table_rel(tenant, dataset)  # the same checks
    return f"archive/{tenant}/{dataset}"


RETENTION_TXN = "retention:archive"
"""App id of a hot table's retention delete commits (version: the hot version the pass read)."""
RETENTION_BEFORE_KEY = "energylake.retention.before"
"""Commit metadata key of a retention commit: the cut-off (ISO timestamp) of its predicate."""


def retention_source_txn(hot_rel: str) -> str:
    """App id of an archive table's commit of a pass over ``hot_rel`` (version: the hot
    version the pass read). The archive has it and the hot table's RETENTION_TXN is older:
    the pass is archived and not yet deleted from hot (retention.apply)."""
    return f"retention:{hot_rel}"


def clients_rel() -> str:
    """The clients table: ``platform/clients``."""
    return platform_rel("clients")


def platform_rel(dataset: str) -> str:
    """A platform-wide table (one for all tenants; contract scope ``platform``):
    ``platform/<dataset>``."""
    return f"platform/{check_dataset(dataset)}"


def months_between(start: date, end: date) -> list[str]:
    """The ``event_month`` partition values (YYYY-MM) from ``start``'s month to ``end``'s."""
    out, year, month = [], start.year, start.month
    while (year, month) <= (end.year, end.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def raw_archive_rel(segment_name: str, day: date) -> str:
    """``raw/<YYYY>/<MM>/<DD>/<segment_name>``: where a landing segment is archived."""
    _component(segment_name, "segment name")
    return f"raw/{day.year:04d}/{day.month:02d}/{day.day:02d}/{segment_name}"


def state_rel(pipeline_id: str, *parts: str) -> str:
    """``_state/<pipeline_id>/<part>/...``: a pipeline's own state."""
    if not isinstance(pipeline_id, str) or not _PIPELINE.match(pipeline_id):
        raise LayoutError(f"invalid pipeline id {pipeline_id!r}")
    for part in parts:
        _component(part, "state path component")
    return "/".join(("_state", pipeline_id, *parts))


def tenants(store: Store) -> list[str]:
    """The tenants that have a directory in the store (sorted; not the unassigned one)."""
    return [name for name in store.children("tenants") if _TENANT.match(name)]
