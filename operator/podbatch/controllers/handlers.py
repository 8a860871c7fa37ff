"""kopf handlers: thin. Watch events only feed the store; the engine does the work.
podbatch's pods and Tasks, the busiest kinds, are not kopf's: the engine watches them
itself (controllers/reflector.py).

A listing event (kopf's type None) after the store's first sync means kopf listed the
kind again after a watch gap: the engine then lists it itself and forgets what is gone.

Event handlers (not create/update handlers) keep kopf from writing progress
annotations on every Task and Pod: one watch event costs no API write here.
"""
from __future__ import annotations

import asyncio
import logging

import kopf

from podbatch import GROUP, VERSION
from podbatch.config import Settings
from podbatch.controllers import clock
from podbatch.controllers.engine import Engine
from podbatch.controllers.kube import Kube
from podbatch.controllers.leader import LeaderElection
from podbatch.controllers import fastjson, sync
from podbatch.controllers.store import Store
from podbatch.core import naming

log = logging.getLogger("podbatch")
STORE = Store()
fastjson.speed_up_kopf()   # kopf's watch stream decodes with orjson (controllers/fastjson.py)
SETTINGS = Settings()
STORE.namespaces = SETTINGS.namespace_list
FINALIZER = "podbatch.io/pool-cleanup"
LEGACY_FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"   # kopf's default, used before 0.x
_engine: Engine | None = None
_engine_task: asyncio.Task | None = None
_kube: Kube | None = None
_election: LeaderElection | None = None
_election_task: asyncio.Task | None = None


def _record(plural: str, put):
    # async: kopf runs it on its event loop, the engine's loop; a plain `def` would run in
    # kopf's thread pool and race with the engine over the store.
    async def handler(event, **_):
        obj = event.get("object")
        if not obj:
            return
        if event.get("type") is None and STORE.synced:
            STORE.relisted.add(plural)   # kopf listed again: a watch gap may hide deletions
        put(obj, deleted=event.get("type") == "DELETED")
    return handler


for plural, put in (("pools", STORE.put_pool), ("computenodes", STORE.put_cnode),
                    ("jobs", STORE.put_job), ("jobschedules", STORE.put_jobschedule),
                    ("taskcollections", STORE.put_collection)):
    kopf.on.event(GROUP, VERSION, plural)(_record(plural, put))

kopf.on.event("", "v1", "nodes")(_record("nodes", STORE.put_knode))
# Cluster-scoped: who may take which nodes (core/tenancy.py), and the namespaces' labels grants select by.
kopf.on.event(GROUP, VERSION, "poolgrants")(_record("poolgrants", STORE.put_grant))
kopf.on.event("", "v1", "namespaces")(_record("namespaces", STORE.put_namespace))


def _serve_terminating_namespaces() -> None:
    """kopf does not start serving a matching namespace that is already Terminating (it
    only keeps serving one it served before). A Pool whose finalizer is pending there would
    never be released and the namespace would stay Terminating for ever, if the operator
    (namespaced mode) restarted during the deletion. Serve such namespaces too: the pools'
    finalizers then run and the namespace goes."""
    try:
        from kopf._core.reactor import observation
        from kopf._cogs.structs import references
    except ImportError:   # kopf moved its internals: keep its own behaviour
        return
    original = getattr(observation, "revise_namespaces", None)
    if original is None or getattr(original, "_podbatch", False):
        return

    def revise_namespaces(*, insights, namespaces, raw_events=(), raw_bodies=()):
        original(insights=insights, namespaces=namespaces, raw_events=raw_events, raw_bodies=raw_bodies)
        for obj in [e["object"] for e in raw_events if e.get("type") != "DELETED"] + list(raw_bodies):
            name = (obj.get("metadata") or {}).get("name")
            if name and (obj.get("metadata") or {}).get("deletionTimestamp") and \
                    any(references.match_namespace(name, p) for p in namespaces):
                insights.namespaces.add(name)
    revise_namespaces._podbatch = True
    observation.revise_namespaces = revise_namespaces


_serve_terminating_namespaces()


def _survive_watch_404() -> None:
    """Right after kube-apiserver (re)starts it serves requests before its custom-resource
    endpoints are registered, and a watch of a CRD answers 404 for a moment. kopf takes that
    as fatal and stops the whole operator (seen in the API-server-restart fault test). Here a
    404 ends that one watch stream instead; kopf lists the kind again a second later (and
    our store relists it). A CRD that is really missing only logs a warning every second.
    Guarded like the patch above: if kopf moves these internals, its own behaviour stays."""
    try:
        from kopf._cogs.clients import errors, watching
    except ImportError:
        return
    original = getattr(watching, "continuous_watch", None)
    if original is None or getattr(original, "_podbatch", False):
        return

    async def continuous_watch(**kwargs):
        try:
            async for item in original(**kwargs):
                yield item
        except errors.APINotFoundError:
            log.warning("watch of %s answered 404 (API server starting?); listing it again", kwargs.get("resource"))
            await asyncio.sleep(1.0)
    continuous_watch._podbatch = True
    watching.continuous_watch = continuous_watch


_survive_watch_404()


