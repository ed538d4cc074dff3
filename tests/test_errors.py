"""One error hierarchy (issue 13, point 4): what a user or an operator got wrong is an
``EnergylakeError`` with the thing named in a field and an exit code of its class; a plain
built-in exception is left only where a bug (an invariant) is the cause, listed below.

Every exception class of ours derives from ``EnergylakeError``; each family is shown raised
by the real code path with its fields.
"""

from __future__ import annotations

import ast
import asyncio
import fcntl
import importlib
import inspect
import socket
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from contracts.errors import EnergylakeError
from tests.test_layout import OURS, ROOT

# Built-in exceptions that, raised by us, would say "a bug" where the cause is a user's input.
_BUILTIN = {
    "Exception",
    "FileNotFoundError",
    "KeyError",
    "LookupError",
    "IndexError",
    "NotImplementedError",
    "OSError",
    "RuntimeError",
    "TypeError",
    "ValueError",
}
# (function, exception) -> why a plain exception is right there: each is a programming
# invariant (a bug if it fires) or a protocol of a library, never an operator's input.
INVARIANTS = {
    ("Contract.field", "KeyError"): "lookup by a name taken from the same contract; mapping "
    "protocol",
    ("PurposePlan.action", "KeyError"): "lookup by a field of the same plan; mapping protocol",
    ("_tagged", "ValueError"): "compaction passes its own file tags",
    ("run_facet", "ValueError"): "the quality outcome comes from the gate's code",
    ("_iter_frames", "ValueError"): "max_records is passed by code, never a setting",
    ("write_results_files", "ValueError"): "the gate gives the results of one batch per table",
    ("record_decision", "ValueError"): "release.py checks the operator's decision first "
    "(ReleaseError); this guards the API",
    ("_json_default", "TypeError"): "the json module's protocol for a value it cannot write",
    ("_take", "ValueError"): "the plan and its files disagree: a bug of the batch "
    "protocol, not an input",
    ("_parse_faults", "ValueError"): "local control flow, turned into typer.BadParameter two "
    "lines below",
    ("Settings._kms_key_needs_kms", "ValueError"): "pydantic validators raise ValueError "
    "(pydantic's protocol; it becomes a ValidationError)",
    ("Message.payload", "ValueError"): "unreachable: the mangles are an enum of the simulator",
}
# Exception classes of ours that stay outside the hierarchy, and why.
OUTSIDE = {
    "transforms.ndjson._DuplicateKeyError": "private control flow of the NDJSON decoder, "
    "caught in the same module and turned into a quarantine reason",
}


def _sources() -> list[Path]:
    return [p for package in sorted(OURS) for p in sorted((ROOT / package).rglob("*.py"))]


def _builtin_raises(path: Path) -> list[tuple[str, str, int]]:
    """(enclosing function qualname, exception, line) of each ``raise <builtin>``."""
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                visit(child, [*scope, child.name])
                continue
            if isinstance(child, ast.Raise) and child.exc is not None:
                exc = child.exc.func if isinstance(child.exc, ast.Call) else child.exc
                if isinstance(exc, ast.Name) and exc.id in _BUILTIN:
                    found.append((".".join(scope), exc.id, child.lineno))
            visit(child, scope)

    visit(ast.parse(path.read_text(), filename=str(path)), [])
    return found


def test_no_bare_builtin_raise_outside_the_invariants() -> None:
    seen: set[tuple[str, str]] = set()
    wrong = []
    for path in _sources():
        for where, exc, line in _builtin_raises(path):
            if (where, exc) in INVARIANTS:
                seen.add((where, exc))
            else:
                wrong.append(
                    f"{path.relative_to(ROOT)}:{line}: raise {exc} in {where or '<module>'}"
                )
    assert not wrong, (
        "raise an EnergylakeError subclass (contracts/errors.py or the package's errors module) "
        "naming the thing and the next step, or add the site to INVARIANTS with the reason:\n"
        + "\n".join(wrong)
    )
    assert not set(INVARIANTS) - seen, f"stale INVARIANTS: {sorted(set(INVARIANTS) - seen)}"


