"""The task wrapper is read from a ConfigMap of the pod's namespace (core/pods.py): the pod
is half the size, the script runs as it did inline, and the engine creates the ConfigMap
before a namespace's first task pod, once (not per pod), and again when it was deleted."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from fakecluster import job_body, pool_body, run_scenario, summary, task_body
from podbatch.controllers import executor
from podbatch.core import pods

pytestmark = pytest.mark.unit

BUSYBOX = "/bin/busybox"


def _pod(command_line: str = "/bin/true") -> dict:
    task = {"metadata": {"name": "t1", "namespace": "ns", "uid": "u1"}, "spec": {"jobName": "j", "commandLine": command_line}}
    job = {"metadata": {"name": "j", "namespace": "ns", "uid": "uj"}, "spec": {"poolInfo": {"poolId": "p"}}}
    placement = pods.Placement(namespace="ns", pool="p", node_name="n1", compute_node="p-n1")
    return pods.task_pod(task=task, job=job, pool_spec={}, placement=placement, attempt=1)


def test_a_task_pod_runs_the_wrapper_of_its_namespaces_configmap():
    pod = _pod("render --frame 7")
    main = pod["spec"]["containers"][0]
    assert main["command"] == ["/bin/sh", f"{pods.WRAPPER_DIR}/{pods.WRAPPER_FILE}", "render", "--frame", "7"]
    assert {"name": pods.WRAPPER_VOLUME, "mountPath": pods.WRAPPER_DIR, "readOnly": True} in main["volumeMounts"]
    assert pods.wrapper_configmap_of(pod) == pods.WRAPPER_CONFIGMAP
    text = json.dumps(pod)
    assert "pb_kill" not in text and len(text) < 3000, len(text)   # inline, the script alone was 2.9 KB

    cm = pods.wrapper_configmap("ns")
    assert cm["metadata"]["name"] == pods.WRAPPER_CONFIGMAP and cm["metadata"]["namespace"] == "ns"
    assert cm["immutable"] is True and cm["data"][pods.WRAPPER_FILE].strip() == pods.TASK_WRAPPER
    assert cm["metadata"]["labels"]["app.kubernetes.io/component"] == "task-wrapper"
    assert pods.wrapper_configmap_of({"spec": {"volumes": [{"name": "x", "emptyDir": {}}]}}) is None


@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static")
def test_the_wrapper_read_from_its_file_tees_the_output_and_keeps_the_exit_code(tmp_path):
    script = tmp_path / pods.WRAPPER_FILE
    script.write_text(pods.wrapper_configmap("ns")["data"][pods.WRAPPER_FILE])
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AZ_BATCH_TASK_DIR": str(task_dir),
           "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd")}
    argv = _pod("sh -c 'echo out \"$1\"; echo err >&2; exit 3' x 'two words'")["spec"]["containers"][0]["command"][2:]
    r = subprocess.run([BUSYBOX, "sh", str(script), *argv], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 3, r
    assert r.stdout == "out two words\n" and r.stderr == "err\n"
    assert (task_dir / "stdout.txt").read_text() == "out two words\n"
    assert (task_dir / "stderr.txt").read_text() == "err\n"


def wrapper_scenario(seen: dict):
    async def scenario(h):
        h.apply(pool_body("p", nodes=1, slots=4))
        h.apply(job_body("j", "p"))
        for i in range(4):
            h.apply(task_body(f"a{i}", "j", duration=0.3))
            h.expect(f"a{i}")
        await h.run_until(lambda: all(h.status("Task", f"a{i}").get("state") == "completed" for i in range(4)),
                          what="the first four completed")
        seen["first"] = [line for line in h.server.log if " configmap " in line]
        # someone deletes it: the next task pod waits for it (the kubelet cannot mount it)
        # until the engine creates it again, within WRAPPER_RECHECK seconds
        h.server.delete("configmaps", "default", pods.WRAPPER_CONFIGMAP)
        h.apply(task_body("b", "j", duration=0.3))
        h.expect("b")
        await h.run_until(lambda: h.status("Task", "b").get("state") == "completed", what="b completed",
                          within=executor.WRAPPER_RECHECK + 30)
        seen["all"] = [line for line in h.server.log if " configmap " in line]

        def checks() -> list[str]:
            return h.final_checks("j", job_state="active")
        return checks
    return scenario


def test_the_engine_creates_the_wrapper_configmap_once_and_again_after_a_deletion():
    seen: dict = {}
    run = run_scenario(wrapper_scenario(seen))
    assert run.ok, summary([run])
    assert len(seen["first"]) == 1 and f"configmap default/{pods.WRAPPER_CONFIGMAP}" in seen["first"][0], seen
    assert len(seen["all"]) == 2, seen


def gone_namespace(seen: dict):
    async def scenario(h):
        h.apply(pool_body("p", nodes=1, slots=1))
        h.apply(job_body("j", "p"))
        for name in ("a", "b"):   # b's pod, created while the ConfigMap is known, is rechecked later
            h.apply(task_body(name, "j", duration=0.3))
            h.expect(name)
            await h.run_until(lambda: h.status("Task", name).get("state") == "completed", what=f"{name} completed")
        # the namespace goes (every create there answers 404): the per-pass recheck gives up on
        # it instead of failing again every pass (each failure once lengthened a backoff whose
        # float overflowed after ~1,000 passes and failed every pass after: a dead engine)
        h.server.delete("configmaps", "default", pods.WRAPPER_CONFIGMAP)
        h.server.inject(lambda verb, what: verb == "create" and what.startswith("configmap "), status=404)
        start = len(h.server.log)
        end = h.clock.time() + 5 * executor.WRAPPER_RECHECK
        await h.run_until(lambda: h.clock.time() >= end, what="five recheck periods", within=6 * executor.WRAPPER_RECHECK)
        seen["tries"] = [line for line in h.server.log[start:] if " configmap " in line]
        return lambda: []
    return scenario


def test_a_namespace_gone_is_not_rechecked_every_pass():
    seen: dict = {}
    run = run_scenario(gone_namespace(seen))
    assert run.ok, summary([run])
    assert len(seen["tries"]) <= 1, seen


def test_backoff_never_overflows():
    b = executor.Backoff()
    for _ in range(5000):
        delay = b.failed("x")
    assert delay == b.cap
