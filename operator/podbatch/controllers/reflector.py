"""The engine's own watches of its two busiest kinds, podbatch's pods and Tasks, as
client-go's reflector does it: from the version the store's sync listed them at, each
event line is decoded and put into the store at once; a watch the server ends is resumed
from the last version seen (bookmarks keep it recent); a 410 (that version is too old for
the server's watch cache, e.g. after a long gap or an API server restart) lists the kind
again, page by page, forgetting what the list no longer has (`sync.relist`).

kopf watches the other kinds. It did these two as well, but its per-event machinery (a
worker task per object, body wrappers, an object's memory) cost ~13% of the operator's
CPU with 10,000 tasks in flight, and its garbage, made between the store's long-lived
records, kept the operator's RSS at about twice its live data.
"""
from __future__ import annotations

import asyncio
import logging

from kubernetes_asyncio.client.rest import ApiException

from podbatch.controllers import sync
from podbatch.controllers.store import Store

log = logging.getLogger("podbatch.watch")
KINDS = ("pods", "tasks")   # watched here; kopf watches the rest
_PUTS = {"pods": Store.put_pod, "tasks": Store.put_task}
YIELD_EVERY = 50


class Reflector:
    BACKOFF = (0.5, 30.0)   # s before the first retry of a failed watch, and at most

    def __init__(self, store: Store, kube, plural: str, on_relisted=None) -> None:
        self.store, self.kube, self.plural = store, kube, plural
        self.on_relisted = on_relisted or (lambda: None)   # the engine sweeps stray pods after a relist
        self.put = _PUTS[plural].__get__(store)
        self.version = ""   # the last resourceVersion seen ("": list first)
        self.relists = 0

    async def run(self, version: str) -> None:
        """Watch from `version` (the store's sync listed the kind at it) for ever."""
        self.version = version
        delay = self.BACKOFF[0]
        while True:
            try:
                if not self.version:
                    self.relists += 1
                    await sync.relist(self.store, self.kube, self.plural)
                    self.version = self.store.listed_at.get(self.plural, "")
                    self.on_relisted()
                if await self.watch_once():
                    delay = self.BACKOFF[0]
                else:   # ended at once with nothing: not a hot loop against a server that does that
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.BACKOFF[1])
            except asyncio.CancelledError:
                raise
            except ApiException as e:
                if e.status == 410:
                    log.info("watch of %s: version %s is gone (410); listing again", self.plural, self.version)
                    self.version = ""
                    continue
                log.warning("watch of %s failed (%s); again in %.1fs", self.plural, e.status, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.BACKOFF[1])
            except Exception as e:   # a broken connection, a server going away: resume from where it was
                log.warning("watch of %s broke (%s); again in %.1fs", self.plural, str(e)[:200] or type(e).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.BACKOFF[1])

    async def watch_once(self) -> int:
        """One watch request, until the server ends it. Returns how many events it brought."""
        serves = self.store.serves
        seen = 0
        async for event in self.kube.watch(self.plural, self.version):
            seen += 1
            if seen % YIELD_EVERY == 0:
                # a backlog already read (100,000 deletions) is handed out without a suspension:
                # let the loop run (the Lease's renewal, the engine) between every few events
                await asyncio.sleep(0)
            kind, obj = event.get("type"), event.get("object") or {}
            meta = obj.get("metadata") or {}
            if kind == "ERROR":
                code = obj.get("code")
                raise ApiException(status=code or 500, reason=str(obj.get("message") or obj)[:300])
            if meta.get("resourceVersion"):
                self.version = meta["resourceVersion"]
            if kind == "BOOKMARK" or not serves(meta.get("namespace", "")):
                continue
            if self.plural == "pods":   # list items and watch objects of core kinds may lack these
                obj.setdefault("kind", "Pod")
                obj.setdefault("apiVersion", "v1")
            self.put(obj, deleted=kind == "DELETED")
        return seen
