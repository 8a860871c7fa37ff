"""`kubectl podbatch files ls|get TASK [PATH]` and `node files ls|get NODE [PATH]`: Batch's
file API (list a task's or a node's files, download one) over the node directories.

The files live on the node (hostPath), so the CLI itself, with the user's own RBAC, starts
a short-lived helper pod in the namespace, bound with `nodeName` to the node, that mounts
read-only only the directory asked for (the task's directory, or the pool's node root
`<nodeRootDir>/<namespace>/<pool>`), then lists or reads through `exec` and deletes the
pod. Whoever may not create pods in the namespace cannot read its files. This works after
the task's pod is gone, for as long as the task's retention keeps the directory.
docs/files.md ("Reading a task's files") describes it; the pure parts (paths, the pod,
the listing) come first and are unit-tested.
"""
from __future__ import annotations

import argparse
import json
import os
import posixpath
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, BinaryIO, Callable

from podbatch import GROUP
from podbatch.cli import output
from podbatch.core import naming

DEFAULT_IMAGE = "busybox"       # the operator's default tools_image (node preparation uses it)
MOUNT = "/files"
HELPER_LIFETIME = 3600          # seconds: the helper exits by itself if the CLI dies before deleting it
HELPER_LABELS = {"app.kubernetes.io/name": "podbatch-files", "app.kubernetes.io/managed-by": "kubectl-podbatch"}
EXIT_IS_DIRECTORY, EXIT_MISSING = 3, 4
STAT_FORMAT = "%F|%s|%Y|%a|%n"

LIST_SCRIPT = f"""
cd {MOUNT} || exit 5
if [ ! -e "./$1" ] && [ ! -L "./$1" ]; then echo "$1: no such file or directory" >&2; exit {EXIT_MISSING}; fi
exec find "./$1" -maxdepth "$2" -exec stat -c '{STAT_FORMAT}' {{}} +
""".strip()

GET_SCRIPT = f"""
p="{MOUNT}/$1"
if [ -d "$p" ]; then echo "$1 is a directory (files ls lists it)" >&2; exit {EXIT_IS_DIRECTORY}; fi
if [ ! -e "$p" ]; then echo "$1: no such file" >&2; exit {EXIT_MISSING}; fi
exec cat -- "$p"
""".strip()


class FilesError(Exception):
    """Why a task's or node's files cannot be read; `kubectl podbatch` prints it as one line."""


class PathError(FilesError):
    """A PATH that is not inside the directory being read."""


@dataclass(frozen=True)
class Location:
    """A directory on a node that the user may read: what the helper pod mounts."""
    what: str          # "task j-1" / "node real-abc12", for messages
    namespace: str
    pool: str
    compute_node: str
    node_name: str     # the Kubernetes Node
    host_dir: str


# --- pure parts ---------------------------------------------------------------------

def relative_path(path: str | None, root: str) -> str:
    """PATH relative to `root` ("" for root itself). An absolute PATH must lie under root;
    `..` is refused anywhere, so nothing outside root can be named."""
    p = (path or "").strip()
    if p.startswith("/"):
        r = root.rstrip("/")
        if p.rstrip("/") == r:
            return ""
        if not p.startswith(r + "/"):
            raise PathError(f"{path} is outside {root}: give a path relative to it (e.g. wd/out.txt)")
        p = p[len(r) + 1:]
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if ".." in parts:
        raise PathError(f"{path}: '..' is not allowed; paths stay inside {root}")
    return "/".join(parts)


