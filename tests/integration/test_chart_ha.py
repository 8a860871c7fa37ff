"""High availability, for real: the chart with `replicaCount: 2`, the leader's pod deleted
in the middle of a job, and the job still runs every task exactly once.

Two operator pods run from the chart (on the two real nodes of the local cluster: the
chart's anti-affinity prefers distinct nodes), one holds the Lease, the other stands by.
A job of kwok tasks (2 s each, on simulated nodes) is started; when some tasks are done the
leader's pod is deleted as `kubectl delete pod` does (graceful: it releases the Lease on
its way out), later the new leader's with `--grace-period=0 --force` (the API object goes
at once and the Deployment starts a replacement while the old process still runs until its
kubelet kills it: the Lease, not the pod's existence, keeps the two from acting at once).
Each time the standby must hold the Lease within 20 s (a lease duration and a retry period,
the bound when the old leader could not release it). A watch
on the namespace's pods records every task attempt meanwhile: at the end the job's counts
are exact, no task has two succeeded pods and no task ever had two attempts alive at once.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest

from kit import Objects, job, kwok_pool, sim, task
import integration.test_chart_install as chart_install
from integration.test_chart_install import (
    REAL_NODE_LABEL, RELEASE, describe_pods, operator_pods, refusals, wait_until,
)

# the chart test's fixtures, shared (pytest finds fixtures by name in the module)
operator_image, release, chart_namespace = chart_install.operator_image, chart_install.release, chart_install.chart_namespace


pytestmark = pytest.mark.integration

TASKS = 16
TAKEOVER = 20.0   # lease duration 15 s + a retry period + a margin


class PodRecorder:
    """Every task pod of a namespace as a watch reports it, and whether two attempts of
    one task were ever alive at the same time (created and neither finished nor deleted)."""

    def __init__(self, core, namespace: str) -> None:
        self.core, self.namespace = core, namespace
        self.pods: dict[str, dict] = {}                 # uid -> {name, task, phase, deleted}
        self.overlaps: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PodRecorder":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _alive(self, task_name: str) -> list[str]:
        return [p["name"] for p in self.pods.values()
                if p["task"] == task_name and not p["deleted"] and p["phase"] not in ("Succeeded", "Failed")]

    def _run(self) -> None:
        from kubernetes import watch
        rv = ""
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(self.core.list_namespaced_pod, self.namespace, resource_version=rv,
                                           label_selector="podbatch.io/role=task", timeout_seconds=5):
                    pod = event["object"]
                    rv = pod.metadata.resource_version
                    task_name = pod.metadata.labels.get("podbatch.io/task", "")
                    self.pods[pod.metadata.uid] = {
                        "name": pod.metadata.name, "task": task_name, "phase": pod.status.phase,
                        "deleted": event["type"] == "DELETED"}
                    alive = self._alive(task_name)
                    if len(alive) > 1:
                        self.overlaps.append(f"{task_name}: {alive} alive at once")
                    if self._stop.is_set():
                        break
            except Exception:   # 410 Gone or an API server restart: list again from now
                rv = ""
                time.sleep(0.5)
            finally:
                stream.stop()

    def succeeded_by_task(self) -> dict[str, list[str]]:
        out = defaultdict(list)
        for p in self.pods.values():
            if p["phase"] == "Succeeded":
                out[p["task"]].append(p["name"])
        return out


def lease_holder(coordination, namespace: str) -> str:
    return coordination.read_namespaced_lease(RELEASE, namespace).spec.holder_identity or ""


def ready_pods(core, namespace: str) -> list:
    return [p for p in operator_pods(core, namespace)
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]


def test_standby_takes_over_mid_job(operator_image, release, chart_namespace, api_client, custom_api, crds, nodesim):
    from kubernetes import client
    namespace = chart_namespace
    install, _ = release
    core = client.CoreV1Api(api_client)
    coordination = client.CoordinationV1Api(api_client)
    started = time.monotonic()

    def step(what: str) -> None:
        print(f"{time.monotonic() - started:6.1f}s {what}")

    real_nodes = [n for n in core.list_node(label_selector=f"{REAL_NODE_LABEL}=true").items
                  if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                  and not n.spec.unschedulable]
    values = {"replicaCount": 2, "image": {"pullPolicy": "Never"}, "config": {"namespaces": [namespace]}}
    if real_nodes:
        values["nodeSelector"] = {REAL_NODE_LABEL: "true"}
    assert install(values)["status"] == "deployed"

    # 1. Two Ready operator pods, on distinct nodes when there are two to choose from; a
    # PodDisruptionBudget keeps one of them through drains; exactly one holds the Lease.
    assert wait_until(lambda: len(ready_pods(core, namespace)) == 2, timeout=180, interval=1), \
        describe_pods(core, namespace)
    pods = ready_pods(core, namespace)
    step(f"2 operator pods Ready on {sorted(p.spec.node_name for p in pods)}")
    if len(real_nodes) >= 2:
        assert len({p.spec.node_name for p in pods}) == 2, [(p.metadata.name, p.spec.node_name) for p in pods]
    budget_version = "v1" if any(g.name == "policy" and any(v.version == "v1" for v in g.versions)
                                 for g in client.ApisApi(api_client).get_api_versions().groups) else "v1beta1"
    budget = custom_api.get_namespaced_custom_object("policy", budget_version, namespace, "poddisruptionbudgets", RELEASE)
    assert budget["spec"]["minAvailable"] == 1
    names = {p.metadata.name for p in pods}
    assert wait_until(lambda: lease_holder(coordination, namespace) in names, timeout=60), describe_pods(core, namespace)
    leader = lease_holder(coordination, namespace)
    step(f"Lease held by {leader}")

    # 2. A job of kwok tasks; the leader's pod goes while it runs, twice.
    objects = Objects(custom_api, namespace)
    objects.create(kwok_pool("ha", 2, slots=2))
    objects.create(job("ha", "ha", onAllTasksComplete="terminatejob"))
    with PodRecorder(core, namespace) as recorder:
        for i in range(1, TASKS + 1):
            # 6 s each, 4 waves on 4 slots: the job outlasts a takeover (with 2 s tasks, the
            # 12 left after the first deletion all ended within the takeover's 6.5 s)
            objects.create(task(f"ha-{i}", "ha", "/bin/true", annotations=sim(duration=6)))

        def succeeded() -> int:
            return sum(1 for t in objects.list("Task") if (t.get("status") or {}).get("state") == "completed")

        for round_, force in enumerate((False, True), start=1):
            assert wait_until(lambda: succeeded() >= 3 * round_, timeout=90, interval=0.5), \
                f"no progress: {succeeded()} done\n{describe_pods(core, namespace)}"
            standby = wait_until(lambda: [p.metadata.name for p in ready_pods(core, namespace)
                                          if p.metadata.name != leader], timeout=90, interval=1)
            assert standby, f"no Ready standby\n{describe_pods(core, namespace)}"
            done_before = succeeded()
            options = {"grace_period_seconds": 0, "body": client.V1DeleteOptions(grace_period_seconds=0)} if force else {}
            core.delete_namespaced_pod(leader, namespace, **options)
            deleted = time.monotonic()
            step(f"leader {leader} deleted ({'forced' if force else 'graceful'}) with {done_before}/{TASKS} done")
            # the standby, or the Deployment's replacement pod if it campaigned first: either
            # way a live operator other than the deleted one
            old_leader = leader

            def taken_over() -> bool:
                holder = lease_holder(coordination, namespace)
                return bool(holder) and holder != old_leader and holder in {p.metadata.name for p in ready_pods(core, namespace)}
            assert wait_until(taken_over, timeout=TAKEOVER + 10, interval=0.2), \
                f"Lease still {lease_holder(coordination, namespace)!r}\n{describe_pods(core, namespace)}"
            took = time.monotonic() - deleted
            leader = lease_holder(coordination, namespace)
            step(f"Lease taken by {leader} after {took:.1f}s")
            assert took <= TAKEOVER, f"another operator took the Lease only after {took:.1f}s"
            assert succeeded() < TASKS or round_ == 2, "the job ended before the leader was deleted: make it longer"

        # 3. The job completes through the new leader, every task exactly once.
        try:
            status = objects.wait_job_done("ha", timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{describe_pods(core, namespace)}") from None
        step("job completed")
        time.sleep(1)   # the last pod events reach the recorder

    counts = status["taskCounts"]
    assert (counts.get("succeeded"), counts.get("completed"), counts.get("failed", 0), counts.get("active", 0),
            counts.get("running", 0)) == (TASKS, TASKS, 0, 0, 0), counts
    tasks = objects.list("Task")
    assert len(tasks) == TASKS
    for t in tasks:
        st = t["status"]
        assert st["state"] == "completed" and st["executionInfo"]["exitCode"] == 0, (t["metadata"]["name"], st)
        assert st["executionInfo"].get("retryCount", 0) == 0 and st["executionInfo"].get("requeueCount", 0) == 0, \
            (t["metadata"]["name"], st["executionInfo"])
    assert not recorder.overlaps, recorder.overlaps
    twice = {k: v for k, v in recorder.succeeded_by_task().items() if len(v) > 1}
    assert not twice, f"tasks with two succeeded pods: {twice}"
    assert set(recorder.succeeded_by_task()) == {t["metadata"]["name"] for t in tasks}
    # Nothing the operators did was refused.
    for pod in operator_pods(core, namespace):
        log = core.read_namespaced_pod_log(pod.metadata.name, namespace)
        assert not refusals(log), log[-3000:]
    objects.delete("Job", "ha")
    objects.delete("Pool", "ha")
    assert wait_until(lambda: not objects.list("Pool"), timeout=60)
    step("cleaned up")
