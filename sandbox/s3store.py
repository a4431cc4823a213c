"""The sandbox's S3: moto's server, with its S3 state kept on disk across restarts.

    python -m sandbox.s3store --port P --data-dir DIR [--host 127.0.0.1] [--interval 2]

runs moto's WSGI application (every AWS mock moto has, exactly as `python -m moto.server`) in
this process and keeps **S3's** state in DIR, so `sandbox down` then `up`, or a crash, loses no
backup, evidence or journal entry:

- **Restore on start**: the last snapshot is loaded before the port is bound, so a server that
  answers `/moto-api/` already holds every bucket and object it had.
- **Snapshot after changes**: every request that is not GET/HEAD/OPTIONS marks the state dirty;
  at most `--interval` seconds (default 2) after the first unsaved change, a snapshot is
  written. A `kill -9` therefore loses at most the changes of the last interval.
- **Snapshot on SIGTERM/SIGINT**: the server stops accepting, waits for the requests being
  handled, writes a last snapshot and exits (0). Nothing acknowledged before the signal is lost.
- **SIGSTOP/SIGCONT** (a fault that freezes the server so it "stops answering") lose nothing:
  the whole process is frozen; after SIGCONT the snapshot thread finds its deadline passed and
  writes any pending change at once. A SIGTERM sent to a stopped process only acts after
  SIGCONT: whoever stops a paused server must resume it first (sandbox/world.py does), else
  `stop_pid`'s SIGKILL after its timeout loses the changes of the last interval before the pause.

What is kept: moto's S3 backend objects themselves (pickled), so everything S3 holds comes back
exactly: buckets with versioning, Object Lock configuration and default retention, policies,
tags, lifecycle, CORS, encryption; every object version in order with its version id, ETag,
last-modified time, metadata, content type, SSE headers, retention mode and until-date, legal
hold; delete markers; multipart uploads in progress. moto enforces retention on the restored
keys as on new ones: a COMPLIANCE-locked version still refuses deletion. The other AWS mocks
(EC2, ELBv2, ...) stay in memory only; the sandbox uses S3 alone.

Layout of DIR:

    snapshot.pickle   the backend's metadata (a small header, then the state); replaced
                      atomically (written to a temporary file, fsynced, renamed)
    blobs/xx/<id>     one file per object (version or part) body, written once (fsynced)
                      before the snapshot that first refers to it; removed by the first
                      snapshot that no longer refers to it
    .lock             held (flock) while a server runs on DIR: a second one refuses to start

DIR and its files are private (0700/0600): they hold backups and evidence, and unpickling runs
code, so a snapshot not owned by this user is refused.

Costs, measured here: bodies are not copied back into memory on restore (a restored object
reads its blob file when it is read), so restoring costs the metadata only: 0.07 s for 500
objects, 0.3-0.45 s for 5,000; the whole start (Python, moto's imports) 1.0 s with 500 objects,
the same as an empty one, 1.5-1.8 s with 5,000. A snapshot pickles all the metadata and writes
only the bodies new since the last one; requests wait only while the metadata is pickled
(1-2 ms for ten objects, 12-18 ms for 500-800, ~260 ms for 5,000), never while bodies are
written. Request bodies are read before the lock is taken, so a slow upload holds nothing.

A snapshot written by another moto version is loaded if its classes still unpickle; if it does
not, the server refuses to start (and names the file) rather than start empty and lose data.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import io
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

FORMAT = 1
SNAPSHOT = "snapshot.pickle"
BLOBS = "blobs"
DEFAULT_INTERVAL = 2.0
# The attribute naming a key's blob on moto's FakeKey: bodies never change after a key is
# created (moto assigns `value` only in __init__/__setstate__), so the id stays valid for good.
BLOB_ATTR = "_tbs_s3store_blob"
_MUTATING_EXEMPT = frozenset({"GET", "HEAD", "OPTIONS"})
_CHUNK = 1 << 20


def _say(message: str) -> None:
    """One line of the server's log (stdout goes to `state_dir/moto.log`)."""
    print(f"s3store: {message}", flush=True)


class StoreError(RuntimeError):
    """The data directory cannot be used (unreadable snapshot, missing body, in use)."""


class _Superseded(RuntimeError):
    """A snapshot gave up because the state changed under it; the next one will be written."""


# -- the body of a restored key ---------------------------------------------------------------


