"""The local cluster itself (issue 2): a real pod on the real node, its logs through the
API, its hostPath file on disk. Runs unchanged on any cluster with a node named by
PODBATCH_REAL_NODE (default `localhost`, the local cluster's kubelet)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from kit import wait_for

REAL_NODE = os.environ.get("PODBATCH_REAL_NODE", "localhost")


@pytest.mark.e2e
def test_pod_runs_on_real_node_with_logs_and_hostpath(core_v1, namespace):
    marker = uuid.uuid4().hex
    host_dir = f"/tmp/podbatch-e2e-{marker}"
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello"},
        "spec": {
            "nodeName": REAL_NODE, "restartPolicy": "Never", "automountServiceAccountToken": False,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                            "command": ["/bin/sh", "-c", f"echo {marker} > /out/file.txt; echo logged-{marker}"],
                            "volumeMounts": [{"name": "out", "mountPath": "/out"}]}],
            "volumes": [{"name": "out", "hostPath": {"path": host_dir, "type": "DirectoryOrCreate"}}],
        },
    }
    core_v1.create_namespaced_pod(namespace, pod)
    phase = wait_for("pod hello to finish", lambda: (lambda p: p if p in ("Succeeded", "Failed") else None)(
        core_v1.read_namespaced_pod(pod["metadata"]["name"], namespace).status.phase), timeout=120)
    assert phase == "Succeeded"
    assert f"logged-{marker}" in core_v1.read_namespaced_pod_log("hello", namespace)
    if REAL_NODE == "localhost":   # the local cluster's node is this machine
        assert Path(host_dir, "file.txt").read_text().strip() == marker
