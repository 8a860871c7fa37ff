"""Pure formatting for `kubectl podbatch` and `make demo`: dicts (API objects) in, text out.

Nothing here talks to a cluster, so every function is unit-tested on plain dicts.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, Iterable, Mapping, Sequence

FULL, EMPTY = "█", "░"
TASK_STATES = ("active", "preparing", "running", "completed")


def _get(obj: Mapping[str, Any] | None, *path: str, default: Any = None) -> Any:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, Mapping) or p not in cur:
            return default
        cur = cur[p]
    return default if cur is None else cur


# --- progress ---------------------------------------------------------------------

def progress_bar(done: int, total: int, width: int = 10, ascii: bool = False) -> str:
    """`████████░░` for done/total; an empty bar when there is nothing to do."""
    full, empty = ("#", "-") if ascii else (FULL, EMPTY)
    if width <= 0:
        return ""
    if total <= 0:
        return empty * width
    done = max(0, min(done, total))
    n = (done * width) // total
    if done and not n:
        n = 1  # something happened: show it
    if done < total and n == width:
        n = width - 1  # not finished: never a full bar
    return full * n + empty * (width - n)


def task_id(task: Mapping[str, Any]) -> str:
    return _get(task, "spec", "id") or _get(task, "metadata", "name", default="")


def task_state(task: Mapping[str, Any]) -> str:
    """The task's state; `active` for a task podbatch has not seen yet (as Batch shows it)."""
    return _get(task, "status", "state") or "active"


def task_result(task: Mapping[str, Any]) -> str | None:
    """success | failure for a completed task (from result, else the exit code), else None."""
    if task_state(task) != "completed":
        return None
    info = _get(task, "status", "executionInfo", default={})
    result = info.get("result")
    if result in ("success", "failure"):
        return result
    if info.get("failureInfo"):
        return "failure"
    code = info.get("exitCode")
    if code is None:
        return "failure"
    return "success" if code == 0 else "failure"


def count_tasks(tasks: Iterable[Mapping[str, Any]], collections: Iterable[Mapping[str, Any]] = ()) -> dict[str, int]:
    """Counts by state plus succeeded/failed/total, computed from the tasks themselves and
    from the taskCounts of the TaskCollections' status (their tasks are no objects; a
    collection the operator has not counted yet is all active and unseen)."""
    c = {"total": 0, "active": 0, "preparing": 0, "running": 0, "completed": 0, "succeeded": 0, "failed": 0,
         "unseen": 0}
    for coll in collections:
        size = collection_size(coll)
        c["total"] += size
        tc = _get(coll, "status", "taskCounts")
        if not tc:
            c["active"] += size
            c["unseen"] += size
            continue
        for k in ("active", "running", "completed", "succeeded", "failed"):
            c[k] += int(tc.get(k) or 0)
    for t in tasks:
        c["total"] += 1
        state = task_state(t)
        c[state] = c.get(state, 0) + 1
        if not _get(t, "status", "state"):
            c["unseen"] += 1
        r = task_result(t)
        if r == "success":
            c["succeeded"] += 1
        elif r == "failure":
            c["failed"] += 1
    return c


def collection_size(coll: Mapping[str, Any]) -> int:
    """How many tasks a TaskCollection has: its status's size, else counted from its spec."""
    size = _get(coll, "status", "size")
    if size is not None:
        return int(size)
    from podbatch.core.collections import size as spec_size
    try:
        return spec_size(coll.get("spec") or {})
    except (TypeError, ValueError, KeyError):
        return 0


