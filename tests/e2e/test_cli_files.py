"""`kubectl podbatch files` and `node files` on the real node (issue 14): a task writes files,
completes, its pod is deleted, and its stdout.txt, stderr.txt and working-directory files are
still listed and downloaded through the CLI's helper pod; the node's directories are listed;
a namespace user with the rights the docs name reads them, a user of another namespace is
refused; no helper pod is left behind.

The CLI runs as a process (`kubectl-podbatch`), with the admin kubeconfig or with a
ServiceAccount token's kubeconfig for the users."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kit import job, task, wait_for

pytestmark = pytest.mark.e2e

VENV_BIN = Path(sys.executable).parent
CLI = str(VENV_BIN / "kubectl-podbatch")
HELPERS = "app.kubernetes.io/name=podbatch-files"
SCRIPT = ("echo out-line; echo err-line >&2; printf '\\000\\001bin' > result.bin; "
          "mkdir sub && echo deep > sub/deep.txt")


def podbatch(kubeconfig, namespace, *argv, timeout=180):
    return subprocess.run([CLI, *argv, "--kubeconfig", str(kubeconfig), "-n", namespace],
                          capture_output=True, env=os.environ, timeout=timeout)


def ok(r) -> bytes:
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def token_kubeconfig(admin_kubeconfig: str, core_v1, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig authenticating as ServiceAccount `account` of `namespace` (its token Secret)."""
    from kubernetes import client
    core_v1.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=account)))
    secret = wait_for(f"a token for {account}", lambda: next(
        (s for s in core_v1.list_namespaced_secret(namespace).items
         if s.type == "kubernetes.io/service-account-token"
         and (s.metadata.annotations or {}).get("kubernetes.io/service-account.name") == account and s.data), None), 60)
    import base64
    token = base64.b64decode(secret.data["token"]).decode()
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    ctx = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster], "current-context": "sa",
        "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "sa", "namespace": namespace}}],
        "users": [{"name": "sa", "user": {"token": token}}]}))
    return path


FILE_READER_RULES = [   # what docs/files.md says reading files needs
    {"apiGroups": ["podbatch.io"], "resources": ["tasks", "computenodes", "pools"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "delete"]},
    {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]},   # websocket exec is a GET
]


