"""Every file the project replaces goes through durable: the temp file is fsynced before the
rename and the folder after it (seen as system calls under strace, in a subprocess)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.durable.syscalls import Call, syscalls

_CASES = {
    "broker log position": (
        "state.json",
        "from gateway.brokerlog import BrokerLogTail\n"
        "(OUT / 'broker.log').write_bytes(b'1700000000: hello\\n')\n"
        "BrokerLogTail(OUT / 'broker.log', OUT / 'state.json').poll()\n",
    ),
    "MQTT session state": (
        "sessions.json",
        "from gateway.sessions import SessionState\n"
        "SessionState(OUT / 'sessions.json').update('u1', added=['t/#'])\n",
    ),
    "identity book": (
        "book.json",
        "from gateway.identity import write_identity_book\n"
        "write_identity_book(OUT / 'book.json', [{'device_id': 'd1', 'client_id': 'c1',"
        " 'branch_id': 'b1', 'kind': 'meter'}])\n",
    ),
    "status metrics file": (
        "energylake.prom",
        "from pipelines.status import Status, Backlog, write_metrics\n"
        "write_metrics(Status(at='2026-01-01T00:00:00Z', pipeline_id='p', backlog=Backlog(0, 0,"
        " None, 0), last_batch=None, window_hours=24.0, devices=0, devices_with_gaps=0,"
        " missing_total=0, restarts_total=0), OUT / 'energylake.prom')\n",
    ),
    "lake file copied out": (
        "copy.bin",
        "from lake.storage import Store\n"
        "store = Store.from_uri(str(OUT / 'lake'))\n"
        "store.put_bytes('a/b.bin', b'x')\n"
        "store.get_file('a/b.bin', OUT / 'copy.bin')\n",
    ),
}


def test_a_new_tenant_key_is_linked_then_its_folder_synced(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    code = (
        "from pathlib import Path\nfrom lake.keys import KeyStore\n"
        f"KeyStore(Path({str(keys)!r})).get('acme')\n"
    )
    calls = syscalls(code, tmp_path)
    links = [i for i, c in enumerate(calls) if c[0] == "link" and c[1][-1].endswith("acme.key")]
    assert len(links) == 1, calls
    assert ("fsync", (str(keys),)) in calls[links[0] + 1 :], f"{keys} not fsynced: {calls}"
    assert [p.name for p in keys.iterdir()] == ["acme.key"]  # the temp file is gone
    assert stat.S_IMODE((keys / "acme.key").stat().st_mode) == 0o600


def _check(calls: list[Call], folder: Path, name: str) -> None:
    renames = [i for i, c in enumerate(calls) if c[0] == "rename" and c[1][-1].endswith(name)]
    assert renames, f"no rename onto {name}: {calls}"
    i = renames[-1]
    temp = calls[i][1][0]
    assert ("fsync", (temp,)) in calls[:i], f"{temp} not fsynced before its rename: {calls}"
    assert ("fsync", (str(folder),)) in calls[i + 1 :], f"{folder} not fsynced after: {calls}"


@pytest.mark.parametrize("case", sorted(_CASES))
def test_replaced_files_are_durable(case: str, tmp_path: Path) -> None:
    name, body = _CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    code = f"from pathlib import Path\nOUT = Path({str(out)!r})\n{body}"
    _check(syscalls(code, tmp_path), out, name)
