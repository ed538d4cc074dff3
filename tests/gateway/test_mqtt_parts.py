"""The MQTT door's parts without a broker: topic bounds and cache, session assignment,
session book files, and the broker log tail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.brokerlog import BrokerLogTail, parse_drops, read_drops
from gateway.config import DEFAULT_TOPIC_PATTERNS, TopicPattern
from gateway.sessions import (
    MqttSession,
    SessionBook,
    SessionBookError,
    SessionState,
    plan_sessions,
    read_session_book,
    session_book_json,
    session_filters,
)
from gateway.topics import BAD_TOPIC_PREFIX, TopicCache, classify_topic

PATTERNS = tuple(TopicPattern.parse(p) for p in DEFAULT_TOPIC_PATTERNS)
GOOD = "emaas/v1/acme/b-1/em-1/telemetry"


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        (GOOD, None),
        ("tele/em-1/SENSOR", None),
        (f"emaas/v1/acme/{'b' * 60_000}/em-1/telemetry", "too_long"),
        ("emaas/v1/acme/b 1/em-1/telemetry", "bad_segment"),
        ("emaas/v1/acme/bré/em-1/telemetry", "bad_segment"),
        (f"emaas/v1/acme/{'b' * 129}/em-1/telemetry", "bad_segment"),
        ("emaas/v1/-acme/b-1/em-1/telemetry", "bad_segment"),
    ],
)
def test_a_topic_is_landed_as_received_only_when_short_and_made_of_ids(
    topic: str, reason: str | None
) -> None:
    landed, identity, why = classify_topic(topic, PATTERNS, 256)
    assert why == reason
    assert identity == "em-1"
    if reason is None:
        assert landed == topic
    else:
        assert landed.startswith(f"{BAD_TOPIC_PREFIX}{reason}/{len(topic.encode())}/")
        assert len(landed) < 80
        # the same bad topic gets the same marker, a different one another
        assert classify_topic(topic, PATTERNS, 256)[0] == landed
        assert classify_topic(topic + "x", PATTERNS, 256)[0] != landed


@pytest.mark.slow
def test_topic_cache_is_bounded_by_bytes_and_keeps_no_bad_topic() -> None:
    budget = 256 * 1024
    cache = TopicCache(PATTERNS, max_topic_bytes=256, max_bytes=budget)
    for i in range(20_000):
        entry, reason = cache.lookup(f"emaas/v1/acme/b-{i}/em-{i}/telemetry")
        assert reason is None
        assert entry[1] == f"em-{i}"
        held = sum(sys.getsizeof(k) for k in cache.entries)
        assert cache.size_bytes <= budget
        assert held <= budget
    assert cache.clears >= 1
    for i in range(50):
        _entry, reason = cache.lookup(f"emaas/v1/acme/{'x' * 1000}{i}/em-1/telemetry")
        assert reason == "too_long"
    assert not any(len(k) > 256 for k in cache.entries)


def test_topic_cache_counts_messages_per_device() -> None:
    cache = TopicCache(PATTERNS, max_topic_bytes=256, max_bytes=1 << 20)
    for topic, n in ((GOOD, 3), ("tele/em-1/SENSOR", 2), ("tele/em-2/SENSOR", 1)):
        entry, _ = cache.lookup(topic)
        entry[2] += n
    assert cache.take_counts() == {"em-1": 5, "em-2": 1}
    assert cache.take_counts() == {}


def test_sessions_are_one_per_tenant_and_one_shared_subscribed_by_tenant() -> None:
    devices = [(f"em-{i}", "acme" if i % 3 else "zeta") for i in range(30)]
    sessions, retired = plan_sessions(devices, "energylake-gateway")
    assert retired == ()
    assert [(s.username, s.tenant, s.scope) for s in sessions] == [
        ("energylake-gateway", None, "shared"),
        ("energylake-gateway.acme", "acme", "tenant"),
        ("energylake-gateway.zeta", "zeta", "tenant"),
    ]
    shared = {
        "spBv1.0/+/NBIRTH/+",
        "spBv1.0/+/NDATA/+",
        "spBv1.0/+/DBIRTH/+/+",
        "spBv1.0/+/DDATA/+/+",
        "spBv1.0/+/NDEATH/+",
        "spBv1.0/+/DDEATH/+/+",
        "tele/+/+",
        "v1/devices/+/+",
        "+/status/+",
        "+/events/rpc",
        "+/online",
    }
    assert [session_filters(s, PATTERNS) for s in sessions] == [
        # no tenant in the topic: one shared wildcard each (Tasmota, Sparkplug B, ...)
        shared,
        {"emaas/v1/acme/+/+/telemetry"},  # the tenant pinned: no filter per device
        {"emaas/v1/zeta/+/+/telemetry"},
    ]
    # a version 2 session ran per device; read as such (its filters are let go later)
    v2 = MqttSession("gw.acme", "acme", ("em-1",), "devices")
    assert session_filters(v2, PATTERNS) == {
        "emaas/v1/+/+/em-1/telemetry",
        *(
            "/".join("em-1" if seg == "{device}" else seg for seg in p.split("/"))
            for p in DEFAULT_TOPIC_PATTERNS[1:]
        ),
    }
    assert session_filters(MqttSession("gw"), PATTERNS) == {"emaas/v1/+/+/+/telemetry", *shared}


def test_sessions_no_longer_wanted_stay_retired_until_drained() -> None:
    previous = SessionBook(
        "p",
        (
            MqttSession("gw.acme.0", "acme", ("em-1",), "devices"),
            MqttSession("gw.acme.1", "acme", ("em-2",), "devices"),
            MqttSession("gw.zeta", "zeta", ("em-3",), "devices"),
        ),
    )
    devices = [("em-1", "acme"), ("em-2", "acme")]  # zeta removed
    sessions, retired = plan_sessions(devices, "gw", previous=previous)
    assert [s.username for s in sessions] == ["gw", "gw.acme"]
    assert [s.username for s in retired] == ["gw.acme.0", "gw.acme.1", "gw.zeta"]
    again = SessionBook("p", sessions, retired)
    _, still = plan_sessions(devices, "gw", previous=again, drained={"gw.acme.0"})
    assert [s.username for s in still] == ["gw.acme.1", "gw.zeta"]


def test_session_book_round_trip_and_older_versions(tmp_path: Path) -> None:
    sessions, _ = plan_sessions([("em-1", "acme")], "gw")
    book = SessionBook("s3cret", sessions, (MqttSession("gw.old", "old", ("em-9",), "tenant"),))
    path = tmp_path / "gateway-mqtt.json"
    path.write_bytes(session_book_json(book))
    assert read_session_book(path) == book
    path.write_text(json.dumps({"username": "energylake-gateway", "password": "old"}))
    assert read_session_book(path) == SessionBook("old", (MqttSession("energylake-gateway"),))
    v2 = {"version": 2, "password": "p", "sessions": [{"username": "x", "devices": ["em-1"]}]}
    path.write_text(json.dumps(v2))
    assert read_session_book(path).sessions == (MqttSession("x", None, ("em-1",), "devices"),)
    path.write_text(json.dumps({"version": 2, "password": "p", "sessions": [{"username": "x"}]}))
    with pytest.raises(SessionBookError, match="devices") as info:
        read_session_book(path)
    assert "p" not in str(info.value).split(":")[-1]


def test_session_state_keeps_granted_filters_and_drained_sessions(tmp_path: Path) -> None:
    path = tmp_path / "gateway-mqtt-state.json"
    state = SessionState(path)
    assert state.filters("gw.acme") is None  # never recorded: not known
    state.update("gw.acme", added=["a", "b"])
    state.update("gw.acme", removed=["a"])
    state.update("gw.zeta", added=["z"])
    state.mark_drained("gw.zeta")
    again = SessionState(path)
    assert again.filters("gw.acme") == {"b"}
    assert again.filters("gw.zeta") is None
    assert again.drained() == {"gw.zeta"}
    again.update("gw.acme", reset=True)  # the broker lost the session
    assert SessionState(path).filters("gw.acme") == frozenset()
    again.revive(["gw.zeta"])  # provisioned anew
    assert SessionState(path).drained() == frozenset()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


LINES = (
    b"2026-12-01T10:00:00: New connection from 127.0.0.1:5000 on port 1883.\n"
    b"2026-12-01T10:00:01: Outgoing messages are being dropped for client gw.acme.\n"
    b"1796405035: Outgoing messages are being dropped for client gw.zeta.\n"
)


def test_drop_episodes_are_parsed_with_their_time() -> None:
    episodes = parse_drops(LINES)
    assert [e.client for e in episodes] == ["gw.acme", "gw.zeta"]
    assert episodes[1].at is not None
    assert episodes[1].at.year == 2026


def test_the_broker_log_tail_reads_each_episode_once_across_restarts_and_rotation(
    tmp_path: Path,
) -> None:
    log, state = tmp_path / "mosquitto.log", tmp_path / "position.json"
    tail = BrokerLogTail(log, state)
    assert tail.poll() == []
    assert not tail.readable
    log.write_bytes(LINES[:120])  # ends mid-line: only whole lines are taken
    first = tail.poll()
    assert tail.readable
    with log.open("ab") as f:
        f.write(LINES[120:])
    second = tail.poll()
    assert [e.client for e in first + second] == ["gw.acme", "gw.zeta"]
    assert BrokerLogTail(log, state).poll() == []  # a restarted gateway goes on from there
    os.replace(log, tmp_path / "mosquitto.log.1")  # rotated: the new file from its start
    log.write_bytes(LINES)
    assert [e.client for e in BrokerLogTail(log, state).poll()] == ["gw.acme", "gw.zeta"]
    assert read_drops(log) is not None
    assert len(read_drops(log) or []) == 2
    assert read_drops(tmp_path / "missing.log") is None


def test_status_shows_broker_drops_per_tenant_and_exits_1(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from typer.testing import CliRunner

    from cli.app import app

    data_dir = tmp_path / "data"
    gateway = data_dir / "gateway"
    gateway.mkdir(parents=True)
    book = SessionBook("p", plan_sessions([("em-1", "acme"), ("em-2", "zeta")], "gw")[0])
    (gateway / "gateway-mqtt.json").write_bytes(session_book_json(book))
    runner = CliRunner()
    quiet = runner.invoke(app, ["status", "--json", "--data-dir", str(data_dir)])
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.output)["broker"]["readable"] is False  # no log yet: said so

    def at(delta: timedelta) -> str:
        local = datetime.now(UTC).astimezone()  # the broker writes its local time
        return (local + delta).strftime("%Y-%m-%dT%H:%M:%S")

    (gateway / "mosquitto.log").write_text(
        f"{at(timedelta(days=-3))}: Outgoing messages are being dropped for client gw.zeta.\n"
        f"{at(timedelta(minutes=-5))}: New connection from 127.0.0.1:5000 on port 1883.\n"
        f"{at(timedelta(minutes=-4))}: Outgoing messages are being dropped for client gw.acme.\n"
    )
    result = runner.invoke(app, ["status", "--json", "--data-dir", str(data_dir)])
    assert result.exit_code == 1, result.output
    broker = json.loads(result.output)["broker"]
    assert broker["episodes"] == 1  # the one of three days ago is outside the 24 h window
    assert [(r["session"], r["tenant"], r["episodes"]) for r in broker["sessions"]] == [
        ("gw.acme", "acme", 1)
    ]
    text = runner.invoke(app, ["status", "--data-dir", str(data_dir)])
    assert text.exit_code == 1
    assert "gw.acme (tenant acme): 1 episode(s)" in text.output


def test_drop_episodes_across_the_read_chunk_boundary_are_found(tmp_path: Path) -> None:
    log = tmp_path / "mosquitto.log"
    line = b"2026-12-01T10:00:01: Outgoing messages are being dropped for client gw.acme.\n"
    filler = b"2026-12-01T10:00:00: New connection from 127.0.0.1:5000 on port 1883.\n"
    chunk = 16 * 1024 * 1024  # what read_drops reads at a time
    with log.open("wb") as out:
        head = chunk - 30  # the drop line starts 30 bytes before the boundary
        out.write(filler * (head // len(filler)))
        out.write(b"x" * (head % len(filler) - 1) + b"\n")
        out.write(line)
    assert log.stat().st_size > chunk
    assert [e.client for e in read_drops(log) or []] == ["gw.acme"]


def test_status_exits_3_when_the_configured_broker_log_cannot_be_read(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    data_dir = tmp_path / "data"
    gateway = data_dir / "gateway"
    gateway.mkdir(parents=True)
    runner = CliRunner()
    args = ["status", "--data-dir", str(data_dir)]
    assert runner.invoke(app, args).exit_code == 0  # no broker here: nothing to read
    (gateway / "mosquitto.conf").write_text("log_dest file mosquitto.log\n")  # provisioned
    (gateway / "mosquitto.log").mkdir()  # ... and its log cannot be read
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "not readable" in result.output
    assert "drops are unseen" in result.output
    (gateway / "mosquitto.log").rmdir()
    (gateway / "mosquitto.log").write_text("")
    assert runner.invoke(app, args).exit_code == 0


@pytest.mark.slow
def test_the_descriptor_limit_counts_the_mqtt_sessions() -> None:
    code = (
        "import resource\n"
        "from gateway.service import _fit_descriptor_limit\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (300, 8192))\n"
        "_fit_descriptor_limit(100, 500)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert int(out.stdout) >= 100 + 256 + 500 * 3  # each session: a socket and a socket pair
