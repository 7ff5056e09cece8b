"""Where data lives: a local (or NFS) folder or an object-store prefix, through pyarrow filesystems.

``Store.at("s3://bucket/cbis-ddsm")``, ``Store.at("gs://bucket/prepared")`` and
``Store.at("/data/cbis-ddsm")`` answer the same calls with paths relative to their root (POSIX
separators). Credentials come from the environment or the instance profile, as pyarrow finds them;
an S3-compatible store (MinIO, an on-premises store) is reached through ``AWS_ENDPOINT_URL``, a GCS
emulator through ``STORAGE_EMULATOR_HOST``. Requests
are retried by the filesystem's own retry strategy (throttling, dropped connections); one that still
fails raises ``StorageError`` naming the object.

A write appears whole or not at all: locally a temporary name and a rename; in an object store an
object exists only once its upload completed, so a killed upload leaves nothing a reader can see.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

SCHEMES = ("s3", "gs", "gcs")
S3_ATTEMPTS = 8  # AWS's standard retry mode: exponential backoff with jitter
ATTEMPTS_ENV = "MAMMOBENCH_S3_ATTEMPTS"  # overrides S3_ATTEMPTS
GCS_EMULATOR_ENV = "STORAGE_EMULATOR_HOST"  # Google's variable for a GCS emulator's address
GCS_RETRY_SECONDS = 60


class StorageError(OSError):
    """A request the store still refused after its retries, naming the object."""


def is_uri(location: str | os.PathLike[str]) -> bool:
    """True for ``s3://`` and ``gs://`` locations (any other string is a local path)."""
    scheme, sep, _ = str(location).partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def location_text(location: str | os.PathLike[str]) -> str:
    """A URI as given (without a trailing ``/``), or a local path made absolute.

    Raises:
        ValueError: a URI carrying credentials or options (``user:secret@``, ``?secret_key=``):
            it would be logged and stored with every run; the message does not repeat them.
    """
    if not is_uri(location):
        return str(Path(location).expanduser().resolve())
    scheme, _, rest = str(location).partition("://")
    if "@" in rest.split("/", 1)[0] or "?" in rest:
        raise ValueError(
            f"{scheme}://...: credentials or options in a URI would be logged with every run; "
            "give credentials through the environment or the instance profile, and an "
            "S3-compatible endpoint as AWS_ENDPOINT_URL"
        )
    return str(location).rstrip("/")


def s3_options() -> dict[str, str | None]:
    """What S3 requests go to, from the environment (the AWS SDK's own variables)."""
    return {
        "endpoint": os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        "region": os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        "attempts": int(os.environ.get(ATTEMPTS_ENV) or S3_ATTEMPTS),
    }


@functools.lru_cache(maxsize=16)
def _remote_filesystem(
    scheme: str,
    bucket: str,
    endpoint: str | None = None,
    region: str | None = None,
    attempts: int = S3_ATTEMPTS,
) -> pafs.FileSystem:
    """One filesystem per bucket, endpoint and process, with the store's retries."""
    if scheme == "s3":
        if region is None and not endpoint:
            region = pafs.resolve_s3_region(bucket)
        return pafs.S3FileSystem(
            region=region or "us-east-1",
            endpoint_override=endpoint,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
        )
    retry = timedelta(seconds=GCS_RETRY_SECONDS)
    if endpoint:  # an emulator, as Google's libraries reach one: no credentials
        scheme, _, host = endpoint.rpartition("://")
        return pafs.GcsFileSystem(
            anonymous=True, scheme=scheme or "http", endpoint_override=host, retry_time_limit=retry
        )
    return pafs.GcsFileSystem(retry_time_limit=retry)


