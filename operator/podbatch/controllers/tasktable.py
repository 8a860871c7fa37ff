"""The store's table of Task bodies, with the bodies of Tasks at rest kept frozen.

At depth almost every Task is at rest: queued (active, no pod of its attempt yet) or
completed. As Python dicts their bodies cost ~1.4 KB each (seven dicts, their strings),
made of small objects allocated between the watch events' short-lived ones, so the
allocator cannot give the memory back. Frozen, a body is one bytes object of its JSON
(~0.6 KB, allocated apart) and its resourceVersion; reading it decodes it again, a new dict
each time (~3 µs). The engine never changes a body in place (it decides, then writes), so a
decoded copy is as good as the stored one. Tasks in flight, and a collection's virtual
tasks (a window of a few hundred), stay dicts.
"""
from __future__ import annotations

from collections.abc import Iterator, MutableMapping

import orjson


class Frozen:
    __slots__ = ("rv", "data")

    def __init__(self, rv: int, data: bytes) -> None:
        self.rv = rv
        self.data = data


def _rv(body: dict) -> int:
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


class TaskTable(MutableMapping):
    """Task key -> body. Reading a frozen body returns a fresh dict decoded from its JSON."""

    def __init__(self) -> None:
        self._d: dict[str, dict | Frozen] = {}

    def __getitem__(self, k: str) -> dict:
        v = self._d[k]
        return orjson.loads(v.data) if type(v) is Frozen else v

    def get(self, k: str, default=None):
        v = self._d.get(k)
        if v is None:
            return default
        return orjson.loads(v.data) if type(v) is Frozen else v

    def __setitem__(self, k: str, body: dict) -> None:
        self._d[k] = body

    def __delitem__(self, k: str) -> None:
        del self._d[k]

    def __contains__(self, k: object) -> bool:
        return k in self._d

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def pop(self, k: str, *default):
        v = self._d.pop(k, *default)
        return orjson.loads(v.data) if type(v) is Frozen else v

    def rv(self, k: str) -> int:
        """The stored body's resourceVersion (0 for none), without decoding it."""
        v = self._d.get(k)
        if v is None:
            return 0
        return v.rv if type(v) is Frozen else _rv(v)

    def is_frozen(self, k: str) -> bool:
        return type(self._d.get(k)) is Frozen

    def thaw(self, k: str) -> None:
        """Keep the body of `k` as a dict again (a task leaving rest: read every pass)."""
        v = self._d.get(k)
        if type(v) is Frozen:
            self._d[k] = orjson.loads(v.data)

    def freeze(self, k: str) -> None:
        """Keep the body of `k` as JSON from now on (until it is replaced)."""
        v = self._d.get(k)
        if type(v) is dict:
            # (a copy: orjson answers in a buffer of at least 8 KiB, not shrunk to the JSON)
            self._d[k] = Frozen(_rv(v), bytes(memoryview(orjson.dumps(v))))
