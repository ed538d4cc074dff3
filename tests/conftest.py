"""Shared fixtures: a real S3 API (moto's server on loopback) and lake stores on it and on disk.

``s3_server`` starts ``moto_server`` as a subprocess on a free 127.0.0.1 port once per
session; a test that needs it fails (never skips) when it cannot start. ``s3_store`` gives
each test a fresh bucket and the standard AWS environment pointing at the server.
``store`` runs a test on both (``local`` and ``s3``). ``duckdb_for`` opens a DuckDB
connection with the delta (and, for S3, httpfs) extension loaded from the installed
``duckdb-extension-*`` packages -- nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devstack.stack import free_port
from lake.storage import Store

if TYPE_CHECKING:
    from devstack.mosquitto import Mosquitto

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
}
S3_ENV_CLEARED = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_S3_ALLOW_UNSAFE_RENAME",
)


def _answers(endpoint: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(endpoint + "/", timeout=1) as response:  # noqa: S310
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a moto S3 server running for this session (http://127.0.0.1:N)."""
    if not MOTO_SERVER.exists():
        pytest.fail(f"{MOTO_SERVER} not found: install the dev extra (moto[server])")
    log_path = tmp_path_factory.mktemp("moto") / "moto_server.log"
    proc: subprocess.Popen[bytes] | None = None
    endpoint = ""
    for _attempt in range(3):
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if _answers(endpoint, proc, timeout=30):
            break
        _stop(proc)
        proc = None
    if proc is None:
        tail = log_path.read_text(errors="replace")[-2000:]
        pytest.fail(f"moto_server did not start on 127.0.0.1; its log:\n{tail}")
    try:
        yield endpoint
    finally:
        _stop(proc)


@pytest.fixture
def s3_store(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A store in a fresh bucket on the moto server, with the AWS environment pointing there."""
    import boto3  # type: ignore[import-untyped]

    for name in S3_ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    bucket = f"lake-{uuid.uuid4().hex[:16]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name=S3_ENV["AWS_REGION"],
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    client.create_bucket(Bucket=bucket)
    return Store.from_uri(f"s3://{bucket}/lake")


@pytest.fixture
def local_store(tmp_path: Path) -> Store:
    """A store in a directory of the test's temporary folder (created on first write)."""
    return Store.from_uri(tmp_path / "lake")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> Store:
    """The same test on local disk and on S3 (moto)."""
    fixture = "local_store" if request.param == "local" else "s3_store"
    result: Store = request.getfixturevalue(fixture)
    return result


@pytest.fixture
def duckdb_for() -> Iterator[Callable[[Store], Any]]:
    """DuckDB connections that can ``delta_scan`` a store, opened the way the platform opens
    them (``lake.duck.connect``: the packaged extensions, offline), closed after the test."""
    from lake.duck import connect as duck_connect

    opened: list[Any] = []

    def connect(store: Store) -> Any:
        con = duck_connect(store)
        opened.append(con)
        return con

    yield connect
    for con in opened:
        with contextlib.suppress(Exception):
            con.close()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto on 127.0.0.1 running infra/mosquitto/mosquitto.conf, rendered by the
    real provisioning for a small simulated fleet (see devstack/mosquitto.py). Provisioned files
    are in ``DATA_DIR/gateway`` with ``DATA_DIR = mosquitto.data_dir``. Fails if mosquitto
    is not installed; the process is always ended by its PID.
    """
    from devstack.mosquitto import start_mosquitto

    broker = start_mosquitto(tmp_path / "data" / "gateway")
    try:
        yield broker
    finally:
        broker.close()


# The longest test files (measured: `pytest --durations`), run first: under `make test`'s
# workers (pytest-xdist, a file per worker at a time) a long file that starts last sets the
# whole suite's time. Alone, the order changes nothing.
_LONGEST_FIRST = (
    "tests/pipeline/test_crash.py",
    "tests/analytics/test_isolation_property.py",
    "tests/e2e/test_exactly_once.py",
    "tests/retention/test_erasure_crash.py",
    "tests/pipeline/test_worker_pool.py",
    "tests/retention/test_erasure.py",
    "tests/retention/test_apply_crash.py",
    "tests/cli/test_cli.py",
    "tests/pipeline/test_follow.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = Path(str(item.fspath)).relative_to(Path(__file__).parent.parent).as_posix()
        return _LONGEST_FIRST.index(path) if path in _LONGEST_FIRST else len(_LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a file, and of the others, is kept
