"""`kubectl podbatch`: apply and inspect podbatch objects, follow jobs, read task logs, and
ask for Batch operations (node reboot/reimage/remove/disable, job disable/terminate,
task reactivate/terminate) by patching the objects' specs.

Exit codes are in `output` (EXIT_*): 0 ok, 1 a task of the job failed (`status`, `watch`),
2 usage, invalid manifests or an error from the cluster, 3 `watch --timeout` passed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from podbatch.cli import colltasks
from podbatch.cli import format as fmt
from podbatch.cli import output
from podbatch.cli.output import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_TIMEOUT

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

    p = argparse.ArgumentParser(prog="kubectl podbatch", parents=[common], epilog=output.EXIT_CODES_HELP,
                                description="Azure Batch semantics on Kubernetes: pools, jobs and tasks.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(name: str, help: str, parent: Any = sub, **kw: Any) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=help, description=help, parents=[common], **kw)

    def listing(name: str, help: str) -> argparse.ArgumentParser:
        x = cmd(name, help)
        x.add_argument("-o", "--output", choices=output.OUTPUTS,
                       help="json|yaml: a List of the objects (as kubectl get -o json|yaml); "
                            "name: kind.podbatch.io/NAME lines; wide: more columns")
        x.add_argument("-l", "--selector", metavar="SELECTOR",
                       help="label selector, as kubectl's (-l app=x,tier!=web, -l 'env in (a,b)')")
        return x

    a = cmd("apply", "validate every podbatch object, then create or update them (server-side apply)")
    a.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR", help="manifest file or directory (repeatable; - for stdin)")
    a.add_argument("--dry-run", action="store_true", help="send with dryRun=All: the server checks, nothing is stored")
    a.add_argument("--force-conflicts", action="store_true",
                   help="take over fields another field manager owns (as kubectl apply --server-side --force-conflicts); "
                        "without it such an object is not changed and its conflicts are listed")
    a.add_argument("-R", "--recursive", action="store_true", default=True, help=argparse.SUPPRESS)

    v = cmd("validate", "check manifests against the podbatch schemas without a cluster")
    v.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR")

    s = cmd("status", "a job's state, progress, task counts and why tasks wait (exit 1 when a task failed)",
            epilog=output.EXIT_CODES_HELP + "; status does not wait: a running job without failures exits 0")
    s.add_argument("job")

    w = cmd("watch", "follow a job's progress live until it completes (exit 1 when a task failed)",
            epilog=output.EXIT_CODES_HELP)
    w.add_argument("job")
    w.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    w.add_argument("--timeout", type=float, default=0, help="give up after this many seconds (default: never)")

    t = listing("tasks", "the tasks of a job (without JOB: of every job of the namespace)")
    t.add_argument("job", nargs="?")

    lg = cmd("logs", "the output of a task's current attempt, read through the API")
    lg.add_argument("task", help="Task name (or its Batch id with --job)")
    lg.add_argument("--job", help="resolve TASK as a Batch task id within this job")
    lg.add_argument("--stderr", action="store_true", help="only stderr.txt (while the pod runs, or on this machine's node dir)")
    lg.add_argument("--attempt", type=int, help="an earlier attempt (pod <task>-<attempt>)")
    lg.add_argument("--tail", type=int, help="last N lines")

    listing("pools", "the pools of the namespace")
    nd = listing("nodes", "the compute nodes of a pool (without POOL: of every pool of the namespace)")
    nd.add_argument("pool", nargs="?")
    listing("jobs", "the jobs of the namespace")
    listing("schedules", "the job schedules of the namespace")

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
    x.add_argument("--reason", default="UserTerminate", metavar="TEXT",
                   help="written to the Job's spec.terminateReason (default UserTerminate)")

    task = cmd("task", "task operations (patch Task.spec; a TaskCollection's task: its collection's spec)")
    tsub = task.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("reactivate", "run a completed (failed) task again"), ("terminate", "end a task")):
        x = cmd(action, text, tsub)
        x.add_argument("task", help="Task name, or a collection's task <collection>-<index> (or a Batch id with --job)")
        x.add_argument("--job", help="resolve TASK as a Batch task id (or name) within this job")

    # `files ls|get TASK` and `node files ls|get NODE` (cli/files.py); they set args.run
    from podbatch.cli import files
    files.add_commands(cmd, sub, nsub)

    # `pool evaluate POOL`: Batch's evaluateAutoScale (cli/evaluate.py)
    from podbatch.cli import evaluate
    evaluate.add_commands(cmd, sub)

    # `import FILE.json`: Azure Batch JSON to podbatch objects (cli/importer.py)
    im = cmd("import", "convert Azure Batch pool, job, task or job-schedule JSON (REST, az batch, templates) "
                       "to podbatch objects: print them, or --apply; fields without an equivalent go to stderr")
    im.add_argument("file", metavar="FILE.json", help="the Batch JSON (- for stdin)")
    im.add_argument("--job", metavar="NAME", help="the Job that imported tasks belong to (needed for task JSON)")
    im.add_argument("--node-group", metavar="kwok|static:KEY=VALUE|clusterapi:NAME",
                    help="where imported pools' Nodes come from (default: a placeholder adopting Nodes labelled "
                         "podbatch.io/imported-pool=<pool>)")
    im.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a template parameter (repeatable)")
    im.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="printed form (default yaml)")
    im.add_argument("--apply", action="store_true", help="apply the objects (as `apply -f`) instead of printing them")
    im.add_argument("--dry-run", action="store_true", help="with --apply: the server checks, nothing is stored")
    im.set_defaults(run=cmd_import)

    ver = cmd("version", "this CLI's version, the API version it speaks, and what the cluster serves")
    ver.add_argument("--client", action="store_true", help="only the CLI's version (no cluster needed)")
    ver.add_argument("-o", "--output", choices=("json", "yaml"))
    comp = cmd("completion", "print a shell completion script (source <(kubectl podbatch completion bash))")
    comp.add_argument("shell", choices=("bash", "zsh"))
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
    order = {"Namespace": -2, "Pool": 0, "ComputeNode": 1, "Job": 2, "JobSchedule": 3, "Task": 4, "TaskCollection": 4}
    conflicts = []
    jobs: dict[str, dict | None] = {}   # Job name -> the Job (applied now, or read), for Tasks' owner
    for m in sorted(docs, key=lambda m: order.get(m.kind, -1)):
        body = m.body
        if m.kind in ("Task", "TaskCollection"):
            job_name = (body.get("spec") or {}).get("jobName")
            if job_name and job_name not in jobs:
                jobs[job_name] = cluster.find("Job", job_name)
            body = with_job_owner(body, jobs.get(job_name))
        try:
            verb, obj = cluster.apply(body, dry_run=args.dry_run, force_conflicts=getattr(args, "force_conflicts", False))
        except ApplyConflict as e:   # the others are still applied, as kubectl does
            conflicts.append(str(e))
            continue
        if m.kind == "Job" and (obj.get("metadata") or {}).get("uid"):
            jobs[m.name] = obj
        group = (obj.get("apiVersion") or "").split("/")[0]
        kind = m.kind.lower() + (f".{group}" if "." in group else "")
        print(f"{kind}/{m.name} {verb}{' (dry run)' if args.dry_run else ''}", file=out)
    if conflicts:
        print("error: " + "\nerror: ".join(conflicts), file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def with_job_owner(task: dict, job: dict | None) -> dict:
    """The Task with its ownerReference to its Job, as the operator would give it later: a
    Task applied this way costs the operator no adoption write, and deleting the Job
    deletes it at once. Unchanged when the Job is unknown or the Task names an owner Job."""
    from podbatch.core.jobs import job_owner_uid
    from podbatch.core.pods import owner_reference
    if not job or not (job.get("metadata") or {}).get("uid") or job_owner_uid(task):
        return task
    meta = dict(task.get("metadata") or {})
    meta["ownerReferences"] = [*(meta.get("ownerReferences") or []), owner_reference({**job, "kind": "Job"})]
    return {**task, "metadata": meta}


def snapshot(cluster, job_name: str) -> dict[str, Any]:
    """Everything `status`/`watch`/the demo show about one job."""
    from podbatch.cli.kube import CliError
    job = cluster.get("Job", job_name)
    tasks = cluster.tasks_of(job_name)
    colls = colltasks.collections(cluster, job_name)
    pool_name = ((job.get("spec") or {}).get("poolInfo") or {}).get("poolId") \
        or ((job.get("status") or {}).get("executionInfo") or {}).get("poolId")
    pool, nodes = None, []
    if pool_name:
        try:
            pool = cluster.get("Pool", pool_name)
        except CliError:
            pool = {"metadata": {"name": pool_name}, "status": {}}
        nodes = cluster.nodes_of(pool_name)
    return {"job": job, "tasks": tasks, "pool": pool, "nodes": nodes, "collections": colls,
            "counts": fmt.count_tasks(tasks, colls)}


def progress_line(snap: dict[str, Any], ascii: bool = False) -> str:
    job = snap["job"]
    return fmt.job_progress_line(job["metadata"]["name"], snap["counts"], (job.get("status") or {}).get("state"),
                                 fmt.pool_node_summary(snap["pool"], snap["nodes"]) if snap["pool"] else None,
                                 ascii=ascii)


def cmd_status(args: argparse.Namespace, out=None) -> int:
    snap = snapshot(_cluster(args), args.job)
    print(fmt.status_report(snap["job"], snap["tasks"], snap["pool"], snap["nodes"], collections=snap["collections"]),
          file=out)
    return output.job_exit_code(snap["job"], snap["counts"])


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
                rc = output.job_exit_code(snap["job"], snap["counts"])
                if rc:
                    print(f"job {args.job} did not succeed: {snap['counts']['failed']} failed task(s)"
                          + _ended(snap["job"]), file=sys.stderr)
                return rc
            if args.timeout and time.monotonic() - start > args.timeout:
                live.done()
                print(f"timed out after {args.timeout:.0f}s; the job has not completed", file=sys.stderr)
                return EXIT_TIMEOUT
            time.sleep(args.interval)
    except KeyboardInterrupt:
        live.done()
        return EXIT_INTERRUPTED


def _ended(job: dict[str, Any]) -> str:
    reason = ((job.get("status") or {}).get("executionInfo") or {}).get("terminateReason")
    return f", the job ended with {reason}" if reason else ""


# command -> (kind, table, positional naming the owner, the owner's kind, the spec field naming it)
LISTINGS: dict[str, tuple[str, Callable[..., str], str | None, str | None, str | None]] = {
    "pools": ("Pool", fmt.pools_table, None, None, None),
    "nodes": ("ComputeNode", fmt.nodes_table, "pool", "Pool", "poolName"),
    "jobs": ("Job", fmt.jobs_table, None, None, None),
    "tasks": ("Task", fmt.tasks_table, "job", "Job", "jobName"),
    "schedules": ("JobSchedule", fmt.schedules_table, None, None, None),
}


def cmd_list(args: argparse.Namespace, out=None) -> int:
    """Every listing: the objects of a kind (of one owner), filtered by -l on the server,
    in the table's order for every output."""
    kind, table, owner_arg, owner_kind, owner_field = LISTINGS[args.command]
    cluster = _cluster(args)
    owner = getattr(args, owner_arg) if owner_arg else None
    if owner:
        cluster.get(owner_kind, owner)   # a clear not-found for a misspelt job or pool
    items = cluster.list(kind, label_selector=args.selector)
    if owner:
        items = [o for o in items if (o.get("spec") or {}).get(owner_field) == owner]
    if kind == "Task":   # and the tasks of the job's (the namespace's) TaskCollections
        items += colltasks.listing(cluster, owner, args.selector)
    items = fmt.sort_tasks(items) if kind == "Task" else fmt.sort_by_name(items)
    text = output.render_objects(items, args.output, table)
    if text is not None:
        print(text, file=out)
    elif args.output in (None, "wide"):   # as kubectl: the note on stderr, nothing on stdout
        where = f"{owner_kind.lower()} {owner}" if owner else f"namespace {cluster.namespace}"
        print(f"no {args.command} in {where}" + (f" matching -l {args.selector}" if args.selector else ""),
              file=sys.stderr)
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, out=None) -> int:
    from podbatch.cli.kube import CliError, is_fake_node, read_pod_log
    cluster = _cluster(args)
    task = colltasks.resolve(cluster, args.task, args.job)
    name = task["metadata"]["name"]
    pods = colltasks.task_pods(cluster, task)
    if args.attempt:
        pod = next((p for p in pods if p["metadata"]["name"].endswith(f"-{args.attempt}")), None)
        if pod is None:
            raise CliError(f"task {name} has no pod of attempt {args.attempt} (pods: {', '.join(p['metadata']['name'] for p in pods) or 'none'})")
    else:
        current = (task.get("status") or {}).get("podName")
        pod = next((p for p in pods if p["metadata"]["name"] == current), pods[-1] if pods else None)
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


