"""The audit log of energylake: one JSON record per line under ``<audit_dir>/YYYY-MM-DD.jsonl``.

One format and one writer for every record an auditor reads: the gateway's security events at
the edge (folded repeats, bounded volume), the pipeline's security quarantines, the quality
gate's release decisions, and the analysts' data access (governed access). Imports only
``contracts`` and ``durable``; the gateway, the pipeline and analytics import it.
"""
