"""hack/demo.py: the pure parts (phases, the real-node phase's output and cleanup, exit codes)."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("podbatch_demo", ROOT / "hack/demo.py")
demo = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = demo   # dataclasses look their module up there
spec.loader.exec_module(demo)


def args(**kw):
    return argparse.Namespace(**{"namespace": "ns", "timeout": 5, "stall": 5, "operator": "external", "keep": False, **kw})


class FakeCore:
    """CoreV1Api for node localhost: labels/taints, optionally released after `release_after` reads."""

    def __init__(self, label=None, taints=(), exists=True, release_after=None):
        self.label, self.taints, self.exists, self.release_after = label, list(taints), exists, release_after
        self.reads, self.patches = 0, []

    def read_node(self, name):
        assert name == "localhost"
        self.reads += 1
        if not self.exists:
            raise ApiException(status=404)
        if self.release_after is not None and self.reads > self.release_after:
            self.label = None
        labels = {"kubernetes.io/hostname": "localhost", **({demo.POOL_LABEL: self.label} if self.label else {})}
        return client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels),
                             spec=client.V1NodeSpec(taints=self.taints or None))

    def patch_node(self, name, body):
        self.patches.append(body)
        self.label = None


class FakeCluster:
    def __init__(self, core):
        self.core = core
        self.api = client.ApiClient()
        self.namespace = "ns"


def test_real_node_example_shape():
    docs = [d for f in sorted(demo.QUICKSTART_REAL.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    pool = next(d for d in docs if d["kind"] == "Pool")
    job = next(d for d in docs if d["kind"] == "Job")
    tasks = [d for d in docs if d["kind"] == "Task"]
    assert pool["metadata"]["name"] == job["metadata"]["name"] == demo.real_node_phase().job == "quickstart-real"
    assert pool["spec"]["nodeGroup"] == {"provider": "static",
                                         "static": {"nodeSelector": {"kubernetes.io/hostname": "localhost"}}}
    assert (pool["spec"]["targetDedicatedNodes"], pool["spec"]["taskSlotsPerNode"]) == (1, 2)
    assert "$AZ_BATCH_NODE_SHARED_DIR/greeting.txt" in pool["spec"]["startTask"]["commandLine"]
    assert job["spec"] == {"poolInfo": {"poolId": "quickstart-real"}, "onAllTasksComplete": "terminatejob"}
    assert [t["metadata"]["name"] for t in tasks] == [f"quickstart-real-{i}" for i in range(1, 5)]
    assert all(t["spec"]["jobName"] == "quickstart-real" for t in tasks)
    assert tasks[0]["spec"]["commandLine"] == (
        """/bin/sh -c 'echo "task $AZ_BATCH_TASK_ID of job $AZ_BATCH_JOB_ID on node $AZ_BATCH_NODE_ID";"""
        """ cat $AZ_BATCH_NODE_SHARED_DIR/greeting.txt; echo "working dir: $(pwd)"'""")


def test_results_print_each_real_task_stdout_from_disk(tmp_path, capsys):
    tasks = []
    for i in (1, 2):
        d = tmp_path / f"quickstart-real-{i}"
        d.mkdir()
        (d / "stdout.txt").write_text(f"task quickstart-real-{i}\nhello from the start task\n")
        tasks.append({"metadata": {"name": f"quickstart-real-{i}"}, "spec": {"jobName": "quickstart-real"},
                      "status": {"state": "completed", "podName": f"quickstart-real-{i}-1",
                                 "executionInfo": {"exitCode": 0, "result": "success"},
                                 "nodeInfo": {"nodeName": "localhost", "taskRootDirectory": str(d)}}})
    snap = {"job": {"metadata": {"name": "quickstart-real"}}, "tasks": tasks,
            "counts": demo.fmt.count_tasks(tasks), "pool": None, "nodes": []}
    demo.Demo(args()).results(FakeCluster(FakeCore()), demo.real_node_phase(), snap)
    out = capsys.readouterr().out
    for i in (1, 2):
        assert f"{tmp_path}/quickstart-real-{i}/stdout.txt" in out
        assert f"  task quickstart-real-{i}\n  hello from the start task" in out
    assert "kubectl -n ns logs quickstart-real-1-1 -c task" in out
    assert "simulated" not in out