def test_task_and_node_files_after_the_pod_is_gone(real_pool, objects, core_v1, api_client, namespace, kubeconfig, tmp_path):
    from kubernetes import client
    objects.create(job("fj", real_pool))
    objects.create(task("fj-writer", "fj", f"/bin/sh -c \"{SCRIPT}\"", id="writer"))
    st = objects.wait_state("Task", "fj-writer", "completed", 120)
    assert st["executionInfo"]["result"] == "success", st
    core_v1.delete_namespaced_pod(st["podName"], namespace, grace_period_seconds=0)
    wait_for("the task's pod gone", lambda: not core_v1.list_namespaced_pod(
        namespace, label_selector="podbatch.io/task=fj-writer").items, 60)

    # ls: every file with its size, as a table and as Batch NodeFile entries
    table = ok(podbatch(kubeconfig, namespace, "files", "ls", "fj-writer")).decode()
    rows = {line.split()[-1]: line.split() for line in table.splitlines()[1:]}
    assert rows["stdout.txt"][1] == "9" and rows["stderr.txt"][1] == "9" and rows["wd/result.bin"][1] == "5"
    assert {"wd/", "wd/sub/", "wd/sub/deep.txt"} <= set(rows)
    entries = json.loads(ok(podbatch(kubeconfig, namespace, "files", "ls", "writer", "wd", "--job", "fj", "-o", "json")))
    assert [(e["name"], e["isDirectory"], e["properties"]["contentLength"]) for e in entries if not e["isDirectory"]] == [
        ("wd/result.bin", False, 5), ("wd/sub/deep.txt", False, 5)]
    assert all(e["properties"]["lastModified"].endswith("Z") for e in entries)

    # get: to stdout, and byte for byte to a file
    assert ok(podbatch(kubeconfig, namespace, "files", "get", "fj-writer", "stdout.txt")) == b"out-line\n"
    assert ok(podbatch(kubeconfig, namespace, "files", "get", "fj-writer", "stderr.txt")) == b"err-line\n"
    out = tmp_path / "result.bin"
    ok(podbatch(kubeconfig, namespace, "files", "get", "fj-writer", "wd/result.bin", "-o", str(out)))
    assert out.read_bytes() == b"\x00\x01bin"
    task_dir = st["nodeInfo"]["taskRootDirectory"]

    # a TaskCollection's task: its files and its log, found through its pod's binding
    objects.create({"kind": "TaskCollection", "metadata": {"name": "fc"}, "spec": {"jobName": "fj", "parametricSweep": {
        "parameterSets": [{"start": 7, "end": 7}], "repeatTask": {"commandLine": "/bin/sh -c \"echo frame {0}\""}}}})
    wait_for("fc-0 succeeded", lambda: objects.status("TaskCollection", "fc").get("succeededIndexes") == "0", 120)
    assert ok(podbatch(kubeconfig, namespace, "files", "get", "fc-0", "stdout.txt")) == b"frame 7\n"
    assert ok(podbatch(kubeconfig, namespace, "logs", "fc-0")) == b"frame 7\n"
    assert ok(podbatch(kubeconfig, namespace, "files", "get", "fj-writer", f"{task_dir}/wd/sub/deep.txt")) == b"deep\n"

    # what cannot be read says why, and nothing is left half-written
    r = podbatch(kubeconfig, namespace, "files", "get", "fj-writer", "../other/stdout.txt")
    assert r.returncode == 2 and b"'..' is not allowed" in r.stderr
    r = podbatch(kubeconfig, namespace, "files", "get", "fj-writer", "wd/missing.txt", "-o", str(tmp_path / "m"))
    assert r.returncode == 2 and b"wd/missing.txt: no such file" in r.stderr and not (tmp_path / "m").exists()
    r = podbatch(kubeconfig, namespace, "files", "get", "fj-writer", "wd")
    assert r.returncode == 2 and b"is a directory" in r.stderr

    # the node's directories
    cnode = objects.list("ComputeNode")[0]["metadata"]["name"]
    entries = json.loads(ok(podbatch(kubeconfig, namespace, "node", "files", "ls", cnode, "--depth", "1", "-o", "json")))
    assert {"shared", "startup", "workitems"} <= {e["name"] for e in entries if e["isDirectory"]}
    listing = ok(podbatch(kubeconfig, namespace, "node", "files", "ls", cnode, "workitems")).decode()
    assert "workitems/fj/job-1/writer/wd/result.bin" in listing
    assert ok(podbatch(kubeconfig, namespace, "node", "files", "get", cnode,
                       "workitems/fj/job-1/writer/stdout.txt")) == b"out-line\n"

    # a namespace user with the documented rights reads; a user of another namespace does not
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "file-reader"}, "rules": FILE_READER_RULES})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "file-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "file-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}]})
    reader = token_kubeconfig(kubeconfig, core_v1, namespace, "reader", tmp_path / "reader.kubeconfig")
    assert ok(podbatch(reader, namespace, "files", "get", "fj-writer", "stdout.txt")) == b"out-line\n"

    other = f"{namespace}-o"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    try:
        rbac.create_namespaced_role_binding(other, {
            "metadata": {"name": "outsider-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "ServiceAccount", "name": "outsider", "namespace": other}]})
        outsider = token_kubeconfig(kubeconfig, core_v1, other, "outsider", tmp_path / "outsider.kubeconfig")
        for argv in (("files", "ls", "fj-writer"), ("files", "get", "fj-writer", "stdout.txt"),
                     ("node", "files", "ls", cnode)):
            r = podbatch(outsider, namespace, *argv)
            assert r.returncode == 2 and b"forbidden" in r.stderr.lower() and not r.stdout, (argv, r.stderr)
    finally:
        core_v1.delete_namespace(other)

    wait_for("no helper pod left", lambda: not core_v1.list_namespaced_pod(namespace, label_selector=HELPERS).items, 30)


def test_a_task_that_never_ran_has_no_files(crds, objects, namespace, kubeconfig, core_v1):
    objects.create(job("nofiles", "no-such-pool"))
    objects.create(task("waits", "nofiles"))
    r = podbatch(kubeconfig, namespace, "files", "ls", "waits")
    assert r.returncode == 2 and b"task waits has not run on a node yet" in r.stderr, r.stderr
    r = podbatch(kubeconfig, namespace, "node", "files", "ls", "no-such-node")
    assert r.returncode == 2 and b"ComputeNode 'no-such-node' not found" in r.stderr, r.stderr
    assert not core_v1.list_namespaced_pod(namespace, label_selector=HELPERS).items
