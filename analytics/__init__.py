"""Queries over the lake: its telemetry tables and per-branch totals (``queries``), sequence
gaps (``gaps``) and the comparison of two lakes row by row (``compare``, also
``python -m analytics.compare A B``). Each takes plain values (a ``Store``, a contract
registry, times), never settings. Imports ``contracts``, ``lake``, ``lineage``, ``audit``
and ``batch`` only."""
