"""``Store``: one set of calls on a local folder, on a bucket of a real S3-protocol server (moto on
loopback) and on a GCS emulator's bucket; its retries through connections that drop, and the
object named when the store keeps failing."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from data_pipeline.catalog import build_catalog
from data_pipeline.storage import ATTEMPTS_ENV, StorageError, Store, is_uri, location_text
from tests.conftest import make_bucket


@pytest.fixture(params=["local", "s3", "gs"])
def store(request, tmp_path: Path) -> Store:
    if request.param == "local":
        return Store.at(tmp_path / "store")
    if request.param == "gs":  # a GCS emulator: the same calls through pyarrow's GcsFileSystem
        return Store.at(f"{request.getfixturevalue('gcs_bucket')}/prefix-{id(tmp_path)}")
    endpoint = request.getfixturevalue("s3_endpoint")
    return Store.at(f"{make_bucket(endpoint, f'store-{id(tmp_path)}')}/prefix")


def test_the_same_calls_answer_alike_on_a_disk_and_in_a_bucket(store: Store) -> None:
    store.make_dir()
    assert not store.is_file("a/b.bin")
    store.write_bytes("a/b.bin", b"0123456789")
    store.write_text("c.json", "{}")
    assert store.read_bytes("a/b.bin") == b"0123456789"
    assert store.read_head("a/b.bin", 4) == b"0123"
    assert store.read_text("c.json") == "{}"
    assert {name: size for name, (size, _) in store.files().items()} == {"a/b.bin": 10, "c.json": 2}
    assert store.is_file("a/b.bin") and store.is_dir("a") and not store.is_file("a")
    with pytest.raises(FileNotFoundError):
        store.read_bytes("missing.json")
    store.delete("c.json")
    store.delete("c.json")  # absent is fine
    store.delete_dir("a")
    assert store.files() == {}
    assert store.uri("x/y") == f"{store.root}/x/y"


def test_locations() -> None:
    assert is_uri("s3://bucket/key") and is_uri("gs://bucket") and not is_uri("/data/s3://x")
    assert location_text("s3://bucket/prefix/") == "s3://bucket/prefix"
    assert location_text("relative") == str(Path("relative").resolve())
    for secret in ("s3://AKIA:hunter2@bucket/x", "s3://bucket/x?secret_key=hunter2"):
        with pytest.raises(ValueError, match="environment") as caught:
            Store.at(secret)
        assert "hunter2" not in str(caught.value)


def test_a_written_file_is_whole_or_absent_locally(tmp_path: Path) -> None:
    store = Store.at(tmp_path)
    store.write_bytes("shard.parquet", b"x" * 1000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard.parquet"]  # no temporary left


class FlakyProxy:
    """A TCP proxy to ``target`` that drops (closes at once) its first ``drops`` connections,
    as a throttling store or a dropped connection does."""

    def __init__(self, target: tuple[str, int], drops: int) -> None:
        self.target, self.drops, self.dropped = target, drops, 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.dropped < self.drops:
                self.dropped += 1
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()


def _through(proxy_drops: int, endpoint: str, monkeypatch) -> tuple[FlakyProxy, Store]:
    host, port = endpoint.removeprefix("http://").split(":")
    bucket = make_bucket(endpoint, f"flaky-{proxy_drops}")
    Store.at(bucket).write_bytes("object.bin", b"payload")
    proxy = FlakyProxy((host, int(port)), proxy_drops)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv(ATTEMPTS_ENV, "4")
    return proxy, Store.at(bucket)


def test_dropped_connections_are_retried(s3_endpoint: str, monkeypatch) -> None:
    proxy, store = _through(2, s3_endpoint, monkeypatch)
    assert store.read_bytes("object.bin") == b"payload"
    assert proxy.dropped == 2


def test_a_store_that_keeps_failing_names_the_object(s3_endpoint: str, monkeypatch) -> None:
    proxy, store = _through(10**6, s3_endpoint, monkeypatch)
    with pytest.raises(StorageError, match=r"s3://flaky-1000000/object\.bin: cannot"):
        store.read_bytes("object.bin")
    assert proxy.dropped >= 4  # every attempt


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_the_catalog_of_a_bucket_equals_the_catalog_of_the_folder(
    synthetic_data: Path, scheme: str, request
) -> None:
    import pyarrow.fs as pafs

    if scheme == "s3":
        root = make_bucket(request.getfixturevalue("s3_endpoint"), "catalog-copy")
    else:
        root = request.getfixturevalue("gcs_bucket")
    bucket = Store.at(f"{root}/cbis-ddsm")
    pafs.copy_files(str(synthetic_data), bucket.fs_path(), destination_filesystem=bucket.fs)
    remote, local = build_catalog(bucket.root), build_catalog(synthetic_data)
    assert {**remote.summary(), "data": ""} == {**local.summary(), "data": ""}
    assert remote.abnormalities == local.abnormalities and remote.images == local.images
    assert remote.summary()["data"] == f"{root}/cbis-ddsm"


def test_a_shard_without_its_sidecar_is_rewritten_never_read(
    synthetic_data: Path, s3_endpoint: str, tmp_path: Path, ray_local
) -> None:
    """What a killed ``prepare`` can leave in a bucket: a shard object with no sidecar (here cut
    short). The sidecar is the commit: the next run writes the shard again."""
    from dataclasses import asdict

    from data_pipeline.convert import prepare, write_shard
    from data_pipeline.prepare_plan import PrepareConfig, shard_specs

    catalog, quiet = build_catalog(synthetic_data), lambda *_: None
    cfg = PrepareConfig(tasks=("classification",), cls_size=32, shard_size=8)
    local = prepare(catalog, tmp_path / "local", cfg, print_fn=quiet)
    first = local["tasks"]["classification"]["shards"]["train"][0]
    whole = (tmp_path / "local" / first).read_bytes()
    out = Store.at(f"{make_bucket(s3_endpoint, 'killed-upload')}/prepared")
    out.write_bytes(first, whole[: len(whole) // 3])
    # the conversion tasks' function, here in this process (the session's Ray workers were
    # started before this server's address was in the environment)
    for spec in shard_specs(catalog, cfg):
        write_shard(spec, catalog.root, out.root, asdict(cfg))
    assert out.read_bytes(first) == whole
