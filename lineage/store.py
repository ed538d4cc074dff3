"""The lineage store: DuckDB over the file transport's JSON lines, with a Parquet index.

Layout under the lineage folder::

    events/YYYY-MM-DD.jsonl      what the file transport appends (the durable record)
    index/events/DAY.parquet     one row per event (run, job, state, time, parent, error)
    index/io/DAY.parquet         one row per dataset per event (input/output, version, stats)
    index/parts/DAY.parquet      one row per (output table, branch, day) a run wrote
    index/state.json             the size of each day file when it was indexed

:meth:`LineageStore.refresh` indexes a day file again only when it has grown, so a query
after a year of events reads small Parquet files, and only today's file is re-read.
"""

# ruff: noqa: S608 -- SQL text holds only our own file paths (quoted by _q) and integers;
# every user-supplied value (dataset, branch, day, job) is a bound parameter.

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from contracts.errors import ConfigError
from durable.files import atomic_write, install, temp_sibling

__all__ = ["LineageStore", "Trace", "parse_dataset_ref"]

_COLUMNS = (
    "{'eventType': 'VARCHAR', 'eventTime': 'VARCHAR', 'run': 'JSON', 'job': 'JSON', "
    "'inputs': 'JSON', 'outputs': 'JSON'}"
)
_KINDS = ("events", "io", "parts")


