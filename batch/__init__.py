"""The batch protocol: the typed records a batch keeps in the lake (manifest, plan, table
statistics, gate verdicts, done record; ``batch.records``) and the one module that knows
where they live under ``_state/<pipeline>/`` (``batch.state``).

Import the module you need (``from batch.state import BatchState``).
"""
