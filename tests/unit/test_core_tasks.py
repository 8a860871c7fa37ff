"""Table tests of the task state machine (core/tasks.py): a bound task's status and the pod
of its current attempt in, what Batch would do out: wait, running, a retry (uses one of
maxTaskRetryCount), a requeue (uses none), or completion with its failureInfo and the
job action of its exitConditions."""
from __future__ import annotations

import pytest

from podbatch.core.tasks import (
    ACTIVE, COMPLETED, PREPARING, RUNNING, PodView, complete, dependency_action, exit_options,
    max_retries, new_attempt, observe_attempt,
)

NOW, STARTED, FINISHED = "2026-01-01T00:10:00Z", "2026-01-01T00:01:00Z", "2026-01-01T00:09:00Z"
POD = "t-1"
# exit code 3 and 5 named; 4..10 a range (5 is named too: exitCodes win); the rest: default
EXIT = {"exitCodes": [{"code": 3, "exitOptions": {"jobAction": "none", "dependencyAction": "satisfy"}},
                      {"code": 5, "exitOptions": {"jobAction": "terminate"}}],
        "exitCodeRanges": [{"start": 4, "end": 10, "exitOptions": {"jobAction": "disable"}}],
        "preProcessingError": {"jobAction": "disable"}, "fileUploadError": {"jobAction": "disable"},
        "default": {"jobAction": "terminate"}}
BLOB_404 = {"category": "usererror", "code": "BlobNotFound", "message": "https://x/in.txt: HTTP 404"}


def status(state=RUNNING, *, retries=0, requeues=0) -> dict:
    return {"state": state, "attempt": 1 + retries + requeues, "podName": POD, "nodeInfo": {"nodeId": "n0"},
            "executionInfo": {"retryCount": retries, "requeueCount": requeues}}


def pod(phase="Running", **kw) -> PodView:
    return PodView(name=POD, phase=phase, **kw)


def failed(code: int | None, **kw) -> PodView:
    return pod("Failed", exit_code=code, started_at=STARTED, finished_at=FINISHED, **kw)


def observe(st: dict, p: PodView | None, *, task=None, job=None, **kw):
    return observe_attempt(task_spec=task or {}, job_spec=job or {}, status=st, pod=p, now=NOW, **kw)


def what(out, before: dict) -> str:
    """The outcome as a user would name it."""
    if out.create_pod:
        return "create-pod"
    s = out.status
    if not s:
        return "wait"
    info = s["executionInfo"]
    if s["state"] == ACTIVE:
        if info["retryCount"] > before["executionInfo"]["retryCount"]:
            return "retry"
        return "requeue" if info["requeueCount"] > before["executionInfo"]["requeueCount"] else "active?"
    if s["state"] == COMPLETED:
        code = (info.get("failureInfo") or {}).get("code")
        return info["result"] + (f":{code}" if code else "")
    return s["state"]


def row(id_, p, expected, action=None, state=RUNNING, **kw):
    return pytest.param(state, p, kw, expected, action, id=id_)


