"""The binding recorded by the pod (issue 13), on the local cluster: a task is bound by
creating its attempt's pod, with no Task status write before it; while that pod is pending
the job counts the task as running and `kubectl podbatch tasks` shows it preparing on its
node; the task's first status write carries the binding."""
from __future__ import annotations

import threading

import pytest
from kubernetes import watch

from kit import job, kwok_pool, task, wait_for
from podbatch import GROUP, VERSION
from podbatch.cli import main as cli

pytestmark = pytest.mark.e2e


def _status_versions(custom_api, ns: str, name: str, seen: list, stop: threading.Event) -> None:
    """Every status of Task `name` the API server ever held (each write is one watch event)."""
    w = watch.Watch()
    for ev in w.stream(custom_api.list_namespaced_custom_object, GROUP, VERSION, ns, "tasks",
                       field_selector=f"metadata.name={name}", timeout_seconds=120):
        seen.append((ev["type"], dict(ev["object"].get("status") or {})))
        if stop.is_set() or (ev["object"].get("status") or {}).get("state") == "completed":
            w.stop()


def test_a_pod_records_the_binding_and_the_status_follows(operator, objects, custom_api, core_v1, namespace,
                                                          kubeconfig, capsys):
    objects.create(kwok_pool("b", 1, slots=1))
    objects.create(job("j", "b", onAllTasksComplete="terminatejob"))
    wait_for("an idle node", lambda: any((c.get("status") or {}).get("state") == "idle"
                                         for c in objects.list("ComputeNode")), 120)
    seen: list = []
    stop = threading.Event()
    watcher = threading.Thread(target=_status_versions, args=(custom_api, namespace, "slow", seen, stop), daemon=True)
    watcher.start()
    # pending for 8 s on its node, then runs 2 s
    objects.create(task("slow", "j", annotations={"sim.podbatch.io/start-delay": "8", "sim.podbatch.io/duration": "2"}))
    pod = wait_for("the task's pod", lambda: next(iter(core_v1.list_namespaced_pod(
        namespace, label_selector="podbatch.io/task=slow").items), None), 60)
    assert pod.metadata.name == "slow-1" and "podbatch.io/binding" in (pod.metadata.annotations or {})
    # the pod is the binding: the Task's status has not been written for it
    assert (objects.status("Task", "slow").get("state") or "active") == "active"
    counts = wait_for("the job counting it running", lambda: (lambda c: c if c.get("running") == 1 else None)(
        (objects.status("Job", "j") or {}).get("taskCounts") or {}), 30)
    assert counts["active"] == 0, counts
    rc = cli.main(["tasks", "j", "--kubeconfig", kubeconfig, "-n", namespace, "-o", "json"])
    out = capsys.readouterr().out
    assert rc == 0 and '"state": "preparing"' in out and pod.spec.node_name in out, out

    done = objects.wait_job_done("j", 90)
    assert done["taskCounts"]["succeeded"] == 1, done
    watcher.join(30)
    stop.set()
    states = [st.get("state") for kind, st in seen if kind == "MODIFIED" and st]
    assert "preparing" not in states, f"a status write recorded the binding: {seen}"
    final = objects.status("Task", "slow")
    assert final["podName"] == "slow-1" and final["nodeInfo"]["nodeName"] == pod.spec.node_name, final
    assert final["previousState"] == "running" and final["executionInfo"]["result"] == "success", final
    assert final["attempt"] == 1 and final["executionInfo"]["retryCount"] == 0, final
