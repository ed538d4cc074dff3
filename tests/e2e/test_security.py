"""Security end to end (issue 4, "What proves it" 7), one real broker, gateway and lake.

- a token for branch A posting branch B's device: 403 and a gateway audit record;
- an MQTT message on a topic claiming another branch than its device's: quarantined as
  BRANCH_MISMATCH in the lake, and a pipeline audit record;
- the ACL stops a device publishing on another device's topic: nothing lands;
- anonymous MQTT connections (and wrong passwords) are refused;
- a revoked token gets 401 (and the revoked device's MQTT login is refused).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest

from devstack.gateway import wait_for
from simulator.stream import topic_for
from tests.e2e.conftest import World, close_client, connack, device_client

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


def _audit(folder: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(folder.glob("*.jsonl"))
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def test_security_end_to_end(world: Callable[..., World]) -> None:
    w = world()
    meters = [d for d in w.broker.devices.values() if d.kind == "meter"]
    a, b = meters[0], meters[1]
    assert a.branch_id != b.branch_id
    msgs = {
        d: sorted((m for m in w.messages() if m.device_id == d), key=lambda m: m.seq)
        for d in (a.device_id, b.device_id)
    }
    gw = w.start_gateway()
    gateway_audit = w.data_dir / "audit" / "gateway"

    # 1. Branch A's token posting branch B's device: 403, audited, nothing landed.
    b_reading = orjson.loads(msgs[b.device_id][0].payload(0))
    b_reading |= {"client_id": b.client_id, "branch_id": b.branch_id}
    reply = gw.post(orjson.dumps(b_reading), a.token)
    assert reply.status == 403, reply.body
    assert reply.json()["reason"] == "identity_mismatch"
    assert reply.headers["content-type"].startswith("application/problem+json")
    forbidden = [r for r in _audit(gateway_audit) if r["event"] == "http_forbidden"]
    assert len(forbidden) == 1
    assert forbidden[0]["device_id"] == a.device_id
    assert forbidden[0]["branch_id"] == a.branch_id
    assert b.device_id in forbidden[0]["detail"]
    # A's own reading claiming B's branch: 403 as well.
    a_claims_b = orjson.loads(msgs[a.device_id][0].payload(0)) | {"branch_id": b.branch_id}
    assert gw.post(orjson.dumps(a_claims_b), a.token).status == 403

    # 2. MQTT: A publishes on a topic claiming B's branch (its own device segment, so the
    #    ACL lets it through); 3. A publishes on B's topic (the ACL drops it); then a
    #    control message on A's own topic, which lands.
    wrong_branch = msgs[a.device_id][1]
    on_b_topic = msgs[a.device_id][2]
    control = msgs[a.device_id][3]
    client = device_client(w.broker, a)
    try:
        wrong_topic = topic_for(a.client_id, b.branch_id, a.device_id)
        client.publish(wrong_topic, wrong_branch.payload(0), qos=1).wait_for_publish(5)
        client.publish(b.topic, on_b_topic.payload(0), qos=1).wait_for_publish(5)
        client.publish(a.topic, control.payload(0), qos=1).wait_for_publish(5)
        assert wait_for(lambda: (a.device_id, control.seq) in w.landed_keys("mqtt"), 10)
    finally:
        close_client(client)
    landed = w.landed_keys("mqtt")
    assert (a.device_id, wrong_branch.seq) in landed
    assert (a.device_id, on_b_topic.seq) not in landed  # the ACL stopped it
    assert (b.device_id, on_b_topic.seq) not in landed

    # 4. Anonymous and wrong-password connections are refused by the broker.
    assert connack(w.broker, None, None) != "Success"
    assert connack(w.broker, a.username, "not-the-password") != "Success"
    assert connack(w.broker, a.username, a.password) == "Success"

    # 5. Revocation: B's token works, then B is revoked (`devices revoke` + broker reload):
    #    401 within the book reload, and B's MQTT login is refused.
    good = orjson.dumps(orjson.loads(msgs[b.device_id][5].payload(0)))
    assert gw.post(good, b.token).status == 202
    w.broker.revoke(b.device_id)
    assert wait_for(lambda: gw.post(good, b.token).status == 401, 5)
    assert gw.post(good, b.token).json()["reason"] == "bad_token"
    assert any(r["event"] == "http_unauthorized" for r in _audit(gateway_audit))
    assert connack(w.broker, b.username, b.password) != "Success"
    assert gw.get("/healthz").status == 200
    assert gw.terminate() == 0

    # The pipeline: BRANCH_MISMATCH quarantined and audited; the control in the lake; the
    # ACL-dropped message nowhere.
    w.process_all()
    q = w.quarantine()
    mismatch = q.filter(pl.col("reason_code") == "BRANCH_MISMATCH")
    assert mismatch.select("identity", "seq").rows() == [(a.device_id, wrong_branch.seq)]
    assert mismatch["topic"].to_list() == [wrong_topic]
    lake = w.readings(["device_id", "seq"])
    keys = set(lake.select("device_id", "seq").iter_rows())
    assert (a.device_id, control.seq) in keys
    assert (a.device_id, on_b_topic.seq) not in keys
    assert (a.device_id, wrong_branch.seq) not in keys
    assert on_b_topic.seq not in q.filter(pl.col("identity") == a.device_id)["seq"].to_list()
    pipeline_audit = _audit(w.data_dir / "audit" / "pipeline")
    audited = [r for r in pipeline_audit if r["event"] == "branch_mismatch"]
    assert len(audited) == 1, pipeline_audit
    assert audited[0]["device_id"] == a.device_id
    assert audited[0]["component"] == "pipeline"
    assert wrong_topic in audited[0]["detail"]