def _remember_pools_only() -> None:
    """kopf keeps a memory (~1 KiB: its memo, error throttler, daemons, pending patch) for
    every object it has seen, until the object is deleted: hundreds of Nodes and ComputeNodes,
    thousands of Jobs would hold megabytes of it. podbatch's handlers for every kind but Pools are event handlers
    that only record the body in the store: they need nothing kopf remembers between events,
    so for them kopf gets a fresh memory per event and keeps none. Guarded like the patches
    above: if kopf moves these internals, its own behaviour stays."""
    try:
        from kopf._core.reactor import inventory
    except ImportError:
        return
    memories = getattr(inventory, "ResourceMemories", None)
    original = getattr(memories, "recall", None)
    if original is None or getattr(original, "_podbatch", False):
        return

    async def recall(self, raw_body, *, memobase=None, noticed_by_listing=False, ephemeral=False):
        if (raw_body or {}).get("kind") != "Pool":
            ephemeral = True
        return await original(self, raw_body, memobase=memobase, noticed_by_listing=noticed_by_listing, ephemeral=ephemeral)
    recall._podbatch = True
    memories.recall = recall


_remember_pools_only()


class _PoolsOnlyDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf deep-copies every event's body to diff it, for change handlers; only Pools have
    one (their deletion). For Tasks, pods and the rest this was ~13% of the operator's CPU
    (when kopf still watched Tasks and pods)."""

    def build(self, *, body, extra_fields=None):
        if body.get("kind") != "Pool":
            return None
        return super().build(body=body, extra_fields=extra_fields)


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf's settings for podbatch (no I/O)."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = _PoolsOnlyDiffBase(prefix=GROUP, key="last-handled-configuration")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.chunk_size = 500   # kopf's initial lists in pages: no peak that grows with the task count
    # (newer kopf calls these settings `queueing`, older releases `batching`)
    (settings.queueing if hasattr(settings, "queueing") else settings.batching).worker_limit = 2000
    settings.execution.max_workers = 4


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_) -> None:
    global _engine, _engine_task, _kube, _election, _election_task
    configure_kopf(settings)
    kube = _kube = await Kube.connect(SETTINGS.api_concurrency)
    engine = _engine = Engine(STORE, kube, SETTINGS)
    if SETTINGS.leader_election:
        # its own client, so that engine writes never starve the Lease renewals
        lease_api = (await Kube.connect(2)).api
        _election = LeaderElection.from_settings(
            SETTINGS, api_client=lease_api, identity=SETTINGS.leader_identity or None,
            # a new term lists everything again: another leader may have written meanwhile
            on_started_leading=lambda: (STORE.relisted.update(sync.KINDS), STORE.changed.set()),
            on_stopped_leading=lambda: log.warning("not the leader any more: writing nothing"))
        engine.ex.is_leader = lambda: _election.is_leader
        _election_task = asyncio.create_task(_election.run(), name="podbatch-leader")
    _engine_task = asyncio.create_task(engine.run(), name="podbatch-engine")
    if SETTINGS.metrics_port:
        from prometheus_client import start_http_server
        start_http_server(SETTINGS.metrics_port)


@kopf.on.probe(id="engine")
def engine_alive(**_) -> str:
    """The liveness probe fails (kopf answers 500) when the engine task died or has not
    finished a pass within PODBATCH_STUCK_SECONDS: the kubelet then restarts the pod."""
    if _engine_task is None or _engine is None:
        return "starting"
    if _engine_task.done():
        raise RuntimeError("the reconcile engine stopped")
    idle = clock.monotonic() - _engine.heartbeat
    if STORE.synced and idle > SETTINGS.stuck_seconds:
        raise RuntimeError(f"the reconcile engine has made no pass for {idle:.0f}s")
    return f"last pass {idle:.1f}s ago"


@kopf.on.cleanup()
async def stop(**_) -> None:
    if _engine_task:
        _engine_task.cancel()
    if _election_task:   # stops leading, then releases the Lease so a standby takes over at once
        _election_task.cancel()
        try:
            await _election_task
        except (asyncio.CancelledError, Exception):
            pass


@kopf.on.delete(GROUP, VERSION, "pools")
async def drain_pool(body, **_) -> None:
    """Keep the Pool (its finalizer) until every node is released or deleted."""
    if _election is not None and not _election.is_leader:
        raise kopf.TemporaryError("not the leader: the leader releases this pool's nodes", delay=5)
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    STORE.dirty_pools.add(f"{ns}/{name}")
    STORE.changed.set()
    # Ask the API server, not the watch cache: a node labelled a moment ago must not be
    # left behind because its event has not arrived yet.
    selector = f"{naming.LABEL_POOL}={naming.pool_node_label(ns, name)}"
    members = await _kube.node_names(selector) if _kube else STORE.pool_members(ns, name)
    if members:
        raise kopf.TemporaryError(f"releasing {len(members)} nodes: {', '.join(sorted(members)[:5])}", delay=2)
    if LEGACY_FINALIZER in (body["metadata"].get("finalizers") or []) and _kube:
        # a Pool made before the finalizer was named podbatch.io/pool-cleanup: let it go too
        kept = [f for f in body["metadata"]["finalizers"] if f != LEGACY_FINALIZER]
        await _kube.patch_object("pools", ns, name, {"metadata": {"finalizers": kept}})
