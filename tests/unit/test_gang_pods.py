"""The pods of a multi-instance task: the host list arrives through a downward-API file,
and the task wrapper (run here with busybox, the task image's shell) waits for it."""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time

import pytest

from podbatch.core import naming, pods, tasks

BUSYBOX = shutil.which("busybox")
needs_busybox = pytest.mark.skipif(not BUSYBOX, reason="no busybox on this machine to run the task wrapper")


def _busybox_bin(tmp_path, *applets: str) -> str:
    """A PATH holding only these busybox applets (what the task image has)."""
    d = tmp_path / "bin"
    d.mkdir()
    for a in applets:
        os.symlink(BUSYBOX, d / a)
    return str(d)


def _pod(**kw) -> dict:
    task = {"metadata": {"name": "t1", "uid": "u"}, "spec": {"jobName": "j", "commandLine": "/bin/true"}}
    job = {"metadata": {"name": "j"}, "spec": {}}
    placement = pods.Placement(namespace="ns", pool="p", node_name="n", compute_node="cn")
    return pods.task_pod(task=task, job=job, pool_spec={}, placement=placement, attempt=1, **kw)


def test_gang_pod_mounts_the_host_list_annotation():
    pod = _pod(gang=True, coordination="/bin/true")
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["podbatch-gang"]["downwardAPI"]["items"] == [
        {"path": "hosts", "fieldRef": {"fieldPath": "metadata.annotations['podbatch.io/host-list']"}}]
    main = pod["spec"]["containers"][0]
    assert {"name": "podbatch-gang", "mountPath": pods.GANG_DIR, "readOnly": True} in main["volumeMounts"]
    env = {e["name"]: e["value"] for e in main["env"]}
    assert env["PODBATCH_HOSTS_FILE"] == f"{pods.GANG_DIR}/hosts"
    assert "AZ_BATCH_HOST_LIST" not in env, "the host list is the pods' addresses, known only once they run"


def test_single_pod_has_no_gang_volume():
    pod = _pod()
    assert "podbatch-gang" not in {v["name"] for v in pod["spec"]["volumes"]}
    assert "PODBATCH_HOSTS_FILE" not in {e["name"] for e in pod["spec"]["containers"][0]["env"]}


def test_pod_view_reads_pod_ip_and_published_host_list():
    view = tasks.pod_view({"metadata": {"name": "p", "annotations": {naming.ANNOTATION_HOST_LIST: "10.0.0.5,10.0.0.6"}},
                           "status": {"phase": "Running", "podIP": "10.0.0.5"}})
    assert (view.pod_ip, view.host_list) == ("10.0.0.5", "10.0.0.5,10.0.0.6")
    assert tasks.pod_view({"metadata": {"name": "p"}, "status": {}}).pod_ip == ""


@needs_busybox
def test_wrapper_waits_for_the_host_list_then_exports_it(tmp_path):
    bindir = _busybox_bin(tmp_path, "sh", "sleep", "cat", "tr", "echo", "mkdir", "mkfifo", "tee", "rm")
    hosts = tmp_path / "hosts"
    task_dir = tmp_path / "task"
    env = {"PATH": bindir, "AZ_BATCH_TASK_DIR": str(task_dir), "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
           "PODBATCH_HOSTS_FILE": str(hosts), "PODBATCH_COORDINATION": "echo coord $AZ_BATCH_HOST_LIST"}
    later = threading.Timer(0.8, lambda: hosts.write_text("10.244.0.20,10.244.0.21"))
    later.start()
    t0 = time.monotonic()
    r = subprocess.run([BUSYBOX, "sh", "-c", pods.TASK_WRAPPER, "podbatch-task", "sh", "-c",
                        'echo "$AZ_BATCH_HOST_LIST|$AZ_BATCH_NODE_LIST|$AZ_BATCH_MASTER_NODE"'],
                       env=env, capture_output=True, text=True, timeout=30)
    later.join()
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 >= 0.8, "the command ran before the host list was there"
    assert r.stdout.splitlines() == ["coord 10.244.0.20,10.244.0.21",
                                     "10.244.0.20,10.244.0.21|10.244.0.20;10.244.0.21|10.244.0.20:6000"]
    assert (task_dir / "stdout.txt").read_text() == r.stdout


@needs_busybox
def test_a_daemon_of_the_coordination_command_does_not_keep_the_task_running(tmp_path):
    bindir = _busybox_bin(tmp_path, "sh", "sleep", "kill", "mkdir", "mkfifo", "tee", "rm")
    task_dir = tmp_path / "task"
    env = {"PATH": bindir, "AZ_BATCH_TASK_DIR": str(task_dir), "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
           "PODBATCH_COORDINATION": "sleep 60 &"}   # holds the wrapper's output pipes, as a server would
    t0 = time.monotonic()
    r = subprocess.run([BUSYBOX, "sh", "-c", pods.TASK_WRAPPER, "podbatch-task", "sh", "-c", "echo done; exit 3"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 3 and time.monotonic() - t0 < 15
    assert r.stderr == "", "the wrapper's own job messages stay out of the task's stderr"
    assert (task_dir / "stdout.txt").read_text() == "done\n"


@needs_busybox
def test_a_failed_coordination_command_ends_the_instance_with_its_code(tmp_path):
    bindir = _busybox_bin(tmp_path, "sh", "sleep", "kill", "mkdir", "mkfifo", "tee", "rm", "echo")
    task_dir = tmp_path / "task"
    env = {"PATH": bindir, "AZ_BATCH_TASK_DIR": str(task_dir), "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
           "PODBATCH_COORDINATION": "sh -c 'exit 7'", "PODBATCH_THEN_WAIT": "1"}
    r = subprocess.run([BUSYBOX, "sh", "-c", pods.TASK_WRAPPER, "podbatch-task", "echo", "never"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 7, "a subtask whose coordination failed must not wait as if it were fine"
    assert "never" not in r.stdout and "coordination command exited with 7" in (task_dir / "stderr.txt").read_text()