def task_location(task: dict[str, Any], namespace: str) -> Location:
    """Where a task's files are: its (last) node and `status.nodeInfo.taskRootDirectory`,
    which must be a task directory of this namespace's pool (`…/<ns>/<pool>/workitems/…`)."""
    name = task["metadata"]["name"]
    status = task.get("status") or {}
    info = status.get("nodeInfo") or {}
    expired = next((c for c in status.get("conditions") or []
                    if c.get("type") == "Retained" and c.get("status") == "False"), None)
    if expired:
        raise FilesError(f"task {name}: its files were removed from the node when its retention ended "
                         f"({expired.get('reason')}, {expired.get('lastTransitionTime', '?')}); constraints.retentionTime keeps them longer")
    task_dir, node, pool = info.get("taskRootDirectory"), info.get("nodeName"), info.get("poolId")
    if not (task_dir and node and pool):
        raise FilesError(f"task {name} has not run on a node yet (state {status.get('state') or 'active'}): it has no files")
    if not (task_dir.startswith("/") and posixpath.normpath(task_dir) == task_dir
            and f"/{namespace}/{pool}/workitems/" in task_dir):
        raise FilesError(f"task {name}: taskRootDirectory {task_dir} is not a task directory of pool {pool} "
                         f"in namespace {namespace} (…/{namespace}/{pool}/workitems/…)")
    return Location(f"task {name}", namespace, pool, info.get("nodeId") or node, node, task_dir)


def node_location(compute_node: dict[str, Any], pool: dict[str, Any], namespace: str) -> Location:
    """A compute node's directories: the pool's node root `<nodeRootDir>/<ns>/<pool>`."""
    spec = compute_node.get("spec") or {}
    root = ((pool.get("spec") or {}).get("nodeRootDir") or "/var/lib/podbatch").rstrip("/")
    host_dir = f"{root}/{namespace}/{pool['metadata']['name']}"
    if posixpath.normpath(host_dir) != host_dir or not host_dir.startswith("/"):
        raise FilesError(f"pool {pool['metadata']['name']}: nodeRootDir {root} is not a plain absolute path")
    name = compute_node["metadata"]["name"]
    return Location(f"node {name}", namespace, pool["metadata"]["name"], name, spec["nodeName"], host_dir)


