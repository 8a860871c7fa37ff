"""Standard status conditions in the kstatus shape (Ready / Reconciling / Stalled, next to the
Batch ones), so `kubectl wait`, Flux (kstatus) and Argo CD read every podbatch kind. Pure:
the reconcilers pass the old conditions, the desired ones and the time.

At most one of Ready, Reconciling and Stalled is True ("abnormal-true" polarity for the last
two, as kstatus wants): Ready — the object is what its spec asks; Reconciling — podbatch is
still working towards it; Stalled — it cannot get there without the user (the reason and
message say what to fix). docs/gitops.md defines them per kind."""
from __future__ import annotations

from typing import Iterable, NamedTuple

READY, RECONCILING, STALLED = "Ready", "Reconciling", "Stalled"
KSTATUS = (READY, RECONCILING, STALLED)


class Cond(NamedTuple):
    type: str
    status: bool | str   # True / False, or "True" / "False" / "Unknown"
    reason: str
    message: str


def _status(v: bool | str) -> str:
    if isinstance(v, str):
        return v
    return "True" if v else "False"


def merge(old: Iterable[dict] | None, desired: Iterable[Cond | tuple], *, now: str, generation: int | None,
          keep: Iterable[str] = ()) -> list[dict]:
    """The conditions to store: `desired` in its order, each keeping the old
    lastTransitionTime when its status did not change (reason and message may), stamped
    `now` when it did or is new. Old conditions of the types in `keep` that `desired`
    does not name are carried over unchanged (conditions written by other code paths)."""
    by_type = {c.get("type"): c for c in old or []}
    out: list[dict] = []
    seen = set()
    for d in desired:
        d = Cond(*d)
        status = _status(d.status)
        prev = by_type.get(d.type)
        since = prev.get("lastTransitionTime") if prev and prev.get("status") == status and prev.get("lastTransitionTime") else now
        c = {"type": d.type, "status": status, "reason": d.reason, "message": d.message, "lastTransitionTime": since}
        if generation is not None:
            c["observedGeneration"] = generation
        out.append(c)
        seen.add(d.type)
    keep = set(keep)
    out += [c for c in old or [] if c.get("type") in keep and c.get("type") not in seen]
    return out


def same(old: list | None, new: list | None) -> bool:
    """Whether storing `new` would change nothing a reader cares about (the time is kept by
    `merge` itself, so it is compared too: a changed time means a changed status)."""
    def strip(cs):
        return [(c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("lastTransitionTime"),
                 c.get("observedGeneration")) for c in cs or []]
    return strip(old) == strip(new)


def kstatus(ready: tuple[str, str] | None = None, reconciling: tuple[str, str] | None = None,
            stalled: tuple[str, str] | None = None) -> list[Cond]:
    """Ready / Reconciling / Stalled from the one that holds, as (reason, message). Stalled wins
    over Reconciling wins over Ready; the False ones repeat the reason of the True one."""
    if stalled:
        reason, msg = stalled
        return [Cond(READY, False, reason, msg), Cond(RECONCILING, False, reason, ""), Cond(STALLED, True, reason, msg)]
    if reconciling:
        reason, msg = reconciling
        return [Cond(READY, False, reason, msg), Cond(RECONCILING, True, reason, msg), Cond(STALLED, False, reason, "")]
    reason, msg = ready or ("Ready", "")
    return [Cond(READY, True, reason, msg), Cond(RECONCILING, False, reason, ""), Cond(STALLED, False, reason, "")]


# --------------------------------------------------------------------------- per kind

NODE_SETTLED = ("idle", "running", "offline")                          # what the spec asks
NODE_BUSY = ("creating", "starting", "waitingForStartTask", "rebooting", "reimaging", "leavingPool", "unknown")
NODE_STUCK = ("startTaskFailed", "unusable")


