"""Operability: JSON logs, grouped warnings, the liveness of the engine."""
import asyncio
import json
import logging

from podbatch.controllers.executor import Executor
from podbatch.controllers.run import JsonFormatter
from podbatch.controllers.store import Store


def test_json_log_lines_parse_and_carry_the_exception():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        rec = logging.LogRecord("podbatch.engine", logging.ERROR, __file__, 1, "pass %s failed", ("p1",), sys.exc_info())
    out = json.loads(JsonFormatter().format(rec))
    assert out["level"] == "ERROR" and out["logger"] == "podbatch.engine" and out["message"] == "pass p1 failed"
    assert "ValueError: boom" in out["exception"]


class _Events:
    def __init__(self):
        self.posted = []

    async def post_event(self, body, etype, reason, message):
        self.posted.append((body["metadata"]["name"], etype, reason, message))


def test_identical_warnings_about_one_object_are_posted_once():
    async def go():
        kube = _Events()
        ex = Executor(kube, Store())
        job = {"metadata": {"name": "j", "namespace": "ns", "uid": "u1"}}
        for _ in range(10_000):   # e.g. every task of a job on a missing pool
            ex.event(job, "Warning", "PoolNotFound", "pool 'p' does not exist")
        ex.event(job, "Warning", "PoolNotFound", "pool 'q' does not exist")   # another message: posted
        ex.event(job, "Normal", "JobCompleted", "done")
        ex.event(job, "Normal", "JobCompleted", "done")                       # normal events are not grouped
        await asyncio.sleep(0)
        await asyncio.gather(*ex._events)
        return kube.posted
    posted = asyncio.run(go())
    assert [p[2] for p in posted].count("PoolNotFound") == 2
    assert [p[2] for p in posted].count("JobCompleted") == 2


def test_a_standby_posts_nothing():
    async def go():
        kube = _Events()
        ex = Executor(kube, Store())
        ex.is_leader = lambda: False
        ex.event({"metadata": {"name": "j", "namespace": "ns", "uid": "u"}}, "Warning", "X", "y")
        await asyncio.sleep(0)
        return kube.posted
    assert asyncio.run(go()) == []


def test_a_stuck_cleanup_pod_is_given_up_after_the_timeout():
    """A node's release (and a Pool's finalizer) never waits for ever on a cleanup pod."""
    from fakecluster import FakeClock

    from podbatch.config import Settings
    from podbatch.controllers import clock
    from podbatch.controllers.engine import Engine
    from podbatch.controllers.pools import CLEANUP_STUCK
    from podbatch.core.pods import Placement

    class _Kube:
        async def create_pod(self, pod):
            return {**pod, "metadata": {**pod["metadata"], "resourceVersion": "5"}, "status": {"phase": "Pending"}}

    fake = FakeClock()
    clock.use(fake)
    try:
        store = Store()
        engine = Engine(store, _Kube(), Settings(cleanup_timeout_seconds=30))
        where = Placement(namespace="ns", pool="p", node_name="n1", compute_node="p-1")

        async def step():
            phase, plan = engine._remove_dirs(where, ["/var/lib/podbatch/ns/p"], "release-0", owner={})
            await engine.ex.apply(plan)
            return phase
        assert asyncio.run(step()) == "Pending"          # made
        fake.advance(10)
        assert asyncio.run(step()) == "Pending"          # seen, still within the timeout
        fake.advance(25)
        assert asyncio.run(step()) == CLEANUP_STUCK      # given up
    finally:
        from podbatch.controllers.clock import SystemClock
        clock.use(SystemClock())


def test_the_liveness_probe_fails_when_the_engine_is_stuck(monkeypatch):
    from podbatch.controllers import clock, handlers

    class _Engine:
        heartbeat = clock.monotonic()

    class _Task:
        def done(self):
            return False
    monkeypatch.setattr(handlers, "_engine", _Engine())
    monkeypatch.setattr(handlers, "_engine_task", _Task())
    monkeypatch.setattr(handlers.STORE, "synced", True)
    assert "last pass" in handlers.engine_alive()
    _Engine.heartbeat = clock.monotonic() - handlers.SETTINGS.stuck_seconds - 1
    import pytest
    with pytest.raises(RuntimeError, match="no pass"):
        handlers.engine_alive()


def test_a_watch_answering_404_ends_its_stream_instead_of_stopping_the_operator(monkeypatch):
    """kube-apiserver starting up answers 404 for CRDs for a moment; kopf alone would stop."""
    from podbatch.controllers import handlers
    from kopf._cogs.clients import errors, watching

    async def failing(**_):
        yield {"type": None, "object": {}}
        raise errors.APINotFoundError({"message": "404 page not found"}, status=404, headers={})
    assert handlers and getattr(watching.continuous_watch, "_podbatch", False)   # installed at import

    async def go():
        import podbatch.controllers.handlers as h
        original = watching.continuous_watch
        # build a fresh wrapper around the failing stream the way the patch does
        watching.continuous_watch = failing
        h._survive_watch_404()
        try:
            return [x async for x in watching.continuous_watch(resource="tasks")]
        finally:
            watching.continuous_watch = original
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    assert asyncio.run(go()) == [{"type": None, "object": {}}]


async def _no_sleep(*_):
    return None


def test_the_pod_watch_is_filtered_by_the_api_server_to_podbatchs_pods():
    """Never a watch of every pod of the cluster: the engine's own watch of pods
    (controllers/reflector.py) sends the selector, and kopf watches neither pods nor Tasks."""
    import kopf

    from podbatch.controllers import handlers   # registers kopf's handlers
    from podbatch.controllers.kube import Kube
    from podbatch.controllers.reflector import KINDS
    watched = {h.selector.plural for h in kopf.get_default_registry()._watching.get_all_handlers()}
    assert handlers.STORE is not None and watched and not watched & set(KINDS) and set(KINDS) == {"pods", "tasks"}

    sent = {}

    class _Content:
        async def iter_any(self):
            yield b'{"type": "ADDED", "object": {"metadata": {"name": "a"}}}\n{"type": "BOOKM'
            yield b'ARK", "object": {"metadata": {"resourceVersion": "9"}}}\n'

    class _Response:
        status, content = 200, _Content()

        def release(self):
            sent["released"] = True

    class _Core:
        async def list_pod_for_all_namespaces(self, **kw):
            sent.update(kw)
            return _Response()

    kube = Kube.__new__(Kube)
    kube.core = _Core()

    async def go():
        return [e async for e in kube.watch("pods", "5")]
    events = asyncio.run(go())
    assert sent["label_selector"] == "podbatch.io/role" and sent["watch"] and sent["resource_version"] == "5"
    assert sent["allow_watch_bookmarks"] and sent["released"]
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]   # a line split across two chunks is whole


def test_kopf_remembers_pools_only():
    """kopf's per-object memory (~1 KiB each, kept until deletion) is kept for Pools (their
    delete handler needs it) and not for the kinds podbatch only records (Tasks, pods …)."""
    from kopf._core.reactor import inventory

    from podbatch.controllers import handlers   # installs the patch
    assert handlers
    memories = inventory.ResourceMemories()

    async def recall_all():
        for kind, uid in (("Task", "t"), ("Pod", "p"), ("Pool", "pl"), ("ComputeNode", "c")):
            await memories.recall({"kind": kind, "metadata": {"uid": uid}})
    asyncio.run(recall_all())
    assert list(memories._items) == ["pl"]
