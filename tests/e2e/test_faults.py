"""The fault campaign (issue 10): the promises of "Truth and crashes" in DESIGN.md under
the faults that break them in practice. What is asserted is what a user checks: a task
ran once at a time and completed once, a job completed with exact counts, a node never
ran more than its slots. On the real nodes the tasks record their own lifetime
(tests/faults.py: Traces), so "the old attempt had ended before the new one started" is
judged from the processes themselves, not from API status.

Tests 2 to 4 hurt the whole local cluster (node 2's kubelet, kube-apiserver) and always
undo it in `finally`; they need hack/'s cluster on this machine and skip elsewhere.
Every helper that touches cluster processes is in tests/faults.py.
"""
from __future__ import annotations

import random
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import faults
from faults import NODE2, PodTracker, Traces, overlaps, paused, traced_command, uptime
from kit import GROUP, VERSION, OperatorProcess, job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e
POOL_LABEL = "podbatch.io/pool"
REAL_NODES = ("localhost", NODE2)


# ------------------------------------------------------------------ helpers
@pytest.fixture()
def local_cluster(kubeconfig):
    if not faults.is_local_cluster(kubeconfig):
        pytest.skip("hurts processes of hack/'s local cluster: needs it on this machine")
    return kubeconfig


def node_free(core_v1, name: str) -> bool:
    node = core_v1.read_node(name)
    return POOL_LABEL not in (node.metadata.labels or {}) and not any(
        t.key == POOL_LABEL for t in node.spec.taints or [])


def idle_cnodes(objects, pool: str, count: int) -> dict[str, str] | None:
    """Kubernetes node name -> ComputeNode name, once `count` nodes of the pool are idle."""
    cs = [c for c in objects.list("ComputeNode") if c["spec"]["poolName"] == pool]
    if len(cs) == count and all((c.get("status") or {}).get("state") == "idle" for c in cs):
        return {c["spec"]["nodeName"]: c["metadata"]["name"] for c in cs}
    return None


@pytest.fixture()
def real_nodes(local_cluster, operator, objects, core_v1, namespace):
    """A static pool `real` of both real nodes (1 slot each), given back afterwards."""
    names = {n.metadata.name for n in core_v1.list_node(label_selector="local.podbatch.io/real-node=true").items}
    if not set(REAL_NODES) <= names:
        pytest.skip(f"needs both real nodes {REAL_NODES} (PODBATCH_REAL_NODES=1 leaves node 2 out)")
    wait_for("both real nodes to belong to no pool", lambda: all(node_free(core_v1, n) for n in REAL_NODES), 300, interval=2)
    objects.create({"kind": "Pool", "metadata": {"name": "real"}, "spec": {
        "nodeGroup": {"provider": "static", "static": {"nodeSelector": {"local.podbatch.io/real-node": "true"}}},
        "targetDedicatedNodes": 2, "taskSlotsPerNode": 1}})
    try:
        yield wait_for("both real nodes idle in pool real", lambda: idle_cnodes(objects, "real", 2), 180)
    finally:
        for p in objects.list("Pool"):
            objects.delete("Pool", p["metadata"]["name"])
        wait_for("the real nodes released", lambda: all(node_free(core_v1, n) for n in REAL_NODES), 180, interval=1)
        faults.remove_node_dirs(namespace)


def task_state(objects, name: str, state: str):
    return lambda: (lambda st: st if st.get("state") == state else None)(objects.status("Task", name))


def exec_info(st: dict) -> dict:
    return st.get("executionInfo") or {}


def succeeded_pods(core_v1, ns: str, task_name: str) -> list[str]:
    return [p.metadata.name for p in core_v1.list_namespaced_pod(ns, label_selector=f"podbatch.io/task={task_name}").items
            if p.status.phase == "Succeeded"]


def pod_deletion(core_v1, ns: str, name: str) -> str:
    from kubernetes.client.rest import ApiException
    try:
        p = core_v1.read_namespaced_pod(name, ns)
    except ApiException as e:
        if e.status == 404:
            return "gone"
        raise
    return "deleting" if p.metadata.deletion_timestamp else f"not deleted ({p.status.phase})"


def create_tasks(objects, bodies: list[dict]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(objects.create, bodies))


def counts(objects, job_name: str) -> dict:
    return objects.status("Job", job_name).get("taskCounts") or {}