def helper_pod(loc: Location, image: str = DEFAULT_IMAGE, lifetime: int = HELPER_LIFETIME) -> dict[str, Any]:
    """The helper pod: on loc.node_name (no kube-scheduler), tolerating the pool's taint,
    with loc.host_dir mounted read-only at /files and nothing else of the node. It runs as
    root with only CAP_DAC_READ_SEARCH, to read files whatever user the task ran as."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "podbatch-files-", "namespace": loc.namespace, "labels": dict(HELPER_LABELS),
                     "annotations": {f"{GROUP}/files-of": loc.what, f"{GROUP}/files-dir": loc.host_dir}},
        "spec": {
            "nodeName": loc.node_name,
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "activeDeadlineSeconds": lifetime,
            "tolerations": [{"key": naming.TAINT_POOL, "operator": "Equal",
                             "value": naming.pool_node_label(loc.namespace, loc.pool), "effect": "NoSchedule"}],
            "containers": [{
                "name": "files", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", str(lifetime)],
                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
                "securityContext": {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}},
                "volumeMounts": [{"name": "files", "mountPath": MOUNT, "readOnly": True}],
            }],
            "volumes": [{"name": "files", "hostPath": {"path": loc.host_dir, "type": "Directory"}}],
        },
    }


def list_command(path: str, depth: int | None) -> list[str]:
    """The exec command listing PATH (relative to the mount), `depth` levels down (None: all)."""
    return ["sh", "-c", LIST_SCRIPT, "podbatch-files", path, str(depth if depth is not None else 1000)]


def get_command(path: str) -> list[str]:
    return ["sh", "-c", GET_SCRIPT, "podbatch-files", path]


def parse_listing(text: str, path: str) -> list[dict[str, Any]]:
    """`stat -c '%F|%s|%Y|%a|%n'` lines -> Batch NodeFile entries (name relative to the
    directory read, isDirectory, properties), sorted by name; the directory PATH itself is
    left out. A line that is no record continues the previous name (a name with a newline)."""
    entries: list[dict[str, Any]] = []
    for line in text.split("\n"):
        fields = line.split("|", 4)
        if len(fields) == 5 and fields[1].isdigit() and fields[2].isdigit():
            kind, size, mtime, mode, name = fields
            entries.append({"name": _relative_name(name), "isDirectory": kind == "directory",
                            "properties": {"contentLength": int(size),
                                           "lastModified": datetime.fromtimestamp(int(mtime), timezone.utc)
                                           .strftime("%Y-%m-%dT%H:%M:%SZ"),
                                           "fileMode": mode.zfill(4)}})
        elif entries and line:
            entries[-1]["name"] += "\n" + line
    entries = [e for e in entries if not (e["isDirectory"] and e["name"] == path)]
    return sorted(entries, key=lambda e: e["name"])


def _relative_name(name: str) -> str:
    name = name[2:] if name.startswith("./") else name
    return name.rstrip("/") if name not in ("", ".") else ""


def listing_table(entries: list[dict[str, Any]]) -> str:
    rows = [("MODE", "SIZE", "MODIFIED", "NAME")]
    for e in entries:
        p = e["properties"]
        rows.append((p["fileMode"], str(p["contentLength"]) if not e["isDirectory"] else "-",
                     p["lastModified"], e["name"] + ("/" if e["isDirectory"] else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}" for r in rows)


def create_refused(loc: Location, status: int | None, message: str) -> str:
    """The message for a helper pod the API server refused to create."""
    text = f"cannot start the helper pod that reads {loc.what}'s files on node {loc.node_name}: {message}"
    low = message.lower()
    if "podsecurity" in low or "pod security" in low or "hostpath" in low:
        return (text + f"\nThe namespace's Pod Security admission refuses hostPath pods; files are read through "
                f"one. Its pools need the same: kubectl label namespace {loc.namespace} "
                f"pod-security.kubernetes.io/enforce=privileged")
    if status == 403:
        return (text + f"\nReading files needs the rights to create, get and delete pods and pods/exec "
                f"(get and create) in namespace {loc.namespace}.")
    return text


def exec_refused(loc: Location, reason: str) -> str:
    """The message for an exec into the helper pod that failed to start (the websocket
    handshake's status, e.g. `Handshake status 403 Forbidden -+-+- {headers} -+-+- {Status}`)."""
    body = reason.rsplit("-+-+-", 1)[-1].strip()
    try:
        message = json.loads(body).get("message") or body
    except ValueError:
        message = body
    text = f"{loc.what}: cannot exec into the helper pod: {message}"
    if "403" in reason or "forbidden" in message.lower():
        text += (f"\nReading files needs pods/exec (get and create) in namespace {loc.namespace}, "
                 f"besides creating, getting and deleting pods.")
    return text


def start_problem(pod: dict[str, Any], events: list[dict[str, Any]]) -> str | None:
    """Why the helper pod will not start, from its status and events; None while it may."""
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return f"the pod ended ({status.get('phase')}: {status.get('reason') or ''} {status.get('message') or ''})".strip()
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerError",
                                     "CreateContainerConfigError", "RunContainerError"):
            return f"{waiting['reason']}: {waiting.get('message', '')} (--image names another tools image)"
    for ev in events:
        if ev.get("reason") == "FailedMount" and "hostPath type check failed" in (ev.get("message") or ""):
            return "the directory does not exist on the node (any more)"
    return None


# --- the cluster side ---------------------------------------------------------------

