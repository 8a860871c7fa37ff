"""kubectl podbatch against a real API server (e2e tier, marked so: it lives beside the unit
tests only because a second test_cli.py would clash under pytest's default import mode),
with API objects only (no operator needed):
apply creates then patches, validation stops bad manifests before they are sent, and the
node/job/task operations land in the objects' specs."""
from __future__ import annotations

import textwrap

import pytest

from podbatch import GROUP, VERSION
from podbatch.cli import main as cli

pytestmark = pytest.mark.e2e

MANIFESTS = textwrap.dedent("""\
    apiVersion: podbatch.io/v1alpha1
    kind: Pool
    metadata: {name: clipool}
    spec:
      nodeGroup: {provider: kwok}
      targetDedicatedNodes: 0
    ---
    apiVersion: podbatch.io/v1alpha1
    kind: ComputeNode
    metadata: {name: clinode}
    spec: {poolName: clipool-absent, nodeName: no-such-node}
    ---
    apiVersion: podbatch.io/v1alpha1
    kind: Job
    metadata: {name: clijob}
    spec: {poolInfo: {poolId: clipool-absent}, priority: 1}
    ---
    apiVersion: podbatch.io/v1alpha1
    kind: Task
    metadata: {name: clitask}
    spec: {jobName: clijob, commandLine: "true"}
    """)


@pytest.fixture(scope="module")
def crds(api_client):
    from podbatch.cli.kube import install_crds
    install_crds(api_client)


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_apply_operations_and_reads(kubeconfig, custom_api, namespace, crds, tmp_path, capsys):
    f = tmp_path / "objs.yaml"
    f.write_text(MANIFESTS)
    common = ["--kubeconfig", kubeconfig, "-n", namespace]

    rc, out, err = run(capsys, "apply", "-f", str(f), *common)
    assert rc == 0, err
    assert "pool.podbatch.io/clipool created" in out and "task.podbatch.io/clitask created" in out

    f.write_text(MANIFESTS.replace("priority: 1", "priority: 7"))
    rc, out, _ = run(capsys, "apply", "-f", str(f), *common)
    assert rc == 0 and "job.podbatch.io/clijob configured" in out
    job = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, "jobs", "clijob")
    assert job["spec"]["priority"] == 7
    # the Task came with its ownerReference to the Job: nothing left for the operator to adopt
    owned = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, "tasks", "clitask")
    assert [(r["kind"], r["uid"]) for r in owned["metadata"]["ownerReferences"]] == [("Job", job["metadata"]["uid"])]

    rc, _, err = run(capsys, "node", "disable", "clinode", "--option", "taskcompletion", *common)
    assert rc == 0, err
    rc, _, _ = run(capsys, "node", "reboot", "clinode", *common)
    node = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, "computenodes", "clinode")
    assert node["spec"]["schedulingState"] == "disabled"
    assert node["spec"]["nodeDisableSchedulingOption"] == "taskcompletion"
    first = node["spec"]["reboot"]["requestId"]
    run(capsys, "node", "reboot", "clinode", *common)
    node = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, "computenodes", "clinode")
    assert node["spec"]["reboot"]["requestId"] != first

    run(capsys, "job", "disable", "clijob", "--option", "wait", *common)
    run(capsys, "task", "reactivate", "clitask", *common)
    job = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, "jobs", "clijob")
    assert (job["spec"]["desiredState"], job["spec"]["disableTasks"]) == ("disabled", "wait")
    t = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, "tasks", "clitask")
    assert t["spec"]["reactivateRequestId"]

    rc, out, _ = run(capsys, "status", "clijob", *common)
    assert rc == 0 and "Job:       clijob" in out and "1 active" in out
    rc, out, _ = run(capsys, "tasks", "clijob", *common)
    assert rc == 0 and "clitask" in out
    rc, out, _ = run(capsys, "pools", *common)
    assert rc == 0 and "clipool" in out

    rc, out, err = run(capsys, "job", "terminate", "clijob", "--reason", "superseded by clijob-2", *common)
    assert rc == 0, err
    job = custom_api.get_namespaced_custom_object(GROUP, VERSION, namespace, "jobs", "clijob")
    assert (job["spec"]["desiredState"], job["spec"]["terminateReason"]) == ("terminated", "superseded by clijob-2")

    rc, _, err = run(capsys, "node", "enable", "nope", *common)
    assert rc == 2 and "not found" in err   # an error from the cluster (1 is kept for failed tasks)


def test_invalid_manifest_is_not_sent(kubeconfig, custom_api, namespace, crds, tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text(MANIFESTS.replace('commandLine: "true"', 'comandLine: "true"'))
    rc, _, err = run(capsys, "apply", "-f", str(f), "--kubeconfig", kubeconfig, "-n", namespace)
    assert rc == 2 and "Task/clitask: spec.commandLine: Field required" in err
    assert custom_api.list_namespaced_custom_object(GROUP, VERSION, namespace, "pools")["items"] == []