OBSERVE = [
    # -- the pod of the attempt says where it is ---------------------------------------------
    row("preparing-pod-pending", pod("Pending"), "wait", state=PREPARING),
    row("preparing-pod-phase-unknown", pod("Unknown"), "wait", state=PREPARING),
    row("preparing-pod-running", pod(started_at=STARTED), RUNNING, state=PREPARING),
    row("running-pod-running", pod(), "wait"),
    row("running-pod-succeeded", pod("Succeeded", exit_code=0), "success"),
    row("short-task-succeeded-while-preparing", pod("Succeeded", exit_code=0), "success", state=PREPARING),
    row("active-task-is-not-observed", pod("Succeeded"), "wait", state=ACTIVE),
    row("completed-task-is-not-observed", failed(1), "wait", state=COMPLETED),
    # -- a non-zero exit: retry while maxTaskRetryCount allows, then fail ----------------------
    row("exit-1-no-retries-by-default", failed(1), "failure:FailureExitCode"),
    row("exit-1-task-allows-a-retry", failed(1), "retry", task={"constraints": {"maxTaskRetryCount": 1}}),
    row("exit-1-retries-used-up", failed(1), "failure:FailureExitCode", retries=2,
        task={"constraints": {"maxTaskRetryCount": 2}}),
    row("exit-1-unlimited-retries", failed(1), "retry", retries=1000, task={"constraints": {"maxTaskRetryCount": -1}}),
    row("exit-1-job-default-retry-count", failed(1), "retry", job={"constraints": {"maxTaskRetryCount": 1}}),
    row("exit-1-task-zero-overrides-job", failed(1), "failure:FailureExitCode",
        task={"constraints": {"maxTaskRetryCount": 0}}, job={"constraints": {"maxTaskRetryCount": 3}}),
    row("no-exit-code-fails-as-minus-1", failed(None), "failure:FailureExitCode"),
    # -- exitConditions: the job action once the task fails for good ---------------------------
    row("named-exit-code", failed(3), "failure:FailureExitCode", "none", task={"exitConditions": EXIT}),
    row("named-exit-code-wins-over-range", failed(5), "failure:FailureExitCode", "terminate",
        task={"exitConditions": EXIT}),
    row("exit-code-in-range", failed(4), "failure:FailureExitCode", "disable", task={"exitConditions": EXIT}),
    row("range-end-inclusive", failed(10), "failure:FailureExitCode", "disable", task={"exitConditions": EXIT}),
    row("unlisted-exit-code-default", failed(11), "failure:FailureExitCode", "terminate", task={"exitConditions": EXIT}),
    row("exit-conditions-do-not-stop-a-retry", failed(5), "retry",
        task={"exitConditions": EXIT, "constraints": {"maxTaskRetryCount": 1}}),
    row("success-takes-no-job-action", pod("Succeeded", exit_code=0), "success", task={"exitConditions": EXIT}),
    # -- evicted, preempted, node shut down: a requeue, no retry used ----------------------------
    *[row(f"pod-{r}-requeued", failed(137, reason=r), "requeue")
      for r in ("Evicted", "Preempting", "NodeLost", "Shutdown", "Terminated", "UnexpectedAdmissionError",
                "OutOfcpu")],
    # -- maxWallClockTime: completes with failure, never retried ----------------------------------
    row("wall-clock-exceeded", failed(137, reason="DeadlineExceeded"), "failure:TaskEnded", "terminate",
        task={"exitConditions": EXIT, "constraints": {"maxTaskRetryCount": 3}}),
    # -- a resource file cannot be downloaded: a preprocessing error, never retried ---------------
    row("resource-file-not-found", failed(None, preprocessing_failure=BLOB_404), "failure:BlobNotFound", "disable",
        task={"exitConditions": EXIT, "constraints": {"maxTaskRetryCount": 3}}),
    row("resource-file-falls-back-to-default", failed(None, preprocessing_failure=BLOB_404), "failure:BlobNotFound",
        "terminate", task={"exitConditions": {"default": {"jobAction": "terminate"}}}),
    row("resource-file-evicted-is-requeued", failed(None, preprocessing_failure=BLOB_404, reason="Evicted"), "requeue"),
    # -- output files cannot be uploaded: failure, never retried ----------------------------------
    row("upload-failed-after-success", pod("Succeeded", exit_code=0, upload_error="403"), "failure:FileUploadError",
        "disable", task={"exitConditions": EXIT, "constraints": {"maxTaskRetryCount": 3}}),
    row("upload-failed-unlisted-exit-code", failed(11, upload_error="403"), "failure:FailureExitCode", "disable",
        task={"exitConditions": EXIT}),
    row("upload-failed-named-exit-code-wins", failed(3, upload_error="403"), "failure:FailureExitCode", "none",
        task={"exitConditions": EXIT}),
    row("upload-failed-named-exit-code-0-wins", pod("Succeeded", exit_code=0, upload_error="403"),
        "failure:FileUploadError", "none",
        task={"exitConditions": {**EXIT, "exitCodes": [{"code": 0, "exitOptions": {"jobAction": "none"}}]}}),
    # -- the node is lost (fenced): requeue unless the pod already ended ---------------------------
    row("node-lost-pod-running", pod(), "requeue", node_lost=True),
    row("node-lost-pod-pending", pod("Pending"), "requeue", state=PREPARING, node_lost=True),
    row("node-lost-no-pod", None, "requeue", state=PREPARING, node_lost=True),
    row("node-lost-pod-succeeded-first", pod("Succeeded", exit_code=0), "success", node_lost=True),
    row("node-lost-pod-failed-first", failed(2), "retry", node_lost=True,
        task={"constraints": {"maxTaskRetryCount": 1}}),
    # -- the pod is missing or being deleted ------------------------------------------------------
    row("preparing-pod-not-made-yet", None, "create-pod", state=PREPARING),
    row("preparing-pod-deleted-by-hand", None, "requeue", state=PREPARING, pod_deleted=True),
    row("running-pod-gone", None, "requeue"),
    row("running-pod-deleting", pod(deleting=True), "wait"),
    row("preparing-pod-deleting", pod("Pending", deleting=True), "wait", state=PREPARING),
    row("deleted-pod-had-succeeded", pod("Succeeded", exit_code=0, deleting=True), "success"),
]


