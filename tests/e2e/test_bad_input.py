"""Bad input over both doors (issue 4, "What proves it" 8; docs/PIPELINE.md, "One reason
per rejected record"), table-driven: one row per defect, each sent over HTTP (meter A, its
token) and over MQTT (meter B, through Mosquitto), built from the simulator's clean readings.

HTTP refuses at the edge what it can (400 / 401 / 403 / 413, nothing lands); everything
else is answered 202 and routed by ``energylake process``: quarantined with its reason
code, or kept with its flag, or dropped as a counted duplicate, or accepted late and
counted. Over MQTT the broker acks everything it takes, so every defect is routed by the
pipeline (a device the broker does not know cannot even log in). The whole table is sent
once (module fixture), processed once, and each row x transport is its own test. The
gateway must still be serving at the end.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl
import pytest

from devstack.gateway import wait_for
from devstack.mosquitto import DeviceAccount
from pipelines.process import ingest_stats
from simulator.stream import topic_for
from tests.e2e.conftest import World, close_client, connack, device_client, worlds
from transforms.ndjson import MAX_KEYS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Reading = dict[str, Any]


# --- what each row expects ---------------------------------------------------------------
@dataclass(frozen=True)
class Refused:
    """HTTP only: refused at the edge with this status and problem reason; nothing lands."""

    status: int
    reason: str


@dataclass(frozen=True)
class Quarantined:
    code: str


@dataclass(frozen=True)
class Flagged:
    flag: str
    converted: bool = False  # the stored power equals the original kW


@dataclass(frozen=True)
class Duplicate:
    pass


@dataclass(frozen=True)
class Late:
    pass


@dataclass(frozen=True)
class NoLogin:
    """MQTT only: the broker refuses the device's login; nothing lands."""


@dataclass(frozen=True)
class Dropped:
    """MQTT only: over the broker's max_packet_size; it drops the connection, no PUBACK,
    nothing lands."""


@dataclass(frozen=True)
class Restarted:
    """The device restarted its numbering: readings with seqs it used before, at later
    event times, all kept next to the earlier ones (they were dropped as duplicates)."""


@dataclass(frozen=True)
class Clean:
    """Every reading in the lake, without a flag."""


Expect = Refused | Quarantined | Flagged | Duplicate | Late | NoLogin | Dropped | Clean | Restarted


@dataclass(frozen=True)
class Ctx:
    device: DeviceAccount
    other: DeviceAccount  # a device of another branch
    rated_kw: float


@dataclass(frozen=True)
class Case:
    """One defect: built from clean readings at ``at`` (indexes into the device's day)."""

    name: str
    at: tuple[int, ...]
    build: Callable[[list[Reading], Ctx], list[bytes]]
    http: Expect
    mqtt: Expect
    topic: Callable[[Ctx], str] | None = None  # MQTT topic, when not the device's own


def _js(r: Reading) -> bytes:
    return orjson.dumps(r)


def _with(r: Reading, **readings: Any) -> Reading:
    out = copy.deepcopy(r)
    out["readings"].update(readings)
    return out


def _set_ts(
    factor: float = 1.0, add: int = 0, fixed: int | None = None
) -> Callable[..., list[bytes]]:
    def build(rs: list[Reading], _c: Ctx) -> list[bytes]:
        r = copy.deepcopy(rs[0])
        r["ts"] = fixed if fixed is not None else int(r["ts"] * factor) + add
        return [_js(r)]

    return build


def _non_finite(token: bytes) -> Callable[..., list[bytes]]:
    def build(rs: list[Reading], _c: Ctx) -> list[bytes]:
        r = _with(rs[0], voltage_l1_v="__nf__")
        return [_js(r).replace(b'"__nf__"', token)]

    return build


def _missing(rs: list[Reading], _c: Ctx) -> list[bytes]:
    r = copy.deepcopy(rs[0])
    del r["readings"]["voltage_l2_v"]
    return [_js(r)]


