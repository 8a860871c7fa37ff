"""Tasks at rest (queued with no pod yet, or completed) are kept frozen as JSON in the store
(controllers/tasktable.py): reading one gives back the same body, a fresh dict each time;
a task whose pod binds it is a dict again, and frozen again when that pod is gone; ordering
and relists work on frozen bodies without decoding them."""
from __future__ import annotations

import copy
import sys

import orjson

import pytest

from podbatch.controllers.store import Store
from podbatch.controllers.tasktable import TaskTable
from podbatch.core import binding, naming

pytestmark = pytest.mark.unit


def _task(name: str = "a", rv: int = 5, state: str | None = None, **status) -> dict:
    body = {"apiVersion": "podbatch.io/v1alpha1", "kind": "Task",
            "metadata": {"namespace": "ns", "name": name, "uid": f"u-{name}", "resourceVersion": str(rv),
                         "creationTimestamp": "2026-12-02T00:00:00Z", "annotations": {"sim.podbatch.io/duration": "0"},
                         "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"jobName": "j", "commandLine": "/bin/sh -c 'echo hello'", "priority": 0,
                     "environmentSettings": [{"name": "A", "value": "1"}]}}
    if state:
        body["status"] = {"state": state, **status}
    return body


def _bound_pod(name: str = "a", rv: int = 9) -> dict:
    meta = {"namespace": "ns", "name": naming.task_pod_name(name, 1), "resourceVersion": str(rv),
            "labels": {naming.LABEL_ROLE: "task", naming.LABEL_POOL: "p", naming.LABEL_JOB: "j",
                       naming.LABEL_TASK: name, naming.LABEL_TASK_UID: f"u-{name}", naming.LABEL_ATTEMPT: "1"},
            "annotations": {naming.ANNOTATION_BINDING: binding.annotation({"nodeId": "n1", "poolId": "p"}, "2026-12-02T00:00:01Z")}}
    return {"metadata": meta, "spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}}


@pytest.mark.parametrize("state, frozen", [
    (None, True),              # created, queued
    ("active", True),          # queued again (a retry)
    ("completed", True),
    ("preparing", False),      # in flight: read every pass
    ("running", False),
])
def test_which_tasks_are_frozen(state, frozen):
    s = Store()
    extra = {"nodeInfo": {"nodeId": "n1"}, "attempt": 1, "podName": "a-1"} if state in ("preparing", "running") else {}
    if state == "completed":
        extra = {"executionInfo": {"result": "success", "exitCode": 0}}
    s.put_task(_task(state=state, **extra))
    assert s.tasks.is_frozen("ns/a") is frozen
    assert s.task_state["ns/a"] == (state or "active")


def test_a_frozen_body_reads_back_whole_and_fresh_each_time():
    s = Store()
    s.put_task(_task())
    want = copy.deepcopy(_task())
    del want["metadata"]["managedFields"]
    a, b = s.tasks["ns/a"], s.tasks.get("ns/a")
    assert s.tasks.is_frozen("ns/a") and a == want and b == want and a is not b
    a["spec"]["commandLine"] = "changed"                  # a reader's copy: the store keeps its own
    assert s.task("ns/a")["spec"]["commandLine"] == want["spec"]["commandLine"]
    assert s.tasks.rv("ns/a") == 5 and "ns/a" in s.tasks and len(s.tasks) == 1


def test_a_frozen_body_is_compact():
    s = Store()
    s.put_task(_task())
    frozen = s.tasks._d["ns/a"]
    json = orjson.dumps(s.tasks["ns/a"])
    # deflated against the preset dictionary: a quarter of its JSON (orjson's own answer
    # would be a buffer of 8 KiB or more)
    assert sys.getsizeof(frozen) < len(json) / 2, (len(frozen), len(json))


def test_its_pod_binding_it_thaws_it_and_the_pods_end_freezes_it_again():
    s = Store()
    s.put_task(_task())
    assert s.tasks.is_frozen("ns/a")
    s.put_pod(_bound_pod())
    assert not s.tasks.is_frozen("ns/a") and s.task_state["ns/a"] == "preparing"
    assert s.task("ns/a")["status"]["state"] == "preparing"
    s.put_pod(_bound_pod(rv=10), deleted=True)            # gone before its task said anything: queued again
    assert s.task_state["ns/a"] == "active" and s.tasks.is_frozen("ns/a")


def test_an_older_event_does_not_replace_a_frozen_body_and_a_delete_removes_it():
    s = Store()
    s.put_task(_task(rv=7))
    s.put_task({**_task(rv=6), "spec": {**_task()["spec"], "commandLine": "older"}})
    assert s.tasks["ns/a"]["spec"]["commandLine"] != "older" and s.tasks.rv("ns/a") == 7
    s.put_task(_task(rv=8), deleted=True)
    assert "ns/a" not in s.tasks and not s.queues["ns/j"]


def test_a_relist_forgets_frozen_tasks_it_no_longer_has():
    s = Store()
    for i in range(4):
        s.put_task(_task(f"t{i}", rv=10 + i))
    gone = s.replace("tasks", [_task("t0", rv=10), _task("t2", rv=12)], "20")
    assert gone == 2 and sorted(s.tasks) == ["ns/t0", "ns/t2"] and s.tasks.is_frozen("ns/t0")
    assert s.counts_of("ns/j", None)[0]["active"] == 2


def test_the_table_alone():
    t = TaskTable()
    t["k"] = {"metadata": {"resourceVersion": "3"}, "spec": {}}
    t.freeze("k")
    assert t.is_frozen("k") and t.rv("k") == 3 and dict(t.items()) == {"k": {"metadata": {"resourceVersion": "3"}, "spec": {}}}
    t.thaw("k")
    assert not t.is_frozen("k") and t.pop("k")["spec"] == {} and t.get("k", 1) == 1 and t.rv("k") == 0
