"""Bad input the 1.20 API server lets through (its CEL rules are ignored there) gets a clear
answer from the operator — a condition and an Event naming the field — and loses nothing:
the operator keeps running and other work goes on."""
from __future__ import annotations

import pytest

from kit import job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e


def _condition(objects, kind: str, name: str, ctype: str):
    return next((c for c in objects.status(kind, name).get("conditions") or [] if c["type"] == ctype), None)


def test_invalid_objects_are_reported_and_the_rest_still_runs(operator, objects, core_v1, namespace):
    objects.create({"kind": "Pool", "metadata": {"name": "broken"}, "spec": {"nodeGroup": {"provider": "static"}, "targetDedicatedNodes": 1}})
    objects.create(kwok_pool("p", 1))
    objects.create(job("j", "p", onAllTasksComplete="terminatejob"))
    objects.create(task("bad", "j", resourceFiles=[{"httpUrl": "http://example.invalid/a", "configMapKeyRef": {"name": "c", "key": "k"},
                                                    "filePath": "a"}]))
    objects.create(task("good", "j", annotations=sim(0)))

    cond = wait_for("the pool's Valid condition", lambda: _condition(objects, "Pool", "broken", "Valid"))
    assert cond["status"] == "False" and "static" in cond["message"] and "Fix the Pool" in cond["message"]
    cond = wait_for("the task's Valid condition", lambda: _condition(objects, "Task", "bad", "Valid"))
    assert cond["status"] == "False" and "resourceFiles" in cond["message"]
    events = wait_for("an InvalidSpec event", lambda: [e for e in core_v1.list_namespaced_event(namespace).items
                                                       if e.reason == "InvalidSpec" and e.involved_object.name == "bad"])
    assert "resourceFiles" in events[0].message

    wait_for("the good task completes", lambda: objects.status("Task", "good").get("state") == "completed", 90)
    assert objects.status("Task", "bad").get("state") in (None, "active")
    assert operator.alive()
