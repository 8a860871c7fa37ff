"""Pod templates merged into the pods podbatch builds, and the setup init container. Pure.

`merge` takes the pod podbatch built and the templates that apply (pool first, then job,
then task: `templates_of`) and returns the pod with them merged in. podbatch's own
fields always win: the API models (api/podtemplate.py) refuse what a template may not
touch, and what only shows when templates meet (a job changing the pool's runtime
class, a mount naming no volume, a mount over the node directories of a pool with its
own nodeRootDir) is a *conflict*: the pod is then built without any template and its
setup container fails at once with the reason (failureInfo PodTemplateConflict), so the
task completes with a preprocessing error instead of waiting without a word.

Sidecars. Pods run with restartPolicy Never and servers before 1.28 have no native
sidecars, so podbatch ends them itself: each sidecar's command runs under a small
wrapper (shell builtins and a static busybox that the setup container copies into the
`podbatch-run` emptyDir, so any image works) that stops the sidecar and exits 0 once the
task's wrapper wrote `done` there, or once its heartbeat (`alive`, every 2 s) stood still
for ~20 s, which is how a task container killed outright (OOM) shows. So a sidecar never
keeps a pod alive after its task, and its own exit code never changes the task's result.
(A file lock would be quicker, but the busybox of many images has no flock.)

The setup container (`podbatch-setup`, the tools image) runs first: it reports a
conflict, prepares `podbatch-run` and unpacks application packages (core/apppackages.py).
A failure writes `podbatch:<Code>:<message>` to its termination message, which
`setup_failure` turns into the task's failureInfo.
"""
from __future__ import annotations

import copy
import shlex
from typing import Any

SETUP_CONTAINER = "podbatch-setup"
APP_CONTAINER_PREFIX = "podbatch-app-"
RUN_VOLUME = "podbatch-run"
RUN_DIR = "/podbatch-run"
RUN_BIN = f"{RUN_DIR}/bin"
MAIN_NAMES = ("task", "start-task")
FAIL_MARKER = "podbatch:"
RUN_APPLETS = ("sh", "sleep", "ls", "cp", "mkdir", "rm", "rmdir", "find", "unzip", "head", "cat", "chmod")

SETUP_PRELUDE = r'''
pb_fail() { printf 'podbatch:%s:%s' "$1" "$2" | head -c 3000 >/dev/termination-log; printf '%s: %s\n' "$1" "$2" >&2; exit 1; }
'''.strip()

RUN_SETUP = (
    # busybox's own sh answers `command -v busybox` with the bare applet name: try paths too
    f'for b in "$(command -v busybox)" /bin/busybox /usr/bin/busybox; do [ -f "$b" ] && break; done; '
    f'mkdir -p {RUN_BIN} && cp "$b" {RUN_BIN}/busybox && '
    f'for a in {" ".join(RUN_APPLETS)}; do ln -sf busybox {RUN_BIN}/$a; done && '
    f'chmod -R a+rx {RUN_BIN} '
    f'|| pb_fail PodSetupError "cannot prepare {RUN_DIR}"'
)

# The sidecar's command runs in the background. The task's wrapper writes a counter into
# `alive` every 2 s while it runs and the file `done` when it ends; the sidecar is stopped
# once `done` exists, or once `alive` stood still for 10 checks (~20 s: the task's
# container was killed outright, an OOM kill, so no `done`). Shell builtins and
# podbatch's own busybox only, whatever the sidecar's image holds.
SIDECAR_WRAPPER = r'''
R=/podbatch-run; B=/podbatch-run/bin
"$@" & p=$!
trap 'kill -TERM $p 2>/dev/null; exit 0' TERM INT
last=; same=0
while [ ! -e $R/done ]; do
  $B/sleep 2 & wait $!
  [ -e $R/alive ] || continue
  now=; read -r now <$R/alive 2>/dev/null
  if [ "$now" = "$last" ]; then same=$((same+1)); [ $same -lt ${PB_STALL_CHECKS:-10} ] || break; else same=0; last=$now; fi
done
kill -TERM $p 2>/dev/null; ($B/sleep 3; kill -KILL $p 2>/dev/null) & wait $p
exit 0
'''.strip()


