"""The store's sync with the API server, the way an informer's is: a full list of every
watched kind before the engine's first pass (so a restart never sees a running task
before its pod or its node), and a list again of a kind whose watch had a gap (kopf
relisted it after a 410, or the periodic resync came) so deletions missed meanwhile are
forgotten instead of holding slots and blocking jobs for ever."""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging

from podbatch.controllers.store import Store

log = logging.getLogger("podbatch.sync")
KINDS = ("namespaces", "poolgrants", "nodes", "pools", "computenodes", "jobs", "jobschedules", "taskcollections", "pods", "tasks")


async def relist(store: Store, kube, plural: str) -> int:
    """List one kind and replace what the store holds of it; returns how many objects were
    forgotten (deleted while no watch event said so)."""
    listed: set[str] = set()
    horizon = ""
    async for items, rv in kube.list_pages(plural):   # page by page: no peak of the whole list
        horizon = horizon or rv
        listed |= store.put_listed(plural, items)
        del items
    gone = store.forget_unlisted(plural, listed, horizon)
    store.listed_at[plural] = horizon
    if gone:
        log.info("relist of %s: %d deleted objects forgotten", plural, gone)
    give_back_memory()
    return gone


def give_back_memory() -> None:
    """Return to the system the memory a big list's parsing left free (glibc keeps it in its
    arenas otherwise: a relist of 20,000 Tasks would keep the operator's peak for ever)."""
    global _trim
    if _trim is None:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        _trim = getattr(libc, "malloc_trim", None) or (lambda _: 0)
    _trim(0)


_trim = None


async def full_sync(store: Store, kube) -> None:
    """List every kind (in parallel) into the store, then mark it synced."""
    await asyncio.gather(*(relist(store, kube, k) for k in KINDS))
    store.synced = True
    store.changed.set()
