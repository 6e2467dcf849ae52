"""Where the warehouse lives: a local folder or an S3-compatible bucket (``s3://bucket/prefix``).

Every file the warehouse reads or writes goes through a :class:`Store`, so the writer, the
``latest/`` layout and the catalog work on both. A location (``loc``) is a string: an
absolute local path, or ``s3://bucket/prefix/...``; DuckDB reads the same strings (for S3
through :meth:`Store.register`, a fsspec filesystem over pyarrow's ``S3FileSystem``, so no
DuckDB extension is downloaded).

An S3 root is written ``s3://bucket/prefix[?endpoint_override=URL&region=R&scheme=http]``.
The endpoint and region may instead come from the standard AWS variables
(``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_DEFAULT_REGION``);
credentials always come from the AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
profile, instance role), never from the URL or the trial config.

Atomicity: a local file is written to a hidden temporary file and renamed
(:func:`rntflow.core.files.atomic_write`); an S3 object is buffered in memory and sent as one
PUT, which S3 publishes whole or not at all (no temporary objects, nothing to sweep).

Locks and the catalog: S3 has no ``flock``. For an S3 root the table locks are ``flock`` s on
files of a local folder, and the analysts' DuckDB catalog (views over the ``s3://`` files)
lives there too: ``$RNTFLOW_WAREHOUSE_CACHE``, else
``$XDG_CACHE_HOME/rntflow/warehouse/<bucket>/<digest of the root>`` (``~/.cache`` by default).
The contract is therefore **one writing host per S3 warehouse** (any number of processes on
it, any number of reading hosts); several writing hosts must share that folder on a
filesystem with working locks, as for a local warehouse on NFS.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.arrow import ArrowFSWrapper

from rntflow.core.errors import WarehouseError
from rntflow.core.files import atomic_write

#: Environment variable naming the local folder of an S3 warehouse's catalog and locks.
CACHE_ENV = "RNTFLOW_WAREHOUSE_CACHE"
_S3_QUERY_KEYS = {"endpoint_override", "region", "scheme"}


class _S3Fsspec(ArrowFSWrapper):
    """fsspec view of a pyarrow ``S3FileSystem`` that answers to ``s3://`` (for DuckDB)."""

    protocol = ("s3", "s3a")
    cachable = False

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        for prefix in ("s3://", "s3a://"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
        return path.rstrip("/")


@dataclass(frozen=True, eq=False)
class Store:
    """A warehouse root and the filesystem it lives on.

    Attributes
    ----------
    uri : str
        The root as a location: an absolute local path, or ``s3://bucket/prefix``.
    fs : pyarrow.fs.FileSystem
        ``LocalFileSystem`` or ``S3FileSystem``.
    local_dir : Path
        Local folder for the DuckDB catalog and the lock files (the root itself when local).
    """

    uri: str
    fs: pafs.FileSystem
    local_dir: Path

    @property
    def is_local(self) -> bool:
        return not self.uri.startswith("s3://")

    def loc(self, *parts: str) -> str:
        """Location of ``parts`` below the root (joined with ``/``)."""
        return "/".join([self.uri.rstrip("/"), *(str(p).strip("/") for p in parts if str(p))])

    def _p(self, loc: str | os.PathLike) -> str:
        text = os.fspath(loc)
        return text[len("s3://") :] if text.startswith("s3://") else text

    # --- queries --------------------------------------------------------------------------
    def exists(self, loc: str | os.PathLike) -> bool:
        return self.fs.get_file_info(self._p(loc)).type != pafs.FileType.NotFound

    def is_dir(self, loc: str | os.PathLike) -> bool:
        return self.fs.get_file_info(self._p(loc)).type == pafs.FileType.Directory

    def listdir(self, loc: str | os.PathLike, *, dirs: bool | None = None) -> list[str]:
        """Names in the folder ``loc`` (only folders / only files with ``dirs``); [] when absent."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self._p(loc), allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        want = {True: pafs.FileType.Directory, False: pafs.FileType.File}.get(dirs)
        return sorted(i.base_name for i in infos if want is None or i.type == want)

    def files_below(self, loc: str | os.PathLike, depth: int, suffix: str = ".parquet") -> list[str]:
        """Published files (not hidden) exactly ``depth`` folders below ``loc``, as locations."""
        base = self._p(loc).rstrip("/")
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for info in infos:
            rel = info.path[len(base) + 1 :].split("/")
            if info.type == pafs.FileType.File and len(rel) == depth + 1 and rel[-1].endswith(suffix):
                if not rel[-1].startswith((".", "_")):
                    out.append(os.fspath(loc).rstrip("/") + "/" + "/".join(rel))
        return sorted(out)

    def read_schema(self, loc: str | os.PathLike) -> pa.Schema:
        """Arrow schema of a Parquet file (``OSError`` when absent)."""
        return pq.read_schema(self._p(loc), filesystem=self.fs)

    def read_table(self, loc: str | os.PathLike) -> pa.Table:
        return pq.read_table(self._p(loc), filesystem=self.fs)

    # --- changes --------------------------------------------------------------------------
    def mkdir(self, loc: str | os.PathLike) -> None:
        if self.is_local:
            Path(loc).mkdir(parents=True, exist_ok=True)

    def delete(self, loc: str | os.PathLike) -> None:
        """Remove a file (nothing when absent)."""
        try:
            self.fs.delete_file(self._p(loc))
        except FileNotFoundError:
            pass

    def write_parquet(
        self, loc: str | os.PathLike, table: pa.Table, *, durable: bool = True, before_rename=None
    ) -> None:
        """Publish ``table`` (zstd) at ``loc`` atomically: a reader sees all of it or none.

        Local: temporary file, fsync (``durable``), rename. S3: one PUT of the whole file.
        ``before_rename`` (tests) is called before publishing: with the temporary path
        locally, with ``loc`` on S3.
        """
        if self.is_local:
            with atomic_write(loc, "wb", durable=durable, before_rename=before_rename) as fh:
                pq.write_table(table, fh, compression="zstd")
            return
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue()
        if before_rename is not None:
            before_rename(loc)
        with self.fs.open_output_stream(self._p(loc)) as out:
            out.write(data)

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Exclusive inter-process lock ``name`` (a ``flock`` on a local file, see module doc).

        Local roots keep the lock beside the data (``<root>/<name>``), as before.
        """
        path = self.local_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def register(self, con) -> None:
        """Let the DuckDB connection ``con`` read this root's ``s3://`` locations (no-op locally).

        Registers a fsspec filesystem for ``s3://`` (one S3 endpoint per connection).
        """
        if self.is_local:
            return
        if "s3" in con.list_filesystems():
            con.unregister_filesystem("s3")
        con.register_filesystem(_S3Fsspec(self.fs))


def _s3_store(root: str) -> Store:
    parts = urlsplit(root)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not bucket:
        raise WarehouseError(f"warehouse root {root!r}: no bucket")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - _S3_QUERY_KEYS
    if unknown:
        raise WarehouseError(f"warehouse root {root!r}: unknown option(s) {sorted(unknown)}; known {_S3_QUERY_KEYS}")
    endpoint = (
        query.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    region = query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    kwargs: dict = {}
    if endpoint:
        scheme, _, host = endpoint.rpartition("://")
        kwargs["endpoint_override"] = host or endpoint
        kwargs["scheme"] = query.get("scheme") or scheme or "https"
    if region:
        kwargs["region"] = region
    fs = pafs.S3FileSystem(**kwargs)
    uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    cache = os.environ.get(CACHE_ENV)
    if cache:
        local = Path(cache)
    else:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        tag = hashlib.sha256(f"{endpoint or ''}|{uri}".encode()).hexdigest()[:12]
        local = home / "rntflow" / "warehouse" / bucket / tag
    return Store(uri, fs, local.resolve())


@functools.lru_cache(maxsize=32)
def _open(root: str, cache_env: str | None) -> Store:
    if root.startswith("s3://"):
        return _s3_store(root)
    if "://" in root:
        raise WarehouseError(f"warehouse root {root!r}: only local folders and s3:// URLs are supported")
    path = Path(root).resolve()
    return Store(str(path), pafs.LocalFileSystem(), path)


def open_store(root: str | os.PathLike | Store) -> Store:
    """The :class:`Store` of a warehouse root (a path, ``s3://bucket/prefix[?...]``, or a Store)."""
    if isinstance(root, Store):
        return root
    return _open(os.fspath(root), os.environ.get(CACHE_ENV))


def is_remote(root: str | os.PathLike | Store) -> bool:
    """Whether ``root`` names object storage (without opening it)."""
    return root.uri.startswith("s3://") if isinstance(root, Store) else os.fspath(root).startswith("s3://")
