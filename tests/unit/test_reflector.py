"""The engine's own watch of pods and Tasks (controllers/reflector.py): it resumes from the
last version it saw (a bookmark's too), lists again on a 410 (an HTTP answer or an ERROR
event) forgetting what is gone, skips namespaces it does not serve, and a broken watch is
resumed rather than ending the operator."""
from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio.client.rest import ApiException

from podbatch.controllers.reflector import Reflector
from podbatch.controllers.store import Store

pytestmark = pytest.mark.unit


def _task(name: str, rv: int, ns: str = "ns") -> dict:
    return {"metadata": {"namespace": ns, "name": name, "uid": f"u-{name}", "resourceVersion": str(rv)},
            "spec": {"jobName": "j"}}


class _Kube:
    """Answers each watch call with the next script entry: a list of events, or an exception."""

    def __init__(self, script: list, listing: list[dict], list_rv: str) -> None:
        self.script, self.listing, self.list_rv = script, listing, list_rv
        self.watched_from: list[str] = []
        self.lists = 0

    async def watch(self, plural: str, rv: str):
        self.watched_from.append(rv)
        if not self.script:
            await asyncio.Event().wait()   # the last watch stays open
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        for event in step:
            yield event

    async def list_pages(self, plural: str):
        self.lists += 1
        yield list(self.listing), self.list_rv


def _run(store: Store, kube: _Kube, start: str) -> None:
    async def go():
        r = Reflector(store, kube, "tasks")
        task = asyncio.create_task(r.run(start))
        for _ in range(200):
            await asyncio.sleep(0.001)
            if not kube.script:
                break
        await asyncio.sleep(0.01)
        task.cancel()
        return r
    return asyncio.run(go())


def test_events_go_to_the_store_and_a_closed_watch_resumes_from_the_last_version():
    s = Store()
    s.namespaces = ["ns"]
    kube = _Kube([[{"type": "ADDED", "object": _task("a", 11)},
                   {"type": "ADDED", "object": _task("x", 12, ns="other")},   # not served: not kept
                   {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}],
                  [{"type": "DELETED", "object": _task("a", 16)}]], [], "")
    _run(s, kube, "10")
    assert kube.watched_from == ["10", "15", "16"] and kube.lists == 0
    assert "ns/a" not in s.tasks and "other/x" not in s.tasks


@pytest.mark.parametrize("gone", [ApiException(status=410, reason="Gone"),
                                  [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}]])
def test_a_410_lists_again_and_forgets_what_is_gone(gone):
    s = Store()
    s.put_task(_task("kept", 5))
    s.put_task(_task("deleted-in-the-gap", 6))
    kube = _Kube([gone, [{"type": "ADDED", "object": _task("new", 31)}]], [_task("kept", 5)], "30")
    r = _run(s, kube, "10")
    assert kube.lists == 1 and r.relists == 1 and kube.watched_from == ["10", "30", "31"]
    assert sorted(s.tasks) == ["ns/kept", "ns/new"]


def test_a_broken_watch_is_resumed(monkeypatch):
    s = Store()
    kube = _Kube([ConnectionResetError("reset"), ApiException(status=500, reason="x"),
                  [{"type": "ADDED", "object": _task("a", 12)}]], [], "")
    monkeypatch.setattr(Reflector, "BACKOFF", (0.001, 0.002))
    _run(s, kube, "10")
    assert kube.watched_from[:3] == ["10", "10", "10"] and kube.lists == 0 and "ns/a" in s.tasks


def test_a_backlog_of_events_lets_the_loop_run_between_them():
    """100,000 deletions already read arrive without a suspension of the watch's stream: the
    reflector hands the loop back every few events (the Lease's renewal waits on it)."""
    from podbatch.controllers import reflector
    s = Store()
    events = [{"type": "ADDED", "object": _task(f"t{i}", 10 + i)} for i in range(1000)]
    kube = _Kube([events], [], "")
    ticks: list[int] = []

    async def go():
        r = Reflector(s, kube, "tasks")
        stop = False

        async def ticker():
            while not stop:
                ticks.append(len(s.tasks))
                await asyncio.sleep(0)
        t = asyncio.create_task(ticker())
        await r.watch_once()
        stop = True
        await t
    asyncio.run(go())
    during = {n for n in ticks if 0 < n < 1000}
    assert len(during) >= 1000 // reflector.YIELD_EVERY - 2, sorted(during)


def test_a_pass_over_many_dirty_tasks_decides_them_in_slices():
    """A Job with 100,000 tasks deleted makes every one of them dirty: the pass decides them a
    slice at a time with the loop let run between (before, it decided all of them in one go,
    and the leader's Lease went unrenewed for over 10 s in the 100,000-task bench)."""
    from podbatch.config import Settings
    from podbatch.controllers import tasks as tasks_module
    from podbatch.controllers.engine import Engine
    engine = Engine(Store(), object(), Settings())
    ticks = [0]
    seen_at: list[int] = []

    def decide(tk, node_view, now, touched):
        seen_at.append(ticks[0])
        return []

    async def act(tk, plan):
        return True
    engine._decide_task, engine._act_task = decide, act
    n = tasks_module.DECIDE_SLICE * 4

    async def go():
        stop = False

        async def ticker():
            while not stop:
                ticks[0] += 1
                await asyncio.sleep(0)
        t = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        await engine.advance_tasks({f"ns/t{i}" for i in range(n)}, {})
        stop = True
        await t
    asyncio.run(go())
    assert len(seen_at) == n and len(set(seen_at)) >= 4, sorted(set(seen_at))
