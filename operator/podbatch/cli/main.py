"""`kubectl podbatch`: apply and inspect podbatch objects, follow jobs, read task logs, and
ask for Batch operations (node reboot/reimage/remove/disable, job disable/terminate,
task reactivate/terminate) by patching the objects' specs.

Exit codes: 0 ok, 1 an error talking to the cluster or a job that did not complete
(`watch`), 2 invalid manifests or usage.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from podbatch.cli import format as fmt

NODE_OPTIONS = ("requeue", "terminate", "taskcompletion", "retaineddata")
DISABLE_NODE_OPTIONS = ("requeue", "terminate", "taskcompletion")
JOB_DISABLE_OPTIONS = ("requeue", "terminate", "wait")
NODE_OP_FIELDS = {  # operation -> (spec field, option field)
    "reboot": ("reboot", "nodeRebootOption"),
    "reimage": ("reimage", "nodeReimageOption"),
    "remove": ("remove", "nodeDeallocationOption"),
}


# --- arguments --------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="kubeconfig file (default $KUBECONFIG, ~/.kube/config)")
    common.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context")
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace (default: the context's, else default)")

    p = argparse.ArgumentParser(prog="kubectl podbatch", parents=[common],
                                description="Azure Batch semantics on Kubernetes: pools, jobs and tasks.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(name: str, help: str, parent: Any = sub) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help, description=help, parents=[common])

    a = cmd("apply", "validate every podbatch object, then create or update them (server-side apply)")
    a.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR", help="manifest file or directory (repeatable; - for stdin)")
    a.add_argument("--dry-run", action="store_true", help="send with dryRun=All: the server checks, nothing is stored")
    a.add_argument("--force-conflicts", action="store_true",
                   help="take over fields another field manager owns (as kubectl apply --server-side --force-conflicts); "
                        "without it such an object is not changed and its conflicts are listed")
    a.add_argument("-R", "--recursive", action="store_true", default=True, help=argparse.SUPPRESS)

    v = cmd("validate", "check manifests against the podbatch schemas without a cluster")
    v.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR")

    s = cmd("status", "a job's state, progress, task counts and why tasks wait")
    s.add_argument("job")

    w = cmd("watch", "follow a job's progress live until it completes")
    w.add_argument("job")
    w.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    w.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (default: never)")

    t = cmd("tasks", "the tasks of a job as a table")
    t.add_argument("job")
    t.add_argument("-o", "--output", choices=["wide"], help="more columns")

    lg = cmd("logs", "the output of a task's current attempt, read through the API")
    lg.add_argument("task", help="Task name (or its Batch id with --job)")
    lg.add_argument("--job", help="resolve TASK as a Batch task id within this job")
    lg.add_argument("--stderr", action="store_true", help="only stderr.txt (while the pod runs, or on this machine's node dir)")
    lg.add_argument("--attempt", type=int, help="an earlier attempt (pod <task>-<attempt>)")
    lg.add_argument("--tail", type=int, help="last N lines")

    cmd("pools", "the pools of the namespace")
    nd = cmd("nodes", "the compute nodes of a pool")
    nd.add_argument("pool")

    node = cmd("node", "node operations (patch ComputeNode.spec)")
    nsub = node.add_subparsers(dest="action", metavar="ACTION", required=True)
    for op in ("reboot", "reimage", "remove"):
        x = cmd(op, f"{op} a compute node (a new request id each time)", nsub)
        x.add_argument("node", help="ComputeNode name")
        x.add_argument("--option", choices=NODE_OPTIONS, default="requeue", help="what happens to its running tasks (default requeue)")
    x = cmd("disable", "stop scheduling tasks on a node", nsub)
    x.add_argument("node")
    x.add_argument("--option", choices=DISABLE_NODE_OPTIONS, default="requeue", help="what happens to its running tasks (default requeue)")
    x = cmd("enable", "schedule tasks on a node again", nsub)
    x.add_argument("node")

    job = cmd("job", "job operations (patch Job.spec)")
    jsub = job.add_subparsers(dest="action", metavar="ACTION", required=True)
    x = cmd("disable", "stop scheduling the job's tasks", jsub)
    x.add_argument("job")
    x.add_argument("--option", choices=JOB_DISABLE_OPTIONS, default="requeue", help="what happens to running tasks (default requeue)")
    x = cmd("enable", "schedule the job's tasks again", jsub)
    x.add_argument("job")
    x = cmd("terminate", "end the job (running tasks are terminated)", jsub)
    x.add_argument("job")
    x.add_argument("--reason", default="UserTerminate", help="terminateReason (default UserTerminate)")

    task = cmd("task", "task operations (patch Task.spec)")
    tsub = task.add_subparsers(dest="action", metavar="ACTION", required=True)
    x = cmd("reactivate", "run a completed (failed) task again", tsub)
    x.add_argument("task")
    x = cmd("terminate", "end a task", tsub)
    x.add_argument("task")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def spec_patch(args: argparse.Namespace, new_id: Callable[[], str]) -> tuple[str, str, dict[str, Any]]:
    """(kind, name, spec patch) of a node/job/task operation. Pure; new_id makes request ids."""
    if args.command == "node":
        if args.action in NODE_OP_FIELDS:
            field, option = NODE_OP_FIELDS[args.action]
            return "ComputeNode", args.node, {field: {"requestId": new_id(), option: args.option}}
        if args.action == "disable":
            return "ComputeNode", args.node, {"schedulingState": "disabled", "nodeDisableSchedulingOption": args.option}
        if args.action == "enable":
            return "ComputeNode", args.node, {"schedulingState": "enabled"}
    if args.command == "job":
        if args.action == "disable":
            return "Job", args.job, {"desiredState": "disabled", "disableTasks": args.option}
        if args.action == "enable":
            return "Job", args.job, {"desiredState": "active"}
        if args.action == "terminate":
            return "Job", args.job, {"desiredState": "terminated", "terminateReason": args.reason}
    if args.command == "task":
        if args.action == "reactivate":
            return "Task", args.task, {"reactivateRequestId": new_id(), "desiredState": "active"}
        if args.action == "terminate":
            return "Task", args.task, {"desiredState": "terminated"}
    raise ValueError(f"not an operation: {args.command} {getattr(args, 'action', '')}")


# --- commands ---------------------------------------------------------------------

def _cluster(args: argparse.Namespace):
    from podbatch.cli.kube import Cluster, new_client
    api, default_ns = new_client(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    return Cluster(api, getattr(args, "namespace", None) or default_ns)


def cmd_validate(args: argparse.Namespace, out=None) -> int:
    from podbatch.cli import manifests
    docs = manifests.load(args.filename)
    problems = manifests.validate(docs)
    if problems:
        print(fmt.validation_report(problems), file=sys.stderr)
        print(f"{len(problems)} invalid object(s) of {len(docs)}; nothing was sent", file=sys.stderr)
        return 2
    if args.command == "validate":
        print(f"{len(docs)} object(s) valid", file=out)
    return 0


def cmd_apply(args: argparse.Namespace, out=None) -> int:
    from podbatch.cli import manifests
    from podbatch.cli.kube import ApplyConflict
    docs = manifests.load(args.filename)
    rc = cmd_validate(args, out)
    if rc:
        return rc
    cluster = _cluster(args)
    # Pools before jobs before tasks, other kinds (namespaces, config) first of all.
    order = {"Namespace": -2, "Pool": 0, "ComputeNode": 1, "Job": 2, "JobSchedule": 3, "Task": 4}
    conflicts = []
    for m in sorted(docs, key=lambda m: order.get(m.kind, -1)):
        try:
            verb, obj = cluster.apply(m.body, dry_run=args.dry_run, force_conflicts=getattr(args, "force_conflicts", False))
        except ApplyConflict as e:   # the others are still applied, as kubectl does
            conflicts.append(str(e))
            continue
        group = (obj.get("apiVersion") or "").split("/")[0]
        kind = m.kind.lower() + (f".{group}" if "." in group else "")
        print(f"{kind}/{m.name} {verb}{' (dry run)' if args.dry_run else ''}", file=out)
    if conflicts:
        print("error: " + "\nerror: ".join(conflicts), file=sys.stderr)
        return 1
    return 0


def snapshot(cluster, job_name: str) -> dict[str, Any]:
    """Everything `status`/`watch`/the demo show about one job."""
    from podbatch.cli.kube import CliError
    job = cluster.get("Job", job_name)
    tasks = cluster.tasks_of(job_name)
    pool_name = ((job.get("spec") or {}).get("poolInfo") or {}).get("poolId") \
        or ((job.get("status") or {}).get("executionInfo") or {}).get("poolId")
    pool, nodes = None, []
    if pool_name:
        try:
            pool = cluster.get("Pool", pool_name)
        except CliError:
            pool = {"metadata": {"name": pool_name}, "status": {}}
        nodes = cluster.nodes_of(pool_name)
    return {"job": job, "tasks": tasks, "pool": pool, "nodes": nodes, "counts": fmt.count_tasks(tasks)}


def progress_line(snap: dict[str, Any], ascii: bool = False) -> str:
    job = snap["job"]
    return fmt.job_progress_line(job["metadata"]["name"], snap["counts"], (job.get("status") or {}).get("state"),
                                 fmt.pool_node_summary(snap["pool"], snap["nodes"]) if snap["pool"] else None,
                                 ascii=ascii)


def cmd_status(args: argparse.Namespace, out=None) -> int:
    snap = snapshot(_cluster(args), args.job)
    print(fmt.status_report(snap["job"], snap["tasks"], snap["pool"], snap["nodes"]), file=out)
    return 0


class LiveLine:
    """One line rewritten in place on a terminal; plain lines (only when changed) otherwise."""

    def __init__(self, out=None):
        self.out = out or sys.stdout
        self.tty = hasattr(self.out, "isatty") and self.out.isatty()
        self.last = None

    def show(self, text: str) -> None:
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns
            self.out.write("\r\033[K" + text[: width - 1])
            self.out.flush()
        elif text != self.last:
            print(time.strftime("%H:%M:%S ") + text, file=self.out, flush=True)
        self.last = text

    def done(self) -> None:
        if self.tty and self.last is not None:
            self.out.write("\n")
            self.out.flush()
        self.last = None


def cmd_watch(args: argparse.Namespace, out=None) -> int:
    cluster = _cluster(args)
    live = LiveLine(out)
    start = time.monotonic()
    try:
        while True:
            snap = snapshot(cluster, args.job)
            live.show(progress_line(snap))
            if fmt.job_done(snap["job"], snap["counts"]):
                live.done()
                return 0
            if args.timeout and time.monotonic() - start > args.timeout:
                live.done()
                print(f"timed out after {args.timeout:.0f}s; the job has not completed", file=sys.stderr)
                return 1
            time.sleep(args.interval)
    except KeyboardInterrupt:
        live.done()
        return 130


def cmd_tasks(args: argparse.Namespace, out=None) -> int:
    cluster = _cluster(args)
    cluster.get("Job", args.job)
    tasks = cluster.tasks_of(args.job)
    if not tasks:
        print(f"job {args.job} has no tasks", file=out)
        return 0
    print(fmt.tasks_table(tasks, wide=args.output == "wide"), file=out)
    return 0


def _resolve_task(cluster, name: str, job: str | None) -> dict[str, Any]:
    from podbatch.cli.kube import CliError
    if job:
        for t in cluster.tasks_of(job):
            if fmt.task_id(t) == name or t["metadata"]["name"] == name:
                return t
        raise CliError(f"job {job} has no task with id or name {name!r}")
    return cluster.get("Task", name)


def cmd_logs(args: argparse.Namespace, out=None) -> int:
    from podbatch.cli.kube import CliError, is_fake_node, read_pod_log
    cluster = _cluster(args)
    task = _resolve_task(cluster, args.task, args.job)
    name = task["metadata"]["name"]
    pods = cluster.task_pods(name)
    if args.attempt:
        pod = next((p for p in pods if p["metadata"]["name"].endswith(f"-{args.attempt}")), None)
        if pod is None:
            raise CliError(f"task {name} has no pod of attempt {args.attempt} (pods: {', '.join(p['metadata']['name'] for p in pods) or 'none'})")
    else:
        pod = cluster.current_pod(task)
    if pod is None:
        state = fmt.task_state(task)
        reason = ((task.get("status") or {}).get("pendingReason") or {}).get("reason")
        raise CliError(f"task {name} has no pod (state {state}{', waiting: ' + reason if reason else ''})")
    node = pod["spec"].get("nodeName")
    if is_fake_node(cluster, node):
        raise CliError(f"task {name} ran on the simulated node {node} (pod {pod['metadata']['name']}): simulated nodes keep no container logs")
    if args.stderr:
        print(_stderr_of(cluster, task, pod), end="", file=out)
        return 0
    print(read_pod_log(cluster, pod, tail=args.tail), end="", file=out)
    return 0


def _stderr_of(cluster, task: dict[str, Any], pod: dict[str, Any]) -> str:
    """stderr.txt of the task: by exec while the pod runs, else from the node dir if it is on
    this machine. (The log API of 1.20 servers does not split the streams.)"""
    from podbatch.cli.kube import CliError
    task_dir = ((task.get("status") or {}).get("nodeInfo") or {}).get("taskRootDirectory")
    env = {e["name"]: e.get("value") for c in pod["spec"].get("containers", []) for e in c.get("env") or []}
    task_dir = task_dir or env.get("AZ_BATCH_TASK_DIR")
    if (pod.get("status") or {}).get("phase") == "Running" and task_dir:
        from kubernetes.stream import stream
        try:
            return stream(cluster.core.connect_get_namespaced_pod_exec, pod["metadata"]["name"], cluster.namespace,
                          container="task", command=["cat", f"{task_dir}/stderr.txt"],
                          stderr=True, stdin=False, stdout=True, tty=False)
        except Exception as e:  # noqa: BLE001 - fall through to the node dir
            last = str(e)
    else:
        last = "the pod is not running"
    if task_dir and Path(task_dir, "stderr.txt").is_file():
        return Path(task_dir, "stderr.txt").read_text(errors="replace")
    raise CliError(f"stderr.txt of {task['metadata']['name']} is on node {pod['spec'].get('nodeName')} at "
                   f"{task_dir or '<task dir unknown>'}/stderr.txt ({last}); `kubectl podbatch logs` shows stdout and stderr together")


def cmd_pools(args: argparse.Namespace, out=None) -> int:
    pools = _cluster(args).list("Pool")
    print(fmt.pools_table(pools) if pools else "no pools", file=out)
    return 0


def cmd_nodes(args: argparse.Namespace, out=None) -> int:
    cluster = _cluster(args)
    cluster.get("Pool", args.pool)
    nodes = cluster.nodes_of(args.pool)
    print(fmt.nodes_table(nodes) if nodes else f"pool {args.pool} has no compute nodes yet", file=out)
    return 0


def cmd_operation(args: argparse.Namespace, out=None) -> int:
    from podbatch.cli.kube import new_request_id
    kind, name, patch = spec_patch(args, new_request_id)
    cluster = _cluster(args)
    cluster.patch_spec(kind, name, patch)
    what = ", ".join(f"{k}={v}" for k, v in _flatten(patch))
    print(f"{kind.lower()}.podbatch.io/{name} patched: {what}", file=out)
    return 0


def _flatten(d: dict[str, Any], prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


COMMANDS = {
    "apply": cmd_apply, "validate": cmd_validate, "status": cmd_status, "watch": cmd_watch,
    "tasks": cmd_tasks, "logs": cmd_logs, "pools": cmd_pools, "nodes": cmd_nodes,
    "node": cmd_operation, "job": cmd_operation, "task": cmd_operation,
}


def main(argv: Sequence[str] | None = None) -> int:
    from podbatch.cli.kube import CliError
    from podbatch.cli.manifests import ManifestError
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CliError, ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ManifestError) else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # an API or connection error: one line, not a traceback
        from kubernetes.client.rest import ApiException
        from podbatch.cli.kube import api_error
        if isinstance(e, ApiException) or type(e).__module__.startswith(("urllib3", "kubernetes")):
            print(f"error: {api_error(e)}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