def pool_conditions(*, invalid: str | None, deleting: bool, allocation_state: str, target: int, current: int,
                    node_counts: dict[str, int], resize_error: dict | None = None,
                    autoscale_error: dict | None = None) -> list[Cond]:
    """A Pool is Ready when its allocation is steady at its target and every node is idle,
    running or offline (scheduling disabled by the user); a pool of target 0 with no node is
    Ready. Reconciling while it resizes or nodes start, reboot, reimage or leave. Stalled on an
    invalid spec, a resize error (InsufficientNodes, AllocationTimedOut, …), an autoscale
    formula error, or nodes whose start task failed for good or that are unusable."""
    if invalid:
        return [Cond("Valid", False, "InvalidSpec", invalid), *kstatus(stalled=("InvalidSpec", invalid))]
    conds = [Cond("Valid", True, "SpecAccepted", "the pool spec is valid")]
    ready_nodes = node_counts.get("idle", 0) + node_counts.get("running", 0)
    settled = sum(node_counts.get(s, 0) for s in NODE_SETTLED)
    busy = {s: node_counts.get(s, 0) for s in NODE_BUSY if node_counts.get(s, 0)}
    stuck = {s: node_counts.get(s, 0) for s in NODE_STUCK if node_counts.get(s, 0)}
    summary = f"{ready_nodes} of {current} nodes can take tasks (target {target})"
    conds.append(Cond("NodesReady", ready_nodes > 0, "NodesReady" if ready_nodes else "NoNodeReady", summary))
    if resize_error:
        conds.append(Cond("ResizeError", True, resize_error["code"], resize_error["message"]))
    if autoscale_error:
        conds.append(Cond("AutoScaleError", True, autoscale_error["code"], autoscale_error["message"]))
    if deleting:
        return conds + kstatus(reconciling=("Deleting", f"the pool is being deleted; {current} nodes left"))
    if resize_error:
        return conds + kstatus(stalled=(resize_error["code"], resize_error["message"]))
    if autoscale_error:
        return conds + kstatus(stalled=("AutoScaleError", autoscale_error["message"]))
    if "startTaskFailed" in stuck:
        return conds + kstatus(stalled=("StartTaskFailed", f"the start task failed for good on {stuck['startTaskFailed']} "
                                        "nodes; fix spec.startTask, then reboot or remove those nodes; " + summary))
    if "unusable" in stuck:
        return conds + kstatus(stalled=("NodeUnusable", f"{stuck['unusable']} nodes have not been Ready past their grace; "
                                        "repair or remove them; " + summary))
    if allocation_state != "steady" or current != target:
        return conds + kstatus(reconciling=("Resizing", f"resizing to {target} nodes; {summary}"))
    if busy:
        what = ", ".join(f"{n} {s}" for s, n in busy.items())
        return conds + kstatus(reconciling=("NodesStarting", f"{what}; {summary}"))
    if settled != current:
        return conds + kstatus(reconciling=("NodesStarting", summary))
    return conds + kstatus(ready=("Steady", f"at its target of {target} nodes; {summary}"))


def node_conditions(*, state: str, start_task_failure: dict | None = None) -> list[Cond]:
    """A ComputeNode is Ready when idle, running or offline (scheduling disabled: what its spec
    asks); Reconciling while creating, starting, waiting for its start task, rebooting,
    reimaging, leaving the pool or out of touch (unknown, within its grace); Stalled when its
    start task failed for good or it is unusable (not Ready past its grace)."""
    s = state.lower()
    if s in ("idle", "running", "offline"):
        return kstatus(ready=(s.capitalize(), f"the node is {s}"))
    if s == "starttaskfailed":
        msg = (start_task_failure or {}).get("message") or "the start task failed"
        return kstatus(stalled=("StartTaskFailed", f"{msg}; its retries are used up. Fix the pool's startTask, then reboot or reimage the node"))
    if s == "unusable":
        return kstatus(stalled=("NodeUnusable", "the Node has not been Ready past PODBATCH_NODE_LOST_GRACE_SECONDS; repair or remove it"))
    reason = {"waitingforstarttask": "WaitingForStartTask", "leavingpool": "LeavingPool"}.get(s, s.capitalize() or "Unknown")
    return kstatus(reconciling=(reason, f"the node is {s or 'unknown'}"))


def job_conditions(*, invalid: str | None, state: str, scheduling_error: dict | None, cycle: list[str] | None,
                   auto_pool_missing: bool, terminate_reason: str | None, counts: dict[str, int]) -> list[Cond]:
    """A Job is Ready once it is accepted and in the state its spec asks: active (its tasks
    are scheduled), disabled, or completed. Completed (True once the job completed) says
    whether it is done: `kubectl wait --for=condition=Completed`. Reconciling while it enables,
    disables or terminates, or its auto pool is being made; Stalled on an invalid spec, a
    missing pool (PoolNotFound / NoPool) or a task dependency cycle."""
    total = counts.get("active", 0) + counts.get("running", 0) + counts.get("completed", 0)
    progress = f"{counts.get('completed', 0)} of {total} tasks completed"
    conds = [Cond("Valid", invalid is None, "InvalidSpec" if invalid else "SpecAccepted", invalid or "the job spec is valid")]
    if scheduling_error:
        conds.append(Cond("Schedulable", False, scheduling_error["code"], scheduling_error["message"]))
    if cycle:
        conds.append(Cond("DependencyCycle", True, "DependencyCycle",
                          f"tasks {' -> '.join(cycle)} depend on each other in a cycle; fix dependsOn of one of them"))
    conds.append(Cond("Completed", state == "completed", terminate_reason or "Running", progress))
    if invalid:
        return conds + kstatus(stalled=("InvalidSpec", invalid))
    if state != "completed":
        if scheduling_error:
            return conds + kstatus(stalled=(scheduling_error["code"], scheduling_error["message"]))
        if cycle:
            return conds + kstatus(stalled=("DependencyCycle", conds[-2].message))
    if state in ("enabling", "disabling", "terminating"):
        return conds + kstatus(reconciling=(state.capitalize(), f"the job is {state}; {progress}"))
    if auto_pool_missing and state != "completed":
        return conds + kstatus(reconciling=("CreatingAutoPool", "creating the job's auto pool"))
    if state == "completed":
        return conds + kstatus(ready=("Completed", f"the job completed ({terminate_reason or 'done'}); {progress}"))
    if state == "disabled":
        return conds + kstatus(ready=("Disabled", f"the job is disabled; {progress}"))
    return conds + kstatus(ready=("Active", f"the job is active; {progress}"))


