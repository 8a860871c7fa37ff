"""Pod templates (issue 14): what a template may and may not change (validation, as the
operator reports it), how pool, job and task templates merge into the pods podbatch
builds, mountConfiguration, application packages, and the sidecar stop mechanism run
for real under busybox."""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from podbatch import API_VERSION
from podbatch.api import InvalidObject, validate_object
from podbatch.core import apppackages, pods, podtemplates
from podbatch.core.tasks import pod_view

pytestmark = pytest.mark.unit

BUSYBOX = shutil.which("busybox")
PLACE = pods.Placement(namespace="ns", pool="p", node_name="n1", compute_node="c1")
ROOT = "/var/lib/podbatch/ns/p"


def _task(**spec) -> dict:
    return {"apiVersion": API_VERSION, "kind": "Task", "metadata": {"name": "t", "uid": "u"},
            "spec": {"jobName": "j", "commandLine": "echo hi", **spec}}


def _job(**spec) -> dict:
    return {"metadata": {"name": "j"}, "spec": {"poolInfo": {"poolId": "p"}, **spec}}


def _pod(*, pool=None, job=None, task=None) -> dict:
    return pods.task_pod(task=_task(**(task or {})), job=_job(**(job or {})), pool_spec={"image": "busybox", **(pool or {})},
                         placement=PLACE, attempt=1)


def _c(pod: dict, name: str) -> dict:
    return next(c for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []) if c["name"] == name)


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# --------------------------------------------------------------------------- refusals

