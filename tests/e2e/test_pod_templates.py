"""Pod templates and application packages on the real node (issue 14): a task whose
template brings a PVC (on a hostPath PersistentVolume made here), a ConfigMap-projected
file, a Secret as env and a sidecar reads them all and ends (the sidecar does not keep
its pod alive); an application package from a ConfigMap is unpacked where its
AZ_BATCH_APP_PACKAGE_* variable says (and one from an image's directory), a missing one fails the task with a preprocessing
error, and a template that tries to bind the pod to a node is refused."""
from __future__ import annotations

import base64
import io
import os
import time
import zipfile
from pathlib import Path

import pytest

from kit import job, task, wait_for

pytestmark = pytest.mark.e2e
REAL_NODE = os.environ.get("PODBATCH_REAL_NODE", "localhost")

RUN_SH = """
set -e
echo "config: $(cat /config/greeting.txt)"
echo "pvc: $(cat /data/pv-data.txt)"
echo written-by-task > /data/from-task.txt
i=0; while [ ! -s /shared/side.txt ] && [ $i -lt 60 ]; do sleep 0.5; i=$((i+1)); done
echo "sidecar: $(cat /shared/side.txt)"
echo "secret: $TOKEN"
echo "package: $AZ_BATCH_APP_PACKAGE_hello_1_0"
sh "$AZ_BATCH_APP_PACKAGE_hello_1_0/bin/hello.sh"
echo "readme: $(cat "$AZ_BATCH_APP_PACKAGE_hello_1_0/readme.txt")"
echo "image package: $(head -n 1 "$AZ_BATCH_APP_PACKAGE_etc_1/passwd")"
"""


def _zip(files: dict[str, str]) -> str:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture()
def host_volume(core_v1, namespace):
    """A hostPath PersistentVolume on this machine (the real node) bound to claim `data`."""
    if REAL_NODE != "localhost":
        pytest.skip("needs the real node to be this machine (its hostPath is written here)")
    path = Path(f"/tmp/podbatch-e2e-pv-{namespace}")
    path.mkdir(mode=0o777, parents=True, exist_ok=True)
    path.chmod(0o777)
    (path / "pv-data.txt").write_text("on-the-volume\n")
    pv = f"pbtest-{namespace}"
    try:
        core_v1.create_persistent_volume({"apiVersion": "v1", "kind": "PersistentVolume",
                                          "metadata": {"name": pv, "labels": {"podbatch.io/test": "1"}},
                                          "spec": {"capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                                                   "storageClassName": "", "persistentVolumeReclaimPolicy": "Retain",
                                                   "hostPath": {"path": str(path)},
                                                   "claimRef": {"namespace": namespace, "name": "data"}}})
        core_v1.create_namespaced_persistent_volume_claim(namespace, {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv,
                     "resources": {"requests": {"storage": "1Mi"}}}})
        yield path
    finally:
        try:
            core_v1.delete_persistent_volume(pv)
        except Exception:
            pass
        for f in path.iterdir():
            f.unlink()
        path.rmdir()