def cmd_version(args: argparse.Namespace, out=None) -> int:
    """The CLI's version and API version; unless --client, the Kubernetes version and the
    versions of podbatch.io the cluster serves (from discovery, readable by any user). The
    operator's own version is not visible through the API."""
    import podbatch
    info: dict[str, Any] = {"clientVersion": {"podbatch": podbatch.__version__, "apiVersion": podbatch.API_VERSION}}
    rc = EXIT_OK
    if not args.client:
        from podbatch.cli.kube import CliError, new_client, server_versions
        try:
            api, _ = new_client(getattr(args, "kubeconfig", None), getattr(args, "context", None))
            info["serverVersion"] = server_versions(api)
        except Exception as e:  # noqa: BLE001 - the client's version is still printed
            from podbatch.cli.kube import api_error
            print(f"error: {e if isinstance(e, CliError) else api_error(e)}", file=sys.stderr)
            rc = EXIT_ERROR
    if args.output:
        print(output.dump(info, args.output), file=out)
    else:
        print(fmt.version_text(info), file=out)
    return rc


def cmd_completion(args: argparse.Namespace, out=None) -> int:
    from podbatch.cli import completion
    print(completion.script(args.shell), end="", file=out)
    return EXIT_OK


def cmd_operation(args: argparse.Namespace, out=None) -> int:
    from podbatch.cli.kube import new_request_id
    kind, name, patch = spec_patch(args, new_request_id)
    cluster = _cluster(args)
    if kind == "Task" and (getattr(args, "job", None) or cluster.find("Task", name) is None):
        task = colltasks.resolve(cluster, name, getattr(args, "job", None))
        if colltasks.collection_of(task) is not None:   # a collection's task: its collection's spec is patched
            return colltasks.operate(cluster, task, args.action, new_request_id, out)
        name = task["metadata"]["name"]
    cluster.patch_spec(kind, name, patch)
    what = ", ".join(f"{k}={v}" for k, v in _flatten(patch))
    print(f"{kind.lower()}.podbatch.io/{name} patched: {what}", file=out)
    return 0


