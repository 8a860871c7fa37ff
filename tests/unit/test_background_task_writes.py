"""A pass does not wait for a slow task write before it binds the next tasks
(controllers/tasks.py `advance_tasks`, PLANS_WAIT): with the API server busy, a pass that
awaited every completion write before scheduling left the freed slots idle. The write still
in flight keeps its task from being decided again, and once it lands the task and its job
end exactly as they would have."""
from __future__ import annotations

import asyncio
import threading

import pytest

from fakecluster import job_body, pool_body, run_scenario, summary, task_body

pytestmark = pytest.mark.unit


def held_completion(seen: dict):
    async def scenario(h):
        h.apply(pool_body("p", nodes=1, slots=1))
        h.apply(job_body("j", "p"))
        await h.run_until(lambda: any((c.get("status") or {}).get("state") == "idle" for c in h.server.items("computenodes")),
                          what="an idle node")
        tries: list[str] = []

        def held_write(verb: str, what: str) -> bool:
            if verb == "patch" and what.startswith("tasks/status default/held "):
                tries.append(what)
                return True
            return False
        gate = h.server.hold(held_write)
        # a pass that waited for the held write would never end: a watchdog (real seconds,
        # another thread) releases it, and the test fails on what it saw
        loop = asyncio.get_running_loop()
        watchdog = threading.Timer(10, lambda: loop.call_soon_threadsafe(gate.set))
        watchdog.start()
        h.apply(task_body("held", "j", duration=0.3, priority=10))
        h.expect("held")
        await h.run_until(lambda: bool(tries), what="held's completion write sent")
        # its pod has ended, so its one slot is free: the next task runs while the write hangs
        for name in ("b", "c"):
            h.apply(task_body(name, "j", duration=0.3))
            h.expect(name)
        try:
            await h.run_until(lambda: all(h.status("Task", n).get("state") == "completed" for n in ("b", "c")),
                              what="b and c completed while held's write is in flight")
        finally:
            watchdog.cancel()
        seen["released_by_watchdog"] = gate.is_set()
        seen["tries_while_held"] = len(tries)
        seen["held_state_while_held"] = h.status("Task", "held").get("state")
        gate.set()
        await h.run_until(lambda: h.status("Task", "held").get("state") == "completed", what="held completed")

        def checks() -> list[str]:
            return h.final_checks("j", job_state="active")
        return checks
    return scenario


def test_a_slow_completion_write_does_not_hold_the_next_binding():
    seen: dict = {}
    run = run_scenario(held_completion(seen))
    assert seen.get("released_by_watchdog") is False, "the pass waited for held's completion write: b and c were not bound meanwhile"
    assert run.ok, summary([run])
    assert seen["tries_while_held"] == 1, seen          # not decided (and written) again while in flight
    assert seen["held_state_while_held"] != "completed", seen