def leveled(pool_spec: dict | None, job_spec: dict | None = None, task_spec: dict | None = None) -> list[tuple[str, dict]]:
    """The podTemplates that apply, as (level, template), pool first, then job, then task."""
    return [(lvl, s["podTemplate"]) for lvl, s in (("pool", pool_spec), ("job", job_spec), ("task", task_spec))
            if s and s.get("podTemplate")]


def template_env(templates: list[tuple[str, dict]], level: str) -> list[dict]:
    """The env entries of the `task` container of the template of `level`."""
    return [dict(e) for lvl, t in templates if lvl == level
            for c in _containers(t, "containers") if c["name"] == "task" for e in c.get("env") or []]


def _containers(template: dict, role: str) -> list[dict]:
    return list(((template or {}).get("spec") or {}).get(role) or [])


def _spec(template: dict) -> dict:
    return (template or {}).get("spec") or {}


def find_conflicts(templates: list[tuple[str, dict]], *, pod: dict, node_root: str,
                   extra_volumes: list[dict] = ()) -> list[str]:
    """What templates, each valid alone, cannot do together in this pod; `templates` are
    (level, template) with level pool, job or task, pool first."""
    out: list[str] = []
    pool = next((_spec(t) for lvl, t in templates if lvl == "pool"), {})
    for lvl, t in templates:
        if lvl == "pool":
            continue
        s = _spec(t)
        if s.get("runtimeClassName") and pool.get("runtimeClassName") not in (None, s["runtimeClassName"]):
            out.append(f"the {lvl}'s podTemplate sets runtimeClassName {s['runtimeClassName']}, but the pool's "
                       f"is {pool['runtimeClassName']} and a pool admin's runtime class cannot be changed")
        for k, v in (s.get("securityContext") or {}).items():
            pv = (pool.get("securityContext") or {}).get(k)
            if pv is not None and pv != v:
                out.append(f"the {lvl}'s podTemplate sets securityContext.{k} {v}, but the pool's is {pv} "
                           "and a pool admin's securityContext cannot be changed")
    volumes = {v["name"] for _, t in templates for v in _spec(t).get("volumes") or []} | {v["name"] for v in extra_volumes}
    podbatch_paths = {m["mountPath"].rstrip("/") for c in pod["spec"]["containers"] for m in c.get("volumeMounts") or []}
    root = node_root.rstrip("/")
    taken: dict[tuple[str, str], str] = {}   # (container, mountPath) -> level that mounts there
    for lvl, t in templates:
        for role in ("containers", "initContainers"):
            for c in _containers(t, role):
                for m in c.get("volumeMounts") or []:
                    path = m["mountPath"].rstrip("/") or "/"
                    if (c["name"], path) in taken:
                        out.append(f"the {lvl}'s podTemplate mounts {m['name']} at {m['mountPath']} in {c['name']}, "
                                   f"where the {taken[c['name'], path]}'s podTemplate mounts a volume already")
                    taken[c["name"], path] = lvl
                    if m["name"] not in volumes:
                        out.append(f"the {lvl}'s podTemplate mounts volume {m['name']} into {c['name']}, "
                                   "but no template declares a volume of that name")
                    if path == root or path.startswith(root + "/") or path in podbatch_paths:
                        out.append(f"the {lvl}'s podTemplate mounts {m['name']} at {m['mountPath']} in {c['name']}, "
                                   f"inside podbatch's own mounts (the node directories are at {root})")
    return out


