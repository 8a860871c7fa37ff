"""The operator survives SIGKILL at any moment (issue 5): after each restart it rebuilds
its view from the API server; every task completes exactly once, no two pods of one
task run at the same time, and the job's counts are exact."""
from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kit import job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e
TASKS = 500


def _intervals(pod) -> tuple[float, float] | None:
    for cs in pod.status.container_statuses or []:
        term = cs.state.terminated if cs.state else None
        if term and term.started_at and term.finished_at:
            return term.started_at.timestamp(), term.finished_at.timestamp()
    return None


def test_operator_killed_three_times_during_a_500_task_job(operator, objects, core_v1, namespace):
    rnd = random.Random(20261125)
    objects.create(kwok_pool("p", 10, slots=4))
    wait_for("10 idle nodes", lambda: sum(1 for c in objects.list("ComputeNode")
                                          if (c.get("status") or {}).get("state") == "idle") == 10, 120)
    objects.create(job("j", "p", onAllTasksComplete="terminatejob"))
    durations = [round(rnd.uniform(0.2, 2.0), 2) for _ in range(TASKS)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: objects.create(task(f"t{i}", "j", annotations=sim(durations[i]))), range(TASKS)))

    # This test owns the operator process for a while: kill it 3 times at random moments.
    for _ in range(3):
        time.sleep(rnd.uniform(2, 8))
        operator.kill()
        time.sleep(rnd.uniform(0.5, 3))
        operator.start()
    st = objects.wait_job_done("j", timeout=600)

    assert st["taskCounts"] == {"active": 0, "running": 0, "completed": TASKS, "succeeded": TASKS, "failed": 0}
    tasks = objects.list("Task")
    assert len(tasks) == TASKS
    for t in tasks:
        info = t["status"]["executionInfo"]
        assert t["status"]["state"] == "completed" and info["result"] == "success", t["metadata"]["name"]
        assert info["retryCount"] == 0, t["metadata"]["name"]

    pods: dict[str, list] = {}
    for p in core_v1.list_namespaced_pod(namespace, label_selector="podbatch.io/role=task").items:
        pods.setdefault(p.metadata.labels["podbatch.io/task"], []).append(p)
    for name, plist in pods.items():
        succeeded = [p for p in plist if p.status.phase == "Succeeded"]
        assert len(succeeded) == 1, (name, [(p.metadata.name, p.status.phase) for p in plist])
        spans = sorted(filter(None, (_intervals(p) for p in plist)))
        for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
            assert b0 >= a1, f"two attempts of {name} overlapped: {spans}"
    assert len(pods) == TASKS


def test_an_operator_restarted_while_its_namespace_is_deleted_still_releases_the_pools(kubeconfig, crds, nodesim, core_v1, custom_api):
    """kopf alone would not serve a namespace that is already Terminating when it starts:
    the pool's finalizer would never run and the namespace would hang for ever."""
    import uuid

    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from kit import Objects, OperatorProcess
    ns = f"pbterm-{uuid.uuid4().hex[:6]}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    objects = Objects(custom_api, ns)
    first = OperatorProcess(kubeconfig, f"operator-{ns}-1", env={"PODBATCH_NAMESPACES": ns}).start()
    second = OperatorProcess(kubeconfig, f"operator-{ns}-2", env={"PODBATCH_NAMESPACES": ns})
    label = f"podbatch.io/pool={ns}.p"
    try:
        objects.create(kwok_pool("p", 2))
        wait_for("2 idle nodes", lambda: sum((c.get("status") or {}).get("state") == "idle"
                                             for c in objects.list("ComputeNode")) == 2, 90)
        first.kill()
        core_v1.delete_namespace(ns)
        wait_for("the namespace held by the pool's finalizer", lambda: any(
            (c.reason or "") == "SomeFinalizersRemain" and c.status == "True"
            for c in core_v1.read_namespace(ns).status.conditions or []), 60)
        second.start()

        def gone() -> bool:
            try:
                core_v1.read_namespace(ns)
                return False
            except ApiException as e:
                return e.status == 404
        wait_for("the namespace deleted", gone, 120)
        assert not core_v1.list_node(label_selector=label).items, "the pool's nodes were not released"
    finally:
        first.kill()
        second.stop()
        for n in core_v1.list_node(label_selector=label).items:
            core_v1.delete_node(n.metadata.name)
        try:
            for p in objects.list("Pool"):
                objects.patch("Pool", p["metadata"]["name"], {"metadata": {"finalizers": None}})
        except ApiException:
            pass
