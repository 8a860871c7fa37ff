"""Pod manifests for task attempts and node preparation (start task). Pure: dicts in, dicts out.

Batch semantics kept here:
- `commandLine` is split like a command line and run without a shell; a tiny wrapper
  (busybox sh, in the image) tees stdout/stderr into stdout.txt / stderr.txt in the task
  dir while the same output still reaches `kubectl logs`, and passes SIGTERM/SIGINT (a
  terminate, a requeue) on to the command's process group so its own cleanup runs.
- Every AZ_BATCH_* variable that applies is set; the node directories are hostPath
  volumes mounted at the same path inside the pod as on the node.
- Pods pass the `restricted` Pod Security Standard except for those hostPath volumes
  (and the root init container of the node-preparation pod that creates the directories).
- Pod templates of the pool, the job and the task, the pool's mountConfiguration and
  application packages are added last (`_with_templates`, core/podtemplates.py,
  core/apppackages.py); podbatch's own fields win.
"""
from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from typing import Any

from podbatch import GROUP
from podbatch.core import apppackages, files, naming, podtemplates
from podbatch.core.durations import seconds

NONADMIN_UID = 1000

# Runs the task's argv ("$@") with stdout/stderr teed into the task dir. No eval of the
# user's command: it is passed as arguments, exactly as split from commandLine.
# A gang instance first waits for its host list (see task_pod). Daemons started by a
# coordination command inherit the tee pipes; once the command ended its output is
# given 3 s to drain, so such a daemon cannot keep the task from ending. A coordination
# command that fails ends the instance with its exit code (Batch: the task then fails).
#
# Stop signals (issue 10). The wrapper is the container's PID 1, which the kernel spares
# every signal it has no handler for, so it traps SIGTERM (what the kubelet sends when the
# pod is deleted: terminate, requeue, a gang torn down) and SIGINT, and passes them on.
# Commands run in the background (a trapped signal interrupts `wait`, never a foreground
# command), each under `setsid` where the image has it (busybox has), so the signal goes
# to the command's whole process group: a script's foreground child gets it too and the
# script's own `trap ... TERM` runs at once. Then the wrapper keeps waiting for the
# command (within the pod's grace period), drains its output as always and exits with
# its exit code (128+15 if the signal ended it). A signal before the command started
# (a gang instance waiting for its hosts) ends the wrapper with 128+signal; one after it
# reaches the coordination command's daemons too. A background command starts with
# SIGINT ignored (POSIX, no job control without a tty), so SIGINT goes on as SIGINT to a
# command that handles or defaults it and as SIGTERM to one that (still) ignores it.
# Its state is in pb_* variables: the first stop signal and its exit code, the last
# signal, a count of signals, the process groups started and those last signalled.
# With sidecars (PODBATCH_RUN_DIR, core/podtemplates.py) it keeps a heartbeat there while
# it runs and writes `done` when it exits; the sidecars' wrappers stop them on either sign.
TASK_WRAPPER = r'''
pb_sig=; pb_code=; pb_last=; pb_count=0; pb_groups=; pb_told=
pb_kill() {
  pb_n=$2
  [ "$pb_n" != INT ] || while read -r pb_k pb_v; do
    [ "$pb_k" != SigIgn: ] || case ${pb_v#"${pb_v%?}"} in [2367abefABEF]) pb_n=TERM; esac
  done 2>/dev/null </proc/$1/status
  kill -$pb_n $pb_grp$1 2>/dev/null
}
pb_stop() {
  pb_count=$((pb_count+1)); pb_last=$1; [ -n "$pb_sig" ] || { pb_sig=$1; pb_code=$2; }
  for pb_t in $pb_groups; do pb_kill $pb_t $1; done; pb_told=$pb_groups
}
trap 'pb_stop TERM 143' TERM; trap 'pb_stop INT 130' INT
pb_wait() { while :; do pb_e=$pb_count; wait "$@" 2>/dev/null; pb_r=$?; [ $pb_e != $pb_count ] || return $pb_r; done; }
pb_run() {
  pb_e=$pb_count; [ -z "$pb_sig" ] || return $pb_code
  ${pb_grp:+setsid} "$@" <&5 5<&- & pb_q=$!; pb_groups="$pb_groups $pb_q"
  [ $pb_e = $pb_count ] || [ "$pb_told" = "$pb_groups" ] || pb_kill $pb_q $pb_last
  pb_wait $pb_q
}
pb_grp=; ! command -v setsid >/dev/null 2>&1 || pb_grp=-
if [ -n "$PODBATCH_RUN_DIR" ]; then
  (n=0; while :; do n=$((n+1)); echo $n >"$PODBATCH_RUN_DIR/alive"; "$PODBATCH_RUN_DIR/bin/sleep" 2; done) </dev/null >/dev/null 2>&1 & pb_hb=$!
  trap 'kill $pb_hb 2>/dev/null; : >"$PODBATCH_RUN_DIR/done"' EXIT
fi
if [ -n "$PODBATCH_HOSTS_FILE" ]; then
  while [ -z "$pb_sig" ] && [ ! -s "$PODBATCH_HOSTS_FILE" ]; do sleep 0.2 2>/dev/null || sleep 1; done
  [ -z "$pb_sig" ] || exit $pb_code
  AZ_BATCH_HOST_LIST=$(cat "$PODBATCH_HOSTS_FILE"); AZ_BATCH_NODE_LIST=$(echo "$AZ_BATCH_HOST_LIST" | tr , ';')
  export AZ_BATCH_HOST_LIST AZ_BATCH_NODE_LIST AZ_BATCH_MASTER_NODE="${AZ_BATCH_HOST_LIST%%,*}:6000"
fi
d="$AZ_BATCH_TASK_DIR"; mkdir -p "$AZ_BATCH_TASK_WORKING_DIR" 2>/dev/null
[ "$PODBATCH_KEEP_WORKDIR" = 1 ] || cd "$AZ_BATCH_TASK_WORKING_DIR" 2>/dev/null || true
f="/tmp/.podbatch-$$"; mkfifo "$f.o" "$f.e" || exec "$@"
tee "$d/stdout.txt" <"$f.o" & a=$!
tee "$d/stderr.txt" <"$f.e" >&2 & b=$!
exec 3>"$f.o" 4>"$f.e"; { true 5<&0; } 2>/dev/null && exec 5<&0 || exec 5</dev/null
rc=0
if [ -n "$PODBATCH_COORDINATION" ]; then
  pb_run sh -c "$PODBATCH_COORDINATION" podbatch-coordination >&3 2>&4 || {
    rc=$?; [ -n "$pb_sig" ] || echo "podbatch: the coordination command exited with $rc" >&4; }
fi
if [ $rc = 0 ] && [ "$PODBATCH_THEN_WAIT" = 1 ]; then
  exec 3>&- 4>&-; pb_wait $a $b; rm -f "$f.o" "$f.e"; pb_run sleep 2147483647; exit
fi
if [ $rc = 0 ] && [ $# -gt 0 ]; then pb_run "$@" >&3 2>&4; rc=$?; fi
exec 3>&- 4>&- 5<&-; (sleep 3; kill $a $b) >/dev/null 2>&1 & k=$!
pb_wait $a $b; kill $k 2>/dev/null; rm -f "$f.o" "$f.e"
[ -z "$PODBATCH_UPLOAD" ] || sh -c "$PODBATCH_UPLOAD" podbatch-upload "$rc" >"$d/fileuploadout.txt" 2>"$d/fileuploaderr.txt"
exit $rc
'''.strip()