def job_done(objects, name: str, timeout: float, context: str = "") -> dict:
    """The job's status once completed; on timeout, say what its counts and unfinished tasks were."""
    try:
        return objects.wait_job_done(name, timeout)
    except AssertionError as e:
        st = objects.status("Job", name)
        left = {t["metadata"]["name"]: (t.get("status") or {}).get("state") for t in objects.list("Task")
                if t["spec"]["jobName"] == name and (t.get("status") or {}).get("state") != "completed"}
        raise AssertionError(f"{e}; job {name} state {st.get('state')!r} counts {st.get('taskCounts')}; "
                             f"its tasks not completed: {left} {context}"[:4000]) from None


def check_overlaps(traces, context: str) -> None:
    bad = overlaps(traces)
    assert not bad, ("two attempts of the task ran at the same time: " + "; ".join(
        f"{b.pod} started at {b.start:.2f} while {a.pod} was alive until {a.last:.2f}" for a, b in bad)
        + f". All attempts: {traces}. {context}")


# ------------------------------------------------------------------ 1. SIGKILL after a requeue decision
def test_operator_killed_right_after_a_requeue_decision_runs_the_task_once(
        real_nodes, operator, objects, core_v1, custom_api, namespace):
    """A long task runs on a real node; its node is disabled with `requeue` and the operator
    is SIGKILLed within milliseconds of the requeue being written, then restarted. The old
    attempt's process must have ended before the new attempt's started, and the task
    completes once."""
    traces = Traces(namespace, "real")
    objects.create(job("j", "real", onAllTasksComplete="terminatejob"))
    objects.create(task("t", "j", traced_command(45, 6)))
    st = wait_for("task t running", task_state(objects, "t", "running"), 120)
    first_pod, cnode = st["podName"], st["nodeInfo"]["nodeId"]
    wait_for("attempt 1's process started", lambda: traces.of(first_pod), 60)
    traces.make_later_attempts_short()

    rv = objects.get("Task", "t")["metadata"]["resourceVersion"]
    t0 = time.monotonic()
    objects.patch("ComputeNode", cnode, {"spec": {"schedulingState": "disabled", "nodeDisableSchedulingOption": "requeue"}})
    try:
        faults.watch_until(custom_api.list_namespaced_custom_object, GROUP, VERSION, namespace, "tasks",
                           field_selector="metadata.name=t", resource_version=rv, timeout=30,
                           predicate=lambda t: exec_info(t.get("status") or {}).get("requeueCount", 0) >= 1
                           or int((t.get("status") or {}).get("attempt", 1)) >= 2)
        operator.kill()
        killed_after = time.monotonic() - t0
        old_pod_at_kill = pod_deletion(core_v1, namespace, first_pod)
    finally:
        if not operator.alive():
            operator.start()
    context = (f"(the operator was SIGKILLed {killed_after:.3f}s after the node was disabled, right after the requeue "
               f"was written; the old pod {first_pod} was then {old_pod_at_kill})")

    final = wait_for("task t completed after the requeue", task_state(objects, "t", "completed"), 150)
    settled = traces.settle(quiet=2.0, timeout=60)
    print(f"attempts: {settled} {context}")
    check_overlaps(settled, context)
    info = exec_info(final)
    assert info.get("result") == "success" and info.get("requeueCount") == 1 and info.get("retryCount") == 0, (info, context)
    ended = [t for t in settled if t.ended is not None]
    assert [t.pod for t in ended] == [final["podName"]], (
        f"the task's command must run to its end exactly once, in the attempt the Task reports ({final['podName']}); "
        f"attempts: {settled} {context}")
    assert len(succeeded_pods(core_v1, namespace, "t")) <= 1


