"""The store's byte operations on local disk and on S3 (moto over HTTP), and the layout."""

from __future__ import annotations

import threading
from datetime import date
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from contracts.errors import EnergylakeError
from lake.errors import LayoutError, StorageError
from lake.layout import (
    UNASSIGNED_TENANT,
    check_tenant,
    clients_rel,
    raw_archive_rel,
    state_rel,
    table_rel,
    tenants,
)
from lake.storage import S3Encryption, S3Settings, Store

# ---------------------------------------------------------------------------- byte operations


def test_put_get_replace_and_missing(store: Store) -> None:
    assert store.get_bytes("a/b/c.bin") is None
    assert not store.exists("a/b/c.bin")
    store.put_bytes("a/b/c.bin", b"one")
    assert store.exists("a/b/c.bin")
    assert store.get_bytes("a/b/c.bin") == b"one"
    store.put_bytes("a/b/c.bin", b"two, longer")
    assert store.get_bytes("a/b/c.bin") == b"two, longer"
    store.put_bytes("a/b/view.bin", memoryview(b"from a buffer"))
    assert store.get_bytes("a/b/view.bin") == b"from a buffer"
    assert not store.exists("a/b")  # a directory is not a file


def test_list_is_recursive_sorted_and_bounded_by_directory(store: Store) -> None:
    for rel in ("t/x/2.bin", "t/x/1.bin", "t/y/deep/3.bin", "tt/4.bin", "t/0.bin"):
        store.put_bytes(rel, rel.encode())
    assert store.list("t") == ["t/0.bin", "t/x/1.bin", "t/x/2.bin", "t/y/deep/3.bin"]
    assert store.list("t/x") == ["t/x/1.bin", "t/x/2.bin"]
    assert store.list("nothing/here") == []
    assert store.list() == sorted(
        ["t/x/2.bin", "t/x/1.bin", "t/y/deep/3.bin", "tt/4.bin", "t/0.bin"]
    )
    assert store.children("t") == ["x", "y"]
    assert store.children() == ["t", "tt"]
    assert store.children("missing") == []


def test_put_if_absent_creates_once(store: Store) -> None:
    assert store.put_if_absent("locks/one", b"first")
    assert not store.put_if_absent("locks/one", b"second")
    assert store.get_bytes("locks/one") == b"first"


def test_put_if_absent_race_has_one_winner(store: Store) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def claim(i: int) -> None:
        barrier.wait()
        results.append(store.put_if_absent("claims/batch-7", f"writer {i}".encode()))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]
    winner = store.get_bytes("claims/batch-7")
    assert winner is not None
    assert winner.startswith(b"writer ")


def test_delete_and_delete_tree(store: Store) -> None:
    store.delete("never/was.bin")  # missing is fine
    for rel in ("d/1", "d/e/2", "d/e/3", "keep/4"):
        store.put_bytes(rel, b"x")
    store.delete("d/1")
    assert not store.exists("d/1")
    assert store.delete_tree("d") == 2
    assert store.list("d") == []
    assert store.list("keep") == ["keep/4"]
    assert store.delete_tree("d") == 0