def _units(declared: bool) -> Callable[..., list[bytes]]:
    fields = {
        "power_kw": "W",
        "power_l1_kw": "W",
        "power_l2_kw": "W",
        "power_l3_kw": "W",
        "apparent_power_kva": "VA",
        "reactive_power_kvar": "var",
    }

    def build(rs: list[Reading], _c: Ctx) -> list[bytes]:
        r = copy.deepcopy(rs[0])
        for name in fields:
            r["readings"][name] = round(r["readings"][name] * 1000.0, 1)
        if declared:
            r["units"] = dict(fields)
        return [_js(r)]

    return build


def _counter_reset(rs: list[Reading], _c: Ctx) -> list[bytes]:
    r = rs[0]
    return [_js(_with(r, energy_import_kwh=round(r["readings"]["energy_import_kwh"] * 0.05, 3)))]


def _jump(rs: list[Reading], c: Ctx) -> list[bytes]:
    r = rs[0]
    bump = c.rated_kw * 24.0
    return [_js(_with(r, energy_import_kwh=round(r["readings"]["energy_import_kwh"] + bump, 3)))]


def _stuck(rs: list[Reading], _c: Ctx) -> list[bytes]:
    value = rs[0]["readings"]["voltage_l1_v"]
    return [_js(_with(r, voltage_l1_v=value)) for r in rs]


def _late(rs: list[Reading], _c: Ctx) -> list[bytes]:
    return [_js(rs[1]), _js(rs[0])]  # the older one arrives after its successor


def _oversize(size: int) -> Callable[..., list[bytes]]:
    def build(rs: list[Reading], _c: Ctx) -> list[bytes]:
        r = copy.deepcopy(rs[0])
        r["diag"] = ""
        base = len(_js(r))
        r["diag"] = "x" * (size - base)
        return [_js(r)]

    return build


def _deep(depth: int) -> Callable[..., list[bytes]]:
    """A reading's value nested ``depth`` arrays deep."""

    def build(rs: list[Reading], _c: Ctx) -> list[bytes]:
        raw = _js(_with(rs[0], voltage_l1_v="__deep__"))
        return [raw.replace(b'"__deep__"', b"[" * depth + b"1" + b"]" * depth)]

    return build


def _huge_array(n: int) -> Callable[..., list[bytes]]:
    def build(_rs: list[Reading], _c: Ctx) -> list[bytes]:
        return [b"[" + b",".join([b"0"] * n) + b"]"]

    return build


def _bad_utf8(rs: list[Reading], _c: Ctx) -> list[bytes]:
    raw = _js(rs[0])
    at = raw.index(b'"device_id":"') + len(b'"device_id":"') + 1
    return [raw[:at] + b"\xff\xfe" + raw[at + 2 :]]