class BlobReader:
    """Stands in for a restored FakeKey's `_value_buffer`: the body stays in its blob file.

    moto reads a body with `seek(0)` then `read()` (or `read(n)` in a loop for the ETag) and
    never writes to a key's buffer after creating it. The file is opened per read, so a
    million restored objects hold no file descriptors.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pos = 0
        self.closed = False

    def _check(self) -> None:
        if self.closed:
            # The same error a closed SpooledTemporaryFile raises: moto catches it for
            # disposed keys.
            raise ValueError("I/O operation on closed file.")

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check()
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        else:
            self._pos = self.path.stat().st_size + offset
        return self._pos

    def tell(self) -> int:
        self._check()
        return self._pos

    def read(self, size: int = -1) -> bytes:
        self._check()
        with open(self.path, "rb") as f:
            f.seek(self._pos)
            data = f.read(size if size is not None and size >= 0 else -1)
        self._pos += len(data)
        return data

    def write(self, data: bytes) -> int:
        raise io.UnsupportedOperation("a restored S3 object's body is read-only")

    def truncate(self, size: int | None = None) -> int:
        raise io.UnsupportedOperation("a restored S3 object's body is read-only")

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class _BlobRef:
    """Pickled as a persistent id: the unpickler turns it into a BlobReader on DIR/blobs."""

    blob_id: str


def _new_key(cls: Any, body: BlobReader) -> Any:
    # BaseModel.__new__ registers the instance in moto's instances_tracked, as moto would.
    key = cls.__new__(cls)
    key._value_buffer = body
    key.lock = threading.Lock()
    return key


def _set_key_state(key: Any, state: dict[str, Any]) -> None:
    key.__dict__.update(state)


def _new_versioned_store(cls: type[Any]) -> Any:
    return cls()


def _set_versioned_store(store: Any, state: tuple[dict[str, list[Any]], dict[str, Any]]) -> None:
    lists, attrs = state
    # dict.__setitem__ directly: _VersionedKeyStore.__setitem__ appends a version, so pickle's
    # default (obj[key] = list) would nest each version list inside another list.
    for name, versions in lists.items():
        dict.__setitem__(store, name, versions)
    store.__dict__.update(attrs)


def _blob_path(root: Path, blob_id: str) -> Path:
    return root / BLOBS / blob_id[:2] / blob_id


class _Pickler(pickle.Pickler):
    """Pickles moto's S3 state with object bodies replaced by references to blob files."""

    def __init__(self, file: Any, written: set[str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._written = written
        self.referenced: set[str] = set()
        self.pending: list[tuple[str, Any]] = []  # (blob id, key) bodies to write
        self.empty: list[str] = []  # blob ids of keys moto had already disposed
        from moto.s3.models import FakeKey
        from moto.s3.utils import _VersionedKeyStore

        self._key_type = FakeKey
        self._store_type = _VersionedKeyStore

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, self._key_type):
            return self._reduce_key(obj)
        if isinstance(obj, self._store_type):
            lists = {k: dict.__getitem__(obj, k) for k in dict.keys(obj)}
            return (_new_versioned_store, (type(obj),), (lists, dict(obj.__dict__)), None, None,
                    _set_versioned_store)  # fmt: skip
        return NotImplemented

    def _reduce_key(self, key: Any) -> Any:
        blob_id = key.__dict__.get(BLOB_ATTR)
        if blob_id is None:
            blob_id = uuid.uuid4().hex
            # Set now, under the exclusive lock: a deepcopy of this key (moto's copy_object)
            # carries the id along, which is right since the body is the same and immutable.
            key.__dict__[BLOB_ATTR] = blob_id
        self.referenced.add(blob_id)
        if blob_id not in self._written:
            if key.__dict__.get("disposed"):
                self.empty.append(blob_id)  # moto's own __getstate__ pickles such a body as b""
            else:
                self.pending.append((blob_id, key))
        state = {k: v for k, v in key.__dict__.items() if k not in ("_value_buffer", "lock")}
        return (_new_key, (type(key), _BlobRef(blob_id)), state, None, None, _set_key_state)

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is _BlobRef:
            return ("blob", obj.blob_id)
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, root: Path) -> None:
        super().__init__(file)
        self._root = root
        self.referenced: set[str] = set()

    def persistent_load(self, pid: Any) -> Any:
        kind, blob_id = pid
        if kind != "blob":
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        path = _blob_path(self._root, blob_id)
        if not path.is_file():
            raise StoreError(f"{path}: an object's body is missing from the S3 store")
        self.referenced.add(blob_id)
        return BlobReader(path)


# -- requests share a lock; a snapshot's pickling phase takes it alone ---------------------------