@pytest.mark.parametrize("core, operator, expect", [
    (FakeCore(exists=False), "external", "no Node named localhost"),
    (FakeCore(label="other.real"), "external", "held by another pool (podbatch.io/pool=other.real)"),
    (FakeCore(), "start", "operator is not running"),
    (FakeCore(), "external", None),
])
def test_real_node_skip_reason(core, operator, expect):
    why = demo.Demo(args(operator=operator)).real_node_skip_reason(FakeCluster(core), demo.real_node_phase())
    assert why == expect if expect is None else expect in why


def test_cleanup_waits_for_the_pool_to_release_the_node(monkeypatch):
    monkeypatch.setattr(demo.time, "sleep", lambda s: None)
    core = FakeCore(label="ns.quickstart-real", release_after=2)
    demo.Demo(args()).wait_node_released(FakeCluster(core), demo.real_node_phase())
    assert core.label is None and core.patches == [] and core.reads == 3


def test_cleanup_frees_the_node_itself_when_the_operator_is_gone():
    ours = client.V1Taint(key=demo.POOL_LABEL, value="ns.quickstart-real", effect="NoSchedule")
    theirs = client.V1Taint(key="dedicated", value="x", effect="NoSchedule")
    core = FakeCore(label="ns.quickstart-real", taints=[ours, theirs])
    demo.Demo(args(operator="start")).wait_node_released(FakeCluster(core), demo.real_node_phase())
    assert core.patches == [{"metadata": {"labels": {demo.POOL_LABEL: None}},
                             "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}}]


def run_demo(monkeypatch, core, phases: dict):
    """Demo.run with the cluster faked; `phases` maps job -> True/False/an exception to raise."""
    ran, cleaned = [], []
    d = demo.Demo(args())
    monkeypatch.setattr(d, "choose_cluster", lambda: None)
    monkeypatch.setattr(demo, "new_client", lambda kc: (client.ApiClient(), None))
    monkeypatch.setattr(demo, "install_crds", lambda api: None)
    monkeypatch.setattr(demo, "Cluster", lambda api, ns: FakeCluster(core))
    monkeypatch.setattr(d, "start_nodesim", lambda: None)
    monkeypatch.setattr(d, "start_operator", lambda: True)
    monkeypatch.setattr(demo.time, "sleep", lambda s: None)

    def run_phase(cluster, phase, running):
        ran.append(phase.job)
        d.cleanups.append((f"delete {phase.job}", lambda: cleaned.append(phase.job)))
        r = phases[phase.job]
        if isinstance(r, BaseException):
            raise r
        return r
    monkeypatch.setattr(d, "run_phase", run_phase)
    return d.run(), ran, cleaned


def test_run_both_phases(monkeypatch):
    rc, ran, cleaned = run_demo(monkeypatch, FakeCore(), {"quickstart": True, "quickstart-real": True})
    assert (rc, ran, cleaned) == (0, ["quickstart", "quickstart-real"], ["quickstart-real", "quickstart"])


def test_run_without_localhost_skips_phase_two(monkeypatch, capsys):
    rc, ran, _ = run_demo(monkeypatch, FakeCore(exists=False), {"quickstart": True})
    assert (rc, ran) == (0, ["quickstart"])
    assert "skipping the real-node phase" in capsys.readouterr().out


def test_run_waits_for_a_held_node(monkeypatch):
    core = FakeCore(label="other.real", release_after=3)
    rc, ran, _ = run_demo(monkeypatch, core, {"quickstart": True, "quickstart-real": True})
    assert (rc, ran) == (0, ["quickstart", "quickstart-real"])


@pytest.mark.parametrize("first, second", [(True, False), (False, True), (True, KeyboardInterrupt())])
def test_run_fails_when_either_job_did_not_complete(monkeypatch, first, second):
    rc, ran, cleaned = run_demo(monkeypatch, FakeCore(), {"quickstart": first, "quickstart-real": second})
    assert rc == 1 and ran == ["quickstart", "quickstart-real"] and cleaned == ["quickstart-real", "quickstart"]
