"""The store's table of Task bodies, with the bodies of Tasks at rest kept frozen.

At depth almost every Task is at rest: queued (active, no pod of its attempt yet) or
completed. As Python dicts their bodies cost ~1.4 KB each (seven dicts, their strings),
made of small objects allocated between the watch events' short-lived ones, so the
allocator cannot give the memory back. Frozen, a body is one bytes object: its
resourceVersion, then its JSON deflated against a preset dictionary of a Task's usual keys
(a typical Task: 590 bytes of JSON, ~150 frozen; ~20 µs to freeze, ~6 µs to read). Reading
it decodes it again, a new dict each time. The engine never changes a body in place (it
decides, then writes), so a decoded copy is as good as the stored one. Tasks in flight,
and a collection's virtual tasks (a window of a few hundred), stay dicts.
"""
from __future__ import annotations

import zlib
from collections.abc import Iterator, MutableMapping

import orjson

# What most Task bodies say (keys, constant values): deflate then stores each body as
# little more than its own names, uid, times and command line.
_ZDICT = orjson.dumps({
    "apiVersion": "podbatch.io/v1alpha1", "kind": "Task",
    "metadata": {"name": "", "namespace": "", "uid": "", "resourceVersion": "", "generation": 1, "creationTimestamp": "",
                 "labels": {}, "annotations": {}, "ownerReferences": [{
                     "apiVersion": "podbatch.io/v1alpha1", "kind": "Job", "name": "", "uid": "", "controller": True,
                     "blockOwnerDeletion": False}]},
    "spec": {"jobName": "", "commandLine": "/bin/sh -c ", "priority": 0, "requiredSlots": 1,
             "constraints": {"maxTaskRetryCount": 0, "maxWallClockTime": "", "retentionTime": ""},
             "environmentSettings": [{"name": "", "value": ""}], "resourceFiles": [], "outputFiles": [], "dependsOn": {},
             "exitConditions": {}, "userIdentity": {}, "containerSettings": {}},
    "status": {"state": "completed", "attempt": 1, "executionInfo": {"result": "success", "exitCode": 0, "retryCount": 0,
               "requeueCount": 0, "startTime": "", "endTime": ""}, "nodeInfo": {"nodeId": "", "poolId": ""},
               "podName": "", "conditions": []}})
_WBITS = -11   # raw deflate, a 2 KiB window (the preset dictionary fits; small state per call)


def freeze(body: dict) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, _WBITS, 2, zlib.Z_DEFAULT_STRATEGY, _ZDICT)
    return b"%d:" % _rv(body) + c.compress(orjson.dumps(body)) + c.flush()


def thawed(frozen: bytes) -> dict:
    d = zlib.decompressobj(_WBITS, _ZDICT)
    return orjson.loads(d.decompress(frozen[frozen.index(b":") + 1:]))


def _rv(body: dict) -> int:
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


class TaskTable(MutableMapping):
    """Task key -> body. Reading a frozen body returns a fresh dict decoded from it."""

    def __init__(self) -> None:
        self._d: dict[str, dict | bytes] = {}

    def __getitem__(self, k: str) -> dict:
        v = self._d[k]
        return thawed(v) if type(v) is bytes else v

    def get(self, k: str, default=None):
        v = self._d.get(k)
        if v is None:
            return default
        return thawed(v) if type(v) is bytes else v

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
        return thawed(v) if type(v) is bytes else v

    def rv(self, k: str) -> int:
        """The stored body's resourceVersion (0 for none), without decoding it."""
        v = self._d.get(k)
        if v is None:
            return 0
        return int(v[:v.index(b":")]) if type(v) is bytes else _rv(v)

    def is_frozen(self, k: str) -> bool:
        return type(self._d.get(k)) is bytes

    def thaw(self, k: str) -> None:
        """Keep the body of `k` as a dict again (a task leaving rest: read every pass)."""
        v = self._d.get(k)
        if type(v) is bytes:
            self._d[k] = thawed(v)

    def freeze(self, k: str) -> None:
        """Keep the body of `k` frozen from now on (until it is replaced)."""
        v = self._d.get(k)
        if type(v) is dict:
            self._d[k] = freeze(v)
