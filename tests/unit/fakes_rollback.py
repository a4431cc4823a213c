"""Hand-written fakes of the connector Protocols for the rollback core's unit tests."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping

from tbs_emergency.connectors.base import StoredObject
from tbs_emergency.errors import NotFound


class MemoryStore:
    """An ObjectStore in memory; `conditional` adds put_if_absent, `deletable` adds delete."""

    def __init__(self, conditional: bool = False, deletable: bool = False) -> None:
        self.name = "memory"
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []
        self._lock = threading.Lock()
        if conditional:
            self.put_if_absent = self._put_if_absent
        if deletable:
            self.delete = self._delete

    def put(self, key: str, data: bytes, metadata: Mapping[str, str] | None = None) -> StoredObject:
        with self._lock:
            self.objects[key] = data
            self.puts.append(key)
        return StoredObject(key, len(data), hashlib.sha256(data).hexdigest())

    def _put_if_absent(self, key: str, data: bytes) -> bool:
        with self._lock:
            if key in self.objects:
                return False
            self.objects[key] = data
            self.puts.append(key)
            return True

    def _delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)

    def get(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise NotFound("memory", "get", key) from None

    def list(self, prefix: str) -> Iterator[StoredObject]:
        with self._lock:
            items = sorted((k, v) for k, v in self.objects.items() if k.startswith(prefix))
        for k, v in items:
            yield StoredObject(k, len(v))