def _module_names() -> list[str]:
    names = []
    for path in _sources():
        if path.name == "__main__.py":
            continue  # importing it runs the command line
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names.append(".".join(parts))
    return names


def test_every_exception_class_of_ours_is_in_the_hierarchy() -> None:
    outside = []
    for name in _module_names():
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and issubclass(cls, BaseException)):
                continue
            qualified = f"{cls.__module__}.{cls.__qualname__}"
            if cls.__module__ != name or qualified in OUTSIDE:
                continue
            if not issubclass(cls, EnergylakeError):
                outside.append(qualified)
            elif not isinstance(getattr(cls, "exit_code", None), int):
                outside.append(f"{qualified} (no exit_code)")
    assert not outside, f"not EnergylakeError subclasses: {outside}"


# --- a setting, an option, an argument or a file is wrong: ConfigError, exit code 2 --------


def _gateway_config(tmp_path: Path, **kw: Any) -> Any:
    from gateway.config import GatewayConfig

    return GatewayConfig(
        landing_dir=tmp_path / "landing",
        identity_book=tmp_path / "identities.json",
        audit_dir=tmp_path / "audit",
        **kw,
    )


def _bad_inputs(tmp_path: Path) -> list[tuple[str, Any, str, Any]]:
    """(what, a call with the real code path, the setting named, the value kept)."""
    from contracts.model import sentinel_values
    from lake.storage import S3Encryption, Store
    from lineage.config import LineageConfig
    from lineage.store import parse_dataset_ref
    from pipelines.settings import load_settings
    from simulator.config import FaultRates, SimConfig
    from simulator.publish import PublishTargets

    missing = tmp_path / "missing.toml"
    return [
        ("config file", lambda: load_settings(missing), "--config", str(missing)),
        (
            "gateway range",
            lambda: _gateway_config(tmp_path, roll_seconds=0),
            "gateway_roll_seconds",
            None,
        ),
        (
            "gateway topic",
            lambda: _gateway_config(tmp_path, mqtt_topics=("a/#",)),
            "gateway_mqtt_topics",
            "a/#",
        ),
        (
            "gateway TLS half",
            lambda: _gateway_config(tmp_path, http_tls_cert=tmp_path / "c.pem"),
            "gateway_http_tls_key",
            None,
        ),
        ("lineage url", lambda: LineageConfig(transport="http"), "lineage_url", None),
        ("lineage kind", lambda: LineageConfig(transport="kafka"), "lineage_transport", "kafka"),  # type: ignore[arg-type]
        (
            "dataset ref",
            lambda: parse_dataset_ref("t/a/meter_readings@v2"),
            "DATASET",
            "t/a/meter_readings@v2",
        ),
        ("sentinel", lambda: sentinel_values("u8"), "sentinel", "u8"),
        ("sim clients", lambda: SimConfig(clients=0), "--clients", 0),
        (
            "sim fault",
            lambda: FaultRates().with_overrides({"gremlins": 0.1}),
            "--fault",
            ["gremlins"],
        ),
        ("publish target", lambda: PublishTargets(), "--mqtt/--http", None),
        ("publish rate", lambda: PublishTargets(http="http://x", rate_per_s=0), "--rate", 0),
        ("lake uri", lambda: Store.from_uri("gs://b/lake"), "lake_uri", "gs://b/lake"),
        ("s3 bucket", lambda: Store.from_uri("s3://B_/lake"), "lake_uri", "s3://B_/lake"),
        ("s3 sse", lambda: S3Encryption(algorithm="rot13"), "s3_sse", "rot13"),
    ]


def test_config_errors_name_the_setting_and_exit_2(tmp_path: Path) -> None:
    for what, call, setting, value in _bad_inputs(tmp_path):
        with pytest.raises(EnergylakeError) as caught:
            call()
        err = caught.value
        assert type(err).exit_code == 2, what
        assert getattr(err, "setting", None) == setting, what
        assert getattr(err, "value", None) == value, what
        assert isinstance(err, ValueError), what  # the callers that caught ValueError still do
    with pytest.raises(FileNotFoundError):  # and the missing config file is still one
        _bad_inputs(tmp_path)[0][1]()


