"""Batch task ids are unique within a job: the rule that refuses a Task whose id is taken.

Why it exists: a task's id names its directory on the node (workitems/<job>/job-1/<id>)
and is what `dependsOn` refers to, so two Tasks of one job with the same `spec.id` (the
Kubernetes names differ) would share a directory and make dependencies ambiguous. Batch
refuses the second one when it is added (TaskExists), and a task whose id is the job's
preparation or release task id (TaskIdSameAsJobPreparationTask / …ReleaseTask).
podbatch cannot refuse at `kubectl apply` (the API server checks one object at a time),
so the engine refuses it before it is first queued: the Task gets the condition Valid
False (InvalidSpec) and an Event, and never runs.

Which of two Tasks keeps the id: one podbatch already accepted (it has a state and no
InvalidSpec) always does; between two new ones, the earlier creationTimestamp, then the
smaller name. Both Tasks judge alike, so exactly one of them runs. Pure: dicts in, a
message out.
"""
from __future__ import annotations

from collections.abc import Iterable

__all__ = ["task_id", "id_conflict"]


def task_id(task: dict) -> str:
    """The Batch task id: spec.id, or metadata.name."""
    return task["spec"].get("id") or task["metadata"]["name"]


def _refused(task: dict) -> bool:
    return any(c.get("type") == "Valid" and c.get("status") == "False"
               for c in (task.get("status") or {}).get("conditions") or [])


def _rank(task: dict) -> tuple[int, str, str]:
    accepted = bool((task.get("status") or {}).get("state"))
    return (0 if accepted else 1, task["metadata"].get("creationTimestamp") or "", task["metadata"]["name"])


def id_conflict(task: dict, job: dict | None, same_id: Iterable[dict]) -> str | None:
    """Why `task` may not have its id, or None. `same_id`: the Tasks of its job with the same
    id (it may be among them); `job`: its Job when known."""
    tid = task_id(task)
    job_name = task["spec"].get("jobName", "")
    spec = (job or {}).get("spec") or {}
    for field, default in (("jobPreparationTask", "jobpreparation"), ("jobReleaseTask", "jobrelease")):
        if field in spec and (spec[field] or {}).get("id", default) == tid:
            return (f"task id {tid} is the id of the {field} of job {job_name}, whose directory it would share; "
                    f"delete this Task and create it again with another spec.id")
    mine = _rank(task)
    first = min((t for t in same_id if t["metadata"]["name"] != task["metadata"]["name"]
                 and not _refused(t) and _rank(t) < mine), key=_rank, default=None)
    if first is None:
        return None
    return (f"task id {tid} is already used by Task {first['metadata']['name']} in job {job_name}; "
            f"delete this Task and create it again with another spec.id")


def holder(same_id: Iterable[dict]) -> dict | None:
    """Of the Tasks of a job with one id, the one that holds it (the others are refused)."""
    return min((t for t in same_id if not _refused(t)), key=_rank, default=None)