def merge(pod: dict, templates: list[tuple[str, dict]], *, main: str, security: dict, image_pull_policy: str,
          extra_volumes: list[dict] = (), extra_mounts: list[dict] = ()) -> dict:
    """The pod with the templates (level, template), pool first, merged in; env of the main
    container is the caller's (template_env). `extra_volumes`/`extra_mounts` are the pool's
    mountConfiguration (mount_configuration_volumes), mounted into the main container."""
    pod = copy.deepcopy(pod)
    meta, spec = pod["metadata"], pod["spec"]
    main_c = next(c for c in spec["containers"] if c["name"] == main)
    for kind in ("labels", "annotations"):
        added: dict[str, str] = {}
        for _, t in templates:
            added.update(((t.get("metadata") or {}).get(kind)) or {})
        if added:
            meta[kind] = {**added, **(meta.get(kind) or {})}
    volumes: dict[str, dict] = {v["name"]: v for v in extra_volumes}
    pull: dict[str, dict] = {}
    sidecars: dict[str, dict] = {}
    inits: dict[str, dict] = {}
    pool_spec = next((_spec(t) for lvl, t in templates if lvl == "pool"), {})
    pool_sc, pool_runtime = pool_spec.get("securityContext") or {}, pool_spec.get("runtimeClassName")
    pod_sc: dict[str, Any] = {}
    runtime = None
    aliases: list[dict] = []
    dns = None
    main_c.setdefault("volumeMounts", []).extend(copy.deepcopy(list(extra_mounts)))
    for lvl, t in templates:
        s = _spec(t)
        for v in s.get("volumes") or []:
            volumes[v["name"]] = copy.deepcopy(v)
        for r in s.get("imagePullSecrets") or []:
            pull[r["name"]] = {"name": r["name"]}
        for k, v in (s.get("securityContext") or {}).items():
            if lvl == "pool" or k not in pool_sc:   # the pool admin's keys stay (find_conflicts)
                pod_sc[k] = copy.deepcopy(v)
        if s.get("runtimeClassName") and (lvl == "pool" or not pool_runtime):
            runtime = s["runtimeClassName"]
        aliases += copy.deepcopy(s.get("hostAliases") or [])
        dns = copy.deepcopy(s.get("dnsConfig")) or dns
        for c in _containers(t, "containers"):
            if c["name"] == "task":
                _override_main(main_c, c)
            else:
                sidecars[c["name"]] = c
        for c in _containers(t, "initContainers"):
            inits[c["name"]] = c
    if volumes:
        spec["volumes"] = [*spec.get("volumes", []), *volumes.values()]
    if pull:
        spec["imagePullSecrets"] = list(pull.values())
    if pod_sc:
        spec["securityContext"] = {**pod_sc, **(spec.get("securityContext") or {})}
    if runtime:
        spec["runtimeClassName"] = runtime
    if aliases:
        spec["hostAliases"] = aliases
    if dns:
        spec["dnsConfig"] = dns
    if inits:
        spec["initContainers"] = [*spec.get("initContainers", []),
                                  *(_extra_container(c, security, image_pull_policy) for c in inits.values())]
    if sidecars:
        run_mount = {"name": RUN_VOLUME, "mountPath": RUN_DIR}
        main_c["volumeMounts"].append(run_mount)
        main_c["env"] = [*main_c.get("env", []), {"name": "PODBATCH_RUN_DIR", "value": RUN_DIR}]
        for c in sidecars.values():
            sc = _extra_container(c, security, image_pull_policy)
            sc["command"] = [f"{RUN_BIN}/sh", "-c", SIDECAR_WRAPPER, "podbatch-sidecar", *c.get("command", []), *c.get("args", [])]
            sc.pop("args", None)
            sc["volumeMounts"] = [*sc.get("volumeMounts", []), run_mount]
            spec["containers"].append(sc)
    return pod


def needs_run_dir(templates: list[tuple[str, dict]]) -> bool:
    """Whether the pod gets sidecars (and so the podbatch-run directory)."""
    return any(c["name"] != "task" for _, t in templates for c in _containers(t, "containers"))


def _override_main(main_c: dict, c: dict) -> None:
    """A template's `task` container over podbatch's main container (env is the caller's)."""
    res = c.get("resources") or {}
    if res:
        merged = copy.deepcopy(main_c.get("resources") or {})
        for k in ("requests", "limits"):
            if res.get(k):
                merged[k] = {**merged.get(k, {}), **{rk: str(rv) for rk, rv in res[k].items()}}
        main_c["resources"] = merged
    for k in ("envFrom", "volumeMounts", "ports"):
        if c.get(k):
            main_c[k] = [*main_c.get(k, []), *copy.deepcopy(c[k])]
    ro = (c.get("securityContext") or {}).get("readOnlyRootFilesystem")
    if ro is not None:
        main_c["securityContext"] = {**main_c.get("securityContext", {}), "readOnlyRootFilesystem": ro}


