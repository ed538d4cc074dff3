"""Reading the lake: governed access for analysts (``access``: a locked DuckDB session
over views shaped for one purpose; ``grants``, ``objections``, ``extract``, ``sqltext``),
and the platform's own queries: telemetry tables and per-branch totals (``queries``),
sequence gaps (``gaps``) and the comparison of two lakes row by row (``compare``, also
``python -m analytics.compare A B``). Each takes plain values (a ``Store``, a contract
registry, times), never settings. Imports ``contracts``, ``durable``, ``lake``,
``lineage``, ``audit`` and ``batch`` only."""
