"""The executor applies a reconciler's plan in order, stops at the first failure, and
preconditions a plan's second write to one object on the version its first write returned."""
from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio.client.rest import ApiException

from podbatch.controllers import actions as A
from podbatch.controllers.executor import Conflict, Executor
from podbatch.controllers.store import Store


class _Kube:
    """Records calls; answers patches with the next resourceVersion; fails where told."""

    def __init__(self, fail: set[str] = frozenset(), rv: int = 10):
        self.calls: list[tuple] = []
        self.fail, self.rv = set(fail), rv

    def _maybe_fail(self, what: str, status: int = 500) -> None:
        if what in self.fail:
            raise ApiException(status=status, reason=what)

    async def patch_status(self, plural, ns, name, status, resource_version=None):
        self.calls.append(("patch_status", name, resource_version))
        self._maybe_fail(f"status:{name}", 409 if f"conflict:{name}" in self.fail else 500)
        self.rv += 1
        return {"kind": "Task", "metadata": {"namespace": ns, "name": name, "resourceVersion": str(self.rv)},
                "spec": {"jobName": "j"}, "status": status}

    async def get_object(self, plural, ns, name):
        return None

    async def delete_pod(self, ns, name, grace=None):
        self.calls.append(("delete_pod", name, grace))
        self._maybe_fail(f"delete:{name}")
        return None

    async def create_pod(self, pod):
        self.calls.append(("create_pod", pod["metadata"]["name"], None))
        return None


def _task(name: str, rv: str = "7") -> dict:
    return {"kind": "Task", "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv, "uid": "u-" + name},
            "spec": {"jobName": "j"}, "status": {"state": "running"}}


def _pod(name: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": name, "labels": {}}}


def test_a_plan_is_applied_in_order():
    kube = _Kube()
    ex = Executor(kube, Store())
    t = _task("t1")
    asyncio.run(ex.apply([A.WriteStatus("tasks", t, {"stoppingPods": ["p1"]}), A.DeletePod("ns", "p1"),
                          A.CreatePod(_pod("p2"))]))
    assert [c[0] for c in kube.calls] == ["patch_status", "delete_pod", "create_pod"]


@pytest.mark.parametrize("failing, done", [
    ("status:t1", ["patch_status"]),                   # not recorded: nothing is stopped or started
    ("delete:p1", ["patch_status", "delete_pod"]),     # not stopped: nothing is started
])
def test_the_first_failure_stops_the_plan(failing, done):
    kube = _Kube(fail={failing})
    ex = Executor(kube, Store())
    seen = []
    plan = [A.WriteStatus("tasks", _task("t1"), {"stoppingPods": ["p1"]}), A.DeletePod("ns", "p1"),
            A.CreatePod(_pod("p2")), A.Then("bookkeeping", lambda: seen.append(1))]
    with pytest.raises(ApiException):
        asyncio.run(ex.apply(plan))
    assert [c[0] for c in kube.calls] == done
    assert seen == []


def test_a_conflict_stops_the_plan_as_a_conflict():
    kube = _Kube(fail={"status:t1", "conflict:t1"})
    ex = Executor(kube, Store())
    with pytest.raises(Conflict):
        asyncio.run(ex.apply([A.WriteStatus("tasks", _task("t1"), {"state": "active"}), A.DeletePod("ns", "p1")]))
    assert [c[0] for c in kube.calls] == ["patch_status"]


def test_a_second_write_to_one_object_is_preconditioned_on_the_first_ones_answer():
    kube = _Kube(rv=41)
    ex = Executor(kube, Store())
    t, other = _task("t1", rv="7"), _task("t2", rv="9")
    asyncio.run(ex.apply([A.WriteStatus("tasks", t, {"a": 1}), A.WriteStatus("tasks", other, {"b": 1}),
                          A.WriteStatus("tasks", t, {"c": 1})]))
    assert kube.calls == [("patch_status", "t1", "7"), ("patch_status", "t2", "9"), ("patch_status", "t1", "42")]


def test_bookkeeping_runs_once_the_writes_before_it_landed():
    seen = []
    ex = Executor(_Kube(), Store())
    out = asyncio.run(ex.apply([A.DeletePod("ns", "p"), A.Then("count", lambda: seen.append("counted") or 3)]))
    assert seen == ["counted"] and out[-1] == 3


def test_a_non_action_is_refused():
    with pytest.raises(TypeError):
        asyncio.run(Executor(_Kube(), Store()).apply([("delete", "p")]))


@pytest.mark.parametrize("base, patch, want", [
    ({"a": 1, "b": {"c": 1, "d": 2}}, {"b": {"c": None, "e": 3}}, {"a": 1, "b": {"d": 2, "e": 3}}),
    ({"podName": "p-1"}, {"podName": None}, {}),
    (None, {"state": "preparing"}, {"state": "preparing"}),
    ({"subtasks": [{"id": 0}]}, {"subtasks": [{"id": 1}]}, {"subtasks": [{"id": 1}]}),   # lists are replaced
])
def test_merge_patch_is_what_the_api_server_does(base, patch, want):
    assert A.merge_patch(base, patch) == want
    assert A.with_status({"metadata": {}, "status": base}, patch)["status"] == want