GANG_DIR = "/etc/podbatch"   # a gang instance's downward-API files (hosts: the host list)

# A task pod reads TASK_WRAPPER from a ConfigMap of its namespace, mounted read-only at
# WRAPPER_DIR, instead of carrying its 2.9 KB in `command`: the pod is about half the size,
# and every write of it (its create, each status update of the kubelet) and every watch
# event of it costs the API server, etcd and each watcher about half as much (docs/bench.md).
# The ConfigMap is immutable and named after the script's digest, so an operator with
# another wrapper never changes what a running pod reads; the engine creates it in a
# namespace before that namespace's first task pod (controllers/executor.py).
WRAPPER_VOLUME = "podbatch-wrapper"
WRAPPER_DIR = "/etc/podbatch-wrapper"
WRAPPER_FILE = "task.sh"
WRAPPER_CONFIGMAP = f"podbatch-wrapper-{hashlib.sha256(TASK_WRAPPER.encode()).hexdigest()[:10]}"


def wrapper_configmap(namespace: str) -> dict:
    """The ConfigMap every task pod of a namespace reads its wrapper from."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": WRAPPER_CONFIGMAP, "namespace": namespace,
                         "labels": {"app.kubernetes.io/managed-by": "podbatch", "app.kubernetes.io/component": "task-wrapper"}},
            "data": {WRAPPER_FILE: TASK_WRAPPER + "\n"}, "immutable": True}


def wrapper_configmap_of(pod: dict) -> str | None:
    """The wrapper ConfigMap a pod reads (None for a pod that carries no such volume)."""
    for v in (pod.get("spec") or {}).get("volumes") or ():
        if v.get("name") == WRAPPER_VOLUME and "configMap" in v:
            return v["configMap"].get("name")
    return None

NODEPREP_SCRIPT = r'''
set -e
r="$AZ_BATCH_NODE_ROOT_DIR"
if [ "$PODBATCH_WIPE" = "1" ]; then find "$r" -mindepth 1 -maxdepth 1 -exec rm -rf {} + 2>/dev/null || true; fi
mkdir -p "$r/shared" "$r/startup" "$r/workitems" "$r/applications"
chmod 1777 "$r" "$r/shared" "$r/startup" "$r/workitems" "$r/applications"
'''.strip()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an attempt runs: the pool's node and the values Batch exposes about it."""
    namespace: str
    pool: str
    node_name: str          # Kubernetes Node
    compute_node: str       # ComputeNode name (AZ_BATCH_NODE_ID)
    is_dedicated: bool = True
    node_root: str = "/var/lib/podbatch"