def schedule_conditions(*, invalid: str | None, invalid_reason: str = "InvalidSpec", state: str) -> list[Cond]:
    """A JobSchedule is Ready when valid and active, disabled or completed; Reconciling while
    it terminates; Stalled on an invalid spec or schedule."""
    if invalid:
        return [Cond("Valid", False, invalid_reason, invalid), *kstatus(stalled=(invalid_reason, invalid))]
    conds = [Cond("Valid", True, "SpecAccepted", "the job schedule is valid")]
    if state == "terminating":
        return conds + kstatus(reconciling=("Terminating", "waiting for the schedule's active job to terminate"))
    return conds + kstatus(ready=(state.capitalize() or "Active", f"the job schedule is {state or 'active'}"))


def task_conditions(status: dict, *, invalid: str | None = None, user_fixable: frozenset | set = frozenset()) -> list[Cond]:
    """A Task is Ready once it is bound to a node (preparing, running) or completed with
    success; Reconciling while it waits in the queue (a new attempt, or a pendingReason the
    scheduler may clear); Stalled on an invalid spec, a pending reason only the user can
    clear, or when it completed with failure (reactivate it to run it again). Derived from
    the status about to be written: no write of its own. A task still in its first wait
    has no conditions yet (its first write is usually its binding)."""
    if invalid:
        return [Cond("Valid", False, "InvalidSpec", invalid), *kstatus(stalled=("InvalidSpec", invalid))]
    state = status.get("state") or "active"
    info = status.get("executionInfo") or {}
    if state == "completed":
        if info.get("result") == "failure":
            f = info.get("failureInfo") or {}
            code = f.get("code") or "FailureExitCode"
            msg = f.get("message") or f"the task exited with code {info.get('exitCode')}"
            return kstatus(stalled=(code, f"{msg}; reactivate the task to run it again"))
        return kstatus(ready=("Succeeded", "the task completed with success"))
    if state in ("preparing", "running"):
        node = (status.get("nodeInfo") or {}).get("nodeId") or ""
        return kstatus(ready=(state.capitalize(), f"the task is {state}" + (f" on node {node}" if node else "")))
    pending = status.get("pendingReason") or {}
    reason = pending.get("reason") or "Queued"
    msg = pending.get("message") or "waiting for a node"
    if reason in user_fixable:
        return kstatus(stalled=(reason, msg))
    return kstatus(reconciling=(reason, msg))


def collection_conditions(*, invalid: str | None, job_missing: str | None, counts: dict, size: int,
                          listing: tuple[bool, str] | None = None) -> list[Cond]:
    """A TaskCollection is Ready once every task completed; Reconciling while tasks are left
    or its files are being listed (`listing`: (failed, message) of a task-per-file one not
    listed yet); Stalled on an invalid spec, a job that does not exist or a failed listing."""
    if invalid:
        return [Cond("Valid", False, "InvalidSpec", invalid), *kstatus(stalled=("InvalidSpec", invalid))]
    conds = [Cond("Valid", True, "SpecAccepted", "the collection is valid")]
    if job_missing:
        return conds + kstatus(stalled=("JobNotFound", job_missing))
    if listing is not None:
        failed, message = listing
        return conds + (kstatus(stalled=("FileListingFailed", message)) if failed
                        else kstatus(reconciling=("ListingFiles", message)))
    done = counts.get("completed", 0)
    progress = f"{done}/{size} completed ({counts.get('succeeded', 0)} succeeded, {counts.get('failed', 0)} failed)"
    if done >= size:
        return conds + kstatus(ready=("Completed", f"every task completed: {progress}"))
    return conds + kstatus(reconciling=("Running", f"{progress}, {counts.get('running', 0)} running"))
