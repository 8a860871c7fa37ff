"""The store's index of live task pods per Node (store.node_pods, pod_slots_on): what holds a
node's slots besides the tasks in flight. A task pod counts on its Node from when it is
seen there until it has ended or is gone, terminating or not, whatever its Task (or none);
its slots are its Task's requiredSlots, remembered once the Task is gone."""
from __future__ import annotations

import random

import pytest

from podbatch.controllers.store import Store

pytestmark = pytest.mark.unit


def _task(name: str, uid: str, rv: int, slots: int = 1, status: dict | None = None) -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "uid": uid, "resourceVersion": str(rv)},
            "spec": {"jobName": "j", "requiredSlots": slots}, "status": status or {}}


def _pod(name: str, task: str, uid: str, rv: int, node: str = "n1", phase: str = "Pending",
         deleting: bool = False) -> dict:
    meta = {"namespace": "ns", "name": name, "resourceVersion": str(rv),
            "labels": {"podbatch.io/role": "task", "podbatch.io/pool": "p", "podbatch.io/job": "j",
                       "podbatch.io/task": task, "podbatch.io/task-uid": uid, "podbatch.io/attempt": "1"},
            "annotations": {"podbatch.io/task-name": task}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node}, "status": {"phase": phase}}


def test_a_pod_holds_its_slots_until_it_ends_or_goes_whatever_its_task():
    s = Store()
    s.put_task(_task("a", "ua", 1, slots=2))
    s.put_pod(_pod("a-1", "a", "ua", 2))
    assert s.node_pods == {"n1": {"ns/a-1": 2}} and s.pod_slots_on("n1") == 2
    s.put_pod(_pod("a-1", "a", "ua", 3, phase="Running"))
    s.put_pod(_pod("a-1", "a", "ua", 4, phase="Running", deleting=True))   # terminating: still there
    assert s.pod_slots_on("n1") == 2
    s.put_task(_task("a", "ua", 5, slots=2), deleted=True)   # its Task gone (its job deleted)
    assert "ns/a" not in s.tasks and s.pod_slots_on("n1") == 2, "the pod's slots are remembered"
    s.dirty_pools.clear()
    s.put_pod(_pod("a-1", "a", "ua", 6, phase="Failed", deleting=True))   # it ended: its slots are free
    assert s.node_pods == {} and s.pod_slots_on("n1") == 0 and s.dirty_pools == {"ns/p"}
    s.put_pod(_pod("a-1", "a", "ua", 7, phase="Failed", deleting=True), deleted=True)
    assert s.node_pods == {} and s._pod_node == {}


def test_a_pod_deleted_while_running_and_pods_whose_task_was_never_seen():
    s = Store()
    s.put_pod(_pod("x-1", "x", "ux", 1, node="n2", phase="Running"))   # no Task seen: 1 slot
    s.put_pod(_pod("y-1", "y", "uy", 2, node="n2"))
    assert s.pod_slots_on("n2") == 2 and s.pod_slots_on("n1") == 0
    s.put_task(_task("x", "ux", 3, slots=3))   # its Task arrives after it (a restart's lists)
    assert s.pod_slots_on("n2") == 4
    s.put_pod(_pod("x-1", "x", "ux", 4, node="n2", phase="Running", deleting=True), deleted=True)
    assert s.node_pods == {"n2": {"ns/y-1": 1}}
    s.forget_pod("ns", "y-1")   # a 404 from the API server
    assert s.node_pods == {} and s._pod_node == {}
    s.put_pod(_pod("z-1", "z", "uz", 10, node="n3"))
    s.replace("pods", [], "11")   # a relist without it
    assert s.node_pods == {}