def split_command_line(command_line: str) -> list[str]:
    """Split like a command line (Batch runs it without a shell)."""
    return shlex.split(command_line)


def node_root_dir(p: Placement) -> str:
    return f"{p.node_root.rstrip('/')}/{p.namespace}/{p.pool}"


def node_env(p: Placement) -> dict[str, str]:
    """The AZ_BATCH_* variables every pod on a pool node gets."""
    root = node_root_dir(p)
    return {
        "AZ_BATCH_ACCOUNT_NAME": p.namespace,
        "AZ_BATCH_POOL_ID": p.pool,
        "AZ_BATCH_NODE_ID": p.compute_node,
        "AZ_BATCH_NODE_IS_DEDICATED": "true" if p.is_dedicated else "false",
        "AZ_BATCH_NODE_ROOT_DIR": root,
        "AZ_BATCH_NODE_SHARED_DIR": f"{root}/shared",
        "AZ_BATCH_NODE_STARTUP_DIR": f"{root}/startup",
    }


def _env_list(*layers: dict[str, str] | list[dict]) -> list[dict]:
    """Env entries, a later layer's variable over an earlier one's: a layer is a
    name -> value map or a list of Kubernetes env entries (a template's, maybe valueFrom)."""
    merged: dict[str, dict] = {}
    for layer in layers:
        if isinstance(layer, dict):
            merged.update({k: {"name": k, "value": str(v)} for k, v in layer.items()})
        else:
            merged.update({e["name"]: e for e in layer})
    return list(merged.values())


def _settings(items: list[dict] | None) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in items or []}