@pytest.mark.parametrize("state, p, kw, expected, action", OBSERVE)
def test_observe_attempt(state, p, kw, expected, action):
    st = status(state, retries=kw.pop("retries", 0))
    out = observe(st, p, **kw)
    assert what(out, st) == expected
    assert out.job_action == action
    assert out.completed is expected.startswith(("success", "failure"))


def test_a_retry_starts_the_next_attempt_and_keeps_the_requeues():
    st = status(retries=1, requeues=2)
    out = observe(st, failed(7), task={"constraints": {"maxTaskRetryCount": 3}})
    s = out.status
    assert (s["state"], s["previousState"], s["attempt"], s["podName"]) == (ACTIVE, RUNNING, 5, None)
    assert (s["executionInfo"]["retryCount"], s["executionInfo"]["requeueCount"]) == (2, 2)
    assert s["pendingReason"]["reason"] == "Retrying" and out.event[1] == "TaskRetried"
    assert out.delete_pod is None and not out.create_pod


def test_a_lost_node_requeues_and_force_deletes_the_old_pod():
    out = observe(status(retries=1), pod(), node_lost=True)
    info = out.status["executionInfo"]
    assert (info["retryCount"], info["requeueCount"], info["lastRequeueTime"]) == (1, 1, NOW)
    assert (out.delete_pod, out.force_delete) == (POD, True)
    assert out.status["pendingReason"]["reason"] == "Requeued"


def test_running_records_the_pods_start_and_success_its_end():
    running = observe(status(PREPARING), pod(started_at=STARTED)).status
    assert (running["state"], running["previousState"], running["executionInfo"]["startTime"]) == (RUNNING, PREPARING, STARTED)
    assert observe(status(PREPARING), pod()).status["executionInfo"]["startTime"] == NOW
    done = observe(status(), pod("Succeeded", exit_code=None, started_at=STARTED, finished_at=FINISHED)).status
    info = done["executionInfo"]
    assert (info["startTime"], info["endTime"], info["exitCode"], info["failureInfo"]) == (STARTED, FINISHED, 0, None)


def test_max_task_retry_count_3_means_4_tries_and_requeues_are_free():
    spec, st, tries = {"constraints": {"maxTaskRetryCount": 3}}, status(), 0
    while st["state"] != COMPLETED and tries < 10:
        tries += 1
        lost = tries == 2   # the second try's node is lost: a requeue, not a retry
        st = {**st, **observe(st, pod() if lost else failed(1), task=spec, node_lost=lost).status}
        if st["state"] == ACTIVE:
            st = {**st, "state": RUNNING, "podName": POD}   # bound again
    info = st["executionInfo"]
    assert (tries, st["attempt"], info["retryCount"], info["requeueCount"], info["result"]) == (5, 5, 3, 1, "failure")


# -- the pieces -------------------------------------------------------------------------------

@pytest.mark.parametrize("task, job, expected", [
    pytest.param({}, {}, 0, id="batch-default-no-retry"),
    pytest.param({"constraints": {"maxTaskRetryCount": 2}}, {}, 2, id="task"),
    pytest.param({}, {"constraints": {"maxTaskRetryCount": 4}}, 4, id="job-default"),
    pytest.param({"constraints": {"maxTaskRetryCount": 0}}, {"constraints": {"maxTaskRetryCount": 4}}, 0,
                 id="task-zero-wins"),
    pytest.param({"constraints": {"maxTaskRetryCount": -1}}, {}, -1, id="unlimited"),
    pytest.param({"constraints": {}}, {"constraints": {"maxTaskRetryCount": -1}}, -1, id="job-unlimited"),
])
def test_max_retries(task, job, expected):
    assert max_retries(task, job) == expected


@pytest.mark.parametrize("conditions, code, kind, action", [
    pytest.param(None, 1, "exit", None, id="no-exit-conditions"),
    pytest.param(EXIT, 3, "exit", "none", id="exit-code"),
    pytest.param(EXIT, 5, "exit", "terminate", id="exit-code-before-range"),
    pytest.param(EXIT, 4, "exit", "disable", id="range-start"),
    pytest.param(EXIT, 10, "exit", "disable", id="range-end"),
    pytest.param(EXIT, 11, "exit", "terminate", id="default"),
    pytest.param(EXIT, None, "exit", "terminate", id="no-exit-code-default"),
    pytest.param({"exitCodeRanges": EXIT["exitCodeRanges"]}, 0, "exit", None, id="unmatched-no-default"),
    pytest.param(EXIT, None, "preProcessingError", "disable", id="preprocessing"),
    pytest.param(EXIT, None, "fileUploadError", "disable", id="upload"),
    pytest.param({"default": {"jobAction": "terminate"}}, None, "preProcessingError", "terminate",
                 id="preprocessing-falls-back-to-default"),
    pytest.param({"default": {"jobAction": "terminate"}}, None, "fileUploadError", "terminate",
                 id="upload-falls-back-to-default"),
])
def test_exit_options(conditions, code, kind, action):
    task = {"exitConditions": conditions} if conditions else {}
    assert exit_options(task, exit_code=code, kind=kind).get("jobAction") == action