class HelperPod:
    """The helper pod for one Location: created on enter, deleted on exit (whatever happened)."""

    def __init__(self, cluster, loc: Location, image: str, timeout: float):
        self.cluster, self.loc, self.image, self.timeout = cluster, loc, image, timeout
        self.name: str | None = None

    def __enter__(self) -> "HelperPod":
        from kubernetes.client.rest import ApiException
        from podbatch.cli.kube import api_error
        try:
            pod = self.cluster.core.create_namespaced_pod(self.loc.namespace, helper_pod(self.loc, self.image))
        except ApiException as e:
            raise FilesError(create_refused(self.loc, e.status, api_error(e))) from None
        self.name = pod.metadata.name
        try:
            self._wait_running()
        except BaseException:
            self._delete()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._delete()

    def _delete(self) -> None:
        from kubernetes.client.rest import ApiException
        from podbatch.cli.kube import api_error
        try:
            self.cluster.core.delete_namespaced_pod(self.name, self.loc.namespace, grace_period_seconds=0)
        except ApiException as e:
            if e.status != 404:
                print(f"warning: could not delete the helper pod {self.name}: {api_error(e)}", file=sys.stderr)

    def _wait_running(self) -> None:
        deadline = time.monotonic() + self.timeout
        pod: dict[str, Any] = {}
        while time.monotonic() < deadline:
            pod = self.cluster.api.sanitize_for_serialization(
                self.cluster.core.read_namespaced_pod(self.name, self.loc.namespace))
            if (pod.get("status") or {}).get("phase") == "Running":
                return
            problem = start_problem(pod, self._events())
            if problem:
                raise FilesError(f"{self.loc.what}: the helper pod {self.name} cannot read {self.loc.host_dir} "
                                 f"on node {self.loc.node_name}: {problem}")
            time.sleep(0.5)
        raise FilesError(f"{self.loc.what}: the helper pod {self.name} did not start on node {self.loc.node_name} "
                         f"within {self.timeout:.0f}s (phase {(pod.get('status') or {}).get('phase')}); is the node up? "
                         f"--timeout waits longer")

    def _events(self) -> list[dict[str, Any]]:
        try:   # best effort: a user who may not list events gets the timeout's message instead
            evs = self.cluster.core.list_namespaced_event(self.loc.namespace, field_selector=f"involvedObject.name={self.name}")
            return [{"reason": e.reason, "message": e.message} for e in evs.items]
        except Exception:  # noqa: BLE001
            return []

    def run(self, command: list[str], sink: Callable[[bytes], Any]) -> tuple[int, str]:
        """Run `command` in the helper; stdout goes to `sink` as it comes. (exit code, stderr)."""
        import yaml
        from kubernetes.stream import stream
        from kubernetes.stream import ws_client
        try:
            ws = stream(self.cluster.core.connect_get_namespaced_pod_exec, self.name, self.loc.namespace,
                        container="files", command=command, stderr=True, stdin=False, stdout=True, tty=False,
                        _preload_content=False, binary=True)
        except Exception as e:  # noqa: BLE001 - the websocket handshake's refusal, as one line
            raise FilesError(exec_refused(self.loc, str(getattr(e, "reason", None) or e))) from None
        if hasattr(ws, "_all") and hasattr(ws_client, "_IgnoredIO"):
            ws._all = ws_client._IgnoredIO()   # else the client keeps a copy of all output: a large file in memory
        err = b""
        try:
            while ws.is_open():
                ws.update(timeout=1)
                if ws.peek_stdout():
                    sink(ws.read_stdout())
                if ws.peek_stderr():
                    err += ws.read_stderr()
            sink(ws.read_stdout())
            err += ws.read_stderr()
            status = yaml.safe_load(ws.read_channel(ws_client.ERROR_CHANNEL) or b"") or {}
        finally:
            ws.close()
        if status.get("status") == "Success":
            return 0, err.decode(errors="replace")
        try:
            return int(status["details"]["causes"][0]["message"]), err.decode(errors="replace")
        except (KeyError, IndexError, TypeError, ValueError):
            raise FilesError(f"{self.loc.what}: reading through the helper pod failed: "
                             f"{status.get('message') or err.decode(errors='replace') or 'the connection closed'}") from None


def _resolve(cluster, args: argparse.Namespace) -> Location:
    from podbatch.cli.kube import is_fake_node
    if args.command == "node":
        cnode = cluster.get("ComputeNode", args.node)
        pool = cluster.get("Pool", (cnode.get("spec") or {}).get("poolName", ""))
        loc = node_location(cnode, pool, cluster.namespace)
    else:
        task = _find_task(cluster, args.task, args.job)
        loc = task_location(task, cluster.namespace)
        pool = cluster.find("Pool", loc.pool)
        if cluster.find("ComputeNode", loc.compute_node) is None:
            raise FilesError(f"{loc.what} ran on node {loc.compute_node}, which has left pool {loc.pool}: "
                             f"its node directories went with it")
    if ((pool or {}).get("spec") or {}).get("nodeGroup", {}).get("provider") == "kwok" or is_fake_node(cluster, loc.node_name):
        raise FilesError(f"{loc.what}: node {loc.node_name} is simulated (kwok); simulated nodes keep no files")
    return loc


def _find_task(cluster, name: str, job: str | None) -> dict[str, Any]:
    """A Task, or a TaskCollection's task (its node and directory from its pod's binding)."""
    from podbatch.cli import colltasks
    return colltasks.resolve(cluster, name, job)


