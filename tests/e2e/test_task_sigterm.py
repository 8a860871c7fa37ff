"""Termination reaches the task (issue 10): a task terminated with
`spec.desiredState: terminated` (what `kubectl podbatch task terminate` patches) gets
SIGTERM in its own process, as Batch gives a terminated task a chance to clean up: its
`trap ... TERM` runs (busy in a foreground child, which must get the signal too), its
output still reaches `kubectl logs` and stdout.txt, and what it writes lands in its
working directory. Before, only the wrapper (PID 1, which ignores it) got the signal and
the task was SIGKILLed when the grace period ended."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException

from kit import job, task, wait_for

pytestmark = pytest.mark.e2e
REAL_NODE = os.environ.get("PODBATCH_REAL_NODE", "localhost")
ON_THIS_MACHINE = REAL_NODE == "localhost"


def _log(core_v1, pod: str, ns: str) -> str:
    try:
        return core_v1.read_namespaced_pod_log(pod, ns)
    except ApiException:
        return ""   # not started yet


def test_terminating_a_task_runs_its_sigterm_trap(real_pool, objects, core_v1, namespace):
    objects.create(job("stopjob", real_pool))
    script = ('trap "echo cleanup-ran; echo cleaned > terminated.txt; exit 0" TERM; '
              'echo started; sleep 300; echo not-reached')
    objects.create(task("stoptask", "stopjob", f"/bin/sh -c '{script}'", id="stop-1"))
    pod = wait_for("the task's pod", lambda: objects.status("Task", "stoptask").get("podName"), 120)
    wait_for("the task to start", lambda: "started" in _log(core_v1, pod, namespace), 120)

    # follow the log to the container's end: the pod is deleted right after
    streamed: list[str] = []

    def follow() -> None:
        resp = core_v1.read_namespaced_pod_log(pod, namespace, follow=True, _preload_content=False)
        try:
            for chunk in resp.stream():
                streamed.append(chunk.decode())
        except Exception:  # noqa: BLE001 - the stream ends with the pod
            pass
    follower = threading.Thread(target=follow, daemon=True)
    follower.start()

    objects.patch("Task", "stoptask", {"spec": {"desiredState": "terminated"}})
    st = objects.wait_state("Task", "stoptask", "completed", 60)
    assert st["executionInfo"]["result"] == "failure"
    assert st["executionInfo"]["failureInfo"]["code"] == "TaskEnded"
    follower.join(30)
    logs = "".join(streamed)
    assert "cleanup-ran" in logs, f"the task's TERM trap did not run; its log: {logs!r}"
    assert "not-reached" not in logs

    if ON_THIS_MACHINE:
        task_dir = Path(f"/var/lib/podbatch/{namespace}/{real_pool}/workitems/stopjob/job-1/stop-1")
        wait_for("the trap's output drained into stdout.txt",
                 lambda: "cleanup-ran" in Path(task_dir, "stdout.txt").read_text(), 30)
        assert Path(task_dir, "stdout.txt").read_text() == "started\ncleanup-ran\n"
        assert Path(task_dir, "wd", "terminated.txt").read_text() == "cleaned\n"


def test_an_unsignalled_task_keeps_its_exit_code_and_output(real_pool, objects, core_v1, namespace):
    """The wrapper now runs the command in the background of its own process group: an
    ordinary task is unchanged (exit code, both streams, working directory)."""
    objects.create(job("plainjob", real_pool))
    objects.create(task("plain", "plainjob", "/bin/sh -c 'echo out; echo err >&2; echo $PWD; exit 3'", id="plain-1"))
    st = objects.wait_state("Task", "plain", "completed", 120)
    assert st["executionInfo"]["exitCode"] == 3 and st["executionInfo"]["result"] == "failure"
    task_dir = f"/var/lib/podbatch/{namespace}/{real_pool}/workitems/plainjob/job-1/plain-1"
    logs = core_v1.read_namespaced_pod_log(st["podName"], namespace)
    assert sorted(logs.splitlines()) == sorted(["out", "err", f"{task_dir}/wd"])
    if ON_THIS_MACHINE:
        assert Path(task_dir, "stdout.txt").read_text() == f"out\n{task_dir}/wd\n"
        assert Path(task_dir, "stderr.txt").read_text() == "err\n"
