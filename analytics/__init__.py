"""Queries over the lake for people: the DuckDB access layer (tenant- and purpose-scoped,
audited) and the reports built on it. Imports ``contracts``, ``lake`` and ``lineage`` only."""
