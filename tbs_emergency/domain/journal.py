"""The incident journal: append-only JSON entries in object storage.

Layout (keys relative to the storage prefix, like every other key the store sees):

    incidents/<id>/journal/<seq:08d>-<writer>.json   one object per entry, never rewritten
    incidents/<id>/report.md                          the rendered report (rewritten on render)
    incidents/open/<id>.json                          index of open incidents (see below)

*Append-only, concurrent writers.* Each entry is its own object. Its key carries a sequence
number and the writer's id, so two writers that pick the same number write two objects and
never overwrite each other; readers order by (seq, time, writer). When the store offers a
conditional put (`put_if_absent(key, data) -> bool`), the writer uses it and retries with the
next number, which gives a strict sequence.

*Survives the loss of either database:* it lives in object storage only.

*The open index* (`incidents/open/<id>.json`, fields id, severity, opened_at, trigger, env,
rule, status) is what `tbs-emergency status` lists. It is derived data: `sync_index` rewrites it
from the journal after every state change; on close it is deleted when the store can delete, and
otherwise rewritten with status "resolved"/"merged" (readers skip those).

Every append can also be published (`on_append`): the Prefect layer emits an event per entry.

*The journal never blocks a rollback* (given a `Spool`). When the store fails (down, refusing,
timing out), the entry is written to a local spool directory instead (one file per entry,
fsync'd, mode 0600, directory 0700) and, for `retry_after_s`, every store call through
`journal.store` fails at once instead of waiting on a store known to be down. Reads merge the
store and the spool and skip (and report) objects that cannot be read. The spool is flushed to
the store on the next append after the store is back, and by `flush()`: a spooled entry whose
key is already in the store is not written again, and one whose sequence number another writer
took meanwhile gets the next free number (rewritten in the spool first), so a flush interrupted
at any point and run again writes every entry exactly once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from tbs_emergency.domain.incident import OPENED, Entry, Incident
from tbs_emergency.errors import IntegrityError, NotFound, TimedOut, Unreachable

log = logging.getLogger(__name__)

INCIDENTS = "incidents"
OPEN_INDEX = f"{INCIDENTS}/open/"


class _Store(Protocol):
    def put(self, key: str, data: bytes, metadata: Any = None) -> Any: ...

    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str) -> Any: ...


def journal_prefix(incident_id: str) -> str:
    return f"{INCIDENTS}/{incident_id}/journal/"


def report_key(incident_id: str) -> str:
    return f"{INCIDENTS}/{incident_id}/report.md"


def index_key(incident_id: str) -> str:
    return f"{OPEN_INDEX}{incident_id}.json"


def _seq_of(key: str) -> int:
    name = key.rsplit("/", 1)[-1]
    try:
        return int(name.split("-", 1)[0].split(".", 1)[0])
    except ValueError:
        return -1


def new_writer_id() -> str:
    return f"{os.getpid()}{uuid.uuid4().hex[:6]}"


def entry_key(e: Entry, conditional: bool = False) -> str:
    """The object key of an entry: `<seq>.json` with a conditional put, else `<seq>-<writer>`."""
    if conditional:
        return f"{journal_prefix(e.incident_id)}{e.seq:08d}.json"
    return f"{journal_prefix(e.incident_id)}{e.seq:08d}-{e.writer}.json"


# --------------------------------------------------------------------------------------------
# The local spool
# --------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safe_name(incident_id: str) -> str:
    if not incident_id or "/" in incident_id or "\\" in incident_id or incident_id[0] == ".":
        raise ValueError(f"not an incident id that can name a spool directory: {incident_id!r}")
    return incident_id


@dataclass
class SpoolSummary:
    count: int
    oldest: datetime | None
    incidents: dict[str, int]
    directory: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "oldest": self.oldest.isoformat() if self.oldest else None,
            "incidents": self.incidents,
            "directory": self.directory,
        }


class Spool:
    """Journal entries waiting for the object store: `<dir>/<incident>/<seq>-<writer>.json`.

    One file per entry, written to a temporary name, fsync'd, renamed into place (mode 0600,
    directories 0700). The file name never changes after it is written; a renumbered entry is
    rewritten in place (so an interrupted flush cannot leave two copies of one entry).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    def _ensure(self, path: Path) -> Path:
        """Create the directory and every missing parent as 0700 (existing ones are kept)."""
        missing = []
        p = path
        while not p.exists() and p != p.parent:
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir(mode=0o700, exist_ok=True)
            with contextlib.suppress(OSError):
                os.chmod(d, 0o700)
        return path

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    def write(self, e: Entry) -> Path:
        self._ensure(self.dir)
        d = self._ensure(self.dir / _safe_name(e.incident_id))
        path = d / f"{e.seq:08d}-{e.writer}.json"
        self._write(path, e.model_dump_json().encode())
        return path

    def rewrite(self, path: Path, e: Entry) -> None:
        """Replace a spooled entry's content in place (a renumbered entry)."""
        self._write(path, e.model_dump_json().encode())

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty

    def prune(self, incident_id: str) -> None:
        """Remove an incident's spool directory once it is empty."""
        with contextlib.suppress(OSError):
            (self.dir / _safe_name(incident_id)).rmdir()

    def incidents(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(
            p.name for p in self.dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def items(self, incident_id: str) -> list[tuple[Path, Entry]]:
        """(file, entry) of one incident in journal order; unreadable files are left alone."""
        d = self.dir / _safe_name(incident_id)
        if not d.is_dir():
            return []
        out = []
        for path in d.glob("*.json"):
            if path.name.startswith("."):
                continue
            try:
                out.append((path, Entry.model_validate_json(path.read_bytes())))
            except Exception as exc:
                log.warning("journal spool: cannot read %s: %s", path, exc)
        return sorted(out, key=lambda pe: pe[1].sort_key())

    def entries(self, incident_id: str) -> list[Entry]:
        return [e for _, e in self.items(incident_id)]

    def pending(self) -> int:
        return sum(1 for i in self.incidents() for _ in (self.dir / i).glob("[0-9]*.json"))

    def summary(self) -> SpoolSummary:
        counts: dict[str, int] = {}
        oldest: datetime | None = None
        for inc in self.incidents():
            entries = self.entries(inc)
            if entries:
                counts[inc] = len(entries)
                first = min(e.at for e in entries)
                oldest = first if oldest is None or first < oldest else oldest
        return SpoolSummary(sum(counts.values()), oldest, counts, str(self.dir))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One flusher at a time across processes sharing the spool."""
        import fcntl

        self._ensure(self.dir)
        fd = os.open(self.dir / ".flush.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def store_identity(storage: Any) -> str:
    """A directory name for one store (endpoint, bucket, prefix): entries spooled for one store
    are only ever flushed to that store, never to another configuration's."""
    if storage is None:
        return "default"
    import hashlib

    endpoint = getattr(storage, "endpoint_url", None) or f"aws:{getattr(storage, 'region', '')}"
    bucket = str(getattr(storage, "bucket", ""))
    prefix = str(getattr(storage, "prefix", ""))
    digest = hashlib.sha256(f"{endpoint}|{bucket}|{prefix}".encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in bucket)[:40]
    return f"{safe or 'store'}-{digest}"


def spool_for(journal_config: Any, storage: Any) -> Spool:
    """The spool of `[journal]` for the store of `[storage]`: <spool_dir>/<store identity>/."""
    return Spool(Path(journal_config.spool_path) / store_identity(storage))


@dataclass
class FlushResult:
    written: int = 0
    already: int = 0  # in the store already (an earlier, interrupted flush)
    renumbered: int = 0
    left: int = 0  # still spooled
    error: str | None = None
    incidents: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "already_in_store": self.already,
            "renumbered": self.renumbered,
            "left": self.left,
            "error": self.error,
            "incidents": self.incidents,
        }


@dataclass
class JournalRead:
    entries: list[Entry]
    skipped: list[str] = field(default_factory=list)  # unreadable objects: key and why
    store_error: str | None = None  # the store could not be listed: spool only
    spooled: int = 0


def _trips(exc: BaseException) -> bool:
    """Whether a store failure means "the store is down" (not: this one key is missing/bad)."""
    return not isinstance(exc, NotFound | IntegrityError | ValueError | KeyError)


class _BoundedStore:
    """The raw store with every call bounded by the journal's store timeout (flushes)."""

    def __init__(self, inner: Any, journal: Journal) -> None:
        self._inner = inner
        self._journal = journal

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr
        return lambda *a, **kw: self._journal._bounded(name, attr, *a, **kw)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="journal-store")
        return _POOL