def cmd_files(args: argparse.Namespace, out=None) -> int:
    from podbatch.cli.kube import CliError
    try:
        return _files(args, out)
    except FilesError as e:
        raise CliError(str(e)) from None


def _files(args: argparse.Namespace, out=None) -> int:
    from podbatch.cli.kube import Cluster, new_client
    if getattr(args, "depth", None) is not None and args.depth < 1:
        raise FilesError("--depth must be 1 or more (1: only the entries of PATH)")
    api, default_ns = new_client(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    cluster = Cluster(api, getattr(args, "namespace", None) or default_ns)
    loc = _resolve(cluster, args)
    path = relative_path(args.path, loc.host_dir)
    if args.op == "get" and not path:
        raise PathError(f"files get needs a file: {loc.what}'s directory is listed by `files ls`")
    with HelperPod(cluster, loc, args.image, args.timeout) as helper:
        if args.op == "ls":
            chunks: list[bytes] = []
            rc, err = helper.run(list_command(path, args.depth), chunks.append)
            if rc:
                raise FilesError(f"{loc.what}: {err.strip() or f'listing failed (exit {rc})'}")
            entries = parse_listing(b"".join(chunks).decode(errors="replace"), path)
            if args.output:
                print(output.dump(entries, args.output), file=out)
            elif entries:
                print(listing_table(entries), file=out)
            return output.EXIT_OK
        return _download(helper, loc, path, args.output_file, out)


def _download(helper: HelperPod, loc: Location, path: str, target: str | None, out) -> int:
    if target in (None, "-"):
        stream: BinaryIO = getattr(out or sys.stdout, "buffer", None) or sys.stdout.buffer
        rc, err = helper.run(get_command(path), stream.write)
        stream.flush()
    else:   # a temporary file next to the target, renamed once complete: no half file on failure
        fd, tmp = tempfile.mkstemp(prefix=".podbatch-", dir=os.path.dirname(os.path.abspath(target)))
        try:
            with os.fdopen(fd, "wb") as f:
                rc, err = helper.run(get_command(path), f.write)
            if not rc:
                os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if rc:
        raise FilesError(f"{loc.what}: {err.strip() or f'reading {path} failed (exit {rc})'}")
    return output.EXIT_OK


def add_commands(cmd: Callable[..., argparse.ArgumentParser], sub: Any, node_sub: Any) -> None:
    """`files ls|get TASK [PATH]` under `sub`, `files ls|get NODE [PATH]` under `node_sub`."""
    for parent, target, what in ((sub, "task", "a task's directory (stdout.txt, stderr.txt, wd/)"),
                                 (node_sub, "node", "a compute node's directories (shared/, startup/, workitems/)")):
        f = cmd("files", f"list or download the files of {what}, through a short helper pod on the node", parent)
        fsub = f.add_subparsers(dest="op", metavar="OP", required=True)
        for op, help in (("ls", "list files with sizes and modification times (recursively)"),
                         ("get", "download one file (to stdout, or -o FILE)")):
            x = cmd(op, help, fsub)
            x.add_argument(target, help="Task name (or its Batch id with --job)" if target == "task" else "ComputeNode name")
            x.add_argument("path", nargs="?" if op == "ls" else None, metavar="PATH",
                           help="relative to the directory (e.g. wd/out.txt); '..' is refused")
            if target == "task":
                x.add_argument("--job", help="resolve TASK as a Batch task id within this job")
            if op == "ls":
                x.add_argument("-o", "--output", choices=("json", "yaml"),
                               help="Batch NodeFile entries (name, isDirectory, properties) instead of a table")
                x.add_argument("--depth", type=int, default=None, help="levels below PATH to list (default: all)")
            else:
                x.add_argument("-o", "--output-file", metavar="FILE", help="write the file here (default: stdout)")
            x.add_argument("--image", default=os.environ.get("PODBATCH_TOOLS_IMAGE") or DEFAULT_IMAGE,
                           help="the helper pod's image, with sh, find, stat and cat "
                                "(default $PODBATCH_TOOLS_IMAGE, else busybox, as the operator's tools_image)")
            x.add_argument("--timeout", type=float, default=60, help="seconds to wait for the helper pod to start (default 60)")
            x.set_defaults(run=cmd_files)