def security_context(user_identity: dict | None) -> dict[str, Any]:
    """userIdentity → securityContext. autoUser admin runs as root; everything else as a
    non-root user with the `restricted` profile."""
    auto = (user_identity or {}).get("autoUser") or {}
    base = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}
    if auto.get("elevationLevel") == "admin":
        return {**base, "runAsUser": 0, "runAsNonRoot": False}
    return {**base, "runAsUser": NONADMIN_UID, "runAsGroup": NONADMIN_UID, "runAsNonRoot": True}


def _node_volume(p: Placement) -> tuple[dict, dict]:
    root = node_root_dir(p)
    vol = {"name": "podbatch-node", "hostPath": {"path": root, "type": "DirectoryOrCreate"}}
    mount = {"name": "podbatch-node", "mountPath": root}
    return vol, mount


def _tolerations(p: Placement) -> list[dict]:
    return [
        {"key": naming.TAINT_POOL, "operator": "Equal", "value": naming.pool_node_label(p.namespace, p.pool), "effect": "NoSchedule"},
        {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"},
        # podbatch itself decides what a lost node means for a task (requeue), not the taint manager.
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    ]


def _resources(spec: dict) -> dict:
    res = spec.get("resources") or {}
    return {k: {rk: str(rv) for rk, rv in v.items()} for k, v in res.items() if v}


def task_pod(*, task: dict, job: dict, pool_spec: dict, placement: Placement, attempt: int,
             owner: dict | None = None, extra_env: dict[str, str] | None = None, role: str = "task",
             pod_name: str | None = None, service_account: str | None = None,
             coordination: str | None = None, then_wait: bool = False, gang: bool = False,
             resource_files: list[dict] | None = None, tools_image: str = "busybox") -> dict:
    """The pod of one attempt of a task, bound to `placement.node_name` (no kube-scheduler).

    Also builds the job's preparation and release pods (`role` jobprep / jobrelease) and the
    instances of a multi-instance task (`gang`): each waits for the host list, which
    podbatch writes into the annotation podbatch.io/host-list of every instance's pod once
    all have pod IPs (a downward-API file), and exports AZ_BATCH_HOST_LIST, _NODE_LIST and
    _MASTER_NODE from it; `coordination` runs before the command, and `then_wait` keeps a
    subtask alive until podbatch stops it when the primary ends.
    `resource_files` are the task's resource files with container URLs expanded
    (core.files.expand_resource_files); files.pod_files adds their init container and
    the output-file upload step. Raises files.FileSpecError for entries that cannot work."""
    meta, spec = task["metadata"], task["spec"]
    job_name = job["metadata"]["name"]
    task_id = spec.get("id") or meta["name"]
    root = node_root_dir(placement)
    task_dir = f"{root}/workitems/{job_name}/job-1/{task_id}"
    batch_env = {
        **node_env(placement),
        "AZ_BATCH_NODE_MOUNTS_DIR": f"{root}/fsmounts",
        "AZ_BATCH_JOB_ID": job_name,
        "AZ_BATCH_TASK_ID": task_id,
        "AZ_BATCH_TASK_DIR": task_dir,
        "AZ_BATCH_TASK_WORKING_DIR": f"{task_dir}/wd",
        "AZ_BATCH_TASK_RETRY_COUNT": str(((task.get("status") or {}).get("executionInfo") or {}).get("retryCount", 0)),
    }
    templates = podtemplates.leveled(pool_spec, job["spec"], spec)
    pkgs = apppackages.packages(pool_spec.get("applicationPackageReferences"), spec.get("applicationPackageReferences"))
    batch_env.update({apppackages.env_name(p.app, p.version): f"{root}/applications/{p.dir_name}" for p in pkgs})
    env = _env_list(podtemplates.template_env(templates, "pool"), _settings(job["spec"].get("commonEnvironmentSettings")),
                    podtemplates.template_env(templates, "job"), _settings(spec.get("environmentSettings")),
                    podtemplates.template_env(templates, "task"), extra_env or {}, batch_env)
    container = spec.get("containerSettings") or {}
    image = container.get("imageName") or pool_spec.get("image") or "busybox"
    vol, mount = _node_volume(placement)
    argv = split_command_line(spec["commandLine"])
    if coordination:
        env.append({"name": "PODBATCH_COORDINATION", "value": shlex.join(split_command_line(coordination))})
    if then_wait:
        env.append({"name": "PODBATCH_THEN_WAIT", "value": "1"})
    if gang:
        env.append({"name": "PODBATCH_HOSTS_FILE", "value": f"{GANG_DIR}/hosts"})
    main = {
        "name": "task",
        "image": image,
        "imagePullPolicy": pool_spec.get("imagePullPolicy", "IfNotPresent"),
        "command": ["/bin/sh", f"{WRAPPER_DIR}/{WRAPPER_FILE}", *argv],
        "env": env,
        "volumeMounts": [mount, {"name": WRAPPER_VOLUME, "mountPath": WRAPPER_DIR, "readOnly": True}],
        "securityContext": security_context(spec.get("userIdentity")),
    }
    if container.get("workingDirectory") == "containerImageDefault":
        main["env"].append({"name": "PODBATCH_KEEP_WORKDIR", "value": "1"})
    resources = _resources(spec)
    if resources:
        main["resources"] = resources
    extra_files = files.pod_files(spec, resource_files=resource_files, tools_image=tools_image,
                                  security=main["securityContext"], env=env, node_mount=mount)
    main["env"] = main["env"] + extra_files.main_env
    main["volumeMounts"] = main["volumeMounts"] + extra_files.main_mounts
    pod_spec: dict[str, Any] = {
        "nodeName": placement.node_name,
        "restartPolicy": "Never",
        "automountServiceAccountToken": bool(service_account),
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 5,
        "tolerations": _tolerations(placement),
        "containers": [main],
        "volumes": [vol, {"name": WRAPPER_VOLUME, "configMap": {"name": WRAPPER_CONFIGMAP}}],
    }
    if extra_files.init_containers:
        pod_spec["initContainers"] = extra_files.init_containers
        pod_spec["volumes"] = [*pod_spec["volumes"], *extra_files.volumes]
    if gang:
        pod_spec["volumes"] = [*pod_spec["volumes"], {"name": "podbatch-gang", "downwardAPI": {"items": [
            {"path": "hosts", "fieldRef": {"fieldPath": f"metadata.annotations['{naming.ANNOTATION_HOST_LIST}']"}}]}}]
        main["volumeMounts"] = [*main["volumeMounts"], {"name": "podbatch-gang", "mountPath": GANG_DIR, "readOnly": True}]
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    wall = seconds(((spec.get("constraints") or {}).get("maxWallClockTime")) or spec.get("maxWallClockTime"))
    if wall:
        pod_spec["activeDeadlineSeconds"] = max(1, int(wall))
    labels = {
        naming.LABEL_ROLE: role,
        naming.LABEL_POOL: naming.label_value(placement.pool),
        naming.LABEL_JOB: naming.label_value(job_name),
        naming.LABEL_TASK: naming.label_value(meta["name"]),
        naming.LABEL_TASK_UID: meta.get("uid", ""),
        naming.LABEL_ATTEMPT: str(attempt),
        naming.LABEL_NODE: naming.label_value(placement.compute_node),
    }
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(naming.SIM_PREFIX)}
    annotations[f"{GROUP}/task-dir"] = task_dir
    annotations[f"{GROUP}/task-name"] = meta["name"]   # labels stop at 63 characters, names do not
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name or naming.task_pod_name(meta["name"], attempt), "namespace": placement.namespace,
                     "labels": labels, "annotations": annotations},
        "spec": pod_spec,
    }
    if owner:
        pod["metadata"]["ownerReferences"] = [owner]
    return _with_templates(pod, templates=templates, pkgs=pkgs, main="task", placement=placement, pool_spec=pool_spec,
                           node_mount=mount, tools_image=tools_image)