def collection_lines(collections: Sequence[Mapping[str, Any]]) -> list[str]:
    """`status`'s lines for a job's TaskCollections: counts, index ranges, why one is stalled."""
    lines = []
    for coll in sort_by_name(collections):
        st = coll.get("status") or {}
        tc = st.get("taskCounts") or {}
        name = _get(coll, "metadata", "name", default="?")
        text = (f"  {name}: {collection_size(coll)} tasks, {tc.get('active', 0)} active, {tc.get('running', 0)} running, "
                f"{tc.get('succeeded', 0)} succeeded" + (f" ({st['succeededIndexes']})" if st.get("succeededIndexes") else "")
                + f", {tc.get('failed', 0)} failed" + (f" ({st['failedIndexes']})" if st.get("failedIndexes") else ""))
        if not st:
            text = f"  {name}: {collection_size(coll)} tasks, not seen by the operator yet"
        lines.append(text)
        for cond in st.get("conditions") or []:
            if cond.get("type") == "Stalled" and cond.get("status") == "True":
                lines.append(f"    stalled: {cond.get('reason')}: {cond.get('message')}")
    return (["Collections:"] + lines) if lines else []


def pool_node_summary(pool: Mapping[str, Any] | None, nodes: Sequence[Mapping[str, Any]] = ()) -> str:
    """`pool quickstart: 3 idle/running nodes` (+ other states), from the pool's nodeCounts
    or, when the pool has none yet, from its ComputeNodes."""
    if not pool:
        return "pool: not found"
    name = _get(pool, "metadata", "name", default="?")
    counts = dict(_get(pool, "status", "nodeCounts", default={}))
    if not counts and nodes:
        states = Counter(_get(n, "status", "state") or "unknown" for n in nodes)
        counts = dict(states)
    usable = counts.get("idle", 0) + counts.get("running", 0)
    others = [f"{v} {k}" for k, v in sorted(counts.items())
              if k not in ("idle", "running", "total") and isinstance(v, int) and v > 0]
    target = _get(pool, "spec", "targetDedicatedNodes")
    text = f"pool {name}: {usable} idle/running node{'s' if usable != 1 else ''}"
    if target is not None and not _get(pool, "spec", "enableAutoScale"):
        text += f" of {target}"
    if others:
        text += " (" + ", ".join(others) + ")"
    if not counts and not nodes:
        text += " (no node counts yet)"
    return text


def job_progress_line(job_name: str, counts: Mapping[str, int], job_state: str | None = None,
                      pool_text: str | None = None, width: int = 10, ascii: bool = False) -> str:
    """`job quickstart: ████████░░ 14/20 completed (13 succeeded, 1 failed) · 4 running · 2 active · pool …`"""
    total, done = counts.get("total", 0), counts.get("completed", 0)
    parts = [f"job {job_name}: {progress_bar(done, total, width, ascii)} {done}/{total} completed "
             f"({counts.get('succeeded', 0)} succeeded, {counts.get('failed', 0)} failed)"]
    if counts.get("preparing"):
        parts.append(f"{counts['preparing']} preparing")
    parts.append(f"{counts.get('running', 0)} running")
    parts.append(f"{counts.get('active', 0)} active")
    if job_state and job_state != "active":
        parts.append(f"job {job_state}")
    if pool_text:
        parts.append(pool_text)
    sep = " - " if ascii else " · "
    return sep.join(parts)


# --- tables -----------------------------------------------------------------------

