"""The daily file transport: our own ``Transport``, built by the client's factory from its
kind, one JSON line per event in the file of the event's UTC day."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.serde import Serde
from openlineage.client.transport import FileTransport, get_default_factory
from openlineage.client.uuid import generate_new_uuid

from lineage import LineageConfig
from lineage.transport import DailyFileTransport, make_transport


def _event(when: str, job: str = "energylake.batch.main") -> RunEvent:
    return RunEvent(
        eventType=RunState.START,
        eventTime=when,
        run=Run(runId=str(generate_new_uuid())),
        job=Job(namespace="energylake", name=job),
        producer="https://example.invalid/energylake",
    )


def test_the_client_factory_builds_it_from_its_kind_and_it_is_not_the_clients_file_transport(
    tmp_path: Path,
) -> None:
    built = get_default_factory().create(
        {"type": "energylake_daily_file", "events_dir": str(tmp_path / "events")}
    )
    assert isinstance(built, DailyFileTransport)
    assert built.events_dir == tmp_path / "events"
    # The public interface only: no private method of the client's FileTransport to rely on.
    assert not isinstance(built, FileTransport)
    made = make_transport(LineageConfig(directory=tmp_path))
    assert isinstance(made, DailyFileTransport)
    assert made.events_dir == tmp_path / "events"


def test_one_line_per_event_in_the_file_of_its_utc_day(tmp_path: Path) -> None:
    client = OpenLineageClient(transport=make_transport(LineageConfig(directory=tmp_path)))
    late = _event("2026-03-01T23:59:59.999000+00:00")
    # 02:10 in India is still the evening before in UTC.
    early_ist = _event("2026-03-02T02:10:00+05:30", job="energylake.compact.main")
    next_day = _event("2026-03-02T00:00:00Z")
    for event in (late, early_ist, next_day):
        client.emit(event)
    events = tmp_path / "events"
    assert sorted(p.name for p in events.iterdir()) == ["2026-03-01.jsonl", "2026-03-02.jsonl"]
    first = (events / "2026-03-01.jsonl").read_bytes()
    assert first == (Serde.to_json(late) + "\n" + Serde.to_json(early_ist) + "\n").encode()
    lines = (events / "2026-03-02.jsonl").read_text().splitlines()
    assert [json.loads(line)["run"]["runId"] for line in lines] == [next_day.run.runId]


def test_an_unwritable_folder_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "events").write_text("a file where the events folder should be")
    transport = make_transport(LineageConfig(directory=tmp_path))
    from lineage.errors import LineageWriteError

    with pytest.raises(
        LineageWriteError, match=r"lineage file .*events/2026-03-01\.jsonl"
    ) as caught:
        transport.emit(_event("2026-03-01T12:00:00Z"))
    assert caught.value.path == tmp_path / "events" / "2026-03-01.jsonl"
    assert "ENERGYLAKE_LINEAGE_DIR" in str(caught.value)  # the next step
    assert isinstance(caught.value, RuntimeError)  # as before the hierarchy