class _WriteFailed(Exception):
    """A store write failed after its sequence number was reserved."""

    def __init__(self, seq: int, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.seq = seq
        self.cause = cause


class _GuardedStore:
    """The journal's store as its users see it: while the store is known to be down (a call
    failed less than `retry_after_s` ago) every call fails at once with Unreachable."""

    _GUARDED = frozenset({"put", "get", "list", "delete", "put_if_absent", "head", "exists"})

    def __init__(self, inner: Any, journal: Journal) -> None:
        self._inner = inner
        self._journal = journal

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._GUARDED or not callable(attr):
            return attr
        j = self._journal

        def call(*args: Any, **kwargs: Any) -> Any:
            j._check_up(name)
            try:
                res = j._bounded(name, attr, *args, **kwargs)
            except Exception as exc:
                if _trips(exc):
                    j._mark_down(exc)
                raise
            if j._down_since is not None:
                j._mark_up()
            return res

        return call


class Journal:
    """Append and read the entries of incidents in one object store (and a local spool)."""

    def __init__(
        self,
        store: _Store,
        writer: str | None = None,
        on_append: Callable[[Entry], None] | None = None,
        spool: Spool | None = None,
        retry_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        store_timeout_s: float | None = None,
    ) -> None:
        self.raw_store = store
        self.spool = spool
        self.store: Any = _GuardedStore(store, self) if spool is not None else store
        self.writer = writer or new_writer_id()
        self.on_append = on_append
        self.retry_after_s = retry_after_s
        # with a spool, each store call is bounded (None: unbounded, the store's own timeouts)
        self.store_timeout_s = store_timeout_s
        self._clock = clock
        self._down_since: float | None = None
        self.down_reason: str | None = None
        self._stale_next = False
        self._next: dict[str, int] = {}
        # What this journal last read from (or wrote to) the store, per incident: with the
        # store down, reads still see it (the incident a rollback opened stays known).
        self._seen: dict[str, dict[tuple[int, str], Entry]] = {}
        # One writer id per Journal: threads sharing it (flows run in threads of one runner)
        # must not pick the same number, or the second object would replace the first.
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()

    @classmethod
    def configured(cls, store: _Store, config: Any, **kwargs: Any) -> Journal:
        """A journal with the spool of a `JournalConfig` (settings.journal), in the spool
        directory of this store (see `spool_for`)."""
        return cls(
            store,
            spool=spool_for(config, getattr(store, "config", None)),
            retry_after_s=config.retry_after_s,
            store_timeout_s=config.store_timeout_s,
            **kwargs,
        )

    # -- store state ------------------------------------------------------------------------------

    def _mark_down(self, exc: BaseException) -> None:
        if self._down_since is None:
            log.warning("journal: the object store failed, spooling locally: %s", exc)
        self._down_since = self._clock()
        self.down_reason = f"{type(exc).__name__}: {exc}"
        self._stale_next = True

    def _mark_up(self) -> None:
        self._down_since = None
        self.down_reason = None

    @property
    def store_down(self) -> bool:
        """True while a store failure is recent (younger than retry_after_s)."""
        return (
            self._down_since is not None and self._clock() - self._down_since < self.retry_after_s
        )

    def _bounded(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the store, abandoning the call after store_timeout_s (a hung store must not
        hold a rollback step; the abandoned call finishes or fails on its own)."""

        def run() -> Any:
            res = fn(*args, **kwargs)
            return list(res) if name == "list" else res  # a lazy listing fails while iterated

        if not self.store_timeout_s:
            return run()
        fut = _pool().submit(run)
        try:
            return fut.result(timeout=self.store_timeout_s)
        except FutureTimeout:
            raise TimedOut(
                "journal store", name, f"no answer within {self.store_timeout_s:g}s"
            ) from None

    def _check_up(self, operation: str) -> None:
        if self.spool is not None and self.store_down:
            raise Unreachable(
                "journal store",
                operation,
                f"the object store is down ({self.down_reason}); entries go to the local spool",
            )

    # -- writing ---------------------------------------------------------------------------------

    def _spool_max(self, incident_id: str) -> int:
        if self.spool is None:
            return -1
        return max((e.seq for e in self.spool.entries(incident_id)), default=-1)

    def _next_seq(self, incident_id: str) -> int:
        if incident_id not in self._next:
            keys = [o.key for o in self.store.list(journal_prefix(incident_id))]
            top = max((_seq_of(k) for k in keys), default=-1)
            self._next[incident_id] = max(top, self._spool_max(incident_id)) + 1
        return self._next[incident_id]

    def append(self, entry: Entry) -> Entry:
        """Write one entry as a new object; returns it with its sequence number and writer.

        With a spool: if the store fails (or failed less than retry_after_s ago) the entry is
        spooled instead; a successful append first flushes what is spooled."""
        if self.spool is None:
            e = self._append_to_store(entry)
        else:
            try:
                self._check_up("append")
                if self._stale_next:
                    # back after an outage: other writers (and flushes) may have used numbers
                    # meanwhile, so every incident's next number is read from the store again
                    with self._lock:
                        self._next.clear()
                        self._stale_next = False
                if self.spool.pending():
                    res = self.flush()
                    if res.error:
                        raise Unreachable("journal store", "flush", res.error)
                e = self._append_to_store(entry)
                self._seen.setdefault(e.incident_id, {})[(e.seq, e.writer)] = e
            except Exception as exc:
                cause = exc.cause if isinstance(exc, _WriteFailed) else exc
                if _trips(cause) and not self.store_down:
                    self._mark_down(cause)
                e = self._append_to_spool(entry, exc.seq if isinstance(exc, _WriteFailed) else None)
        if self.on_append is not None:
            # Publishing is best effort: the journal already has the entry.
            with contextlib.suppress(Exception):
                self.on_append(e)
        return e

    def _append_to_store(self, entry: Entry) -> Entry:
        put_if_absent = getattr(self.store, "put_if_absent", None)
        with self._lock:
            seq = self._next_seq(entry.incident_id)
            self._next[entry.incident_id] = seq + 1  # reserved for this append
        while True:
            e = entry.model_copy(update={"seq": seq, "writer": self.writer})
            data = e.model_dump_json().encode()
            if put_if_absent is not None:
                try:
                    written = put_if_absent(entry_key(e, conditional=True), data)
                except Exception as exc:
                    raise _WriteFailed(seq, exc) from exc
                if written:
                    break
                with self._lock:  # another writer has this number: take the next free one
                    seq = max(seq + 1, self._next[entry.incident_id])
                    self._next[entry.incident_id] = seq + 1
                continue
            try:
                self.store.put(entry_key(e), data, {"content-type": "application/json"})
            except Exception as exc:
                raise _WriteFailed(seq, exc) from exc
            break
        return e

    def _append_to_spool(self, entry: Entry, reserved: int | None = None) -> Entry:
        assert self.spool is not None
        with self._lock:
            floor = self._spool_max(entry.incident_id) + 1
            if reserved is not None and reserved >= floor:
                seq = reserved  # the number the failed store write had taken
            else:
                seq = max(self._next.get(entry.incident_id, 0), floor)
            self._next[entry.incident_id] = seq + 1
            e = entry.model_copy(update={"seq": seq, "writer": self.writer})
            self.spool.write(e)
        log.warning("journal: %s #%d spooled locally (%s)", e.incident_id, e.seq, self.down_reason)
        return e

    def flush(self) -> FlushResult:
        """Write every spooled entry to the store, once; see the module docstring."""
        res = FlushResult()
        if self.spool is None:
            return res
        with self._flush_lock, self.spool.lock():
            try:
                for incident_id in self.spool.incidents():
                    n = self._flush_incident(incident_id, res)
                    if n:
                        res.incidents.append(incident_id)
                self._mark_up()
            except Exception as exc:
                if _trips(exc):
                    self._mark_down(exc)
                res.error = f"{type(exc).__name__}: {exc}"
            res.left = self.spool.pending()
        for incident_id in res.incidents:  # the open index follows the journal
            with contextlib.suppress(Exception):
                inc = self.incident(incident_id)
                if inc is not None:
                    self.sync_index(inc)
        return res

    def _flush_incident(self, incident_id: str, res: FlushResult) -> int:
        assert self.spool is not None
        items = self.spool.items(incident_id)
        if not items:
            self.spool.prune(incident_id)
            return 0
        raw = _BoundedStore(self.raw_store, self)
        put_if_absent = getattr(raw, "put_if_absent", None)
        keys = {o.key for o in raw.list(journal_prefix(incident_id))}
        used = {_seq_of(k) for k in keys}
        top = max(
            max(used, default=-1),
            max(e.seq for _, e in items),
            self._next.get(incident_id, 0) - 1,
        )
        shifting = False  # once one entry is renumbered, the rest follow it (order is kept)
        n = 0
        for path, e in items:
            n += 1
            key = entry_key(e, conditional=put_if_absent is not None)
            data = e.model_dump_json().encode()
            if key in keys and self._same(key, data, put_if_absent is not None):
                self.spool.remove(path)
                res.already += 1
                continue
            if shifting or e.seq in used:  # another writer took this number meanwhile
                shifting = True
                top = max(top, *used) + 1
                e = e.model_copy(update={"seq": top})
                self.spool.rewrite(path, e)  # first, so a retry never writes it twice
                key = entry_key(e, conditional=put_if_absent is not None)
                data = e.model_dump_json().encode()
                res.renumbered += 1
            if put_if_absent is not None:
                while not put_if_absent(key, data):
                    top = max(top, e.seq) + 1
                    e = e.model_copy(update={"seq": top})
                    self.spool.rewrite(path, e)
                    key, data = entry_key(e, conditional=True), e.model_dump_json().encode()
                    res.renumbered += 1
            else:
                raw.put(key, data, {"content-type": "application/json"})
            used.add(e.seq)
            keys.add(key)
            top = max(top, e.seq)
            self.spool.remove(path)
            res.written += 1
        with self._lock:
            self._next[incident_id] = max(self._next.get(incident_id, 0), top + 1)
        return n

    def _same(self, key: str, data: bytes, conditional: bool) -> bool:
        """Whether the stored object at key is this entry (an earlier flush wrote it)."""
        if not conditional:
            return True  # `<seq>-<writer>` names one entry of one writer
        try:
            return Entry.model_validate_json(self._bounded("get", self.raw_store.get, key)) == (
                Entry.model_validate_json(data)
            )
        except NotFound:
            return False

    def open(self, incident: Incident) -> tuple[Incident, bool]:
        """Open the incident unless its journal already has it: (incident, newly_opened).

        Opening twice is harmless: the second call returns the incident as journaled.
        """
        existing = self.incident(incident.id)
        if existing is not None:
            return existing, False
        self.append(incident.opened_entry())
        self.sync_index(incident)
        return incident, True

    def sync_index(self, incident: Incident) -> None:
        """Keep `incidents/open/<id>.json` in step with the incident's state.

        With a spool, a store that is down is skipped with a warning (the index is derived:
        the next flush rewrites it)."""
        try:
            self._sync_index(incident)
        except Exception as exc:
            if self.spool is None:
                raise
            log.warning("journal: open index of %s not updated (%s)", incident.id, exc)

    def _sync_index(self, incident: Incident) -> None:
        key = index_key(incident.id)
        if incident.is_open:
            self.store.put(key, json.dumps(incident.index_record()).encode())
            return
        delete = getattr(self.store, "delete", None)
        if delete is not None:
            try:
                delete(key)
                return
            except Exception:
                pass
        self.store.put(key, json.dumps(incident.index_record()).encode())

    # -- reading ---------------------------------------------------------------------------------

    def read(self, incident_id: str) -> JournalRead:
        """The incident's entries from the store and the spool; unreadable objects skipped and
        named. Without a spool, store failures raise as they always did."""
        found: dict[tuple[int, str], Entry] = {}
        skipped: list[str] = []
        store_error: str | None = None
        known_down = self.store_down  # said once when it went down: not again on every read
        try:
            objects = list(self.store.list(journal_prefix(incident_id)))
        except Exception as exc:
            if self.spool is None:
                raise
            objects = []
            store_error = f"{type(exc).__name__}: {exc}"
        for obj in objects:
            if not obj.key.endswith(".json"):
                continue
            try:
                e = Entry.model_validate_json(self.store.get(obj.key))
            except Exception as exc:
                if self.spool is None and not isinstance(exc, IntegrityError | ValueError):
                    raise
                skipped.append(f"{obj.key}: {type(exc).__name__}: {exc}")
                continue
            found[(e.seq, e.writer)] = e
        spooled = 0
        if self.spool is not None:
            if store_error is None:
                self._seen[incident_id] = dict(found)
            else:
                for k, e in self._seen.get(incident_id, {}).items():
                    found.setdefault(k, e)
            for e in self.spool.entries(incident_id):
                if (e.seq, e.writer) not in found:
                    found[(e.seq, e.writer)] = e
                    spooled += 1
        for why in skipped:
            log.warning("journal: skipped an unreadable entry of %s: %s", incident_id, why)
        if store_error:
            (log.debug if known_down else log.warning)(
                "journal: %s read from the local spool only: %s", incident_id, store_error
            )
        ordered = sorted(found.values(), key=Entry.sort_key)
        return JournalRead(ordered, skipped, store_error, spooled)

    def entries(self, incident_id: str) -> list[Entry]:
        return self.read(incident_id).entries

    def incident(self, incident_id: str) -> Incident | None:
        return Incident.from_entries(self.entries(incident_id))

    def open_incidents(self) -> list[dict[str, Any]]:
        """The open index, skipping records of closed incidents; with a spool, also incidents
        whose opening is still spooled (and the index alone when the store is down)."""
        found: dict[str, dict[str, Any]] = {}
        known_down = self.store_down
        try:
            objects = list(self.store.list(OPEN_INDEX))
        except Exception as exc:
            if self.spool is None:
                raise
            (log.debug if known_down else log.warning)(
                "journal: open index unreadable, spool only: %s", exc
            )
            objects = []
        for obj in objects:
            if not obj.key.endswith(".json"):
                continue
            try:
                rec = json.loads(self.store.get(obj.key))
            except Exception:
                continue
            if rec.get("status", "open") in ("open", "escalated", "degraded"):
                found[str(rec.get("id"))] = rec
        if self.spool is not None:
            for incident_id in self.spool.incidents():
                inc = self.incident(incident_id)
                if inc is not None and inc.is_open:
                    found[inc.id] = inc.index_record()
                elif inc is not None:
                    found.pop(inc.id, None)
        return sorted(found.values(), key=lambda r: str(r.get("opened_at")))

    def has_kind(self, incident_id: str, kind: str, step: str | None = None) -> bool:
        return any(
            e.kind == kind and (step is None or e.step == step) for e in self.entries(incident_id)
        )


def done_actions(entries: list[Entry]) -> set[str]:
    """Names of actions that finished ok (`data.action`): what a re-run must not repeat."""
    return {
        str(e.data["action"])
        for e in entries
        if e.result == "ok" and e.kind != OPENED and e.data.get("action")
    }