def _extra_container(c: dict, security: dict, image_pull_policy: str) -> dict:
    """A template's sidecar or init container, with podbatch's security context."""
    out = {k: copy.deepcopy(v) for k, v in c.items() if k != "securityContext"}
    out.setdefault("imagePullPolicy", image_pull_policy)
    out["securityContext"] = {**security, **(c.get("securityContext") or {})}
    return out


def run_dir_volume() -> dict:
    return {"name": RUN_VOLUME, "emptyDir": {}}


def setup_container(lines: list[str], *, tools_image: str, security: dict, mounts: list[dict]) -> dict:
    """The setup init container running `lines` (after SETUP_PRELUDE)."""
    return {
        "name": SETUP_CONTAINER,
        "image": tools_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", "\n".join([SETUP_PRELUDE, *lines]) + "\n"],
        "volumeMounts": mounts,
        "securityContext": security,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def fail_line(code: str, message: str) -> str:
    return f"pb_fail {shlex.quote(code)} {shlex.quote(message)}"


def is_setup_container(name: str) -> bool:
    return name == SETUP_CONTAINER or name.startswith(APP_CONTAINER_PREFIX)


def setup_failure(message: str, exit_code: int | None = None) -> dict:
    """failureInfo of a failed setup (or image package) container, from its termination message."""
    text = (message or "").strip()
    i = text.find(FAIL_MARKER)
    if i >= 0:
        code, _, msg = text[i + len(FAIL_MARKER):].partition(":")
        if code and code.isalnum():
            return {"category": "usererror", "code": code, "message": msg.strip()[:1000]}
    return {"category": "usererror", "code": "PodSetupError",
            "message": (f"podbatch's setup exited with code {exit_code}: {text}" if text
                        else f"podbatch's setup exited with code {exit_code}")[:1000]}


# --------------------------------------------------------------------------- mountConfiguration

def mount_configuration_volumes(mounts: list[dict] | None, *, mounts_dir: str) -> tuple[list[dict], list[dict]]:
    """The pool's mountConfiguration as (volumes, volumeMounts of the main container):
    each at <mounts_dir>/<relativeMountPath> (mounts_dir is $AZ_BATCH_NODE_MOUNTS_DIR)."""
    vols, vmounts = [], []
    for i, m in enumerate(mounts or []):
        name = f"podbatch-mount-{i}"
        if m.get("nfsMountConfiguration"):
            c = m["nfsMountConfiguration"]
            server, _, path = c["source"].partition(":")
            vols.append({"name": name, "nfs": {"server": server, "path": path, "readOnly": bool(c.get("readOnly"))}})
        elif m.get("azureFileShareConfiguration"):
            c = m["azureFileShareConfiguration"]
            share = c["azureFileUrl"].rstrip("/").rsplit("/", 1)[1]
            attrs = {"shareName": share, "secretName": c["secretName"]}
            if c.get("mountOptions"):
                attrs["mountOptions"] = c["mountOptions"]
            vols.append({"name": name, "csi": {"driver": "file.csi.azure.com", "volumeAttributes": attrs,
                                               "nodePublishSecretRef": {"name": c["secretName"]}}})
        elif m.get("azureBlobFileSystemConfiguration"):
            c = m["azureBlobFileSystemConfiguration"]
            vols.append({"name": name, "csi": {"driver": "blob.csi.azure.com",
                                               "volumeAttributes": {"containerName": c["containerName"],
                                                                    "secretName": c["secretName"]},
                                               "nodePublishSecretRef": {"name": c["secretName"]}}})
        else:
            continue
        rel = next(v["relativeMountPath"] for v in m.values() if isinstance(v, dict) and v.get("relativeMountPath"))
        vmounts.append({"name": name, "mountPath": f"{mounts_dir.rstrip('/')}/{rel}"})
    return vols, vmounts
