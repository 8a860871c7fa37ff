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