def test_a_provisioning_refusal_names_the_file_and_exits_2(tmp_path: Path) -> None:
    from gateway.provisioning import read_credentials

    with pytest.raises(EnergylakeError, match="no credentials file at") as caught:
        read_credentials(tmp_path / "credentials.json")
    assert type(caught.value).exit_code == 2


def test_a_duplicate_device_is_a_reference_data_error() -> None:
    from transforms.registry import device_frame

    devices = pa.table(
        {
            "device_id": ["m-1", "m-1"],
            "tenant_id": ["c-1", "c-1"],
            "branch_id": ["b-1", "b-1"],
            "kind": ["meter", "meter"],
        }
    )
    with pytest.raises(EnergylakeError, match=r"twice: m-1.*energylake reference load") as caught:
        device_frame(devices)
    assert getattr(caught.value, "column", None) == "device_id"


# --- another process holds the lock: BusyError, exit code 4 --------------------------------


def test_a_held_pipeline_lock_is_busy_and_exits_4(tmp_path: Path) -> None:
    from pipelines.process import ProcessError, process_once
    from pipelines.settings import Settings

    settings = Settings(data_dir=tmp_path)
    settings.landing.mkdir(parents=True)
    lock = settings.landing / f".process-{settings.pipeline_id}.lock"
    with lock.open("a+") as holder:  # a real flock, as another `energylake process` holds it
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ProcessError, match="one process per pipeline id") as caught:
            process_once(settings)
    err = caught.value
    assert type(err).exit_code == 4
    assert getattr(err, "what", None) == str(lock)
    assert "run again" in str(err)


def test_a_runner_option_it_cannot_run_is_a_config_error(tmp_path: Path) -> None:
    from pipelines.process import ProcessError, process_once
    from pipelines.settings import Settings

    settings = Settings(data_dir=tmp_path)
    with pytest.raises(ProcessError, match="use EXTERNAL") as caught:
        process_once(settings, beam_args=["--environment_type=DOCKER"])
    err = caught.value
    assert type(err).exit_code == 2
    assert (getattr(err, "setting", None), getattr(err, "value", None)) == (
        "--environment_type",
        "DOCKER",
    )


# --- the gateway cannot start: exit code 2 (a file) or 3 (the port) -------------------------


def test_the_gateway_start_errors_carry_their_exit_code(tmp_path: Path) -> None:
    from gateway.service import Gateway
    from tests.gateway.conftest import make_book

    make_book(tmp_path / "identities.json", [("m-1", "c-1", "b-1")])
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        cfg = _gateway_config(tmp_path, mqtt_enabled=False, http_port=port, min_free_bytes=0)
        with pytest.raises(EnergylakeError, match=rf"127\.0\.0\.1:{port}\b") as caught:
            asyncio.run(Gateway(cfg).serve())
    assert type(caught.value).exit_code == 3
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")
    cfg = _gateway_config(
        tmp_path,
        mqtt_enabled=False,
        min_free_bytes=0,
        http_tls_cert=tmp_path / "c.pem",
        http_tls_key=tmp_path / "k.pem",
    )
    with pytest.raises(EnergylakeError, match=r"c\.pem") as caught:
        asyncio.run(Gateway(cfg).serve())
    assert type(caught.value).exit_code == 2


def test_the_gateway_books_name_the_file_and_exit_2(tmp_path: Path) -> None:
    from gateway.identity import IdentityBook
    from gateway.sessions import read_session_book

    for load, name in ((IdentityBook.load, "identities.json"), (read_session_book, "mqtt.json")):
        with pytest.raises(EnergylakeError, match=f"{name}: run `energylake devices") as caught:
            load(tmp_path / name)
        assert type(caught.value).exit_code == 2, name


def test_a_refused_body_is_an_energylake_error() -> None:
    from gateway.body import BodyReader, BodyRules

    rules = BodyRules(
        max_body_bytes=1024, max_decompressed_bytes=1024, max_depth=8, max_readings=10
    )
    with pytest.raises(EnergylakeError) as caught:
        BodyReader(rules, gzip=False).feed(b"x" * 2048)
    assert getattr(caught.value, "status", None) == 413