def cmd_import(args: argparse.Namespace, out=None) -> int:
    """Convert (cli/importer.py), say on stderr what has no equivalent, then print or apply."""
    import tempfile
    from podbatch.cli import importer
    params = dict(p.partition("=")[::2] for p in args.param)
    if any("=" not in p for p in args.param):
        raise importer.ImportProblem("--param takes NAME=VALUE")
    result = importer.import_data(importer.read_json(args.file), job=args.job, params=params,
                                  node_group=importer.parse_node_group(args.node_group))
    print(importer.report(result, args.file), file=sys.stderr)
    if not args.apply:
        text = importer.to_json(result) if args.output == "json" else importer.to_yaml(result, args.file)
        print(text.rstrip("\n"), file=out)
        return EXIT_OK
    if result.placeholders:
        print("error: not applied: say where the pool's Nodes come from with --node-group", file=sys.stderr)
        return EXIT_ERROR
    with tempfile.TemporaryDirectory() as tmp:   # through apply's own path: validation, order, conflicts
        manifest = Path(tmp, "imported.yaml")
        manifest.write_text(importer.to_yaml(result, args.file))
        args.filename = [str(manifest)]
        return cmd_apply(args, out)


def _flatten(d: dict[str, Any], prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


COMMANDS = {
    "apply": cmd_apply, "validate": cmd_validate, "status": cmd_status, "watch": cmd_watch,
    "logs": cmd_logs, **{name: cmd_list for name in LISTINGS},
    "node": cmd_operation, "job": cmd_operation, "task": cmd_operation,
    "version": cmd_version, "completion": cmd_completion,
}


def main(argv: Sequence[str] | None = None) -> int:
    from podbatch.cli.kube import CliError
    from podbatch.cli.manifests import ManifestError
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["__complete"]:   # shell completion (completion.py), hidden from --help
        from podbatch.cli import completion
        return completion.main(argv[1:], build_parser())
    args = parse_args(argv)
    try:
        return (getattr(args, "run", None) or COMMANDS[args.command])(args)
    except (CliError, ManifestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # an API or connection error: one line, not a traceback
        from kubernetes.client.rest import ApiException
        from podbatch.cli.kube import api_error
        if isinstance(e, ApiException) or type(e).__module__.startswith(("urllib3", "kubernetes")):
            print(f"error: {api_error(e)}", file=sys.stderr)
            return EXIT_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())