def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A kubectl-style table: upper-case headers, columns padded by three spaces, `<none>` for None."""
    body = [["<none>" if v is None or v == "" else str(v) for v in r] for r in rows]
    head = [h.upper() for h in headers]
    widths = [len(h) for h in head]
    for r in body:
        for i, v in enumerate(r):
            widths[i] = max(widths[i], len(v))
    lines = ["   ".join(v.ljust(widths[i]) for i, v in enumerate(r)).rstrip() for r in [head] + body]
    return "\n".join(lines)


def _natural_key(text: str) -> tuple:
    import re
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def sort_tasks(tasks: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(tasks, key=lambda t: _natural_key(task_id(t)))


def sort_by_name(objs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(objs, key=lambda o: _natural_key(_get(o, "metadata", "name", default="")))


def tasks_table(tasks: Iterable[Mapping[str, Any]], wide: bool = False) -> str:
    headers = ["id", "state", "result", "exit", "node", "retries", "requeues", "pod"]
    if wide:
        headers += ["name", "job", "reason"]
    rows = []
    for t in sort_tasks(tasks):
        info = _get(t, "status", "executionInfo", default={})
        row = [task_id(t), task_state(t), task_result(t), info.get("exitCode"),
               _get(t, "status", "nodeInfo", "nodeName"), info.get("retryCount", 0),
               info.get("requeueCount", 0), _get(t, "status", "podName")]
        if wide:
            row += [_get(t, "metadata", "name"), _get(t, "spec", "jobName"), _get(t, "status", "pendingReason", "reason")]
        rows.append(row)
    return table(headers, rows)


def pools_table(pools: Iterable[Mapping[str, Any]], wide: bool = False) -> str:
    headers = ["name", "provider", "allocation", "current", "target", "slots", "idle", "running", "other"]
    if wide:
        headers += ["lowpriority", "autoscale", "resizeerror"]
    rows = []
    for p in sort_by_name(pools):
        nc = _get(p, "status", "nodeCounts", default={})
        row = [
            _get(p, "metadata", "name"), _get(p, "spec", "nodeGroup", "provider"),
            _get(p, "status", "allocationState"),
            _get(p, "status", "currentDedicatedNodes", default=0),
            "auto" if _get(p, "spec", "enableAutoScale") else _get(p, "spec", "targetDedicatedNodes", default=0),
            _get(p, "spec", "taskSlotsPerNode", default=1),
            nc.get("idle", 0), nc.get("running", 0),
            sum(v for k, v in nc.items() if k not in ("idle", "running", "total") and isinstance(v, int)),
        ]
        if wide:
            errors = _get(p, "status", "resizeErrors", default=[])
            row += [f"{_get(p, 'status', 'currentLowPriorityNodes', default=0)}/"
                    f"{_get(p, 'spec', 'targetLowPriorityNodes', default=0)}",
                    bool(_get(p, "spec", "enableAutoScale")), errors[0].get("code") if errors else None]
        rows.append(row)
    return table(headers, rows)


def nodes_table(nodes: Iterable[Mapping[str, Any]], wide: bool = False) -> str:
    headers = ["name", "node", "state", "scheduling", "running", "slots", "run", "succeeded", "starttask"]
    if wide:
        headers += ["pool", "ip", "errors"]
    rows = []
    for n in sort_by_name(nodes):
        st = _get(n, "status", default={})
        row = [
            _get(n, "metadata", "name"), _get(n, "spec", "nodeName"), st.get("state"),
            _get(n, "spec", "schedulingState", default="enabled"),
            st.get("runningTasksCount", 0), st.get("runningTaskSlotsCount", 0),
            st.get("totalTasksRun", 0), st.get("totalTasksSucceeded", 0),
            _get(n, "status", "startTaskInfo", "result"),
        ]
        if wide:
            row += [_get(n, "spec", "poolName"), st.get("ipAddress"), len(st.get("errors") or [])]
        rows.append(row)
    return table(headers, rows)


def jobs_table(jobs: Iterable[Mapping[str, Any]], wide: bool = False) -> str:
    headers = ["name", "pool", "state", "priority", "active", "running", "succeeded", "failed"]
    if wide:
        headers += ["completed", "ended", "onalltaskscomplete"]
    rows = []
    for j in sort_by_name(jobs):
        tc = _get(j, "status", "taskCounts", default={})
        row = [_get(j, "metadata", "name"), _get(j, "spec", "poolInfo", "poolId")
               or ("auto" if _get(j, "spec", "poolInfo", "autoPoolSpecification") else None),
               _get(j, "status", "state"), _get(j, "spec", "priority", default=0),
               tc.get("active", 0), tc.get("running", 0), tc.get("succeeded", 0), tc.get("failed", 0)]
        if wide:
            row += [tc.get("completed", 0), _get(j, "status", "executionInfo", "terminateReason"),
                    _get(j, "spec", "onAllTasksComplete", default="noaction")]
        rows.append(row)
    return table(headers, rows)


def schedules_table(schedules: Iterable[Mapping[str, Any]], wide: bool = False) -> str:
    headers = ["name", "state", "recurrence", "nextrun", "recentjob"]
    if wide:
        headers += ["pool", "donotrununtil", "donotrunafter"]
    rows = []
    for s in sort_by_name(schedules):
        row = [_get(s, "metadata", "name"), _get(s, "status", "state"),
               _get(s, "spec", "schedule", "recurrenceInterval") or _get(s, "spec", "schedule", "cron"),
               _get(s, "status", "executionInfo", "nextRunTime"),
               _get(s, "status", "executionInfo", "recentJob", "name")]
        if wide:
            row += [_get(s, "spec", "jobSpecification", "poolInfo", "poolId"),
                    _get(s, "spec", "schedule", "doNotRunUntil"), _get(s, "spec", "schedule", "doNotRunAfter")]
        rows.append(row)
    return table(headers, rows)


# --- status -----------------------------------------------------------------------

def pending_reasons(tasks: Iterable[Mapping[str, Any]]) -> "OrderedDict[str, dict[str, Any]]":
    """Waiting tasks grouped by pendingReason.reason: {reason: {count, message, tasks}}, largest first."""
    groups: dict[str, dict[str, Any]] = {}
    for t in sort_tasks(tasks):
        if task_state(t) != "active":
            continue
        pr = _get(t, "status", "pendingReason", default={})
        reason = pr.get("reason") or ("NotSeenByOperator" if not _get(t, "status", "state") else "Unknown")
        g = groups.setdefault(reason, {"count": 0, "message": pr.get("message"), "tasks": []})
        g["count"] += 1
        g["tasks"].append(task_id(t))
        if not g["message"] and pr.get("message"):
            g["message"] = pr["message"]
    return OrderedDict(sorted(groups.items(), key=lambda kv: (-kv[1]["count"], kv[0])))


def _id_list(ids: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", … (+{len(ids) - limit})" if len(ids) > limit else "")


def status_report(job: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]],
                  pool: Mapping[str, Any] | None = None, nodes: Sequence[Mapping[str, Any]] = (),
                  width: int = 30, ascii: bool = False, collections: Sequence[Mapping[str, Any]] = ()) -> str:
    """What `kubectl podbatch status JOB` prints (a TaskCollection's tasks counted and summed
    up per collection, not listed one by one: `tasks JOB` lists them)."""
    name = _get(job, "metadata", "name", default="?")
    st = _get(job, "status", default={})
    spec = _get(job, "spec", default={})
    counts = count_tasks(tasks, collections)
    lines = [f"Job:       {name} (namespace {_get(job, 'metadata', 'namespace', default='?')})",
             f"State:     {st.get('state') or 'not seen by the operator yet'}"
             + (f" (since {st['stateTransitionTime']})" if st.get("stateTransitionTime") else ""),
             f"Pool:      {_get(spec, 'poolInfo', 'poolId') or ('auto pool' if _get(spec, 'poolInfo', 'autoPoolSpecification') else '?')}"
             f"   priority {spec.get('priority', 0)}"]
    info = st.get("executionInfo") or {}
    if info.get("terminateReason"):
        lines.append(f"Ended:     {info['terminateReason']}" + (f" at {info['endTime']}" if info.get("endTime") else ""))
    if info.get("schedulingError"):
        err = info["schedulingError"]
        lines.append(f"Error:     {err.get('code', '')}: {err.get('message', '')}")
    lines.append(f"Progress:  {progress_bar(counts['completed'], counts['total'], width, ascii)} "
                 f"{counts['completed']}/{counts['total']} completed")
    lines.append(f"Tasks:     {counts['active']} active, {counts['preparing']} preparing, {counts['running']} running, "
                 f"{counts['completed']} completed ({counts['succeeded']} succeeded, {counts['failed']} failed)")
    tc = st.get("taskCounts")
    if tc:
        lines.append("Job count: " + ", ".join(f"{tc.get(k, 0)} {k}" for k in
                                               ("active", "running", "completed", "succeeded", "failed")))
    if pool is not None or nodes:
        lines.append(f"Nodes:     {pool_node_summary(pool, nodes)}")
    lines += collection_lines(collections)
    by_state: dict[str, list[str]] = {}
    for t in sort_tasks(tasks):
        key = task_state(t)
        if key == "completed":
            key = f"completed/{task_result(t)}"
        by_state.setdefault(key, []).append(task_id(t))
    if by_state:
        lines.append("By state:")
        for key in sorted(by_state):
            lines.append(f"  {key:<20} {len(by_state[key]):>5}  {_id_list(by_state[key])}")
    reasons = pending_reasons(tasks)
    if reasons:
        lines.append("Waiting because:")
        for reason, g in reasons.items():
            msg = f" — {g['message']}" if g["message"] else ""
            lines.append(f"  {reason} ({g['count']}){msg}: {_id_list(g['tasks'])}")
    return "\n".join(lines)


def job_done(job: Mapping[str, Any] | None, counts: Mapping[str, int]) -> bool:
    """A job is done when it is completed, or (unless it is set to terminate itself then)
    when every one of its tasks has completed."""
    if job and _get(job, "status", "state") == "completed":
        return True
    if job and _get(job, "spec", "onAllTasksComplete") == "terminatejob":
        return False
    return counts.get("total", 0) > 0 and counts.get("completed", 0) == counts.get("total", 0)


def version_text(info: Mapping[str, Any]) -> str:
    """What `kubectl podbatch version` prints, from {clientVersion, serverVersion?}."""
    client = info.get("clientVersion") or {}
    lines = [f"Client Version: podbatch {client.get('podbatch')} (speaks {client.get('apiVersion')})"]
    server = info.get("serverVersion")
    if server:
        lines.append(f"Server Version: Kubernetes {server.get('kubernetes')}")
        served = server.get("podbatchServedVersions") or []
        group = str(client.get("apiVersion", "/")).split("/")[0]
        if served:
            lines.append(f"Served:         {group} {', '.join(served)} (preferred {server.get('podbatchPreferredVersion')})")
            if str(client.get("apiVersion", "")).split("/")[-1] not in served:
                lines.append(f"warning: this CLI speaks {client.get('apiVersion')}, which the cluster does not serve")
        else:
            lines.append(f"Served:         {group} is not served: the podbatch CRDs are not installed (kubectl apply -f crds/)")
    return "\n".join(lines)


# --- validation -------------------------------------------------------------------

def parse_invalid(message: str) -> list[tuple[str, str]]:
    """Split an InvalidObject message into (field path, message) pairs.

    The message is either one line (`apiVersion must be …`) or a header line followed by
    indented `path: message` lines.
    """
    lines = message.splitlines()
    if len(lines) == 1:
        return [("", lines[0].strip())]
    out = []
    for line in lines[1:]:
        line = line.strip()
        if not line:
            continue
        path, sep, msg = line.partition(": ")
        out.append((path, msg) if sep else ("", line))
    return out


def validation_report(problems: Iterable[tuple[str, str, str, str]]) -> str:
    """One line per error: `SOURCE: Kind/name: field.path: message`.

    `problems` holds (source, kind, name, InvalidObject message) tuples.
    """
    lines = []
    for source, kind, name, message in problems:
        what = f"{kind or '?'}/{name or '?'}"
        for path, msg in parse_invalid(message):
            lines.append(f"{source}: {what}: {path}: {msg}" if path else f"{source}: {what}: {msg}")
    return "\n".join(lines)