def _truncated(rs: list[Reading], _c: Ctx) -> list[bytes]:
    raw = _js(rs[0])
    return [raw[: len(raw) // 2]]


def _duplicate_key(rs: list[Reading], _c: Ctx) -> list[bytes]:
    raw = _js(rs[0])
    return [raw[:-1] + b',"seq":' + str(rs[0]["seq"] + 1).encode() + b"}"]


def _schema(rs: list[Reading], _c: Ctx) -> list[bytes]:
    return [_js(_with(rs[0], thd_voltage_pct=3.2))]


def _many_keys(rs: list[Reading], _c: Ctx) -> list[bytes]:
    return [_js(rs[0] | {f"x{k:04d}": k for k in range(MAX_KEYS)})]


def _wrong_type(rs: list[Reading], _c: Ctx) -> list[bytes]:
    r = rs[0]
    return [_js(_with(r, frequency_hz=str(r["readings"]["frequency_hz"])))]


def _other_device(rs: list[Reading], c: Ctx) -> list[bytes]:
    r = copy.deepcopy(rs[0])
    r["device_id"] = c.other.device_id
    return [_js(r)]


def _forged_long_claim(rs: list[Reading], _c: Ctx) -> list[bytes]:
    r = copy.deepcopy(rs[0])
    r["device_id"] = FORGED_CLAIM
    return [_js(r)]


def _other_branch_claim(rs: list[Reading], c: Ctx) -> list[bytes]:
    return [_js(rs[0] | {"branch_id": c.other.branch_id})]


def _plain(rs: list[Reading], _c: Ctx) -> list[bytes]:
    return [_js(r) for r in rs]


def _twice(rs: list[Reading], _c: Ctx) -> list[bytes]:
    return [_js(rs[0]), _js(rs[0])]


def _other_content(rs: list[Reading], _c: Ctx) -> list[bytes]:
    """A reading's seq (sent and kept before) again, with another value."""
    r = rs[0]
    return [_js(_with(r, voltage_l1_v=round(r["readings"]["voltage_l1_v"] + 7.5, 1)))]


def _rebooted(rs: list[Reading], _c: Ctx) -> list[bytes]:
    """Readings 110.. from a device that rebooted and numbers them as it numbered 50..
    (the stuck run's, in the lake), saying so with its boot number."""
    out = []
    for r in rs:
        again = copy.deepcopy(r)
        again["seq"] = r["seq"] - 60
        again["boot"] = 2
        out.append(_js(again))
    return out


FORGED_CLAIM = "forged-" + "x" * 59_993  # a 60,000-character device_id in the payload
MQTT_PAYLOAD_LIMIT = 65536  # Settings.payload_limit_bytes; the broker's packet limit is 66560
HTTP_BODY_LIMIT = 1024 * 1024  # Settings.gateway_http_max_body_bytes

# One row per defect of the bad-input catalogue (ordered by `at`; the counter reset is last, as a
# real reset, so no later reading of the device climbs from zero).
CASES: list[Case] = [
    Case(
        "future_timestamp",
        (20,),
        _set_ts(add=2 * 86400),
        Quarantined("TIMESTAMP_OUT_OF_RANGE"),
        Quarantined("TIMESTAMP_OUT_OF_RANGE"),
    ),
    Case(
        "ancient_timestamp",
        (22,),
        _set_ts(fixed=946684800),
        Quarantined("TIMESTAMP_OUT_OF_RANGE"),
        Quarantined("TIMESTAMP_OUT_OF_RANGE"),
    ),
    Case(
        "timestamp_in_ms",
        (24,),
        _set_ts(factor=1000),
        Quarantined("TIMESTAMP_OUT_OF_RANGE"),
        Quarantined("TIMESTAMP_OUT_OF_RANGE"),
    ),
    Case("duplicate", (26,), _twice, Duplicate(), Duplicate()),
    Case("late", (28, 29), _late, Late(), Late()),
    # after the late pair: seq 28's again with another voltage (same time), on both doors
    Case(
        "seq_conflict",
        (28,),
        _other_content,
        Quarantined("SEQ_CONFLICT"),
        Quarantined("SEQ_CONFLICT"),
    ),
    Case("nan", (32,), _non_finite(b"NaN"), Refused(400, "non_finite"), Quarantined("NON_FINITE")),
    Case(
        "infinity",
        (34,),
        _non_finite(b"Infinity"),
        Refused(400, "non_finite"),
        Quarantined("NON_FINITE"),
    ),
    # beyond the double range: NON_FINITE on both doors (over MQTT it was MALFORMED_PAYLOAD)
    Case(
        "beyond_double",
        (35,),
        _non_finite(b"1e400"),
        Refused(400, "non_finite"),
        Quarantined("NON_FINITE"),
    ),
    Case(
        "null_required",
        (36,),
        lambda rs, _c: [_js(_with(rs[0], voltage_l1_v=None))],
        Quarantined("MISSING_FIELD"),
        Quarantined("MISSING_FIELD"),
    ),
    Case(
        "absent_required",
        (38,),
        _missing,
        Quarantined("MISSING_FIELD"),
        Quarantined("MISSING_FIELD"),
    ),
    Case(
        "unit_declared",
        (40,),
        _units(declared=True),
        Flagged("UNIT_CONVERTED", converted=True),
        Flagged("UNIT_CONVERTED", converted=True),
    ),
    Case(
        "unit_undeclared",
        (42,),
        _units(declared=False),
        Quarantined("UNIT_SUSPECT"),
        Quarantined("UNIT_SUSPECT"),
    ),
    Case(
        "implausible_jump",
        (44,),
        _jump,
        Quarantined("IMPLAUSIBLE_DELTA"),
        Quarantined("IMPLAUSIBLE_DELTA"),
    ),
    Case("stuck_sensor", tuple(range(50, 70)), _stuck, Flagged("STUCK"), Flagged("STUCK")),
    # the same value fewer than STUCK_RUN times in a row is not a stuck sensor
    Case("short_repeat", tuple(range(100, 110)), _stuck, Clean(), Clean()),
    # a reboot: readings 110.. sent with the stuck run's seqs (50..), later in time
    Case("rebooted", tuple(range(110, 120)), _rebooted, Restarted(), Restarted()),
    Case(
        "unknown_device",
        (72,),
        _plain,
        Refused(401, "bad_token"),
        NoLogin(),
    ),
    Case(
        "other_device_in_payload",
        (74,),
        _other_device,
        Refused(403, "identity_mismatch"),
        Quarantined("BRANCH_MISMATCH"),
    ),
    Case(
        "other_branch_claimed",
        (76,),
        _other_branch_claim,
        Refused(403, "identity_mismatch"),
        Quarantined("BRANCH_MISMATCH"),
        topic=lambda c: topic_for(c.device.client_id, c.other.branch_id, c.device.device_id),
    ),
    Case(
        "forged_long_claim",
        (77,),
        _forged_long_claim,
        Refused(403, "identity_mismatch"),
        Quarantined("BRANCH_MISMATCH"),
    ),
    Case(
        "oversize",
        (78,),
        _oversize(2 * HTTP_BODY_LIMIT),
        Refused(413, "body_too_large"),
        Dropped(),
    ),
    Case(
        "oversize_payload",
        (80,),
        _oversize(MQTT_PAYLOAD_LIMIT + 64),
        Quarantined("PAYLOAD_TOO_LARGE"),
        Quarantined("PAYLOAD_TOO_LARGE"),
    ),
    # past the JSON parser's own depth limit (1024)
    Case(
        "deep_nesting",
        (82,),
        _deep(5000),
        Refused(400, "too_deep"),
        Quarantined("MALFORMED_PAYLOAD"),
    ),
    # parseable, but past the gateway's depth limit (16) / not a number for the contract
    Case(
        "nested_value",
        (83,),
        _deep(100),
        Refused(400, "too_deep"),
        Quarantined("SCHEMA_MISMATCH"),
    ),
    Case(
        "huge_array",
        (84,),
        _huge_array(20_000),
        Refused(400, "too_many_readings"),
        Quarantined("MALFORMED_PAYLOAD"),
    ),
    Case("bad_utf8", (86,), _bad_utf8, Refused(400, "bad_utf8"), Quarantined("MALFORMED_PAYLOAD")),
    Case(
        "malformed_json",
        (88,),
        _truncated,
        Refused(400, "malformed_json"),
        Quarantined("MALFORMED_PAYLOAD"),
    ),
    Case(
        "duplicate_key",
        (90,),
        _duplicate_key,
        Refused(400, "duplicate_key"),
        Quarantined("MALFORMED_PAYLOAD"),
    ),
    Case(
        "schema_unknown_field",
        (92,),
        _schema,
        Quarantined("SCHEMA_MISMATCH"),
        Quarantined("SCHEMA_MISMATCH"),
    ),
    # past the cap on keys in one reading: refused at decode, whatever the door
    Case(
        "too_many_keys",
        (93,),
        _many_keys,
        Quarantined("SCHEMA_MISMATCH"),
        Quarantined("SCHEMA_MISMATCH"),
    ),
    Case(
        "schema_wrong_type",
        (94,),
        _wrong_type,
        Quarantined("SCHEMA_MISMATCH"),
        Quarantined("SCHEMA_MISMATCH"),
    ),
    Case(
        "counter_reset",
        (120,),
        _counter_reset,
        Flagged("COUNTER_RESET"),
        Flagged("COUNTER_RESET"),
    ),
]


@dataclass
class Sent:
    payloads: list[bytes]
    seqs: list[int]
    replies: list[tuple[int, str | None]] = field(default_factory=list)  # HTTP
    connack: str | None = None  # MQTT, unknown device
    acked: bool | None = None  # MQTT, oversize: did a PUBACK come


@dataclass
class Outcome:
    w: World
    http_device: DeviceAccount
    mqtt_device: DeviceAccount
    sent: dict[tuple[str, str], Sent]
    lake: pl.DataFrame
    quarantine: pl.DataFrame
    stats: list[tuple[str, str, str, str, str, int]]
    gateway_alive: bool
    landed: Counter[tuple[str, int]]


def _templates(w: World, device: DeviceAccount) -> list[Reading]:
    msgs = sorted((m for m in w.messages() if m.device_id == device.device_id), key=lambda m: m.seq)
    return [orjson.loads(m.payload(0)) for m in msgs]


def _powered(rs: list[Reading], at: int) -> int:
    """The first index at or after ``at`` whose power is at least 1 kW (a unit mistake shows)."""
    k = at
    while abs(rs[k]["readings"]["power_kw"]) < 1.0:
        k += 1
    return k


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    with pytest.MonkeyPatch.context() as mp, worlds(tmp_path_factory.mktemp("bad"), mp) as make:
        w = make()
        meters = [d for d in w.broker.devices.values() if d.kind == "meter"]
        http_dev, mqtt_dev = meters[0], meters[1]
        rated = {d.device_id: d.rated_power_kw for d in w.broker.fleet.devices}
        sent: dict[tuple[str, str], Sent] = {}
        gw = w.start_gateway()
        client = device_client(w.broker, mqtt_dev)
        mqtt_payloads = 0
        try:
            for transport, dev, other in (
                ("http", http_dev, mqtt_dev),
                ("mqtt", mqtt_dev, http_dev),
            ):
                rs = _templates(w, dev)
                ctx = Ctx(dev, other, rated[dev.device_id])
                for case in CASES:
                    at = case.at
                    if case.name.startswith("unit_"):
                        at = (_powered(rs, at[0]),)
                    chosen = [rs[k] for k in at]
                    payloads = case.build(chosen, ctx)
                    seqs = [r["seq"] for r in chosen]
                    if isinstance(case.http, Restarted):
                        seqs = [orjson.loads(p)["seq"] for p in payloads]
                    s = Sent(payloads, seqs)
                    sent[(case.name, transport)] = s
                    if transport == "http":
                        token = dev.token if case.name != "unknown_device" else "no-such-token"
                        for body in payloads:
                            reply = gw.post(body, token)
                            reason = reply.json().get("reason") if reply.status >= 400 else None
                            s.replies.append((reply.status, reason))
                    elif case.name == "unknown_device":
                        s.connack = connack(w.broker, "em-unknown-device", "guess")
                    elif not isinstance(case.mqtt, Dropped):
                        topic = case.topic(ctx) if case.topic else dev.topic
                        for body in payloads:
                            client.publish(topic, body, qos=1).wait_for_publish(5)
                            mqtt_payloads += 1
            assert wait_for(
                lambda: sum(1 for e in _envelopes(w) if e == "mqtt") >= mqtt_payloads, 15
            )
            # Last, as it costs the connection: a message over the broker's packet limit.
            for case in CASES:
                if isinstance(case.mqtt, Dropped):
                    s = sent[(case.name, "mqtt")]
                    info = client.publish(mqtt_dev.topic, s.payloads[0], qos=1)
                    time.sleep(2.0)
                    s.acked = info.rc == 0 and info.is_published()
        finally:
            close_client(client)
        alive = gw.proc.poll() is None and gw.get("/healthz").status == 200
        assert gw.terminate() == 0
        landed_keys = Counter(w.landed_keys())  # before the processor archives the segments
        w.process_all()
        yield Outcome(
            w,
            http_dev,
            mqtt_dev,
            sent,
            w.readings(["device_id", "seq", "ts", "boot", "quality_flags", "power_kw"]),
            w.quarantine(),
            ingest_stats(w.settings),
            alive,
            landed_keys,
        )


def _envelopes(w: World) -> list[str]:
    from devstack.gateway import landed

    return [e.source for e in landed(w.landing)]


def _stat(o: Outcome, kind: str, device: DeviceAccount) -> int:
    return sum(
        n for k, _t, _d, branch, _key, n in o.stats if k == kind and branch == device.branch_id
    )


@pytest.mark.parametrize("transport", ["http", "mqtt"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_row(outcome: Outcome, case: Case, transport: str) -> None:
    o = outcome
    device = o.http_device if transport == "http" else o.mqtt_device
    expect = case.http if transport == "http" else case.mqtt
    sent = o.sent[(case.name, transport)]
    rows = o.lake.filter((pl.col("device_id") == device.device_id) & pl.col("seq").is_in(sent.seqs))
    if not isinstance(expect, Restarted):  # (the reboot row numbers its readings as 50..)
        rows = rows.filter(pl.col("boot").is_null())
    q = o.quarantine.filter(pl.col("identity") == device.device_id)
    if transport == "http" and not isinstance(expect, Refused):
        assert all(status == 202 for status, _ in sent.replies), sent.replies
    if isinstance(expect, Refused):
        assert sent.replies == [(expect.status, expect.reason)] * len(sent.payloads)
        assert rows.height == 0
        assert q.filter(pl.col("seq").is_in(sent.seqs) & (pl.col("source") == "http")).height == 0
    elif isinstance(expect, Dropped):
        assert sent.acked is False
        assert o.landed[(device.device_id, sent.seqs[0])] == 0
        assert rows.height == 0
    elif isinstance(expect, NoLogin):
        if case.name == "unknown_device":
            assert sent.connack is not None
            assert sent.connack != "Success"
        assert rows.height == 0
    elif isinstance(expect, Quarantined):
        digests = [hashlib.sha256(p).hexdigest() for p in sent.payloads]
        hit = q.filter(
            (pl.col("seq").is_in(sent.seqs) & (pl.col("source") == transport))
            | pl.col("payload_sha256").is_in(digests)
        )
        assert hit["reason_code"].to_list() == [expect.code] * len(sent.payloads), hit
        # a conflict's first copy stays (the "late" row's)
        assert rows.height == (1 if expect.code == "SEQ_CONFLICT" else 0)
    elif isinstance(expect, Flagged):
        assert rows.height == len(sent.seqs)  # kept, every one
        flagged = rows.filter(pl.col("quality_flags").list.contains(expect.flag))
        assert flagged.height >= 1, rows
        if expect.converted:
            original = orjson.loads(_plain_payload(o, device, sent.seqs[0]))["readings"]
            assert flagged["power_kw"][0] == pytest.approx(original["power_kw"], rel=1e-6)
        if expect.flag == "STUCK":  # the whole run (20 >= STUCK_RUN) is flagged
            assert sorted(flagged["seq"].to_list()) == sorted(sent.seqs)
    elif isinstance(expect, Restarted):
        # each seq twice: the stuck run's reading and the restarted device's, an hour apart
        assert rows.height == 2 * len(sent.seqs), rows
        assert sorted(rows["seq"].to_list()) == sorted(sent.seqs * 2)
        assert rows["boot"].to_list().count(2) == len(sent.seqs)
        assert rows["ts"].n_unique() == rows.height
        assert _stat(o, "duplicates", device) == 1  # only the "duplicate" row's copy
        assert q.filter(pl.col("seq").is_in(sent.seqs)).height == 0
    elif isinstance(expect, Clean):
        assert rows.height == len(sent.seqs)
        assert rows["quality_flags"].list.len().sum() == 0, rows
    elif isinstance(expect, Duplicate):
        assert rows.height == 1  # once in the lake
        assert o.landed[(device.device_id, sent.seqs[0])] == 2  # although landed twice
        assert _stat(o, "duplicates", device) == 1
    elif isinstance(expect, Late):
        assert rows.height == 2
        late = rows.filter(pl.col("quality_flags").list.contains("LATE"))
        assert late["seq"].to_list() == [sent.seqs[0]]
        assert _stat(o, "late", device) == 1


def _plain_payload(o: Outcome, device: DeviceAccount, seq: int) -> bytes:
    for m in o.w.messages():
        if m.device_id == device.device_id and m.seq == seq:
            return m.payload(0)
    raise AssertionError(f"no message {device.device_id}/{seq}")


def test_the_gateway_never_crashed(outcome: Outcome) -> None:
    assert outcome.gateway_alive
    assert outcome.w.gateway is not None
    assert "Traceback" not in outcome.w.gateway.log()


def test_nothing_else_was_quarantined(outcome: Outcome) -> None:
    """Only the rows' subjects are quarantined: clean neighbours are never collateral."""
    expected = sum(
        len(outcome.sent[(c.name, t)].payloads)
        for c in CASES
        for t in ("http", "mqtt")
        if isinstance(c.http if t == "http" else c.mqtt, Quarantined)
    )
    assert outcome.quarantine.height == expected, outcome.quarantine.group_by("reason_code").len()


@pytest.mark.parametrize("case", ["forged_long_claim", "other_device_in_payload"])
def test_the_quarantine_names_the_authenticated_device_and_keeps_the_claim_apart(
    outcome: Outcome, case: str
) -> None:
    """device_id is who sent it (the MQTT login), never the payload's claim; the claim has
    its own column, cut to 64 characters, with the SHA-256 of the whole of it."""
    o = outcome
    sent = o.sent[(case, "mqtt")]
    digest = hashlib.sha256(sent.payloads[0]).hexdigest()
    row = o.quarantine.filter(pl.col("payload_sha256") == digest).row(0, named=True)
    claim = FORGED_CLAIM if case == "forged_long_claim" else o.http_device.device_id
    assert row["device_id"] == o.mqtt_device.device_id
    assert row["claimed_device_sha256"] == hashlib.sha256(claim.encode()).hexdigest()
    if len(claim) > 64:
        assert row["claimed_device_id"] == claim[:64] + "…"
    else:
        assert row["claimed_device_id"] == claim
    assert all(len(v) <= 2000 for v in o.quarantine["detail"])
    # The security audit names the same device, and the claim cut short.
    audit = o.w.data_dir / "audit" / "pipeline"
    records = [
        orjson.loads(line) for f in audit.glob("*.jsonl") for line in f.read_bytes().splitlines()
    ]
    mine = [r for r in records if row["claimed_device_sha256"] in r["detail"]]
    assert len(mine) == 1, records
    assert mine[0]["device_id"] == o.mqtt_device.device_id
    assert row["claimed_device_id"] in mine[0]["detail"]
    assert len(mine[0]["detail"]) < 2000 + 1000


def test_the_reboot_reuses_seqs_the_lake_holds(outcome: Outcome) -> None:
    for transport in ("http", "mqtt"):
        stuck = outcome.sent[("stuck_sensor", transport)].seqs
        assert outcome.sent[("rebooted", transport)].seqs == stuck[:10]