REFUSALS = [
    ({"spec": {"nodeName": "n2"}}, "spec.podTemplate.spec.nodeName: podbatch binds task pods to their node itself; remove it"),
    ({"spec": {"nodeSelector": {"a": "b"}}}, "spec.podTemplate.spec.nodeSelector: podbatch places task pods"),
    ({"spec": {"affinity": {}}}, "spec.podTemplate.spec.affinity: podbatch places task pods"),
    ({"spec": {"tolerations": []}}, "spec.podTemplate.spec.tolerations: podbatch sets the tolerations"),
    ({"spec": {"restartPolicy": "OnFailure"}}, "spec.podTemplate.spec.restartPolicy: podbatch runs one pod per attempt"),
    ({"spec": {"activeDeadlineSeconds": 5}}, "use constraints.maxWallClockTime"),
    ({"spec": {"serviceAccountName": "admin"}}, "spec.podTemplate.spec.serviceAccountName: task pods get API access only"),
    ({"spec": {"hostNetwork": True}}, "spec.podTemplate.spec.hostNetwork: podbatch keeps pods off the host's namespaces"),
    ({"spec": {"securityContext": {"runAsUser": 0}}}, "spec.podTemplate.spec.securityContext.runAsUser: who a container runs as"),
    ({"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/etc"}}]}}, "spec.podTemplate.spec.volumes.0.hostPath: the only host paths"),
    ({"spec": {"volumes": [{"name": "podbatch-node", "emptyDir": {}}]}}, "volumes named podbatch-* are podbatch's own"),
    ({"spec": {"volumes": [{"name": "v"}]}}, "volume v needs exactly one source"),
    ({"spec": {"volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]}}, "volumes: v declared twice"),
    ({"metadata": {"labels": {"podbatch.io/role": "x"}}}, "labels podbatch.io/role: podbatch.io/ keys are podbatch's own"),
    ({"metadata": {"annotations": {"sim.podbatch.io/x": "1"}}}, "annotations sim.podbatch.io/x: podbatch.io/ keys"),
    ({"spec": {"containers": [{"name": "task", "image": "x"}]}}, "containers[0] (task): image: the task's image is containerSettings.imageName"),
    ({"spec": {"containers": [{"name": "task", "command": ["x"]}]}}, "command: podbatch runs commandLine through its wrapper"),
    ({"spec": {"containers": [{"name": "task", "env": [{"name": "AZ_BATCH_NODE_ID", "value": "x"}]}]}},
     "env AZ_BATCH_NODE_ID: AZ_BATCH_* and PODBATCH_* variables are podbatch's"),
    ({"spec": {"containers": [{"name": "task", "securityContext": {"privileged": True}}]}},
     "spec.podTemplate.spec.containers.0.securityContext.privileged: who a container runs as"),
    ({"spec": {"containers": [{"name": "task", "volumeMounts": [{"name": "v", "mountPath": "/var/lib/podbatch"}]}]}},
     "mountPath /var/lib/podbatch: podbatch mounts its node directories"),
    ({"spec": {"containers": [{"name": "task", "volumeMounts": [{"name": "podbatch-node", "mountPath": "/x"}]}]}},
     "name podbatch-node: volumes named podbatch-* are podbatch's own"),
    ({"spec": {"containers": [{"name": "side", "image": "busybox"}]}}, "command: the sidecar side needs its command"),
    ({"spec": {"containers": [{"name": "side", "command": ["sleep", "1"]}]}}, "image: the sidecar side needs an image"),
    ({"spec": {"containers": [{"name": "podbatch-x", "image": "b", "command": ["x"]}]}}, "a name podbatch uses for its own containers"),
    ({"spec": {"containers": [{"name": "s", "image": "b", "command": ["x"], "livenessProbe": {}}]}},
     "livenessProbe: a container restarted by a probe fails the pod"),
    ({"spec": {"containers": [{"name": "s", "image": "b", "command": ["x"]}, {"name": "s", "image": "b", "command": ["y"]}]}},
     "a second container named s"),
    ({"spec": {"initContainers": [{"name": "task", "image": "b"}]}}, "`task` is podbatch's main container, not an init container"),
    ({"spec": {"containers": [{"name": "task", "resources": {"limits": {"memory": "lots"}}}]}}, "resources.limits.memory"),
]


@pytest.mark.parametrize("template,message", REFUSALS)
def test_a_template_changing_what_podbatch_decides_is_refused_with_why(template, message):
    for kind, body in (("Task", _task(podTemplate=template)),
                       ("Job", {"apiVersion": API_VERSION, "kind": "Job", "metadata": {"name": "j"},
                                "spec": {"poolInfo": {"poolId": "p"}, "podTemplate": template}}),
                       ("Pool", {"apiVersion": API_VERSION, "kind": "Pool", "metadata": {"name": "p"},
                                 "spec": {"nodeGroup": {"provider": "kwok"}, "podTemplate": template}})):
        with pytest.raises(InvalidObject) as e:
            validate_object(body)
        assert message in str(e.value), f"{kind}: {e.value}"


def test_a_full_template_is_accepted():
    validate_object(_task(podTemplate={
        "metadata": {"labels": {"team": "a"}, "annotations": {"example.com/x": "1"}},
        "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "c"}},
                             {"name": "cfg", "configMap": {"name": "cm"}}, {"name": "scratch", "emptyDir": {}},
                             {"name": "s", "csi": {"driver": "x"}}],
                 "containers": [{"name": "task", "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                                 "envFrom": [{"configMapRef": {"name": "cm"}}], "resources": {"limits": {"memory": "1Gi", "cpu": "500m"}},
                                 "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                                 "securityContext": {"readOnlyRootFilesystem": True}},
                                {"name": "logs", "image": "busybox", "command": ["sleep", "3600"]}],
                 "initContainers": [{"name": "fetch", "image": "busybox", "command": ["true"]}],
                 "imagePullSecrets": [{"name": "reg"}], "runtimeClassName": "gvisor",
                 "securityContext": {"fsGroup": 1000, "supplementalGroups": [5]}}}))


def test_an_invalid_spec_names_the_refused_field_at_its_path():
    """The message the operator puts in condition InvalidSpec and the Event (engine._validate)."""
    with pytest.raises(InvalidObject) as e:
        validate_object(_task(podTemplate={"spec": {"nodeName": "elsewhere"}}))
    assert str(e.value) == ("invalid Task 't':\n  spec.podTemplate.spec.nodeName: "
                            "podbatch binds task pods to their node itself; remove it")


# --------------------------------------------------------------------------- merge

def test_without_templates_the_pod_is_podbatchs_own():
    pod = _pod()
    assert [c["name"] for c in pod["spec"]["containers"]] == ["task"]
    assert "initContainers" not in pod["spec"] and "securityContext" not in pod["spec"]


def test_podbatchs_fields_win_over_every_template():
    tpl = {"metadata": {"labels": {"team": "a"}}, "spec": {"containers": [{"name": "task", "resources": {"limits": {"cpu": "1"}}}]}}
    plain, pod = _pod(), _pod(pool={"podTemplate": tpl}, job={"podTemplate": tpl}, task={"podTemplate": tpl})
    for field in ("nodeName", "tolerations", "restartPolicy", "terminationGracePeriodSeconds", "automountServiceAccountToken"):
        assert pod["spec"][field] == plain["spec"][field]
    assert _c(pod, "task")["command"] == _c(plain, "task")["command"]
    assert _c(pod, "task")["securityContext"] == _c(plain, "task")["securityContext"]
    assert {k: v for k, v in pod["metadata"]["labels"].items() if k != "team"} == plain["metadata"]["labels"]


ENV_CASES = [
    # (pool template env, job common env, job template env, task env, task template env) -> value of X
    ([("X", "pool-tpl")], [], [], [], [], "pool-tpl"),
    ([("X", "pool-tpl")], [("X", "job-common")], [], [], [], "job-common"),
    ([], [("X", "job-common")], [("X", "job-tpl")], [], [], "job-tpl"),
    ([], [], [("X", "job-tpl")], [("X", "task-env")], [], "task-env"),
    ([], [], [], [("X", "task-env")], [("X", "task-tpl")], "task-tpl"),
    ([("X", "pool-tpl")], [], [], [], [("X", "task-tpl")], "task-tpl"),
]


def _tpl_env(pairs):
    return {"spec": {"containers": [{"name": "task", "env": [{"name": n, "value": v} for n, v in pairs]}]}} if pairs else None


@pytest.mark.parametrize("pool_t,job_c,job_t,task_e,task_t,expected", ENV_CASES)
def test_env_merges_pool_then_job_then_task(pool_t, job_c, job_t, task_e, task_t, expected):
    kv = lambda pairs: [{"name": n, "value": v} for n, v in pairs]  # noqa: E731
    pod = _pod(pool={"podTemplate": _tpl_env(pool_t)} if pool_t else None,
               job={"commonEnvironmentSettings": kv(job_c), **({"podTemplate": _tpl_env(job_t)} if job_t else {})},
               task={"environmentSettings": kv(task_e), **({"podTemplate": _tpl_env(task_t)} if task_t else {})})
    env = _c(pod, "task")["env"]
    assert [e["value"] for e in env if e["name"] == "X"] == [expected]


def test_env_from_secrets_keeps_value_from_and_batch_variables_win():
    pod = _pod(task={"podTemplate": {"spec": {"containers": [{"name": "task",
        "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
        "envFrom": [{"secretRef": {"name": "all"}}]}]}}})
    main = _c(pod, "task")
    assert _env(main)["TOKEN"] == {"secretKeyRef": {"name": "s", "key": "k"}}
    assert main["envFrom"] == [{"secretRef": {"name": "all"}}]
    assert _env(main)["AZ_BATCH_TASK_ID"] == "t"   # env wins over envFrom in Kubernetes


def test_volumes_secrets_resources_and_mounts_merge_in_order():
    pool = {"podTemplate": {"spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "pool-claim"}}],
                                     "imagePullSecrets": [{"name": "a"}],
                                     "containers": [{"name": "task", "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}}]}}}
    job = {"podTemplate": {"spec": {"imagePullSecrets": [{"name": "b"}, {"name": "a"}]}}}
    task = {"resources": {"limits": {"memory": "2Gi", "cpu": "2"}},
            "podTemplate": {"spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "task-claim"}}],
                                     "containers": [{"name": "task", "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                                                     "resources": {"limits": {"memory": "3Gi"}}}]}}}
    pod = _pod(pool=pool, job=job, task=task)
    assert [v for v in pod["spec"]["volumes"] if v["name"] == "data"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "task-claim"}}]
    assert pod["spec"]["imagePullSecrets"] == [{"name": "a"}, {"name": "b"}]
    main = _c(pod, "task")
    assert main["resources"] == {"limits": {"memory": "3Gi", "cpu": "2"}, "requests": {"cpu": "1"}}
    assert {"name": "data", "mountPath": "/data"} in main["volumeMounts"]
    assert main["volumeMounts"][0]["name"] == "podbatch-node"


def test_labels_annotations_runtime_class_and_pod_security_groups():
    pod = _pod(pool={"podTemplate": {"metadata": {"labels": {"a": "pool", "b": "pool"}},
                                     "spec": {"runtimeClassName": "gvisor", "securityContext": {"fsGroup": 2000}}}},
               task={"podTemplate": {"metadata": {"labels": {"b": "task"}, "annotations": {"x/y": "1"}},
                                     "spec": {"runtimeClassName": "gvisor", "securityContext": {"supplementalGroups": [7]}}}})
    assert pod["metadata"]["labels"]["a"] == "pool" and pod["metadata"]["labels"]["b"] == "task"
    assert pod["metadata"]["annotations"]["x/y"] == "1" and pod["metadata"]["annotations"]["podbatch.io/task-name"] == "t"
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["spec"]["securityContext"] == {"fsGroup": 2000, "supplementalGroups": [7]}
    assert "initContainers" not in pod["spec"]


def _conflict(pod: dict) -> str:
    """The reason the setup container fails with (its first step)."""
    script = _c(pod, podtemplates.SETUP_CONTAINER)["command"][2]
    line = next(x for x in script.splitlines() if x.startswith("pb_fail PodTemplateConflict"))
    return shlex.split(line)[2]


CONFLICTS = [
    ({"runtimeClassName": "gvisor"}, {"runtimeClassName": "runc"}, "runtimeClassName runc, but the pool's is gvisor"),
    ({"securityContext": {"fsGroup": 2000}}, {"securityContext": {"fsGroup": 0}}, "securityContext.fsGroup 0, but the pool's is 2000"),
    ({}, {"containers": [{"name": "task", "volumeMounts": [{"name": "nowhere", "mountPath": "/x"}]}]},
     "mounts volume nowhere into task, but no template declares a volume of that name"),
    ({"volumes": [{"name": "a", "emptyDir": {}}], "containers": [{"name": "task", "volumeMounts": [{"name": "a", "mountPath": "/d"}]}]},
     {"containers": [{"name": "task", "volumeMounts": [{"name": "a", "mountPath": "/d/"}]}]},
     "mounts a at /d/ in task, where the pool's podTemplate mounts a volume already"),
]


@pytest.mark.parametrize("pool_spec,task_spec,message", CONFLICTS)
def test_a_conflict_between_templates_fails_the_task_with_why(pool_spec, task_spec, message):
    pod = _pod(pool={"podTemplate": {"spec": pool_spec}}, task={"podTemplate": {"spec": task_spec}})
    assert message in _conflict(pod)
    assert pod["spec"].get("runtimeClassName") is None and "securityContext" not in pod["spec"]   # built without templates
    # what the task reports once the setup container failed that way
    failed = {"metadata": {"name": "t-1"}, "status": {"phase": "Failed", "initContainerStatuses": [
        {"name": "podbatch-setup", "state": {"terminated": {"exitCode": 1, "message": f"podbatch:PodTemplateConflict:{message}"}}}]}}
    assert pod_view(failed).preprocessing_failure == {"category": "usererror", "code": "PodTemplateConflict", "message": message}


def test_a_mount_inside_a_custom_node_root_is_a_conflict():
    pl = pods.Placement(namespace="ns", pool="p", node_name="n1", compute_node="c1", node_root="/data/pb")
    tpl = {"spec": {"volumes": [{"name": "v", "emptyDir": {}}],
                    "containers": [{"name": "task", "volumeMounts": [{"name": "v", "mountPath": "/data/pb/ns/p/shared"}]}]}}
    pod = pods.task_pod(task=_task(podTemplate=tpl), job=_job(), pool_spec={}, placement=pl, attempt=1)
    assert "inside podbatch's own mounts (the node directories are at /data/pb/ns/p)" in _conflict(pod)


def test_sidecars_run_as_the_task_under_the_stopping_wrapper():
    pod = _pod(task={"userIdentity": {"autoUser": {"elevationLevel": "admin"}},
                     "podTemplate": {"spec": {"containers": [{"name": "logs", "image": "busybox", "command": ["sleep"], "args": ["3600"],
                                                              "securityContext": {"readOnlyRootFilesystem": True}}]}}})
    main, side = _c(pod, "task"), _c(pod, "logs")
    assert side["command"] == ["/podbatch-run/bin/sh", "-c", podtemplates.SIDECAR_WRAPPER, "podbatch-sidecar", "sleep", "3600"]
    assert "args" not in side and side["imagePullPolicy"] == "IfNotPresent"
    assert side["securityContext"] == {**main["securityContext"], "readOnlyRootFilesystem": True}
    assert _env(main)["PODBATCH_RUN_DIR"] == "/podbatch-run"
    run = {"name": "podbatch-run", "mountPath": "/podbatch-run"}
    assert run in main["volumeMounts"] and run in side["volumeMounts"]
    assert {"name": "podbatch-run", "emptyDir": {}} in pod["spec"]["volumes"]
    assert pod["spec"]["initContainers"][0]["name"] == "podbatch-setup"
    assert podtemplates.RUN_SETUP in pod["spec"]["initContainers"][0]["command"][2]


def test_template_init_containers_run_after_podbatchs_own():
    pod = _pod(task={"resourceFiles": [{"httpUrl": "http://x/f"}],
                     "podTemplate": {"spec": {"initContainers": [{"name": "fetch", "image": "busybox", "command": ["true"]}]}}})
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["resource-files", "fetch"]
    assert _c(pod, "fetch")["securityContext"] == _c(pod, "task")["securityContext"]


def test_the_pools_template_reaches_the_start_task_and_not_a_bare_node_preparation():
    pool = {"metadata": {"name": "p"}, "spec": {"image": "busybox", "startTask": {"commandLine": "true"},
            "podTemplate": {"metadata": {"labels": {"team": "a"}},
                            "spec": {"containers": [{"name": "task", "env": [{"name": "X", "value": "1"}]},
                                                    {"name": "side", "image": "busybox", "command": ["sleep", "9"]}]}},
            "applicationPackageReferences": [{"applicationId": "tool", "version": "1.0"}]}}
    pod = pods.nodeprep_pod(pool=pool, placement=PLACE, boot="0", retry=0, wipe=False)
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["node-directories", "podbatch-setup"]
    assert [c["name"] for c in pod["spec"]["containers"]] == ["start-task", "side"]
    assert _env(_c(pod, "start-task"))["X"] == "1"
    assert _env(_c(pod, "start-task"))["AZ_BATCH_APP_PACKAGE_tool_1_0"] == f"{ROOT}/applications/tool_1.0"
    assert pod["metadata"]["labels"]["team"] == "a"
    bare = pods.nodeprep_pod(pool={"metadata": {"name": "p"}, "spec": {**pool["spec"], "startTask": None}},
                             placement=PLACE, boot="0", retry=0, wipe=False)
    assert [c["name"] for c in bare["spec"]["containers"]] == ["start-task"] and "team" not in bare["metadata"]["labels"]


def test_the_exit_code_is_the_task_containers_not_a_sidecars():
    pod = {"metadata": {"name": "t-1"}, "status": {"phase": "Failed", "containerStatuses": [
        {"name": "logs", "state": {"terminated": {"exitCode": 0}}},
        {"name": "task", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}},
        {"name": "zz", "state": {"terminated": {"exitCode": 0}}}]}}
    assert pod_view(pod).exit_code == 3


# --------------------------------------------------------------------------- mountConfiguration

def test_mount_configuration_maps_onto_volumes_under_the_mounts_dir():
    mc = [{"nfsMountConfiguration": {"source": "nfs.example.com:/export/a", "relativeMountPath": "nfs"}},
          {"azureFileShareConfiguration": {"accountName": "acct", "azureFileUrl": "https://acct.file.core.windows.net/share1",
                                           "relativeMountPath": "files", "secretName": "azure-cred", "mountOptions": "dir_mode=0777"}},
          {"azureBlobFileSystemConfiguration": {"accountName": "acct", "containerName": "c1", "relativeMountPath": "blob",
                                                "secretName": "azure-cred"}}]
    validate_object({"apiVersion": API_VERSION, "kind": "Pool", "metadata": {"name": "p"},
                     "spec": {"nodeGroup": {"provider": "kwok"}, "mountConfiguration": mc}})
    pod = _pod(pool={"mountConfiguration": mc})
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["podbatch-mount-0"]["nfs"] == {"server": "nfs.example.com", "path": "/export/a", "readOnly": False}
    assert vols["podbatch-mount-1"]["csi"] == {"driver": "file.csi.azure.com", "nodePublishSecretRef": {"name": "azure-cred"},
                                               "volumeAttributes": {"shareName": "share1", "secretName": "azure-cred",
                                                                    "mountOptions": "dir_mode=0777"}}
    assert vols["podbatch-mount-2"]["csi"]["driver"] == "blob.csi.azure.com"
    mounts = {m["name"]: m["mountPath"] for m in _c(pod, "task")["volumeMounts"]}
    assert mounts["podbatch-mount-0"] == f"{ROOT}/fsmounts/nfs" == f"{_env(_c(pod, 'task'))['AZ_BATCH_NODE_MOUNTS_DIR']}/nfs"
    assert mounts["podbatch-mount-2"] == f"{ROOT}/fsmounts/blob"


@pytest.mark.parametrize("entry,message", [
    ({"cifsMountConfiguration": {"source": "//srv/share", "relativeMountPath": "c"}}, "podbatch mounts no CIFS share itself"),
    ({"azureBlobFileSystemConfiguration": {"accountName": "a", "containerName": "c", "relativeMountPath": "b",
                                           "secretName": "s", "blobfuseOptions": "-o x"}}, "blobfuse runs inside the blob CSI driver"),
    ({"azureFileShareConfiguration": {"accountName": "a", "azureFileUrl": "https://a.file.core.windows.net/s",
                                      "relativeMountPath": "f", "secretName": "s", "accountKey": "k"}}, "put the account name and key into a Secret"),
    ({"nfsMountConfiguration": {"source": "srv:/x", "relativeMountPath": "n", "mountOptions": "vers=4"}}, "an inline nfs volume takes no mount options"),
    ({}, "needs exactly one of nfsMountConfiguration"),
])
def test_mount_configuration_that_podbatch_cannot_mount_is_refused(entry, message):
    with pytest.raises(InvalidObject) as e:
        validate_object({"apiVersion": API_VERSION, "kind": "Pool", "metadata": {"name": "p"},
                         "spec": {"nodeGroup": {"provider": "kwok"}, "mountConfiguration": [entry]}})
    assert message in str(e.value)


# --------------------------------------------------------------------------- application packages

@pytest.mark.parametrize("app,version,env,config_map,directory", [
    ("blender", "2.7", "AZ_BATCH_APP_PACKAGE_blender_2_7", "podbatch-app-blender.2.7", "blender_2.7"),
    ("My_App", "1.0-beta#2", "AZ_BATCH_APP_PACKAGE_My_App_1_0_beta_2", "podbatch-app-my-app.1.0-beta#2", "My_App_1.0-beta#2"),
    ("ffmpeg", None, "AZ_BATCH_APP_PACKAGE_ffmpeg", "podbatch-app-ffmpeg", "ffmpeg"),
    ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Batch/batchAccounts/a/applications/tool", "3",
     "AZ_BATCH_APP_PACKAGE_tool_3", "podbatch-app-tool.3", "tool_3"),
])
def test_package_names_follow_batch(app, version, env, config_map, directory):
    [p] = apppackages.packages([{"applicationId": app, **({"version": version} if version else {})}])
    assert apppackages.env_name(p.app, p.version) == env
    assert p.config_map == config_map and p.dir_name == directory


def test_pool_and_task_packages_are_unpacked_by_the_setup_container():
    pod = _pod(pool={"applicationPackageReferences": [{"applicationId": "a", "version": "1"}, {"applicationId": "b", "version": "1"}]},
               task={"applicationPackageReferences": [{"applicationId": "b", "version": "1", "configMapName": "my-b"},
                                                      {"applicationId": "c"}]})
    env = _env(_c(pod, "task"))
    assert env["AZ_BATCH_APP_PACKAGE_a_1"] == f"{ROOT}/applications/a_1"
    assert env["AZ_BATCH_APP_PACKAGE_b_1"] == f"{ROOT}/applications/b_1"
    assert env["AZ_BATCH_APP_PACKAGE_c"] == f"{ROOT}/applications/c"
    cms = [v["configMap"] for v in pod["spec"]["volumes"] if "configMap" in v and v["name"] != pods.WRAPPER_VOLUME]
    assert cms == [{"name": n, "optional": True, "defaultMode": 0o755} for n in ("podbatch-app-a.1", "my-b", "podbatch-app-c")]
    setup = _c(pod, "podbatch-setup")
    assert {"name": "podbatch-node", "mountPath": ROOT} in setup["volumeMounts"]
    assert f"/podbatch-apps/1 {ROOT}/applications/b_1" in setup["command"][2]
    assert setup["securityContext"] == _c(pod, "task")["securityContext"]


def test_an_image_package_is_copied_by_its_own_init_container():
    pod = _pod(task={"applicationPackageReferences": [{"applicationId": "tool", "version": "2", "image": "reg/tool:2",
                                                       "imagePath": "/opt/tool"}]})
    names = [c["name"] for c in pod["spec"]["initContainers"]]
    assert names == ["podbatch-setup", "podbatch-app-0"]
    app = _c(pod, "podbatch-app-0")
    assert app["image"] == "reg/tool:2" and app["command"][0] == "/podbatch-run/bin/sh"
    assert f"/opt/tool {ROOT}/applications/tool_2" in app["command"][2]
    assert podtemplates.RUN_SETUP in _c(pod, "podbatch-setup")["command"][2]
    with pytest.raises(InvalidObject, match="image and imagePath go together"):
        validate_object(_task(applicationPackageReferences=[{"applicationId": "tool", "image": "reg/tool:2"}]))


def test_a_missing_package_is_a_preprocessing_error():
    failed = {"metadata": {"name": "t-1"}, "status": {"phase": "Failed", "initContainerStatuses": [{"name": "podbatch-setup", "state": {
        "terminated": {"exitCode": 1, "message": "podbatch:ApplicationPackageNotFound:application package x version 1, "
                                                 "ConfigMap podbatch-app-x.1, was not found (or is empty)"}}}]}}
    info = pod_view(failed).preprocessing_failure
    assert info["code"] == "ApplicationPackageNotFound" and "ConfigMap podbatch-app-x.1" in info["message"]


def _unpack(tmp_path: Path, src: Path, target: Path) -> subprocess.CompletedProcess:
    script = 'pb_fail() { echo "FAIL:$1:$2"; exit 1; }\n' + apppackages.UNPACK + f'\npb_pkg pkg "{src}" "{target}"\n'
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)


def test_the_unpack_step_copies_files_unzips_zips_and_runs_once(tmp_path):
    src, target = tmp_path / "cm", tmp_path / "apps" / "tool_1"
    src.mkdir()
    (src / "run.sh").write_text("echo hi\n")
    with zipfile.ZipFile(src / "bundle.zip", "w") as z:
        z.writestr("bin/tool", "binary")
    (src / "..data").mkdir()   # what a ConfigMap volume also holds
    r = _unpack(tmp_path, src, target)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (target / "run.sh").read_text() == "echo hi\n" and (target / "bin" / "tool").read_text() == "binary"
    assert not (target / "..data").exists() and not (target / "bundle.zip").exists()
    (src / "run.sh").write_text("changed\n")
    assert _unpack(tmp_path, src, target).returncode == 0
    assert (target / "run.sh").read_text() == "echo hi\n"   # once per node and version


@pytest.mark.parametrize("kubelet_links", [False, True])
def test_the_unpack_step_fails_for_a_missing_package(tmp_path, kubelet_links):
    """A missing optional ConfigMap: no directory, or (kubelet 1.20) one with only its ..data links."""
    src = tmp_path / "cm"
    if kubelet_links:
        (src / "..2026_12_01_04_30_00.1").mkdir(parents=True)
        os.symlink("..2026_12_01_04_30_00.1", src / "..data")
    r = _unpack(tmp_path, src, tmp_path / "apps" / "x")
    assert r.returncode == 1 and "FAIL:ApplicationPackageNotFound:pkg was not found" in r.stdout
    assert not (tmp_path / "apps" / "x").exists()


# --------------------------------------------------------------------------- the sidecar stop, for real

def _run_dir(tmp_path: Path) -> Path:
    """podtemplates.RUN_SETUP run as the setup container runs it: busybox sh, applets on PATH."""
    run, applets = tmp_path / "run", tmp_path / "applets"
    applets.mkdir()
    for a in ("busybox", "sh", "mkdir", "cp", "ln", "chmod", "head", "printf"):
        os.symlink(BUSYBOX, applets / a)
    script = (podtemplates.SETUP_PRELUDE.replace("/dev/termination-log", "/dev/null") + "\n"
              + podtemplates.RUN_SETUP.replace("/podbatch-run", str(run)))
    r = subprocess.run([BUSYBOX, "sh", "-c", script], env={"PATH": str(applets)}, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert all((run / "bin" / a).exists() for a in podtemplates.RUN_APPLETS)
    return run


def _sidecar(run: Path, **env: str) -> subprocess.Popen:
    wrapper = podtemplates.SIDECAR_WRAPPER.replace("/podbatch-run", str(run))
    return subprocess.Popen([BUSYBOX, "sh", "-c", wrapper, "podbatch-sidecar", "sleep", "600"], env={"PATH": "/usr/bin:/bin", **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _task_wrapper(tmp_path: Path, run: Path, *argv: str) -> subprocess.Popen:
    env = {"PATH": f"{run}/bin:/usr/bin:/bin", "PODBATCH_RUN_DIR": str(run), "AZ_BATCH_TASK_DIR": str(tmp_path / "task"),
           "AZ_BATCH_TASK_WORKING_DIR": str(tmp_path / "task" / "wd")}
    (tmp_path / "task").mkdir(exist_ok=True)
    return subprocess.Popen([BUSYBOX, "sh", "-c", pods.TASK_WRAPPER, "podbatch-task", *argv], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _ends_within(proc: subprocess.Popen, seconds: float) -> int:
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9) if proc.args[-2:] == ["sleep", "600"] else proc.kill()
        raise AssertionError(f"still running after {seconds} s") from None


def _sidecar_command_gone(side: subprocess.Popen) -> bool:
    """The sidecar's own command (`sleep 600`, in the wrapper's session) was stopped too."""
    out = subprocess.run(["ps", "-o", "pid=,sid=,args="], capture_output=True, text=True).stdout
    return not any(line.split()[1] == str(side.pid) and "sleep 600" in line for line in out.splitlines() if line.strip())


@pytest.mark.skipif(not BUSYBOX, reason="no busybox here to run the wrappers")
def test_a_sidecar_ends_with_exit_0_once_the_task_ends(tmp_path):
    run = _run_dir(tmp_path)
    side = _sidecar(run)   # starts before the task, as it may in a pod
    time.sleep(2.5)
    assert side.poll() is None
    task = _task_wrapper(tmp_path, run, "sh", "-c", "sleep 3; exit 4")
    assert _ends_within(task, 20) == 4
    assert (run / "done").exists()
    t0 = time.monotonic()
    assert _ends_within(side, 10) == 0
    assert time.monotonic() - t0 < 6 and _sidecar_command_gone(side)


@pytest.mark.skipif(not BUSYBOX, reason="no busybox here to run the wrappers")
def test_a_sidecar_ends_when_the_task_is_killed_outright(tmp_path):
    """SIGKILL (an OOM kill) writes no `done`: the heartbeat standing still ends the sidecar."""
    run = _run_dir(tmp_path)
    task = _task_wrapper(tmp_path, run, "sleep", "600")
    side = _sidecar(run, PB_STALL_CHECKS="4")   # ~8 s without a heartbeat (10, ~20 s, in pods)
    deadline = time.monotonic() + 10
    while not (run / "alive").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(5)
    assert side.poll() is None   # the task still runs: its heartbeat moves
    # the container dies: the wrapper and everything it started, without a trap running
    os.kill(task.pid, signal.SIGSTOP)   # so that it cannot notice its children go first
    subprocess.run(["pkill", "-KILL", "-P", str(task.pid)], check=False)
    os.kill(task.pid, signal.SIGKILL)
    task.wait(timeout=10)
    assert not (run / "done").exists()
    assert _ends_within(side, 25) == 0
    assert _sidecar_command_gone(side)
