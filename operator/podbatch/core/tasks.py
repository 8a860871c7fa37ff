"""The task state machine: active → preparing → running → completed. Pure.

`observe_attempt` looks at the pod of the task's current attempt (or its absence) and
says what changes: a status patch, and whether a pod must be (re)created or deleted.
Retries (a non-zero exit) and requeues (a lost node, an evicted or deleted pod, a node
operation) both start a new attempt with a new, deterministic pod name; only a retry
uses up `maxTaskRetryCount`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from podbatch.core import files, naming, podtemplates

ACTIVE, PREPARING, RUNNING, COMPLETED = "active", "preparing", "running", "completed"
REQUEUE_REASONS = {"Evicted", "NodeLost", "Shutdown", "Terminated", "UnexpectedAdmissionError", "NodeAffinity", "OutOfpods", "Preempting"}


def requeue_reason(reason: str) -> bool:
    """A pod failure that is not the task's doing: evicted, its node went away, or the kubelet
    turned it away at admission (OutOfcpu, OutOfmemory, OutOf<extended resource> …). The
    task is requeued without using a retry."""
    return reason in REQUEUE_REASONS or reason.startswith("OutOf")


@dataclass(frozen=True, slots=True)
class PodView:
    """What the state machine needs of a pod."""
    name: str
    phase: str
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    container_reason: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    deleting: bool = False
    host_ip: str = ""
    pod_ip: str = ""
    node_name: str = ""                          # spec.nodeName: where it runs (or ran)
    host_list: str = ""                          # the gang's host list, once podbatch published it
    preprocessing_failure: dict | None = None   # failureInfo of a failed resource-file download
    upload_error: str = ""                      # why an output-file upload failed
    unschedulable: str = ""                     # kube-scheduler's message while it cannot place the pod
    unschedulable_since: float | None = None    # since when (epoch seconds)


def pod_view(pod: dict) -> PodView:
    status = pod.get("status") or {}
    exit_code = started = finished = None
    creason = upload = ""
    pre = None
    for cs in status.get("initContainerStatuses") or []:
        t = (cs.get("state") or {}).get("terminated") or {}
        if cs.get("name") == files.RESOURCE_CONTAINER and t.get("exitCode"):
            pre = files.download_failure(t.get("message") or "", t.get("exitCode"))
        elif podtemplates.is_setup_container(cs.get("name", "")) and t.get("exitCode"):
            pre = podtemplates.setup_failure(t.get("message") or "", t.get("exitCode"))
    statuses = status.get("containerStatuses") or []
    # with sidecars (pod templates) only podbatch's main container says how the task ended
    mains = [cs for cs in statuses if cs.get("name") in podtemplates.MAIN_NAMES]
    for cs in mains or statuses:
        state = cs.get("state") or {}
        if "terminated" in state:
            t = state["terminated"]
            exit_code, creason = t.get("exitCode"), t.get("reason", "")
            upload = files.upload_failure(t.get("message") or "")
            started, finished = t.get("startedAt"), t.get("finishedAt")
        elif "running" in state:
            started = state["running"].get("startedAt")
    unsched = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"
                    and c.get("status") == "False"), None) or {}
    return PodView(name=pod["metadata"]["name"], phase=status.get("phase", "Pending"), reason=status.get("reason", ""),
                   message=status.get("message", ""), exit_code=exit_code, container_reason=creason,
                   started_at=started or status.get("startTime"), finished_at=finished,
                   deleting=bool(pod["metadata"].get("deletionTimestamp")), host_ip=status.get("hostIP", ""),
                   pod_ip=status.get("podIP") or "", node_name=(pod.get("spec") or {}).get("nodeName") or "",
                   host_list=(pod["metadata"].get("annotations") or {}).get(naming.ANNOTATION_HOST_LIST, ""),
                   preprocessing_failure=pre, upload_error=upload, unschedulable=unsched.get("message") or "",
                   unschedulable_since=_epoch(unsched.get("lastTransitionTime")))


def _epoch(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(slots=True)
class Outcome:
    """What to do about one task: a status patch (merged into .status), a pod to create
    (the current attempt's), pods to delete, and an event for the user."""
    status: dict[str, Any] = field(default_factory=dict)
    create_pod: bool = False
    delete_pod: str | None = None
    force_delete: bool = False
    event: tuple[str, str, str] | None = None   # (type, reason, message)
    job_action: str | None = None               # none | disable | terminate (onTaskFailure)
    completed: bool = False

    def __bool__(self) -> bool:
        return bool(self.status or self.create_pod or self.delete_pod or self.event or self.job_action)


def max_retries(task_spec: dict, job_spec: dict) -> int:
    c = (task_spec.get("constraints") or {}).get("maxTaskRetryCount")
    if c is None:
        c = (job_spec.get("constraints") or {}).get("maxTaskRetryCount", 0)
    return int(c)


def exit_options(task_spec: dict, *, exit_code: int | None, kind: str = "exit") -> dict:
    """The exitOptions that apply to an exit code (or to a preProcessingError/fileUploadError)."""
    ec = task_spec.get("exitConditions") or {}
    if kind != "exit":
        return ec.get(kind) or ec.get("default") or {}
    for item in ec.get("exitCodes") or []:
        if item.get("code") == exit_code:
            return item.get("exitOptions") or {}
    for item in ec.get("exitCodeRanges") or []:
        if exit_code is not None and item.get("start", 0) <= exit_code <= item.get("end", 0):
            return item.get("exitOptions") or {}
    return ec.get("default") or {}


PREPROCESSING_CODES = {"BlobDownloadMiscError", "BlobNotFound", "BlobAccessDenied", "BlobDownloadTimedOut"}


def dependency_action(task_spec: dict, status: dict) -> str:
    """satisfy | block for the dependents of a completed task: a success satisfies; a failure
    looks up the exit options of how it failed (preprocessing, upload, or its exit code)."""
    info = status.get("executionInfo") or {}
    if info.get("result") == "success":
        return "satisfy"
    code = (info.get("failureInfo") or {}).get("code")
    if code in PREPROCESSING_CODES:
        opts = exit_options(task_spec, exit_code=None, kind="preProcessingError")
    elif code == "FileUploadError":
        opts = _upload_error_options(task_spec, info.get("exitCode"))
    else:
        opts = exit_options(task_spec, exit_code=info.get("exitCode"))
    return opts.get("dependencyAction", "block")


def _exec(status: dict) -> dict:
    return dict(status.get("executionInfo") or {})


def new_attempt(status: dict, *, now: str, kind: str, reason: str, stopping: list[str] | None = None) -> dict:
    """Status for the next attempt after a retry (`kind`='retry') or a requeue ('requeue').
    `stopping`: pods of the old attempt that may still run. They stay recorded in
    `stoppingPods` until each is seen gone or ended; the scheduler binds the new attempt
    only then, so two attempts of a task never run at the same time."""
    info = _exec(status)
    if kind == "retry":
        info["retryCount"] = info.get("retryCount", 0) + 1
        info["lastRetryTime"] = now
    else:
        info["requeueCount"] = info.get("requeueCount", 0) + 1
        info["lastRequeueTime"] = now
    info.update({"startTime": None, "endTime": None, "exitCode": None, "result": None, "failureInfo": None})
    return {"state": ACTIVE, "previousState": status.get("state"), "stateTransitionTime": now,
            "attempt": status.get("attempt", 0) + 1, "podName": None, "nodeInfo": None,
            "stoppingPods": stopping or None, "executionInfo": info, "pendingReason": {"reason": "Requeued" if kind == "requeue" else "Retrying",
                                                     "message": reason, "queuePosition": 0}}


def complete(status: dict, *, now: str, exit_code: int | None, result: str, failure: dict | None = None,
             started: str | None = None) -> dict:
    info = _exec(status)
    info.update({"endTime": now, "exitCode": exit_code, "result": result, "failureInfo": failure})
    if started and not info.get("startTime"):
        info["startTime"] = started
    return {"state": COMPLETED, "previousState": status.get("state"), "stateTransitionTime": now,
            "executionInfo": info, "pendingReason": None}


def observe_attempt(*, task_spec: dict, job_spec: dict, status: dict, pod: PodView | None, now: str,
                    node_lost: bool = False, pod_deleted: bool = False) -> Outcome:
    """Advance a task that has a current attempt (state preparing or running).

    What the pod itself says comes first: a pod that ended is the attempt's result even if
    its node was lost since. `node_lost` means the node is fenced (gone, or out of touch
    past its grace), so its pods cannot be running: the task is requeued at once.
    `pod_deleted`: the attempt's pod was seen and then deleted (not merely not made yet)."""
    state = status.get("state")
    out = Outcome()
    if state not in (PREPARING, RUNNING):
        return out
    ended = pod is not None and pod.phase in ("Succeeded", "Failed")
    if node_lost and not ended:
        out.status = new_attempt(status, now=now, kind="requeue", reason="the node running the task was lost")
        out.delete_pod, out.force_delete = status.get("podName"), True
        out.event = ("Warning", "TaskRequeued", f"node lost during attempt {status.get('attempt')}; requeued")
        return out
    if pod is None:
        if state == PREPARING and not pod_deleted:
            out.create_pod = True   # written before its pod: (re)create it, the name makes it safe
        else:
            out.status = new_attempt(status, now=now, kind="requeue", reason="the task's pod was deleted")
            out.event = ("Warning", "TaskRequeued", f"the task's pod disappeared while {state}; requeued")
        return out
    if pod.phase in ("Pending", "Unknown") and not pod.deleting:
        return out
    if pod.phase == "Running" and not pod.deleting:
        if state != RUNNING:
            info = _exec(status)
            info["startTime"] = pod.started_at or now
            out.status = {"state": RUNNING, "previousState": state, "stateTransitionTime": now,
                          "executionInfo": info, "pendingReason": None}
        return out
    if pod.deleting and pod.phase not in ("Succeeded", "Failed"):
        return out   # wait until it is gone, so two attempts never run at once
    if pod.phase == "Failed" and pod.preprocessing_failure and not requeue_reason(pod.reason):
        # Batch: a resource file that cannot be downloaded is a preprocessing error; no retry
        failure = pod.preprocessing_failure
        out.status = complete(status, now=now, exit_code=None, result="failure", failure=failure)
        out.event = ("Warning", "TaskPreprocessingFailed", failure["message"])
        out.completed = True
        out.job_action = exit_options(task_spec, exit_code=None, kind="preProcessingError").get("jobAction")
        return out
    if pod.phase == "Succeeded" and pod.upload_error:
        failure = {"category": "usererror", "code": "FileUploadError",
                   "message": f"Output files could not be uploaded: {pod.upload_error}"}
        out.status = complete(status, now=pod.finished_at or now, exit_code=pod.exit_code or 0, result="failure",
                              failure=failure, started=pod.started_at)
        out.event = ("Warning", "TaskFileUploadFailed", failure["message"])
        out.completed = True
        out.job_action = _upload_error_options(task_spec, pod.exit_code or 0).get("jobAction")
        return out
    if pod.phase == "Succeeded":
        out.status = complete(status, now=pod.finished_at or now, exit_code=pod.exit_code or 0,
                              result="success", started=pod.started_at)
        out.completed = True
        return out
    # Failed
    if requeue_reason(pod.reason):
        out.status = new_attempt(status, now=now, kind="requeue", reason=f"pod {pod.reason}: {pod.message}".strip(": "))
        out.event = ("Warning", "TaskRequeued", f"attempt {status.get('attempt')} pod {pod.reason}; requeued")
        return out
    if pod.reason == "DeadlineExceeded":
        failure = {"category": "servererror", "code": "TaskEnded",
                   "message": "The task exceeded its maximum wall clock time (constraints.maxWallClockTime) and was terminated"}
        out.status = complete(status, now=now, exit_code=pod.exit_code, result="failure", failure=failure, started=pod.started_at)
        out.event = ("Warning", "TaskTimedOut", failure["message"])
        out.completed = True
        out.job_action = (exit_options(task_spec, exit_code=pod.exit_code).get("jobAction"))
        return out
    code = pod.exit_code if pod.exit_code is not None else -1
    retries = _exec(status).get("retryCount", 0)
    limit = max_retries(task_spec, job_spec)
    if limit == -1 or retries < limit:
        out.status = new_attempt(status, now=now, kind="retry", reason=f"exit code {code}; retry {retries + 1}")
        out.event = ("Normal", "TaskRetried", f"attempt {status.get('attempt')} exited {code}; retry {retries + 1} of {'unlimited' if limit == -1 else limit}")
        return out
    category = "usererror"
    message = f"The task process exited with an unexpected exit code {code}"
    if pod.container_reason in ("ContainerCannotRun", "StartError"):
        message = f"The task's container could not start ({pod.container_reason}); does the image have /bin/sh? {pod.message}".strip()
    if pod.upload_error:
        message += f"; output files could not be uploaded either: {pod.upload_error}"
    failure = {"category": category, "code": "FailureExitCode", "message": message}
    out.status = complete(status, now=pod.finished_at or now, exit_code=code, result="failure", failure=failure,
                          started=pod.started_at)
    out.event = ("Warning", "TaskFailed", message)
    out.completed = True
    opts = _upload_error_options(task_spec, code) if pod.upload_error else exit_options(task_spec, exit_code=code)
    out.job_action = opts.get("jobAction")
    return out


def _upload_error_options(task_spec: dict, code: int | None) -> dict:
    """Batch: an exit code named in exitCodes/exitCodeRanges takes precedence over
    fileUploadError, exit code 0 included."""
    if _explicit_exit_code(task_spec, code):
        return exit_options(task_spec, exit_code=code)
    return exit_options(task_spec, exit_code=None, kind="fileUploadError")


def _explicit_exit_code(task_spec: dict, code: int | None) -> bool:
    ec = task_spec.get("exitConditions") or {}
    return any(i.get("code") == code for i in ec.get("exitCodes") or []) or any(
        code is not None and i.get("start", 0) <= code <= i.get("end", 0) for i in ec.get("exitCodeRanges") or [])