# ------------------------------------------------------------------ 2. node 2's kubelet stopped for 60 s
def test_a_stopped_kubelet_never_lets_two_attempts_run_at_once(real_nodes, objects, core_v1, namespace):
    """node 2's kubelet is SIGSTOPped for 60 s while a long task runs there (its container
    keeps running: only the kubelet is gone). The node goes NotReady; podbatch may requeue
    the task, but no second attempt may start while the first still runs, and exactly one
    attempt completes, after the kubelet is back."""
    cnodes = real_nodes
    traces = Traces(namespace, "real")
    # the task must land on node 2: keep localhost out of scheduling until it runs there
    objects.patch("ComputeNode", cnodes["localhost"], {"spec": {"schedulingState": "disabled",
                                                                "nodeDisableSchedulingOption": "taskcompletion"}})
    wait_for("localhost's ComputeNode disabled", lambda: objects.status("ComputeNode", cnodes["localhost"]).get("schedulingState") == "disabled", 30)
    objects.create(job("j", "real", onAllTasksComplete="terminatejob"))
    objects.create(task("t", "j", traced_command(80, 5)))
    st = wait_for("task t running", task_state(objects, "t", "running"), 120)
    assert st["nodeInfo"]["nodeName"] == NODE2, st["nodeInfo"]
    first_pod = st["podName"]
    wait_for("attempt 1's process started", lambda: traces.of(first_pod), 60)
    traces.make_later_attempts_short()
    objects.patch("ComputeNode", cnodes["localhost"], {"spec": {"schedulingState": "enabled"}})
    wait_for("localhost's ComputeNode idle again", lambda: objects.status("ComputeNode", cnodes["localhost"]).get("state") == "idle", 30)

    seen: list[tuple] = []   # what the API said during the outage, for the failure message

    def sample(at: float) -> None:
        t = objects.status("Task", "t")
        n = core_v1.read_node(NODE2)
        ready = next((c.status for c in n.status.conditions or [] if c.type == "Ready"), "?")
        row = (t.get("state"), t.get("attempt"), t.get("podName"), (t.get("nodeInfo") or {}).get("nodeName"),
               objects.status("ComputeNode", cnodes[NODE2]).get("state"), f"Ready={ready}")
        if not seen or seen[-1][1:] != row:
            seen.append((round(at, 1), *row))

    kubelet2 = faults.component_pid("kubelet2")
    with paused(kubelet2, at_most=120):
        stopped_at = uptime()
        while uptime() < stopped_at + 60:
            try:
                sample(uptime() - stopped_at)
            except Exception:   # noqa: BLE001 - sampling is only for the report
                pass
            time.sleep(2)
    resumed_at = uptime()
    wait_for("node 2 Ready again", lambda: any(c.type == "Ready" and c.status == "True"
                                               for c in core_v1.read_node(NODE2).status.conditions or []), 90)
    context = (f"kubelet2 stopped at {stopped_at:.2f}, resumed at {resumed_at:.2f}; "
               f"(seconds after the stop, task state, attempt, pod, node, node 2's ComputeNode, Node) seen: {seen}")

    final = wait_for("task t completed", task_state(objects, "t", "completed"), 150)
    settled = traces.settle(quiet=2.0, timeout=60)
    print(f"attempts: {settled} {context}")
    first = next(t for t in settled if t.pod == first_pod)
    assert first.last > stopped_at + 30, f"the first attempt did not outlive the outage, nothing was tested: {settled}"
    check_overlaps(settled, context)
    ended = [t for t in settled if t.ended is not None]
    assert len(ended) == 1, f"exactly one attempt must run to its end, not {ended}: {settled} {context}"
    assert ended[0].ended > resumed_at and ended[0].pod == final["podName"], (ended, final.get("podName"), context)
    assert exec_info(final).get("result") == "success", (final, context)
    assert len(succeeded_pods(core_v1, namespace, "t")) <= 1


# ------------------------------------------------------------------ 3. kube-apiserver restarted mid-job
TASKS = 500


def _intervals(pod) -> tuple[float, float] | None:
    for cs in pod.status.container_statuses or []:
        term = cs.state.terminated if cs.state else None
        if term and term.started_at and term.finished_at:
            return term.started_at.timestamp(), term.finished_at.timestamp()
    return None


