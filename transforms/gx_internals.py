"""Every use energylake makes of Great Expectations beyond its documented API, in one place.

1. **No batch fingerprint** (``great_expectations.execution_engine.pandas_execution_engine
   .HASH_THRESHOLD``, a module global with no setting or parameter in front of it). For
   every pandas batch smaller than the threshold (1e9 bytes by default) GE hashes the whole
   frame (``hash_pandas_object`` over all rows, then md5) only to store the result as the
   ``pandas_data_fingerprint`` batch marker. The gate does not use it: our batch id names
   the batch. :func:`skip_batch_fingerprint` sets the threshold to 0 for this process, so
   no frame is hashed. Profiled at about 20 % of the gate's time on 100k rows when it was
   introduced; measured again for this module on a 100k-row, 5-column rows frame (one
   string column): the hash alone took 6 to 14 ms (median 12 ms, 7 runs) against 55 to
   110 ms for the whole rows validation, on a shared 2-core machine.
   Called by the gate's engine (``transforms/quality.py``). Test:
   ``tests/transforms/test_gx_internals.py`` runs a rows validation through the gate's engine
   and fails when its batch markers carry a fingerprint. If GE drops the global,
   :func:`skip_batch_fingerprint` logs a warning and returns False, and that test fails.

The module imports GE only when called: GE takes about two seconds to import.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["FINGERPRINT_MARKER", "fingerprinted", "skip_batch_fingerprint"]

log = logging.getLogger(__name__)

FINGERPRINT_MARKER = "pandas_data_fingerprint"
_THRESHOLD = "HASH_THRESHOLD"


def skip_batch_fingerprint() -> bool:
    """Stop GE hashing every pandas batch in this process (see the module doc); False, with
    a warning, when GE no longer has the threshold."""
    from great_expectations.execution_engine import pandas_execution_engine

    if not hasattr(pandas_execution_engine, _THRESHOLD):
        log.warning(
            "Great Expectations has no pandas_execution_engine.%s any more: batches are "
            "fingerprinted (see transforms/gx_internals.py)",
            _THRESHOLD,
        )
        return False
    pandas_execution_engine.HASH_THRESHOLD = 0
    return True


def fingerprinted(validation_result: Any) -> bool:
    """Whether GE hashed the batch behind ``validation_result`` (its batch markers say)."""
    markers = validation_result.meta.get("batch_markers") or {}
    return FINGERPRINT_MARKER in markers