def test_put_file_and_get_file(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "segment.bin"
    source.write_bytes(bytes(range(256)) * 1000)
    store.put_file("raw/seg.bin", source)
    target = tmp_path / "copy" / "seg.bin"
    store.get_file("raw/seg.bin", target)
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(StorageError):
        store.get_file("raw/missing.bin", tmp_path / "missing.bin")
    assert not (tmp_path / "missing.bin").exists()


def test_move_file_renames_locally_and_uploads_to_s3(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "landing" / "segment.bin"
    source.parent.mkdir()
    source.write_bytes(b"frames" * 1000)
    inode = source.stat().st_ino
    store.move_file("raw/2026/11/25/segment.bin", source)
    assert not source.exists()
    target = tmp_path / "back.bin"
    store.get_file("raw/2026/11/25/segment.bin", target)
    assert target.read_bytes() == b"frames" * 1000
    if not store.is_s3:  # same file system: renamed, not copied
        local = Path(store.url()) / "raw/2026/11/25/segment.bin"
        assert local.stat().st_ino == inode


def test_stage_file_keeps_the_local_file_and_never_rewrites_a_staged_one(
    store: Store, tmp_path: Path
) -> None:
    source = tmp_path / "landing" / "segment.seg"
    source.parent.mkdir()
    source.write_bytes(b"frames" * 1000)
    rel = "raw/2026/11/25/segment.seg"
    assert store.size(rel) is None
    store.stage_file(rel, source)
    assert source.read_bytes() == b"frames" * 1000  # kept
    assert store.get_bytes(rel) == b"frames" * 1000
    assert store.size(rel) == 6000
    if not store.is_s3:  # same file system: a hard link, not a copy
        assert (Path(store.url()) / rel).stat().st_ino == source.stat().st_ino
    # Staging again (a resumed batch) keeps what the lake holds: a staged file never changes.
    other = tmp_path / "other.seg"
    other.write_bytes(b"other")
    store.stage_file(rel, other)
    assert store.get_bytes(rel) == b"frames" * 1000
    assert store.size("raw/2026/11/25/missing.seg") is None


def test_write_atomic_streams_into_place(store: Store) -> None:
    size = store.write_atomic("w/stream.bin", lambda handle: handle.write(b"abc" * 10))
    assert size == 30
    assert store.get_bytes("w/stream.bin") == b"abc" * 10


def test_local_writes_leave_no_temp_files(local_store: Store, tmp_path: Path) -> None:
    local_store.put_bytes("x/a.bin", b"1")
    local_store.put_if_absent("x/b.bin", b"2")
    local_store.put_if_absent("x/b.bin", b"3")
    source = tmp_path / "f"
    source.write_bytes(b"4")
    local_store.put_file("x/c.bin", source)
    names = sorted(p.name for p in (tmp_path / "lake" / "x").iterdir())
    assert names == ["a.bin", "b.bin", "c.bin"]


def test_local_listing_ignores_a_crashed_writers_temp_file(local_store: Store) -> None:
    local_store.put_bytes("x/a.bin", b"1")
    root = Path(local_store.url("x"))
    (root / ".a.bin.tmp-0123abcd").write_bytes(b"half")
    assert local_store.list("x") == ["x/a.bin"]


def test_filesystem_sees_the_store_files(store: Store) -> None:
    store.put_bytes("fs/file.txt", b"hello")
    fs, base = store.filesystem()
    with fs.open_input_stream(f"{base}/fs/file.txt") as stream:
        assert stream.read() == b"hello"
    info = fs.get_file_info(f"{base}/fs/file.txt")
    assert info.type == pafs.FileType.File
    assert info.size == 5


# ---------------------------------------------------------------------------- addressing


def test_local_uri_and_url(tmp_path: Path) -> None:
    store = Store.from_uri(tmp_path / "a" / ".." / "lake")
    assert store.uri == str((tmp_path / "lake").resolve())
    assert not store.is_s3
    assert store.url("tenants/x") == str((tmp_path / "lake" / "tenants" / "x").resolve())
    assert Store.from_uri(f"file://{tmp_path}/lake") == store
    assert store.storage_options() == {}
    assert not (tmp_path / "lake").exists()  # created on demand only


def test_s3_uri_is_normalised() -> None:
    settings = S3Settings(region="ap-south-1")
    store = Store.from_uri("s3://my-bucket/some/prefix/", s3=settings)
    assert store.is_s3
    assert store.uri == "s3://my-bucket/some/prefix"
    assert store.url("tenants/acme/devices") == "s3://my-bucket/some/prefix/tenants/acme/devices"
    assert store.url() == "s3://my-bucket/some/prefix"
    assert Store.from_uri("s3://my-bucket", s3=settings).url("x") == "s3://my-bucket/x"


@pytest.mark.parametrize("rel", ["", "/abs", "../up", "a/../b", "a//b", "a/./b", "a\\b"])
def test_bad_relative_paths_are_refused(local_store: Store, rel: str) -> None:
    with pytest.raises(LayoutError):
        local_store.put_bytes(rel, b"x")


@pytest.mark.parametrize("uri", ["s3://A_B/x", "s3://ab/x", "gs://bucket/x", "http://h/x"])
def test_bad_store_uris_are_refused(uri: str) -> None:
    with pytest.raises(StorageError):
        Store.from_uri(uri, s3=S3Settings())


def test_storage_options_follow_the_aws_environment(
    s3_store: Store, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = s3_store.storage_options()
    assert options["AWS_ENDPOINT_URL"] == s3_server
    assert options["AWS_ALLOW_HTTP"] == "true"
    assert options["AWS_REGION"] == "us-east-1"
    assert options["AWS_ACCESS_KEY_ID"] == "testing"
    assert options["aws_conditional_put"] == "etag"
    assert "AWS_S3_ALLOW_UNSAFE_RENAME" not in options

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example.net/")
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    settings = S3Settings.from_env()
    assert settings.endpoint == "https://s3.example.net"
    assert settings.region == "ap-south-1"
    options = Store.from_uri("s3://bucket/x", s3=settings).storage_options()
    assert "AWS_ALLOW_HTTP" not in options
    assert S3Settings.from_env({}).region == "us-east-1"
    assert S3Settings.from_env({}).endpoint is None
    with pytest.raises(StorageError):
        S3Settings.from_env({"AWS_ACCESS_KEY_ID": "only-the-key"})


def _sse(store: Store, rel: str) -> tuple[str | None, str | None]:
    head = store.boto3_client().head_object(Bucket=store.bucket, Key=f"lake/{rel}")
    return head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")


def _write_every_way(store: Store, tmp_path: Path) -> list[str]:
    """Each byte writer of the store once; the relative paths written."""
    store.put_bytes("e/put", b"1")
    store.write_atomic("e/atomic", lambda handle: handle.write(b"2"))
    assert store.put_if_absent("e/create", b"3")
    small, large = tmp_path / "small.seg", tmp_path / "large.seg"
    small.write_bytes(b"4" * 1000)
    large.write_bytes(b"5" * (9 << 20))  # above boto3's 8 MiB: a multipart upload
    store.put_file("e/upload", small)
    store.move_files([("e/moved-small", small), ("e/moved-large", large)])
    return ["e/put", "e/atomic", "e/create", "e/upload", "e/moved-small", "e/moved-large"]


@pytest.mark.parametrize(
    ("encryption", "expected"),
    [
        (None, ("AES256", None)),  # the default: SSE-S3
        (S3Encryption("aws:kms", "alias/lake"), ("aws:kms", "alias/lake")),
        (S3Encryption("aws:kms"), ("aws:kms", None)),  # the account's AWS-managed key
        (S3Encryption(None), (None, None)),  # asked for nothing: the bucket's default
    ],
)
def test_every_s3_write_asks_for_server_side_encryption(
    s3_store: Store,
    tmp_path: Path,
    encryption: S3Encryption | None,
    expected: tuple[str | None, str | None],
) -> None:
    store = Store.from_uri(s3_store.uri, encryption=encryption)
    written = _write_every_way(store, tmp_path)
    assert {rel: _sse(store, rel) for rel in written} == dict.fromkeys(written, expected)
    options = store.storage_options()  # delta-rs: the same request
    assert options.get("aws_server_side_encryption") == expected[0]
    assert options.get("aws_sse_kms_key_id") == expected[1]


def test_a_duckdb_write_through_the_lake_door_uses_the_kms_key(s3_store: Store) -> None:
    from lake.duck import connect

    store = Store.from_uri(s3_store.uri, encryption=S3Encryption("aws:kms", "alias/lake"))
    con = connect(store)
    try:
        con.execute(f"COPY (SELECT 1 AS a) TO '{store.url('e/duck.parquet')}'")
    finally:
        con.close()
    assert _sse(store, "e/duck.parquet") == ("aws:kms", "alias/lake")


def test_a_table_read_with_one_encryption_is_written_with_anothers(
    s3_store: Store, tmp_path: Path
) -> None:
    # One process, two stores on one lake: a reader with the defaults, then a writer set to
    # a KMS key. The process caches table handles; the writer's objects must still carry its
    # key (a handle opened for the reader would carry the reader's options).
    import pyarrow.parquet as pq

    from contracts import load_registry
    from lake.delta import latest_version
    from lake.reference import load_reference
    from simulator.config import SimConfig
    from simulator.reference import build_fleet
    from simulator.run import write_reference

    registry = load_registry()
    folder = tmp_path / "reference"
    write_reference(build_fleet(SimConfig(clients=1, branches=1)), registry, folder)
    loads = load_reference(s3_store, folder, registry)
    for load in loads.values():  # the reader: this process now holds its table handles
        for table in load.tables:
            assert latest_version(s3_store, table.rel) is not None
    before = set(s3_store.list())
    clients = pq.read_table(folder / "clients.parquet")
    names = [f"{n} (renamed)" for n in clients.column("legal_name").to_pylist()]
    column = clients.schema.get_field_index("legal_name")
    renamed = clients.set_column(column, clients.schema.field(column), [names])
    pq.write_table(renamed, folder / "clients.parquet")
    kms = Store.from_uri(s3_store.uri, encryption=S3Encryption("aws:kms", "alias/lake"))
    load_reference(kms, folder, registry)
    written = sorted(set(kms.list()) - before)
    assert written
    assert {rel: _sse(kms, rel) for rel in written} == dict.fromkeys(
        written, ("aws:kms", "alias/lake")
    )


def test_bad_encryption_settings_are_refused() -> None:
    with pytest.raises(StorageError, match="not one of"):
        S3Encryption("aws:fancy")
    with pytest.raises(StorageError, match="KMS key id"):
        S3Encryption("AES256", "alias/lake")
    assert Store.from_uri("/tmp/x", encryption=S3Encryption("aws:kms")).storage_options() == {}


def test_s3_put_if_absent_is_a_conditional_put(s3_store: Store) -> None:
    """The server refuses the second create (412): the store does not check-then-write."""
    client = s3_store.boto3_client()
    assert s3_store.put_if_absent("c/key", b"1")
    key = "lake/c/key"
    with pytest.raises(client.exceptions.ClientError) as info:
        client.put_object(Bucket=s3_store.bucket, Key=key, Body=b"2", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


# ---------------------------------------------------------------------------- layout


def test_layout_paths() -> None:
    assert table_rel("acme", "meter_readings") == "tenants/acme/meter_readings"
    assert table_rel(UNASSIGNED_TENANT, "quarantine") == "tenants/_unassigned/quarantine"
    assert clients_rel() == "platform/clients"
    assert raw_archive_rel("seg-000042.log", date(2026, 3, 7)) == "raw/2026/03/07/seg-000042.log"
    assert state_rel("ingest-1") == "_state/ingest-1"
    assert state_rel("ingest-1", "plans", "batch-9.json") == "_state/ingest-1/plans/batch-9.json"


@pytest.mark.parametrize(
    ("tenant", "dataset"),
    [
        (UNASSIGNED_TENANT, "meter_readings"),
        ("Acme", "devices"),
        ("a", "devices"),
        ("-acme", "devices"),
        ("acme/x", "devices"),
        ("x" * 33, "devices"),
        ("acme", "../devices"),
        ("acme", "Devices"),
    ],
)
def test_layout_refuses_bad_ids(tenant: str, dataset: str) -> None:
    with pytest.raises(LayoutError) as info:
        table_rel(tenant, dataset)
    assert isinstance(info.value, EnergylakeError)


@pytest.mark.parametrize("part", ["", "..", "a/b", ".hidden"])
def test_layout_refuses_bad_components(part: str) -> None:
    with pytest.raises(LayoutError):
        state_rel("p", part)
    with pytest.raises(LayoutError):
        raw_archive_rel(part, date(2026, 1, 1))
    with pytest.raises(LayoutError):
        state_rel(part or "/")


def test_check_tenant() -> None:
    assert check_tenant("kaveri-2") == "kaveri-2"
    with pytest.raises(LayoutError):
        check_tenant(UNASSIGNED_TENANT)


def test_tenants_lists_tenant_directories(store: Store) -> None:
    assert tenants(store) == []
    for tenant in ("narmada", "kaveri"):
        store.put_bytes(f"{table_rel(tenant, 'devices')}/_delta_log/x.json", b"{}")
    store.put_bytes(f"{table_rel(UNASSIGNED_TENANT, 'quarantine')}/x", b"{}")
    store.put_bytes(f"{clients_rel()}/x", b"{}")
    assert tenants(store) == ["kaveri", "narmada"]


def test_move_files_moves_each_file_into_its_own_folder(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "landing"
    folder.mkdir()
    moves = []
    for k, day in enumerate(("24", "25", "25")):
        source = folder / f"segment-{k}.bin"
        source.write_bytes(b"%d" % k * 100)
        moves.append((f"raw/2026/11/{day}/segment-{k}.bin", source))
    store.move_files(moves)
    assert not list(folder.iterdir())
    for k, (rel, _) in enumerate(moves):
        target = tmp_path / f"back-{k}.bin"
        store.get_file(rel, target)
        assert target.read_bytes() == b"%d" % k * 100
