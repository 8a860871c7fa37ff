"""The store's sync with the API server, the way an informer's is: a full list of every
watched kind before the engine's first pass (so a restart never sees a running task
before its pod or its node), and a list again of a kind whose watch had a gap (kopf
relisted it after a 410, or the periodic resync came) so deletions missed meanwhile are
forgotten instead of holding slots and blocking jobs for ever."""
from __future__ import annotations

import asyncio
import logging

from podbatch.controllers.store import Store

log = logging.getLogger("podbatch.sync")
KINDS = ("namespaces", "poolgrants", "nodes", "pools", "computenodes", "jobs", "jobschedules", "pods", "tasks")


async def relist(store: Store, kube, plural: str) -> int:
    """List one kind and replace what the store holds of it; returns how many objects were
    forgotten (deleted while no watch event said so)."""
    items, rv = await kube.list_kind(plural)
    gone = store.replace(plural, items, rv)
    if gone:
        log.info("relist of %s: %d deleted objects forgotten", plural, gone)
    return gone


async def full_sync(store: Store, kube) -> None:
    """List every kind (in parallel) into the store, then mark it synced."""
    await asyncio.gather(*(relist(store, kube, k) for k in KINDS))
    store.synced = True
    store.changed.set()
