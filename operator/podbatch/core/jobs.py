"""Job bookkeeping: task counts and the job state machine. Pure."""
from __future__ import annotations

from dataclasses import dataclass

from podbatch.core import naming

COUNT_KEYS = ("active", "running", "completed", "succeeded", "failed")


def auto_pool(job: dict) -> tuple[str, dict] | None:
    """(pool name, autoPoolSpecification) of a job on an auto pool, else None. With
    poolLifetimeOption jobschedule, the jobs of one JobSchedule share one pool."""
    auto = ((job.get("spec") or {}).get("poolInfo") or {}).get("autoPoolSpecification")
    if not auto or ((job.get("spec") or {}).get("poolInfo") or {}).get("poolId"):
        return None
    meta = job.get("metadata") or {}
    owner = meta.get("name", "")
    schedule = (meta.get("labels") or {}).get(naming.LABEL_SCHEDULE)
    if auto.get("poolLifetimeOption") == "jobschedule" and schedule:
        owner = schedule
    return naming.auto_pool_name(auto.get("autoPoolIdPrefix"), owner), auto


def auto_pool_goes_with(auto: dict | None, lifetime: str) -> bool:
    """Whether an auto pool is deleted when its owner of this kind (`job` or `jobschedule`)
    completes: its poolLifetimeOption is that kind and keepAlive is off."""
    return bool(auto) and auto.get("poolLifetimeOption", "job") == lifetime and not auto.get("keepAlive")


def pool_id_of(job: dict) -> str:
    """The name of the Pool a job runs on: poolInfo.poolId, or its auto pool's."""
    pid = ((job.get("spec") or {}).get("poolInfo") or {}).get("poolId")
    if pid:
        return pid
    auto = auto_pool(job)
    return auto[0] if auto else ""


def job_owner_uid(task: dict) -> str | None:
    """The uid of the Job that adopted this Task (its ownerReference), None before adoption."""
    for ref in (task.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job" and str(ref.get("apiVersion", "")).startswith("podbatch.io/"):
            return ref.get("uid")
    return None


def belongs_to(task: dict, job: dict) -> bool:
    """Whether a Task (naming the job in spec.jobName) is this Job's: adopted by it, or not
    adopted yet. A Task adopted by an earlier Job of the same name is not."""
    owner = job_owner_uid(task)
    return owner is None or owner == (job.get("metadata") or {}).get("uid")


def empty_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


_ACTIVE, _RUNNING, _SUCCEEDED, _FAILED = ("active",), ("running",), ("completed", "succeeded"), ("completed", "failed")


def count_keys(state: str | None, result: str | None) -> tuple[str, ...]:
    """The taskCounts a task in this state (and, once completed, with this result) adds 1 to.
    (One tuple per answer, shared: the store keeps one per task.)"""
    if state in ("preparing", "running"):
        return _RUNNING
    if state == "completed":
        return _SUCCEEDED if result == "success" else _FAILED
    return _ACTIVE


def add_task(counts: dict[str, int], slots: dict[str, int], state: str, result: str | None, required_slots: int) -> None:
    for key in count_keys(state, result):
        counts[key] += 1
        slots[key] += required_slots


@dataclass(frozen=True, slots=True)
class JobFacts:
    state: str                    # current status.state ("" when new)
    desired: str                  # spec.desiredState
    disable_tasks: str            # requeue | terminate | wait
    on_all_complete: str          # noaction | terminatejob
    counts: dict
    wall_clock_expired: bool
    task_requested_terminate: bool = False
    job_manager_completed: bool = False    # with killJobOnCompletion
    terminate_reason: str = ""             # spec.terminateReason: the user's reason for a terminate


@dataclass(frozen=True, slots=True)
class JobStep:
    state: str
    terminate_reason: str | None = None
    stop_running: str | None = None    # requeue | terminate: what to do with running tasks now


def job_step(f: JobFacts) -> JobStep:
    """The next job state. Completed is final (a Job being deleted is not stepped: its tasks
    stop and go with it)."""
    s = f.state or "active"
    if s == "completed":
        return JobStep("completed")
    running = f.counts.get("running", 0)
    if s == "terminating":
        return JobStep("completed") if running == 0 else JobStep("terminating", stop_running="terminate")
    if f.desired == "terminated":
        return JobStep("terminating", f.terminate_reason or "UserTerminate", stop_running="terminate")
    if f.wall_clock_expired:
        return JobStep("terminating", "MaxWallClockTimeExpiry", stop_running="terminate")
    if f.task_requested_terminate:
        return JobStep("terminating", "TaskFailed", stop_running="terminate")
    if f.job_manager_completed:
        return JobStep("terminating", "JMComplete", stop_running="terminate")
    total = sum(f.counts.get(k, 0) for k in ("active", "running", "completed"))
    if f.on_all_complete == "terminatejob" and total > 0 and f.counts.get("completed", 0) == total:
        return JobStep("completed", "AllTasksComplete")
    if f.desired == "disabled":
        if s in ("disabled",):
            return JobStep("disabled")
        if f.disable_tasks in ("requeue", "terminate") and running:
            return JobStep("disabling", stop_running=f.disable_tasks)
        return JobStep("disabled" if running == 0 else "disabling")
    if s in ("disabled", "disabling"):
        return JobStep("enabling")
    return JobStep("active")