def test_a_task_reads_its_pvc_configmap_secret_sidecar_and_package(real_pool, host_volume, objects, core_v1, namespace):
    from kubernetes import client
    core_v1.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="settings"), data={"greeting.txt": "hello-from-configmap", "run.sh": RUN_SH}))
    core_v1.create_namespaced_secret(namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="token"),
                                                                string_data={"token": "s3cret"}))
    core_v1.create_namespaced_config_map(namespace, client.V1ConfigMap(   # application hello, version 1.0
        metadata=client.V1ObjectMeta(name="podbatch-app-hello.1.0"), data={"readme.txt": "plain-file"},
        binary_data={"hello.zip": _zip({"bin/hello.sh": "echo hello-from-package\n"})}))
    objects.create(job("tpl", real_pool, onAllTasksComplete="terminatejob", podTemplate={
        "spec": {"volumes": [{"name": "shared", "emptyDir": {}}],
                 "containers": [{"name": "helper", "image": "busybox",
                                 "command": ["sh", "-c", "echo from-sidecar > /shared/side.txt; exec sleep 3600"],
                                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}]}}))
    objects.create(task("reader", "tpl", "/bin/sh /config/run.sh",
                        applicationPackageReferences=[{"applicationId": "hello", "version": "1.0"},   # a ConfigMap
                                                      {"applicationId": "etc", "version": "1", "image": "busybox",
                                                       "imagePath": "/etc"}],
                        podTemplate={"metadata": {"labels": {"example.com/team": "a"}}, "spec": {
                            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                                        {"name": "config", "configMap": {"name": "settings"}}],
                            "containers": [{"name": "task",
                                            "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "token"}}}],
                                            "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                                             {"name": "config", "mountPath": "/config", "readOnly": True},
                                                             {"name": "shared", "mountPath": "/shared"}]}]}}))
    objects.create(task("nopackage", "tpl", "/bin/true", applicationPackageReferences=[{"applicationId": "absent", "version": "9"}]))

    st = objects.wait_state("Task", "reader", "completed", 180)
    assert st["executionInfo"]["result"] == "success", st
    out = core_v1.read_namespaced_pod_log(st["podName"], namespace, container="task")
    root = f"/var/lib/podbatch/{namespace}/{real_pool}"
    for line in ("config: hello-from-configmap", "pvc: on-the-volume", "sidecar: from-sidecar", "secret: s3cret",
                 f"package: {root}/applications/hello_1.0", "hello-from-package", "readme: plain-file",
                 "image package: root:x:0:0"):
        assert line in out, out
    assert (host_volume / "from-task.txt").read_text() == "written-by-task\n"
    assert Path(root, "applications", "hello_1.0", "readme.txt").read_text() == "plain-file"
    # the sidecar (sleep 3600) was stopped once the task ended: the pod is over, with success
    pod = wait_for("the pod to end", lambda: (lambda p: p if p.status.phase in ("Succeeded", "Failed") else None)(
        core_v1.read_namespaced_pod(st["podName"], namespace)), 60)
    assert pod.status.phase == "Succeeded" and pod.metadata.labels["example.com/team"] == "a"
    helper = next(c for c in pod.status.container_statuses if c.name == "helper")
    assert helper.state.terminated.exit_code == 0

    missing = objects.wait_state("Task", "nopackage", "completed", 120)
    info = missing["executionInfo"]
    assert info["result"] == "failure" and info["failureInfo"]["code"] == "ApplicationPackageNotFound", info
    assert "ConfigMap podbatch-app-absent.9" in info["failureInfo"]["message"]
    objects.wait_job_done("tpl", 60)


def test_a_template_binding_the_pod_to_a_node_is_refused(operator, objects, core_v1, namespace):
    objects.create(job("refused", "nowhere"))
    objects.create(task("pinned", "refused", "/bin/true", podTemplate={"spec": {"nodeName": REAL_NODE}}))
    cond = wait_for("the task's Valid condition", lambda: next(
        (c for c in objects.status("Task", "pinned").get("conditions") or [] if c["type"] == "Valid"), None), 60)
    assert cond["status"] == "False" and cond["reason"] == "InvalidSpec"
    assert "spec.podTemplate.spec.nodeName: podbatch binds task pods to their node itself; remove it" in cond["message"]
    events = wait_for("an InvalidSpec event", lambda: [e for e in core_v1.list_namespaced_event(namespace).items
                                                       if e.reason == "InvalidSpec" and e.involved_object.name == "pinned"], 30)
    assert "spec.podTemplate.spec.nodeName" in events[0].message
    time.sleep(2)
    assert not core_v1.list_namespaced_pod(namespace).items   # nothing ran


def test_a_task_pod_the_api_server_refuses_fails_the_task_with_its_message(operator, objects, core_v1, namespace):
    """A template podbatch accepts but the API server does not (an env var reading a field no
    pod has): the task does not stay preparing, it fails with PodRejected and the server's words."""
    from kit import kwok_pool
    objects.create(kwok_pool("rj", 1))
    objects.create(job("rejected", "rj"))
    objects.create(task("badenv", "rejected", "/bin/true", podTemplate={"spec": {"containers": [
        {"name": "task", "env": [{"name": "WHERE", "valueFrom": {"fieldRef": {"fieldPath": "spec.noSuchField"}}}]}]}}))
    st = objects.wait_state("Task", "badenv", "completed", 120)
    failure = st["executionInfo"]["failureInfo"]
    assert st["executionInfo"]["result"] == "failure" and failure["code"] == "PodRejected", failure
    assert "noSuchField" in failure["message"] or "fieldPath" in failure["message"], failure