def _with_templates(pod: dict, *, templates: list[tuple[str, dict]], pkgs: list, main: str, placement: Placement,
                    pool_spec: dict, node_mount: dict, tools_image: str) -> dict:
    """The pod with the pool's mountConfiguration, the templates and the application
    packages added, and podbatch's setup init container when they need one (first, after
    the node-directories container of a node-preparation pod)."""
    if not templates and not pkgs and not pool_spec.get("mountConfiguration"):
        return pod   # the common case, at no cost
    root = node_root_dir(placement)
    security = next(c for c in pod["spec"]["containers"] if c["name"] == main)["securityContext"]
    pull = pool_spec.get("imagePullPolicy", "IfNotPresent")
    mc_vols, mc_mounts = podtemplates.mount_configuration_volumes(pool_spec.get("mountConfiguration"), mounts_dir=f"{root}/fsmounts")
    lines: list[str] = []
    clash = podtemplates.find_conflicts(templates, pod=pod, node_root=root, extra_volumes=mc_vols)
    if clash:   # built without the templates; its setup fails at once with why
        lines.append(podtemplates.fail_line("PodTemplateConflict", "; ".join(clash)))
        templates = []
    pkg = apppackages.plan(pkgs, node_root=root, node_mount=node_mount, security=security, image_pull_policy=pull)
    pod = podtemplates.merge(pod, templates, main=main, security=security, image_pull_policy=pull,
                             extra_volumes=mc_vols, extra_mounts=mc_mounts)
    run = podtemplates.needs_run_dir(templates) or pkg.needs_run_dir
    mounts = [node_mount]
    if run:
        lines.append(podtemplates.RUN_SETUP)
        mounts.append({"name": podtemplates.RUN_VOLUME, "mountPath": podtemplates.RUN_DIR})
    lines += pkg.setup_lines
    if not lines:
        return pod
    spec = pod["spec"]
    spec["volumes"] = [*spec.get("volumes", []), *pkg.volumes, *([podtemplates.run_dir_volume()] if run else [])]
    setup = podtemplates.setup_container(lines, tools_image=tools_image, security=security, mounts=mounts + pkg.setup_mounts)
    inits = spec.get("initContainers", [])
    at = 1 if inits and inits[0]["name"] == "node-directories" else 0
    spec["initContainers"] = [*inits[:at], setup, *pkg.init_containers, *inits[at:]]
    return pod