def test_apiserver_restarted_during_a_500_task_job(local_cluster, operator, objects, core_v1, namespace):
    """kube-apiserver is stopped and started again (same flags, tests/faults.py) once 100 of
    500 simulated tasks completed: every watch and write of the operator and of the node
    simulator fails for its downtime. The job completes with exact counts, each task once."""
    rnd = random.Random(20261210)
    objects.create(kwok_pool("p", 10, slots=4))
    wait_for("10 idle nodes", lambda: idle_cnodes(objects, "p", 10), 120)
    objects.create(job("j", "p", onAllTasksComplete="terminatejob"))
    create_tasks(objects, [task(f"t{i}", "j", annotations=sim(round(rnd.uniform(0.2, 2.0), 2))) for i in range(TASKS)])
    wait_for("100 tasks completed", lambda: counts(objects, "j").get("completed", 0) >= 100, 300)

    restart = faults.restart_apiserver(local_cluster)
    context = f"(kube-apiserver restarted: down for {restart.down_for:.1f}s)"
    st = job_done(objects, "j", 600, context)
    print(context, st.get("taskCounts"))

    assert st["taskCounts"] == {"active": 0, "running": 0, "completed": TASKS, "succeeded": TASKS, "failed": 0}, context
    tasks = objects.list("Task")
    assert len(tasks) == TASKS
    for t in tasks:
        info = t["status"]["executionInfo"]
        assert t["status"]["state"] == "completed" and info["result"] == "success", (t["metadata"]["name"], t["status"], context)
    pods: dict[str, list] = {}
    for p in core_v1.list_namespaced_pod(namespace, label_selector="podbatch.io/role=task").items:
        pods.setdefault(p.metadata.labels["podbatch.io/task"], []).append(p)
    assert len(pods) == TASKS
    for name, plist in pods.items():
        succeeded = [p.metadata.name for p in plist if p.status.phase == "Succeeded"]
        assert len(succeeded) == 1, (name, [(p.metadata.name, p.status.phase) for p in plist], context)
        spans = sorted(filter(None, (_intervals(p) for p in plist)))
        for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
            assert b0 >= a1, f"two attempts of {name} overlapped: {spans} {context}"


# ------------------------------------------------------------------ 4. deletions during a watch gap
def test_deletions_during_a_watch_gap_are_forgotten(local_cluster, operator, objects, core_v1, namespace):
    """The operator is SIGSTOPped; kube-apiserver is restarted meanwhile, so every watch
    breaks and the operator, when it resumes, can only continue from a resourceVersion the
    new API server's watch cache no longer has (410): it must relist. During the gap 5
    Tasks are deleted with their pods, and the pods of 3 other Tasks are deleted. The job
    must still complete, counting only the Tasks that exist."""
    objects.create(kwok_pool("p", 5, slots=4))
    wait_for("5 idle nodes", lambda: idle_cnodes(objects, "p", 5), 120)
    objects.create(job("j", "p", onAllTasksComplete="terminatejob"))
    create_tasks(objects, [task(f"t{i}", "j", annotations=sim(30)) for i in range(20)])
    wait_for("20 tasks running", lambda: counts(objects, "j").get("running") == 20, 120)
    # their statuses name their pods once `running` is written (the pod records the binding before)
    wait_for("20 tasks' running written", lambda: all(objects.status("Task", f"t{i}").get("state") == "running"
                                                       for i in range(20)), 60)
    doomed, orphaned = [f"t{i}" for i in range(5)], [f"t{i}" for i in range(5, 8)]
    pod_of = {n: objects.status("Task", n)["podName"] for n in doomed + orphaned}

    with paused(operator.proc.pid, at_most=240):
        restart = faults.restart_apiserver(local_cluster)
        for n in doomed:
            objects.delete("Task", n)
        for n in orphaned:   # their next attempt is short
            objects.patch("Task", n, {"metadata": {"annotations": sim(2)}})
        for n in doomed + orphaned:
            try:
                core_v1.delete_namespaced_pod(pod_of[n], namespace, grace_period_seconds=0)
            except Exception:   # noqa: BLE001 - already gone (the garbage collector was quicker)
                pass
    context = f"(kube-apiserver restarted while the operator was stopped: down for {restart.down_for:.1f}s)"

    resumed = time.monotonic()
    st = job_done(objects, "j", 90, context)
    print(f"{context}; the job completed {time.monotonic() - resumed:.1f}s after the operator resumed: {st['taskCounts']}")
    c = st["taskCounts"]
    assert c["completed"] == 15 and c["active"] == 0 and c["running"] == 0, (c, context)
    assert c["succeeded"] + c["failed"] == 15, (c, context)
    names = {t["metadata"]["name"] for t in objects.list("Task")}
    assert names.isdisjoint(doomed)
    for n in orphaned:
        assert objects.status("Task", n).get("state") == "completed", (n, objects.status("Task", n), context)
    wait_for("no pod left of a deleted task", lambda: not [
        p.metadata.name for p in core_v1.list_namespaced_pod(namespace, label_selector="podbatch.io/role=task").items
        if p.metadata.labels.get("podbatch.io/task") in doomed], 30)