def test_the_tasks_in_flight_count_their_own_current_pods_once():
    s = Store()
    bound = {"state": "running", "attempt": 1, "podName": "a-1", "nodeInfo": {"nodeId": "c1", "nodeName": "n1"}}
    s.put_task(_task("a", "ua", 1, slots=2, status=bound))
    s.put_pod(_pod("a-1", "a", "ua", 2, phase="Running"))
    assert s.pod_slots_on("n1") == 2 and s.pod_slots_on("n1", ["ns/a"]) == 0
    # an earlier Task of the same name (deleted and applied again) left a pod of that name on
    # the node: not the new Task's, so it counts besides it
    s.put_pod(_pod("b-1", "b", "ub-old", 3, phase="Running", deleting=True))
    bound_b = {**bound, "podName": "b-1"}
    s.put_task(_task("b", "ub", 3, slots=2, status=bound_b))
    assert s.pod_slots_on("n1", ["ns/a", "ns/b"]) == 1, "the old Task's pod (its slots never seen: 1)"
    s.put_pod(_pod("b-1", "b", "ub-old", 4, phase="Running", deleting=True), deleted=True)
    assert s.pod_slots_on("n1", ["ns/a", "ns/b"]) == 0
    # a gang: each instance pod counts one slot on its own node; the gang counts them itself
    gang = {"state": "running", "attempt": 1, "podName": "g-1", "nodeInfo": {"nodeId": "c1", "nodeName": "n1"},
            "subtasks": [{"id": 0, "nodeName": "c1", "podName": "g-1"}, {"id": 1, "nodeName": "c2", "podName": "g-1-s1"}]}
    s.put_task(_task("g", "ug", 4, status=gang))
    s.put_pod(_pod("g-1", "g", "ug", 5, phase="Running"))
    s.put_pod(_pod("g-1-s1", "g", "ug", 6, node="n2", phase="Running"))
    assert (s.pod_slots_on("n1"), s.pod_slots_on("n2")) == (2 + 1, 1)
    assert (s.pod_slots_on("n1", ["ns/a", "ns/g"]), s.pod_slots_on("n2", ["ns/a", "ns/g"])) == (0, 0)
    assert (s.pod_slots_on("n1", ["ns/a"]), s.pod_slots_on("n2", ["ns/a"])) == (1, 1)
    s.put_task(_task("g", "ug", 7, status=gang), deleted=True)   # its pods still terminate
    assert (s.pod_slots_on("n1", ["ns/a", "ns/g"]), s.pod_slots_on("n2", ["ns/a", "ns/g"])) == (1, 1)


def test_the_index_equals_a_count_from_scratch_after_random_pod_events():
    rng = random.Random(11)
    s = Store()
    rv = 0
    slots = {f"t{i}": rng.choice([1, 2, 3]) for i in range(30)}
    seen_slots: dict[str, int] = {}   # pod -> its Task's slots, once seen together
    for step in range(4000):
        rv += 1
        i = rng.randrange(30)
        name, pod = f"t{i}", f"t{i}-1"
        r = rng.random()
        if r < 0.15:
            s.put_task(_task(name, f"u{i}", rv, slots[name]))
        elif r < 0.25:
            s.put_task(_task(name, f"u{i}", rv, slots[name]), deleted=True)
        elif r < 0.35:
            s.put_pod(_pod(pod, name, f"u{i}", rv), deleted=True)
        else:
            s.put_pod(_pod(pod, name, f"u{i}", rv, node=rng.choice(["n1", "n2", ""]),
                           phase=rng.choice(["Pending", "Running", "Running", "Succeeded", "Failed"]),
                           deleting=rng.random() < 0.3))
        if f"ns/{pod}" in s.pods and f"ns/{name}" in s.tasks:
            seen_slots[pod] = slots[name]
        if f"ns/{pod}" not in s.pods or s.pods[f"ns/{pod}"].view.phase in ("Succeeded", "Failed") \
                or not s.pods[f"ns/{pod}"].view.node_name:
            seen_slots.pop(pod, None)   # gone or ended: forgotten, as the index forgets it
        want: dict[str, int] = {}
        for k, rec in s.pods.items():
            if rec.view.node_name and rec.view.phase not in ("Succeeded", "Failed"):
                want[rec.view.node_name] = want.get(rec.view.node_name, 0) + seen_slots.get(k.split("/", 1)[1], 1)
        got = {n: s.pod_slots_on(n) for n in ("n1", "n2")}
        assert got == {n: want.get(n, 0) for n in ("n1", "n2")}, step
        assert set(s._pod_node) == {k for k, rec in s.pods.items()
                                    if rec.view.node_name and rec.view.phase not in ("Succeeded", "Failed")}