def ended(result, code=None, exit_code=None) -> dict:
    return {"executionInfo": {"result": result, "exitCode": exit_code, "failureInfo": {"code": code} if code else None}}


SATISFY = {"dependencyAction": "satisfy"}


@pytest.mark.parametrize("conditions, st, action", [
    pytest.param({"default": {"dependencyAction": "block"}}, ended("success", exit_code=0), "satisfy",
                 id="success-always-satisfies"),
    pytest.param({}, ended("failure", "FailureExitCode", 1), "block", id="failure-blocks-by-default"),
    pytest.param(EXIT, ended("failure", "FailureExitCode", 3), "satisfy", id="named-exit-code-satisfies"),
    pytest.param({"default": SATISFY}, ended("failure", "FailureExitCode", 9), "satisfy", id="default-satisfies"),
    pytest.param({"preProcessingError": SATISFY}, ended("failure", "BlobNotFound"), "satisfy", id="preprocessing"),
    pytest.param({"default": SATISFY}, ended("failure", "BlobAccessDenied"), "satisfy", id="preprocessing-default"),
    pytest.param({"exitCodes": [{"code": 0, "exitOptions": SATISFY}]}, ended("failure", "BlobNotFound"), "block",
                 id="preprocessing-ignores-exit-codes"),
    pytest.param({"fileUploadError": SATISFY}, ended("failure", "FileUploadError", 0), "satisfy", id="upload"),
    pytest.param({"fileUploadError": {"dependencyAction": "block"}, "exitCodes": [{"code": 0, "exitOptions": SATISFY}]},
                 ended("failure", "FileUploadError", 0), "satisfy", id="upload-named-exit-code-0-wins"),
    pytest.param({"default": SATISFY}, ended("failure", "TaskEnded", 137), "satisfy", id="timed-out-default"),
])
def test_dependency_action(conditions, st, action):
    assert dependency_action({"exitConditions": conditions}, st) == action


@pytest.mark.parametrize("kind, counter, stamp, reason", [
    pytest.param("retry", "retryCount", "lastRetryTime", "Retrying", id="retry"),
    pytest.param("requeue", "requeueCount", "lastRequeueTime", "Requeued", id="requeue"),
])
def test_new_attempt(kind, counter, stamp, reason):
    old = {"state": RUNNING, "attempt": 3, "podName": "t-3", "nodeInfo": {"nodeId": "n0"},
           "executionInfo": {"retryCount": 1, "requeueCount": 1, "startTime": STARTED, "exitCode": 1,
                             "result": "failure", "failureInfo": {"code": "FailureExitCode"}}}
    new = new_attempt(old, now=NOW, kind=kind, reason="why", stopping=["t-3"] if kind == "requeue" else None)
    other = "requeueCount" if counter == "retryCount" else "retryCount"
    info = new["executionInfo"]
    assert (info[counter], info[other], info[stamp]) == (2, 1, NOW)
    assert all(info[k] is None for k in ("startTime", "endTime", "exitCode", "result", "failureInfo"))
    assert (new["state"], new["previousState"], new["attempt"], new["podName"], new["nodeInfo"]) == (ACTIVE, RUNNING, 4, None, None)
    assert new["stoppingPods"] == (["t-3"] if kind == "requeue" else None)
    assert new["pendingReason"] == {"reason": reason, "message": "why", "queuePosition": 0}
    assert old["executionInfo"]["retryCount"] == 1 and old["attempt"] == 3   # the input is left alone


def test_complete():
    st = {"state": RUNNING, "executionInfo": {"retryCount": 2, "startTime": STARTED}}
    done = complete(st, now=FINISHED, exit_code=4, result="failure", failure={"code": "FailureExitCode"}, started=NOW)
    assert (done["state"], done["previousState"], done["pendingReason"]) == (COMPLETED, RUNNING, None)
    assert done["executionInfo"] == {"retryCount": 2, "startTime": STARTED, "endTime": FINISHED, "exitCode": 4,
                                     "result": "failure", "failureInfo": {"code": "FailureExitCode"}}
    never_running = complete({"state": PREPARING}, now=FINISHED, exit_code=0, result="success", started=STARTED)
    assert never_running["executionInfo"]["startTime"] == STARTED