def nodeprep_pod(*, pool: dict, placement: Placement, boot: str, retry: int, wipe: bool,
                 tools_image: str = "busybox", owner: dict | None = None,
                 resource_files: list[dict] | None = None) -> dict:
    """Node preparation: a root init container creates (or, on reimage, wipes) the node
    directories; the main container is the pool's start task, or `true` without one."""
    pool_spec = pool["spec"]
    start = pool_spec.get("startTask") or {}
    root = node_root_dir(placement)
    vol, mount = _node_volume(placement)
    batch_env = {
        **node_env(placement),
        "AZ_BATCH_TASK_DIR": f"{root}/startup",
        "AZ_BATCH_TASK_WORKING_DIR": f"{root}/startup/wd",
    }
    init = {
        "name": "node-directories",
        "image": tools_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", NODEPREP_SCRIPT],
        "env": _env_list(batch_env, {"PODBATCH_WIPE": "1" if wipe else "0"}),
        "volumeMounts": [mount],
        "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": False},
    }
    # the pool's template and packages apply to a start task (a pod without one only makes the directories)
    templates = podtemplates.leveled(pool_spec) if start.get("commandLine") else []
    pkgs = apppackages.packages(pool_spec.get("applicationPackageReferences")) if start.get("commandLine") else []
    batch_env.update({apppackages.env_name(p.app, p.version): f"{root}/applications/{p.dir_name}" for p in pkgs})
    if start.get("commandLine"):
        container = start.get("containerSettings") or {}
        argv = split_command_line(start["commandLine"])
        main = {
            "name": "start-task",
            "image": container.get("imageName") or pool_spec.get("image") or "busybox",
            "imagePullPolicy": pool_spec.get("imagePullPolicy", "IfNotPresent"),
            "command": ["/bin/sh", "-c", TASK_WRAPPER, "podbatch-start-task", *argv],
            "env": _env_list(podtemplates.template_env(templates, "pool"), _settings(start.get("environmentSettings")), batch_env),
            "workingDir": f"{root}/startup",
            "volumeMounts": [mount],
            "securityContext": security_context(start.get("userIdentity")),
        }
    else:
        main = {"name": "start-task", "image": tools_image, "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/true"], "securityContext": security_context(None)}
    extra_files = files.pod_files(start, resource_files=resource_files, tools_image=tools_image,
                                  security=main["securityContext"], env=main.get("env", []), node_mount=mount) \
        if start.get("commandLine") else files.PodFiles()
    main["env"] = main.get("env", []) + extra_files.main_env
    main["volumeMounts"] = main.get("volumeMounts", []) + extra_files.main_mounts
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": naming.nodeprep_pod_name(placement.compute_node, boot, retry),
            "namespace": placement.namespace,
            "labels": {naming.LABEL_ROLE: "nodeprep", naming.LABEL_POOL: naming.label_value(placement.pool),
                       naming.LABEL_NODE: naming.label_value(placement.compute_node)},
            "annotations": {f"{GROUP}/boot": boot},
        },
        "spec": {
            "nodeName": placement.node_name, "restartPolicy": "Never",
            "automountServiceAccountToken": False, "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 5, "tolerations": _tolerations(placement),
            "initContainers": [init, *extra_files.init_containers], "containers": [main],
            "volumes": [vol, *extra_files.volumes],
        },
    }
    if owner:
        pod["metadata"]["ownerReferences"] = [owner]
    if not start.get("commandLine"):
        return pod
    return _with_templates(pod, templates=templates, pkgs=pkgs, main="start-task", placement=placement, pool_spec=pool_spec,
                           node_mount=mount, tools_image=tools_image)