def _q(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def parse_dataset_ref(text: str) -> tuple[str, int | None]:
    """``tenants/acme/meter_readings@12`` -> (name, 12); without ``@`` the version is None."""
    name, sep, version = text.rpartition("@")
    if not sep:
        return text, None
    if not version.isdigit():
        raise ConfigError(
            f"{text!r}: the version after @ must be a whole number (e.g. {name}@12)",
            setting="DATASET",
            value=text,
        )
    return name, int(version)


def _index_sql(src: str) -> dict[str, str]:
    ev = (
        f"SELECT * FROM read_json({_q(src)}, format='newline_delimited', columns={_COLUMNS}, "
        "ignore_errors=true, maximum_object_size=67108864)"
    )
    base = (
        "SELECT run->>'runId' AS run_id, eventType AS event_type, "
        "CAST(eventTime AS TIMESTAMPTZ) AS event_time"
    )
    datasets = f"""
        SELECT run_id, event_type, event_time, role, d->>'namespace' AS namespace,
               d->>'name' AS name,
               TRY_CAST(d->'facets'->'version'->>'datasetVersion' AS BIGINT) AS version,
               TRY_CAST(d->'outputFacets'->'outputStatistics'->>'rowCount' AS BIGINT) AS rows,
               TRY_CAST(d->'outputFacets'->'outputStatistics'->>'size' AS BIGINT) AS bytes,
               TRY_CAST(d->'outputFacets'->'outputStatistics'->>'fileCount' AS BIGINT) AS files,
               d->'facets'->'energylake_contract' AS contract
        FROM (
            {base}, 'input' AS role, unnest(from_json(inputs, '["JSON"]')) AS d FROM ev
            UNION ALL
            {base}, 'output' AS role, unnest(from_json(outputs, '["JSON"]')) AS d FROM ev
        )"""
    return {
        "ev": ev,
        "events": f"""
            {base}, job->>'namespace' AS job_namespace, job->>'name' AS job_name,
                run->'facets'->'parent'->'run'->>'runId' AS parent_run_id,
                run->'facets'->'errorMessage'->>'message' AS error,
                run->'facets'->'energylake_run'->>'quality' AS quality
            FROM ev ORDER BY event_time""",
        "io": f"""
            SELECT * EXCLUDE (contract) FROM ({datasets}) ORDER BY name, version""",
        "parts": f"""
            SELECT run_id, event_time, namespace, name, version,
                   p.branchId AS branch_id, p.date AS date, p.rows AS rows
            FROM (
                SELECT *, unnest(from_json(contract->'partitions',
                    '[{{"branchId": "VARCHAR", "date": "DATE", "rows": "BIGINT"}}]')) AS p
                FROM ({datasets}) WHERE role = 'output' AND event_type = 'COMPLETE'
                  AND contract IS NOT NULL
            ) ORDER BY branch_id, date""",
    }


@dataclass
class Trace:
    """A dataset version's lineage: what produced it (upstream) and what read it (downstream)."""

    dataset: str
    version: int | None
    producers: list[dict[str, Any]] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    upstream_tables: list[dict[str, Any]] = field(default_factory=list)
    downstream: list[dict[str, Any]] = field(default_factory=list)


class LineageStore:
    """Queries over the stored events (see the module doc)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.events_dir = directory / "events"
        self.index_dir = directory / "index"

    # --- index ---------------------------------------------------------------------------

    def _state(self) -> dict[str, int]:
        path = self.index_dir / "state.json"
        if not path.is_file():
            return {}
        data: dict[str, int] = json.loads(path.read_text())
        return data

    def refresh(self) -> int:
        """Index every day file that grew since it was last indexed; returns how many."""
        if not self.events_dir.is_dir():
            return 0
        state = self._state()
        todo = [
            p
            for p in sorted(self.events_dir.glob("*.jsonl"))
            if state.get(p.stem) != p.stat().st_size
        ]
        if not todo:
            return 0
        for kind in _KINDS:
            (self.index_dir / kind).mkdir(parents=True, exist_ok=True)
        con = duckdb.connect()
        try:
            for path in todo:
                size = path.stat().st_size  # index what is there now; a later append re-indexes
                sql = _index_sql(str(path))
                con.execute(f"CREATE OR REPLACE TEMP TABLE ev AS {sql['ev']}")
                for kind in _KINDS:
                    target = self.index_dir / kind / f"{path.stem}.parquet"
                    tmp = temp_sibling(target)
                    con.execute(
                        f"COPY ({sql[kind]}) TO {_q(str(tmp))} "
                        "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 16384)"
                    )
                    install(tmp, target)
                state[path.stem] = size
        finally:
            con.close()
        atomic_write(self.index_dir / "state.json", json.dumps(state, sort_keys=True).encode())
        return len(todo)

    def _files(self, kind: str, last_days: int | None = None) -> str | None:
        files = sorted((self.index_dir / kind).glob("*.parquet"))
        if last_days is not None:
            files = files[-last_days:]
        if not files:
            return None
        return "[" + ", ".join(_q(str(f)) for f in files) + "]"

    def _connect(self) -> Any:
        self.refresh()
        return duckdb.connect()

    # --- queries -------------------------------------------------------------------------

    def runs(self, limit: int = 20, job: str | None = None) -> list[dict[str, Any]]:
        """The most recent runs: job, run id, state, start and end, outputs with versions."""
        con = self._connect()
        days = 2
        total = len(list((self.index_dir / "events").glob("*.parquet")))
        while True:
            rows = self._runs(con, limit, job, days)
            if len(rows) >= limit or days >= total:
                return rows
            days *= 4

    def _runs(self, con: Any, limit: int, job: str | None, days: int) -> list[dict[str, Any]]:
        events, io = self._files("events", days), self._files("io", days)
        if events is None or io is None:
            return []
        where = "WHERE job_name = $job" if job else ""
        sql = f"""
            WITH r AS (
                SELECT run_id, any_value(job_name) AS job,
                       arg_max(event_type, event_time) AS state,
                       min(event_time) FILTER (WHERE event_type = 'START') AS started,
                       max(event_time) FILTER (WHERE event_type IN ('COMPLETE', 'FAIL'))
                           AS ended,
                       max(event_time) AS last_seen,
                       any_value(parent_run_id) AS parent_run_id,
                       arg_max(error, event_time) AS error,
                       max(quality) AS quality
                FROM read_parquet({events}) {where}
                GROUP BY run_id ORDER BY last_seen DESC LIMIT {int(limit)}
            ), o AS (
                SELECT run_id, list(DISTINCT name || '@' || coalesce(version::VARCHAR, '?')
                                    ORDER BY name || '@' || coalesce(version::VARCHAR, '?'))
                           AS outputs
                FROM read_parquet({io})
                WHERE role = 'output' AND event_type = 'COMPLETE'
                  AND run_id IN (SELECT run_id FROM r)
                GROUP BY run_id
            )
            SELECT r.*, coalesce(o.outputs, []) AS outputs
            FROM r LEFT JOIN o USING (run_id) ORDER BY last_seen DESC"""
        cur = con.execute(sql, {"job": job} if job else None)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def trace(self, dataset: str, version: int | None = None, *, depth: int = 5) -> Trace:
        """Upstream: the runs that wrote ``dataset`` up to ``version``, the segments they
        read, and (recursively) the tables they read. Downstream: the runs that read it (at
        ``version`` or later) and wrote something else, recursively, with those outputs."""
        con = self._connect()
        io = self._files("io")
        trace = Trace(dataset, version)
        if io is None:
            return trace
        con.execute(f"CREATE TEMP VIEW io AS SELECT * FROM read_parquet({io})")
        con.execute(f"CREATE TEMP VIEW ev AS SELECT * FROM read_parquet({self._files('events')})")
        con.execute(
            "CREATE TEMP TABLE tables AS SELECT DISTINCT name FROM io WHERE role = 'output'"
        )
        # upstream, level by level
        frontier = [(dataset, version)]
        seen: set[tuple[str, int | None]] = set()
        segments: set[str] = set()
        for level in range(depth):
            nxt: list[tuple[str, int | None]] = []
            for name, upto in frontier:
                if (name, upto) in seen:
                    continue
                seen.add((name, upto))
                cond = "" if upto is None else f"AND version <= {int(upto)}"
                producers = con.execute(
                    f"""SELECT p.run_id, any_value(e.job_name) AS job, max(p.version) AS version,
                               max(p.rows) AS rows, max(p.event_time) AS at
                        FROM io p JOIN ev e USING (run_id)
                        WHERE p.role = 'output' AND p.event_type = 'COMPLETE'
                          AND p.name = ? {cond}
                        GROUP BY p.run_id ORDER BY version DESC NULLS LAST""",
                    [name],
                ).fetchall()
                ids = [r[0] for r in producers]
                for run_id, job, ver, rows, at in producers:
                    entry = {"run_id": run_id, "job": job, "dataset": name, "version": ver}
                    entry |= {"rows": rows, "at": at, "level": level}
                    trace.producers.append(entry)
                if not ids:
                    continue
                inputs = con.execute(
                    """SELECT DISTINCT i.name, i.version, i.namespace,
                              i.name IN (SELECT name FROM tables) AS is_table
                       FROM io i WHERE i.role = 'input' AND i.run_id IN (SELECT unnest(?))
                         AND NOT EXISTS (SELECT 1 FROM io x WHERE x.run_id = i.run_id
                                         AND x.role = 'output' AND x.name = i.name)""",
                    [ids],
                ).fetchall()
                for in_name, in_version, namespace, is_table in inputs:
                    if not is_table:
                        segments.add(in_name)
                    else:
                        trace.upstream_tables.append(
                            {"dataset": in_name, "version": in_version, "namespace": namespace}
                        )
                        nxt.append((in_name, in_version))
            frontier = nxt
            if not frontier:
                break
        trace.segments = sorted(segments)
        # downstream, level by level
        frontier = [(dataset, version)]
        seen = set()
        for level in range(depth):
            nxt = []
            for name, since in frontier:
                if (name, since) in seen:
                    continue
                seen.add((name, since))
                cond = (
                    "" if since is None else f"AND (i.version IS NULL OR i.version >= {int(since)})"
                )
                rows = con.execute(
                    f"""SELECT DISTINCT o.run_id, e.job_name, o.name, o.version
                        FROM io i JOIN io o ON o.run_id = i.run_id AND o.role = 'output'
                             AND o.event_type = 'COMPLETE' AND o.name <> i.name
                        JOIN (SELECT DISTINCT run_id, job_name FROM ev) e ON e.run_id = i.run_id
                        WHERE i.role = 'input' AND i.name = ? {cond}
                          AND NOT EXISTS (SELECT 1 FROM io x WHERE x.run_id = i.run_id
                                          AND x.role = 'output' AND x.name = i.name)
                        ORDER BY o.name, o.version""",
                    [name],
                ).fetchall()
                for run_id, job, out_name, out_version in rows:
                    trace.downstream.append(
                        {
                            "run_id": run_id,
                            "job": job,
                            "from": name,
                            "dataset": out_name,
                            "version": out_version,
                            "level": level,
                        }
                    )
                    nxt.append((out_name, out_version))
            frontier = nxt
            if not frontier:
                break
        return trace

    def where(self, branch_id: str, day: str) -> list[dict[str, Any]]:
        """Which runs wrote ``branch_id``'s rows of UTC day ``day`` into which table versions."""
        con = self._connect()
        parts = self._files("parts")
        if parts is None:
            return []
        cur = con.execute(
            f"""SELECT run_id, name AS dataset, version, rows, event_time AS at, namespace
                FROM read_parquet({parts})
                WHERE branch_id = ? AND date = CAST(? AS DATE)
                ORDER BY dataset, version""",
            [branch_id, day],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def segments_of(self, run_ids: list[str]) -> dict[str, list[str]]:
        """The landing segments each run read (its inputs that no run wrote as a table)."""
        io = self._files("io")
        if io is None or not run_ids:
            return {}
        con = self._connect()
        rows = con.execute(
            f"""SELECT DISTINCT run_id, name FROM read_parquet({io})
                WHERE role = 'input' AND run_id IN (SELECT unnest(?))
                  AND name NOT IN (SELECT DISTINCT name FROM read_parquet({io})
                                   WHERE role = 'output')
                ORDER BY run_id, name""",
            [run_ids],
        ).fetchall()
        out: dict[str, list[str]] = {}
        for run_id, name in rows:
            out.setdefault(str(run_id), []).append(str(name))
        return out