# ------------------------------------------------------------------ 5. two operators at once
def test_two_operators_at_once_never_double_book(operator, objects, core_v1, namespace, kubeconfig):
    """A second operator (a rolling upgrade, a developer's laptop) runs beside the session's
    one. One Task, one pod; a node never holds more pods than its slots; the status names
    the node the pod really ran on."""
    rnd = random.Random(5)
    objects.create(kwok_pool("p", 4, slots=2))
    wait_for("4 idle nodes", lambda: idle_cnodes(objects, "p", 4), 120)
    second = OperatorProcess(kubeconfig, f"{operator.name}-second", env=dict(operator.env))
    tracker = PodTracker(core_v1, namespace)
    try:
        second.start()
        time.sleep(5)
        assert second.alive(), f"the second operator died at start; see {second.log_path}"
        objects.create(job("j", "p", onAllTasksComplete="terminatejob"))
        create_tasks(objects, [task(f"t{i}", "j", annotations=sim(round(rnd.uniform(1, 3), 1))) for i in range(40)])
        st = job_done(objects, "j", 180)
    finally:
        second.stop()
        tracker.stop()

    problems = []   # every finding at once: the report of a failure says all that went wrong
    if st["taskCounts"] != {"active": 0, "running": 0, "completed": 40, "succeeded": 40, "failed": 0}:
        problems.append(f"job counts {st['taskCounts']}")
    twice = {t: sorted(p.values()) for t, p in tracker.pods_by_task().items() if len(p) > 1}
    if twice:
        problems.append(f"tasks that had more than one pod: {twice}")
    crowded = {n: w for n, w in tracker.max_per_node().items() if w[0] > 2}
    if crowded:
        problems.append(f"nodes that held more pods than their 2 slots at once: {crowded}")
    node_of = tracker.last_node_of()
    wrong = {}
    for t in objects.list("Task"):
        ts = t["status"]
        if (ts.get("nodeInfo") or {}).get("nodeName") != node_of.get(ts.get("podName")):
            wrong[t["metadata"]["name"]] = (ts.get("podName"), (ts.get("nodeInfo") or {}).get("nodeName"), node_of.get(ts.get("podName")))
    if wrong:
        problems.append(f"Task status names another node than its pod ran on (pod, status node, pod's node): {wrong}")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------ 6. deleting a job with running tasks
def test_deleting_a_job_with_running_tasks_frees_its_slots(operator, objects, core_v1, namespace, kubeconfig):
    objects.create(kwok_pool("p", 2, slots=2))
    wait_for("2 idle nodes", lambda: idle_cnodes(objects, "p", 2), 120)
    tracker = PodTracker(core_v1, namespace)
    try:
        objects.create(job("a", "p"))
        create_tasks(objects, [task(f"a{i}", "a", annotations=sim(600)) for i in range(4)])
        wait_for("a's 4 tasks running", lambda: counts(objects, "a").get("running") == 4, 60)
        objects.create(job("b", "p", onAllTasksComplete="terminatejob"))
        create_tasks(objects, [task(f"b{i}", "b", annotations=sim(1)) for i in range(4)])
        wait_for("b's 4 tasks counted active", lambda: counts(objects, "b").get("active") == 4, 30)
        time.sleep(2)
        assert counts(objects, "b").get("active") == 4, "b's tasks ran although a's tasks held every slot"

        r = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "-n", namespace, "delete", "bjob", "a", "--wait=false"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        deleted = time.monotonic()

        def a_left():
            return ([t["metadata"]["name"] for t in objects.list("Task") if t["spec"]["jobName"] == "a"],
                    [p.metadata.name for p in core_v1.list_namespaced_pod(namespace, label_selector="podbatch.io/job=a").items])
        try:
            wait_for("job a's Tasks and pods gone", lambda: a_left() == ([], []), 30)
        except AssertionError as e:
            owners = {t["metadata"]["name"]: [o["kind"] + "/" + o["name"] for o in t["metadata"].get("ownerReferences") or []]
                      for t in objects.list("Task") if t["spec"]["jobName"] == "a"}
            raise AssertionError(f"{e}; left (Tasks, pods) of job a: {a_left()}; job a: {objects.status('Job', 'a') or 'gone'}; "
                                 f"owners of a's Tasks: {owners}") from None
        st = job_done(objects, "b", max(5, 40 - (time.monotonic() - deleted)))
    finally:
        tracker.stop()
    assert st["taskCounts"] == {"active": 0, "running": 0, "completed": 4, "succeeded": 4, "failed": 0}
    crowded = {n: w for n, w in tracker.max_per_node().items() if w[0] > 2}
    assert not crowded, f"nodes that held more pods than their 2 slots at once (b's pods started before a's were gone): {crowded}"