@dataclass(frozen=True)
class Store:
    """A folder or bucket prefix; picklable (Ray tasks rebuild the filesystem from the text)."""

    root: str

    @classmethod
    def at(cls, location: str | os.PathLike[str]) -> Store:
        """The store at a path or URI (see ``location_text``)."""
        return cls(location_text(location))

    @property
    def remote(self) -> bool:
        """An object store (not a local or mounted folder)."""
        return is_uri(self.root)

    @property
    def fs(self) -> pafs.FileSystem:
        """The pyarrow filesystem (one per bucket and endpoint in a process)."""
        if not self.remote:
            return pafs.LocalFileSystem()
        scheme, _, rest = self.root.partition("://")
        scheme = "gs" if scheme.lower() in ("gs", "gcs") else "s3"
        bucket = rest.split("/", 1)[0]
        if scheme == "gs":
            return _remote_filesystem(scheme, bucket, os.environ.get(GCS_EMULATOR_ENV))
        return _remote_filesystem(scheme, bucket, **s3_options())

    def fs_path(self, rel: str = "") -> str:
        """The filesystem's path of ``rel`` (no scheme: pyarrow's ``bucket/key`` form)."""
        base = self.root.partition("://")[2] if self.remote else self.root
        return posixpath.join(base, rel) if rel else base

    def uri(self, rel: str = "") -> str:
        """``rel`` as a full location: a URI or an absolute local path."""
        return posixpath.join(self.root, rel) if rel else self.root

    def local_path(self, rel: str = "") -> Path | None:
        """The local path of ``rel``, or None in an object store."""
        return None if self.remote else Path(self.fs_path(rel))

    def _call(self, what: str, rel: str, fn, *args):
        try:
            return fn(*args)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"{self.uri(rel)}: cannot {what} ({exc})") from exc

    def info(self, rel: str = "") -> pafs.FileInfo:
        """pyarrow's ``FileInfo`` of ``rel`` (type ``NotFound`` when absent)."""
        return self._call("stat", rel, self.fs.get_file_info, self.fs_path(rel))

    def is_file(self, rel: str) -> bool:
        """``rel`` is a file (an object)."""
        return self.info(rel).type == pafs.FileType.File

    def is_dir(self, rel: str = "") -> bool:
        """``rel`` is a folder (a prefix with objects under it)."""
        return self.info(rel).type == pafs.FileType.Directory

    def files(self, rel: str = "") -> dict[str, tuple[int, int]]:
        """Every file under ``rel`` (recursive; hidden folders skipped): relative path ->
        (size, mtime in ns, 0 where the store keeps none)."""
        selector = pafs.FileSelector(self.fs_path(rel), recursive=True, allow_not_found=True)
        infos = self._call("list", rel, self.fs.get_file_info, selector)
        base = self.fs_path()
        found = {}
        for info in infos:
            if info.type != pafs.FileType.File:
                continue
            name = posixpath.relpath(info.path, base)
            if any(part.startswith(".") for part in name.split("/")[:-1]):
                continue
            found[name] = (info.size or 0, info.mtime_ns or 0)
        return dict(sorted(found.items()))

    def open(self, rel: str) -> pa.NativeFile:
        """A random-access reader (in an object store each read is a ranged request)."""
        return self._call("open", rel, self.fs.open_input_file, self.fs_path(rel))

    def read_bytes(self, rel: str) -> bytes:
        """The whole file (one request, or pyarrow's parallel ranged reads for large objects)."""
        with self.open(rel) as handle:
            return self._call("read", rel, handle.read)

    def read_head(self, rel: str, size: int) -> bytes:
        """The first ``size`` bytes (one ranged request in an object store)."""
        with self.open(rel) as handle:
            return self._call("read", rel, handle.read_at, size, 0)

    def read_text(self, rel: str) -> str:
        """The file as UTF-8 text."""
        return self.read_bytes(rel).decode()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``rel`` whole or not at all."""
        target = self.fs_path(rel)
        if self.remote:
            self._call("write", rel, _write, self.fs, target, data)
            return
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        tmp = posixpath.join(posixpath.dirname(target), f".{posixpath.basename(target)}.tmp")
        _write(self.fs, f"{tmp}.{os.getpid()}", data)
        os.replace(f"{tmp}.{os.getpid()}", target)

    def write_text(self, rel: str, text: str) -> None:
        """``write_bytes`` of UTF-8 text."""
        self.write_bytes(rel, text.encode())

    def delete(self, rel: str) -> None:
        """Remove a file; absent is fine."""
        with contextlib.suppress(FileNotFoundError):
            self._call("delete", rel, self.fs.delete_file, self.fs_path(rel))

    def delete_dir(self, rel: str) -> None:
        """Remove a folder (prefix) and all under it; absent is fine."""
        if self.is_dir(rel):  # GCS: the objects go, then a folder marker that may not exist
            with contextlib.suppress(FileNotFoundError):
                self._call("delete", rel, self.fs.delete_dir, self.fs_path(rel))

    def make_dir(self) -> None:
        """Create the root folder (object stores need none)."""
        if not self.remote:
            Path(self.root).mkdir(parents=True, exist_ok=True)


def _write(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def open_file(location: str) -> pa.NativeFile:
    """Open a file named by its full location (a local path or a URI)."""
    parent, _, name = str(location).rstrip("/").rpartition("/")
    return Store.at(parent or ".").open(name)