def cleanup_pod(*, placement: Placement, paths: list[str], name: str, tools_image: str = "busybox",
                owner: dict | None = None) -> dict:
    """A root pod that deletes node directories (a released node's, an expired task's).
    Only paths under the pool's node root are accepted."""
    root = node_root_dir(placement)
    for path in paths:
        if not (path == root or path.startswith(root + "/")) or "/../" in path:
            raise ValueError(f"refusing to delete {path!r}: not under the node root {root}")
    # the namespace's directory is mounted, so the pool's own root can go too (a mount point can't)
    parent = root.rsplit("/", 1)[0]
    vol = {"name": "podbatch-node", "hostPath": {"path": parent, "type": "DirectoryOrCreate"}}
    mount = {"name": "podbatch-node", "mountPath": parent}
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": placement.namespace,
                     "labels": {naming.LABEL_ROLE: "cleanup", naming.LABEL_POOL: naming.label_value(placement.pool),
                                naming.LABEL_NODE: naming.label_value(placement.compute_node)}},
        "spec": {"nodeName": placement.node_name, "restartPolicy": "Never", "automountServiceAccountToken": False,
                 "enableServiceLinks": False, "terminationGracePeriodSeconds": 5, "tolerations": _tolerations(placement),
                 "containers": [{"name": "cleanup", "image": tools_image, "imagePullPolicy": "IfNotPresent",
                                 "command": ["/bin/rm", "-rf", "--", *paths],
                                 "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": False},
                                 "volumeMounts": [mount]}],
                 "volumes": [vol]},
    }
    if owner:
        pod["metadata"]["ownerReferences"] = [owner]
    return pod


def owner_reference(body: dict, *, controller: bool = True) -> dict:
    return {"apiVersion": body.get("apiVersion", f"{GROUP}/v1alpha1"), "kind": body["kind"],
            "name": body["metadata"]["name"], "uid": body["metadata"]["uid"],
            "controller": controller, "blockOwnerDeletion": False}
