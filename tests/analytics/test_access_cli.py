"""``energylake access``, ``energylake sql`` and ``energylake extract`` as a user runs them
(real processes over the governed test lake)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from audit.query import read_records
from lake.delta import read_table
from lake.layout import table_rel
from tests.analytics.conftest import GovernedLake

ENERGYLAKE = str(Path(sys.executable).with_name("energylake"))


def run(
    lake: GovernedLake, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENERGYLAKE_")}
    env["ENERGYLAKE_DATA_DIR"] = str(lake.settings.data_dir)
    env["COLUMNS"] = "200"  # rich tables unwrapped
    return subprocess.run(
        [ENERGYLAKE, *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        input=stdin,
        timeout=120,
    )


def test_grant_list_revoke_and_their_errors(governed_lake: GovernedLake) -> None:
    tenant = governed_lake.tenants[0]
    made = run(
        governed_lake,
        "access",
        "grant",
        "cli.ana",
        "--tenant",
        tenant,
        "--purpose",
        "benchmarking",
        "--purpose",
        "field_service",
    )
    assert made.returncode == 0, made.stderr
    listed = run(governed_lake, "access", "list")
    assert "cli.ana" in listed.stdout
    assert "benchmarking, field_service" in listed.stdout
    bad = run(
        governed_lake,
        "access",
        "grant",
        "cli.ana",
        "--tenant",
        "atlantis",
        "--purpose",
        "benchmarking",
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: unknown tenant atlantis")
    assert len(bad.stderr.strip().splitlines()) == 1
    taken = run(governed_lake, "access", "revoke", "cli.ana", "--purpose", "field_service")
    assert taken.returncode == 0, taken.stderr
    assert governed_lake.book().load().grants["cli.ana"].purposes == {"benchmarking"}


def test_sql_answers_in_every_format_and_refuses_what_is_not_granted(
    governed_lake: GovernedLake, tmp_path: Path
) -> None:
    tenant = governed_lake.tenants[0]
    governed_lake.book().grant("cli.bo", tenants=[tenant], purposes=["benchmarking"], actor="t")
    query = "SELECT count(*) AS n, count(DISTINCT technician_phone) AS p FROM work_orders"
    as_json = run(
        governed_lake,
        "sql",
        "--as",
        "cli.bo",
        "--purpose",
        "benchmarking",
        "-c",
        query,
        "--format",
        "json",
    )
    assert as_json.returncode == 0, as_json.stderr
    row = orjson.loads(as_json.stdout.splitlines()[0])
    assert row["n"] > 0
    odd_types = "SELECT 1.5 AS d, '\\xAB'::BLOB AS b, INTERVAL 1 HOUR AS i"
    odd = run(governed_lake, "sql", "--as", "cli.bo", "--purpose", "benchmarking",
              "--format", "json", "-c", odd_types)  # fmt: skip
    assert odd.returncode == 0, odd.stderr
    interval = {"months": 0, "days": 0, "nanoseconds": 3_600_000_000_000}
    assert orjson.loads(odd.stdout) == {"d": 1.5, "b": "ab", "i": interval}
    as_table = run(governed_lake, "sql", "--as", "cli.bo", "--purpose", "benchmarking", "-c", query)
    assert as_table.returncode == 0, as_table.stderr
    assert f"│ {row['n']} " in as_table.stdout
    assert "1 row" in as_table.stdout
    as_csv = run(
        governed_lake,
        "sql",
        "--as",
        "cli.bo",
        "--purpose",
        "benchmarking",
        "-c",
        query,
        "--format",
        "csv",
    )
    assert as_csv.stdout.splitlines()[0] == '"n","p"'
    out = tmp_path / "result.parquet"
    as_parquet = run(
        governed_lake,
        "sql",
        "--as",
        "cli.bo",
        "--purpose",
        "benchmarking",
        "-c",
        query,
        "--format",
        "parquet",
        "--out",
        str(out),
    )
    assert as_parquet.returncode == 0, as_parquet.stderr
    assert pq.read_table(out).to_pylist() == [row]
    denied = run(governed_lake, "sql", "--as", "cli.bo", "--purpose", "field_service", "-c", query)
    assert denied.returncode == 6
    assert denied.stderr.startswith("error: 'cli.bo' may not read for 'field_service'")
    no_purpose = run(governed_lake, "sql", "--as", "cli.bo", "-c", query)
    assert no_purpose.returncode == 2
    assert "--purpose" in no_purpose.stderr
    failed = run(
        governed_lake,
        "sql",
        "--as",
        "cli.bo",
        "--purpose",
        "benchmarking",
        "-c",
        "SELECT nope FROM work_orders",
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: Binder Error")


def test_the_interactive_shell_reads_statements_across_lines(governed_lake: GovernedLake) -> None:
    tenant = governed_lake.tenants[0]
    governed_lake.book().grant("cli.sh", tenants=[tenant], purposes=["benchmarking"], actor="t")
    shell = run(
        governed_lake,
        "sql",
        "--as",
        "cli.sh",
        "--purpose",
        "benchmarking",
        "--format",
        "csv",
        stdin=".tables\nSELECT count(*)\n  AS n\n  FROM work_orders;\n.schema work_orders\n"
        "SELECT nope;\n.quit\n",
    )
    assert shell.returncode == 0, shell.stderr
    assert "work_orders" in shell.stdout
    assert '"n"' in shell.stdout
    assert "technician_phone VARCHAR (masked)" in shell.stdout.replace("string", "VARCHAR")
    assert "error:" in shell.stderr  # the failed statement, and the shell went on


def test_an_extract_is_a_file_with_its_record_and_its_lineage(
    governed_lake: GovernedLake, tmp_path: Path
) -> None:
    lake = governed_lake
    tenant = lake.tenants[0]
    lake.book().grant("cli.ex", tenants=[tenant], purposes=["benchmarking"], actor="t")
    out = tmp_path / "work-orders.parquet"
    done = run(
        lake,
        "extract",
        "work_orders",
        "--as",
        "cli.ex",
        "--purpose",
        "benchmarking",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest in done.stdout
    rows = pq.read_table(out)
    assert rows.num_rows > 0
    assert "notes" not in rows.column_names  # dropped for benchmarking
    assert all(p.count("*") for p in rows["technician_phone"].to_pylist() if p)
    records = list(read_records(lake.audit_dir))
    record = next(r for r in records if r["event"] == "extract" and r["sha256"] == digest)
    assert record["file"] == str(out.resolve())
    assert record["principal"] == "cli.ex"
    events = [
        orjson.loads(line)
        for path in lake.settings.data_dir.rglob("*.jsonl")
        if "audit" not in path.parts
        for line in path.read_bytes().splitlines()
        if line and digest.encode() in line
    ]
    complete = next(e for e in events if e["eventType"] == "COMPLETE")
    assert complete["job"]["name"] == "extract.work_orders"
    assert [o["name"] for o in complete["outputs"]] == [out.name]
    assert complete["outputs"][0]["facets"]["version"]["datasetVersion"] == f"sha256:{digest}"
    assert [i["name"] for i in complete["inputs"]] == [f"tenants/{tenant}/work_orders"]
    # the lineage names the session, not the person: who it was is in the access record
    assert all(b"cli.ex" not in orjson.dumps(e) for e in events)
    assert (
        complete["run"]["facets"]["energylake_run"]["details"]["extract"]["session"]
        == (record["session"])
    )
    not_for_purpose = run(
        lake,
        "extract",
        "quality_results",
        "--as",
        "cli.ex",
        "--purpose",
        "benchmarking",
        "--out",
        str(tmp_path / "q.parquet"),
    )
    assert not_for_purpose.returncode == 6
    assert not (tmp_path / "q.parquet").exists()


def test_an_objection_from_the_command_line(governed_lake: GovernedLake) -> None:
    lake = governed_lake
    tenant = lake.tenants[1]
    lake.book().grant("cli.ob", tenants=[tenant], purposes=["benchmarking"], actor="t")
    orders = read_table(lake.store, table_rel(tenant, "work_orders"), columns=["technician_id"])
    technicians = [t for t in orders["technician_id"].to_pylist() if t]
    technician = max(set(technicians), key=technicians.count)
    count = ["sql", "--as", "cli.ob", "--purpose", "benchmarking", "--format", "csv",
             "-c", "SELECT count(*) AS n FROM work_orders"]  # fmt: skip
    before = int(run(lake, *count).stdout.splitlines()[1])
    made = run(lake, "access", "object", "--subject", technician, "--kind", "technician",
               "--tenant", tenant, "--purpose", "benchmarking")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert technician not in made.stdout  # the register shows its pseudonym only
    assert int(run(lake, *count).stdout.splitlines()[1]) == before - technicians.count(technician)
    back = run(lake, "access", "object", "--subject", technician, "--kind", "technician",
               "--tenant", tenant, "--purpose", "benchmarking", "--withdraw")  # fmt: skip
    assert back.returncode == 0, back.stderr
    assert int(run(lake, *count).stdout.splitlines()[1]) == before
    bad = run(lake, "access", "object", "--subject", "x", "--kind", "customer",
              "--tenant", tenant, "--purpose", "benchmarking")  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: unknown kind of data subject 'customer'")