class SnapshotLock:
    """Many requests at once, or one snapshot; a waiting snapshot goes before new requests.

    Requests hold it while moto handles them (their bodies are read beforehand), so the
    exclusive holder sees moto's dictionaries at rest and no acknowledged change is half done.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    def acquire(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True

    def release(self) -> None:
        with self._cond:
            self._writer = False
            self._cond.notify_all()


# -- the store ------------------------------------------------------------------------------------


@dataclass
class SnapshotStats:
    buckets: int = 0
    keys: int = 0
    new_blobs: int = 0
    new_bytes: int = 0
    removed_blobs: int = 0
    seconds: float = 0.0
    held_seconds: float = 0.0  # how long requests were held (the pickling phase)


@dataclass
class Store:
    """moto's S3 state in `root`: restore, snapshot, and the dirty bookkeeping in between."""

    root: Path
    interval: float = DEFAULT_INTERVAL
    lock: SnapshotLock = field(default_factory=SnapshotLock)
    _written: set[str] = field(default_factory=set)
    _dirty_since: float | None = None
    _dirty_mutex: threading.Lock = field(default_factory=threading.Lock)
    _wake: threading.Event = field(default_factory=threading.Event)
    _closing: threading.Event = field(default_factory=threading.Event)
    _snapshot_mutex: threading.Lock = field(default_factory=threading.Lock)
    _lock_file: Any = None

    @property
    def snapshot_path(self) -> Path:
        return self.root / SNAPSHOT

    def open(self) -> None:
        """Create DIR if needed (private: 0700) and take its lock (one server per directory)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Loading a pickle runs code: nobody else may write where the snapshot lives.
        os.chmod(self.root, 0o700)
        (self.root / BLOBS).mkdir(mode=0o700, exist_ok=True)
        f = open(self.root / ".lock", "a+")  # noqa: SIM115 - held for the process's lifetime
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise StoreError(f"{self.root}: another S3 store process is using it") from None
        self._lock_file = f

    # restore ----------------------------------------------------------------------------------
    def restore(self) -> dict[str, int]:
        """Load the snapshot into moto's S3 backends; {"buckets": n, "keys": n} (0 if none)."""
        from moto.core.base_backend import backend_lock
        from moto.s3.models import s3_backends

        # Blobs on disk from a snapshot interrupted before its rename are unreferenced: they
        # are not "written" for the next snapshot, which removes them.
        on_disk = set()
        for p in (self.root / BLOBS).glob("*/*"):
            if p.name.startswith("."):
                p.unlink(missing_ok=True)  # a body being written when the process died
            else:
                on_disk.add(p.name)
        self.snapshot_path.with_name(f".{SNAPSHOT}.tmp").unlink(missing_ok=True)
        path = self.snapshot_path
        if not path.exists():
            self._written = set()
            self._remove_blobs(on_disk)
            return {"buckets": 0, "keys": 0}
        if path.stat().st_uid != os.getuid():
            raise StoreError(f"{path}: not owned by this user; refusing to unpickle it")
        header: dict[str, Any] = {}
        try:
            with open(path, "rb") as f:
                header = pickle.load(f)
                unpickler = _Unpickler(f, self.root)
                state = unpickler.load()
        except StoreError:
            raise
        except Exception as exc:
            import moto

            raise StoreError(
                f"{path}: cannot restore the S3 state (saved by moto"
                f" {header.get('moto', '?')}, running {moto.__version__}):"
                f" {type(exc).__name__}: {exc}. Nothing was changed; move the directory aside"
                " to start with an empty S3"
            ) from exc
        if header.get("format") != FORMAT:
            raise StoreError(f"{path}: snapshot format {header.get('format')!r}, expected {FORMAT}")
        with backend_lock:
            s3_backends.bucket_accounts.update(state["bucket_accounts"])
            for account_id, regions in state["backends"].items():
                account = s3_backends[account_id]
                for region, backend in regions.items():
                    account[region] = backend
        self._written = set(unpickler.referenced)
        self._remove_blobs(on_disk - self._written)
        return {"buckets": header.get("buckets", 0), "keys": header.get("keys", 0)}

    # dirty bookkeeping ------------------------------------------------------------------------
    def mark_dirty(self) -> None:
        with self._dirty_mutex:
            if self._dirty_since is None:
                self._dirty_since = time.monotonic()
            self._wake.set()

    def _take_dirty(self) -> None:
        with self._dirty_mutex:
            self._dirty_since = None
            self._wake.clear()

    @property
    def dirty(self) -> bool:
        return self._dirty_since is not None

    # snapshot ---------------------------------------------------------------------------------
    def snapshot(self, *, hold: bool = False) -> SnapshotStats | None:
        """Write the S3 state if it changed since the last snapshot; None if it had not.

        Phase 1 (requests held): pickle the metadata into memory, noting bodies not on disk.
        Phase 2 (requests flow): write those bodies. Phase 3: replace the snapshot atomically,
        then remove the bodies it no longer refers to. A key deleted between phases 1 and 2
        makes this snapshot give up with `_Superseded` (the state is dirty again; the next one
        catches up). With `hold`, requests stay held for good (the last snapshot before exit).
        """
        with self._snapshot_mutex:
            t0 = time.monotonic()
            self.lock.acquire()
            try:
                if not self.dirty:
                    return None
                self._take_dirty()
                buf = io.BytesIO()
                try:
                    header, pickler = self._pickle(buf)
                except BaseException:
                    self.mark_dirty()
                    raise
                held = time.monotonic() - t0
            finally:
                if not hold:
                    self.lock.release()
            try:
                stats = self._write(header, buf.getvalue(), pickler)
            except BaseException:
                self.mark_dirty()
                raise
            stats.seconds = time.monotonic() - t0
            stats.held_seconds = held
            return stats

    def _pickle(self, buf: io.BytesIO) -> tuple[dict[str, Any], _Pickler]:
        import moto
        from moto.s3.models import s3_backends

        backends: dict[str, dict[str, Any]] = {}
        buckets = keys = 0
        for account_id, account in list(s3_backends.items()):
            for region, backend in list(account.items()):
                backends.setdefault(account_id, {})[region] = backend
                buckets += len(backend.buckets)
                for bucket in backend.buckets.values():
                    keys += sum(len(v) for v in dict.values(bucket.keys))
        state = {"bucket_accounts": dict(s3_backends.bucket_accounts), "backends": backends}
        header = {
            "format": FORMAT,
            "moto": moto.__version__,
            "saved_at": time.time(),
            "buckets": buckets,
            "keys": keys,
        }
        pickle.dump(header, buf, protocol=pickle.HIGHEST_PROTOCOL)
        pickler = _Pickler(buf, self._written)
        pickler.dump(state)
        return header, pickler

    def _write(self, header: dict[str, Any], data: bytes, pickler: _Pickler) -> SnapshotStats:
        stats = SnapshotStats(buckets=header["buckets"], keys=header["keys"])
        for blob_id in pickler.empty:
            self._write_blob(blob_id, [b""])
            # Recorded at once: a body on disk is right whether or not this snapshot completes
            # (ids are never reused); if it ends up unreferenced, the next snapshot removes it.
            self._written.add(blob_id)
        for blob_id, key in pickler.pending:
            try:
                stats.new_bytes += self._write_blob(blob_id, _key_body(key))
            except ValueError:
                # moto closed the key's buffer: it was deleted after phase 1.
                raise _Superseded(
                    f"an object was deleted during the snapshot ({key.name})"
                ) from None
            self._written.add(blob_id)
        stats.new_blobs = len(pickler.empty) + len(pickler.pending)
        _atomic_write(self.snapshot_path, data)
        gone = self._written - pickler.referenced
        self._remove_blobs(gone)
        self._written -= gone
        stats.removed_blobs = len(gone)
        return stats

    def _write_blob(self, blob_id: str, chunks: Iterable[bytes]) -> int:
        path = _blob_path(self.root, blob_id)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_name(f".{blob_id}.tmp")
        size = 0
        with _private_file(tmp) as f:
            for chunk in chunks:
                f.write(chunk)
                size += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        return size

    def _remove_blobs(self, blob_ids: Iterable[str]) -> None:
        for blob_id in blob_ids:
            with contextlib.suppress(FileNotFoundError):
                _blob_path(self.root, blob_id).unlink()

    # the background thread --------------------------------------------------------------------
    def run_snapshots(self, report: Callable[[SnapshotStats], None]) -> threading.Thread:
        """Start the thread that writes a snapshot at most `interval` after a change."""

        def loop() -> None:
            while not self._closing.is_set():
                self._wake.wait()
                if self._closing.is_set():
                    return
                with self._dirty_mutex:
                    since = self._dirty_since
                    if since is None:
                        # Woken, but a snapshot already saved it. Cleared under the mutex so
                        # a change marked meanwhile cannot lose its wake-up.
                        self._wake.clear()
                if since is None:
                    continue
                # Monotonic time keeps running while the process is SIGSTOPped: after SIGCONT
                # the deadline has passed and the pending change is written at once.
                remaining = since + self.interval - time.monotonic()
                if remaining > 0 and self._closing.wait(remaining):
                    return
                try:
                    stats = self.snapshot()
                except _Superseded as exc:
                    _say(f"snapshot superseded: {exc}")
                    continue
                except Exception:
                    # Kept alive whatever happens: a dead thread would silently stop saving.
                    _say(
                        f"SNAPSHOT FAILED, retrying in {self.interval}s:\n{traceback.format_exc()}"
                    )
                    self._closing.wait(self.interval)
                    continue
                if stats is not None:
                    report(stats)

        thread = threading.Thread(target=loop, name="s3store-snapshots", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._closing.set()
        self._wake.set()


def _key_body(key: Any) -> Iterator[bytes]:
    """A key's body in chunks, under the key's own lock (moto's readers seek the same buffer).

    Raises ValueError if moto disposed of the key meanwhile (deleted after phase 1).
    """
    with key.lock:
        buf = key._value_buffer
        buf.seek(0)
        while True:
            chunk = buf.read(_CHUNK)
            if not chunk:
                return
            yield chunk


def _private_file(path: Path) -> BinaryIO:
    """A new (or truncated) file only this user can read: bodies are backups and evidence."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with _private_file(tmp) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power loss, not just a kill -9
    finally:
        os.close(dir_fd)


# -- the WSGI side --------------------------------------------------------------------------------


def _buffer_body(environ: dict[str, Any]) -> None:
    """Read the request body before taking the lock, so a slow upload never holds a snapshot."""
    stream = environ.get("wsgi.input")
    if stream is None:
        return
    if environ.get("wsgi.input_terminated"):  # chunked: werkzeug's stream ends at the end
        body = stream.read()
    else:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return
        if length <= 0:
            return
        parts: list[bytes] = []
        while length > 0:
            chunk = stream.read(min(length, _CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            length -= len(chunk)
        body = b"".join(parts)
    environ["wsgi.input"] = io.BytesIO(body)


class TrackingApp:
    """WSGI middleware: holds the store's lock around moto and marks changes."""

    def __init__(self, app: Callable[..., Any], store: Store) -> None:
        self.app = app
        self.store = store

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        mutating = environ.get("REQUEST_METHOD", "GET").upper() not in _MUTATING_EXEMPT
        if mutating:
            _buffer_body(environ)
        with self.store.lock.shared():
            try:
                return self.app(environ, start_response)
            finally:
                # Inside the lock: a snapshot cannot run between the change and this mark.
                if mutating:
                    self.store.mark_dirty()


# -- the process ----------------------------------------------------------------------------------


def _describe(stats: SnapshotStats) -> str:
    return (
        f"snapshot: {stats.buckets} buckets, {stats.keys} object versions, {stats.new_blobs} new"
        f" bodies ({stats.new_bytes:,} bytes), {stats.removed_blobs} removed, in"
        f" {stats.seconds:.3f}s (requests held {stats.held_seconds * 1000:.0f} ms)"
    )


def serve(host: str, port: int, root: Path, interval: float) -> int:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    # As `python -m moto.server` does: moto builds some URLs (presigned, SQS queues) from it.
    os.environ.setdefault("MOTO_PORT", str(port))
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    store = Store(root, interval)
    try:
        store.open()
        t0 = time.monotonic()
        restored = store.restore()
    except StoreError as exc:
        _say(str(exc))
        return 2
    _say(
        f"restored {restored['buckets']} buckets, {restored['keys']} object versions"
        f" from {root} in {time.monotonic() - t0:.3f}s"
    )
    app = TrackingApp(DomainDispatcherApplication(create_backend_app), store)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    server_thread = threading.Thread(target=server.serve_forever, name="s3store-http", daemon=True)
    server_thread.start()
    store.run_snapshots(lambda s: _say(_describe(s)))
    _say(f"serving on http://{host}:{port} (snapshot {interval}s after a change)")

    # The main thread only waits: signal handlers run here, and server.shutdown() must not be
    # called from the thread running serve_forever.
    while not stop.wait(3600):
        pass
    _say("stopping")
    server.shutdown()  # no new connections; requests in flight finish under the lock below
    store.close()
    try:
        stats = store.snapshot(hold=True)  # requests stay held until exit: nothing after it
    except Exception as exc:
        _say(f"LAST SNAPSHOT FAILED: {type(exc).__name__}: {exc}")
        return 1
    if stats is not None:
        _say(f"last {_describe(stats)}")
    _say("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.s3store", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        help="seconds between the first unsaved change and its snapshot (default 2)",
    )
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.data_dir.resolve(), args.interval)


if __name__ == "__main__":
    sys.exit(main())
