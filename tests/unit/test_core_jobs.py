"""Table tests of the job state machine and job bookkeeping (core/jobs.py): a job's facts in,
the next state, terminateReason and what happens to its running tasks out, as Batch does
for disable (requeue / terminate / wait), enable, terminate, wall clock expiry,
onAllTasksComplete, a task's exit options and a job manager with killJobOnCompletion."""
from __future__ import annotations

import pytest

from podbatch.core import jobs, naming
from podbatch.core.jobs import COUNT_KEYS, JobFacts, JobStep, job_step


def facts(state="active", desired="active", *, disable="requeue", on_all="noaction", active=0, running=0,
          completed=0, expired=False, task_terminate=False, jm_done=False, reason="") -> JobFacts:
    return JobFacts(state=state, desired=desired, disable_tasks=disable, on_all_complete=on_all,
                    counts={"active": active, "running": running, "completed": completed},
                    wall_clock_expired=expired, task_requested_terminate=task_terminate,
                    job_manager_completed=jm_done, terminate_reason=reason)


STEPS = [
    # -- active, and onAllTasksComplete -------------------------------------------------
    pytest.param(facts(""), JobStep("active"), id="new-job-is-active"),
    pytest.param(facts(active=3, running=2), JobStep("active"), id="active-with-work"),
    pytest.param(facts(completed=5), JobStep("active"), id="noaction-all-complete-stays-active"),
    pytest.param(facts(on_all="terminatejob", completed=5), JobStep("completed", "AllTasksComplete"),
                 id="terminatejob-all-complete"),
    pytest.param(facts("", on_all="terminatejob", completed=1), JobStep("completed", "AllTasksComplete"),
                 id="terminatejob-all-complete-on-first-look"),
    pytest.param(facts(on_all="terminatejob", completed=4, running=1), JobStep("active"),
                 id="terminatejob-one-still-running"),
    pytest.param(facts(on_all="terminatejob", completed=4, active=1), JobStep("active"),
                 id="terminatejob-one-still-queued"),
    # departure from Batch, documented in docs/api.md: a job with no tasks yet is not complete
    pytest.param(facts(on_all="terminatejob"), JobStep("active"), id="terminatejob-no-tasks-yet"),
    # -- terminate: by the user, wall clock, a task's exit options, the job manager ------
    pytest.param(facts(desired="terminated", running=2), JobStep("terminating", "UserTerminate", "terminate"),
                 id="user-terminate-stops-running-tasks"),
    pytest.param(facts(desired="terminated"), JobStep("terminating", "UserTerminate", "terminate"),
                 id="user-terminate-nothing-running"),
    pytest.param(facts(desired="terminated", reason="superseded"), JobStep("terminating", "superseded", "terminate"),
                 id="user-terminate-with-its-own-reason"),
    pytest.param(facts("disabled", "terminated"), JobStep("terminating", "UserTerminate", "terminate"),
                 id="user-terminate-a-disabled-job"),
    pytest.param(facts(expired=True, running=1), JobStep("terminating", "MaxWallClockTimeExpiry", "terminate"),
                 id="wall-clock-expired"),
    pytest.param(facts("disabled", "disabled", expired=True), JobStep("terminating", "MaxWallClockTimeExpiry", "terminate"),
                 id="wall-clock-expires-while-disabled"),
    pytest.param(facts(task_terminate=True, running=3), JobStep("terminating", "TaskFailed", "terminate"),
                 id="task-exit-options-jobaction-terminate"),
    pytest.param(facts(jm_done=True, running=3), JobStep("terminating", "JMComplete", "terminate"),
                 id="job-manager-completed-kill-job-on-completion"),
    pytest.param(facts(desired="terminated", expired=True, task_terminate=True, jm_done=True),
                 JobStep("terminating", "UserTerminate", "terminate"), id="user-terminate-reason-wins"),
    pytest.param(facts(expired=True, on_all="terminatejob", completed=3),
                 JobStep("terminating", "MaxWallClockTimeExpiry", "terminate"), id="expiry-before-all-complete"),
    pytest.param(facts("terminating", "terminated", running=2), JobStep("terminating", stop_running="terminate"),
                 id="terminating-until-running-tasks-end"),
    pytest.param(facts("terminating", "terminated", active=4), JobStep("completed"),
                 id="terminating-completes-when-none-run"),
    pytest.param(facts("terminating", "disabled", running=1), JobStep("terminating", stop_running="terminate"),
                 id="disable-cannot-stop-a-terminate"),
    pytest.param(facts("terminating", "active"), JobStep("completed"), id="enable-cannot-stop-a-terminate"),
    pytest.param(facts("completed", "active", active=3, expired=True), JobStep("completed"),
                 id="completed-is-final"),
    pytest.param(facts("completed", "disabled", running=1), JobStep("completed"), id="completed-ignores-disable"),
    # -- disable (disableTasks) and enable ----------------------------------------------
    pytest.param(facts(desired="disabled", running=2), JobStep("disabling", stop_running="requeue"),
                 id="disable-requeue-running"),
    pytest.param(facts(desired="disabled", disable="terminate", running=2), JobStep("disabling", stop_running="terminate"),
                 id="disable-terminate-running"),
    pytest.param(facts(desired="disabled", disable="wait", running=2), JobStep("disabling"),
                 id="disable-wait-lets-running-finish"),
    *[pytest.param(facts(desired="disabled", disable=opt, active=5), JobStep("disabled"),
                   id=f"disable-{opt}-nothing-running") for opt in ("requeue", "terminate", "wait")],
    pytest.param(facts("disabling", "disabled", disable="wait", running=1), JobStep("disabling"),
                 id="disabling-waits-for-last-task"),
    pytest.param(facts("disabling", "disabled", disable="wait", completed=1), JobStep("disabled"),
                 id="disabling-done-when-last-task-ended"),
    pytest.param(facts("disabled", "disabled", active=4), JobStep("disabled"), id="disabled-stays"),
    pytest.param(facts("disabled", "active", active=4), JobStep("enabling"), id="enable-a-disabled-job"),
    pytest.param(facts("disabling", "active", running=1), JobStep("enabling"), id="enable-while-disabling"),
    pytest.param(facts("enabling", "active", active=4), JobStep("active"), id="enabling-then-active"),
    pytest.param(facts("enabling", "disabled", running=1), JobStep("disabling", stop_running="requeue"),
                 id="disable-while-enabling"),
]


@pytest.mark.parametrize("f, expected", STEPS)
def test_job_step(f, expected):
    assert job_step(f) == expected


def test_a_job_walks_disable_enable_terminate_as_batch_does():
    seen = []
    for f in (facts(running=2, active=3),
              facts("active", "disabled", running=2, active=3),     # requeue the 2 running
              facts("disabling", "disabled", active=5),             # they are back in the queue
              facts("disabled", "active", active=5),
              facts("enabling", "active", active=5),
              facts("active", "terminated", running=1, active=4),
              facts("terminating", "terminated", running=1, active=4),
              facts("terminating", "terminated", active=4, completed=1)):
        step = job_step(f)
        seen.append((step.state, step.stop_running))
    assert seen == [("active", None), ("disabling", "requeue"), ("disabled", None), ("enabling", None),
                    ("active", None), ("terminating", "terminate"), ("terminating", "terminate"), ("completed", None)]


# -- task counts -----------------------------------------------------------------------

@pytest.mark.parametrize("state, result, slots, counted", [
    pytest.param(None, None, 1, ("active",), id="new-task-no-state"),
    pytest.param("", None, 1, ("active",), id="empty-state"),
    pytest.param("active", None, 2, ("active",), id="active"),
    pytest.param("preparing", None, 1, ("running",), id="preparing-counts-as-running"),
    pytest.param("running", None, 3, ("running",), id="running"),
    pytest.param("completed", "success", 1, ("completed", "succeeded"), id="succeeded"),
    pytest.param("completed", "failure", 2, ("completed", "failed"), id="failed"),
])
def test_add_task(state, result, slots, counted):
    counts, slot_counts = jobs.empty_counts(), jobs.empty_counts()
    jobs.add_task(counts, slot_counts, state, result, slots)
    assert counts == {k: int(k in counted) for k in COUNT_KEYS}
    assert slot_counts == {k: slots if k in counted else 0 for k in COUNT_KEYS}


def test_counts_of_a_job_add_up():
    counts, slots = jobs.empty_counts(), jobs.empty_counts()
    assert counts == dict.fromkeys(("active", "running", "completed", "succeeded", "failed"), 0)
    for state, result in [("active", None), ("running", None), ("completed", "success"),
                          ("completed", "failure"), ("completed", "success")]:
        jobs.add_task(counts, slots, state, result, 2)
    assert counts == {"active": 1, "running": 1, "completed": 3, "succeeded": 2, "failed": 1}
    assert slots == {k: 2 * v for k, v in counts.items()}


# -- which tasks are the job's ------------------------------------------------------------

def owned(*refs: dict) -> dict:
    return {"metadata": {"ownerReferences": list(refs)}}


JOB_REF = {"apiVersion": "podbatch.io/v1alpha1", "kind": "Job", "name": "j", "uid": "uid-now"}


@pytest.mark.parametrize("task, uid", [
    pytest.param({}, None, id="no-metadata"),
    pytest.param(owned(), None, id="no-owner-yet"),
    pytest.param(owned(JOB_REF), "uid-now", id="adopted"),
    pytest.param(owned({**JOB_REF, "apiVersion": "batch/v1"}), None, id="a-kubernetes-job-is-not-ours"),
    pytest.param(owned({**JOB_REF, "kind": "Pool"}), None, id="another-podbatch-kind"),
    pytest.param(owned({"apiVersion": "v1", "kind": "ConfigMap", "uid": "x"}, JOB_REF), "uid-now",
                 id="job-among-other-owners"),
])
def test_job_owner_uid(task, uid):
    assert jobs.job_owner_uid(task) == uid


@pytest.mark.parametrize("task, expected", [
    pytest.param(owned(), True, id="not-adopted-yet"),
    pytest.param(owned(JOB_REF), True, id="adopted-by-this-job"),
    pytest.param(owned({**JOB_REF, "uid": "uid-before"}), False, id="left-by-an-earlier-job-of-the-same-name"),
])
def test_belongs_to(task, expected):
    assert jobs.belongs_to(task, {"metadata": {"name": "j", "uid": "uid-now"}}) is expected


# -- auto pools ---------------------------------------------------------------------------

AUTO = {"autoPoolIdPrefix": "render", "pool": {"vmSize": "small"}}


def job(pool_info: dict | None, schedule: str | None = None) -> dict:
    labels = {naming.LABEL_SCHEDULE: schedule} if schedule else {}
    return {"metadata": {"name": "nightly-7", "labels": labels}, "spec": {"poolInfo": pool_info} if pool_info is not None else {}}


@pytest.mark.parametrize("j, name, pool_id", [
    pytest.param(job({"poolId": "farm"}), None, "farm", id="named-pool"),
    pytest.param(job({"poolId": "farm", "autoPoolSpecification": AUTO}), None, "farm", id="pool-id-wins-over-auto"),
    pytest.param(job({"autoPoolSpecification": AUTO}), "render-nightly-7", "render-nightly-7", id="auto-pool-of-the-job"),
    pytest.param(job({"autoPoolSpecification": {"pool": {}}}), "auto-nightly-7", "auto-nightly-7", id="default-prefix"),
    pytest.param(job({"autoPoolSpecification": {**AUTO, "poolLifetimeOption": "jobschedule"}}, "nightly"),
                 "render-nightly", "render-nightly", id="shared-by-the-schedules-jobs"),
    pytest.param(job({"autoPoolSpecification": {**AUTO, "poolLifetimeOption": "jobschedule"}}),
                 "render-nightly-7", "render-nightly-7", id="jobschedule-lifetime-without-a-schedule"),
    pytest.param(job({"autoPoolSpecification": {**AUTO, "poolLifetimeOption": "job"}}, "nightly"),
                 "render-nightly-7", "render-nightly-7", id="job-lifetime-from-a-schedule"),
    pytest.param(job({}), None, "", id="empty-pool-info"),
    pytest.param(job(None), None, "", id="no-pool-info"),
])
def test_auto_pool_and_pool_id_of(j, name, pool_id):
    auto = jobs.auto_pool(j)
    assert (auto[0] if auto else None) == name
    if auto:
        assert auto[1] is j["spec"]["poolInfo"]["autoPoolSpecification"]
    assert jobs.pool_id_of(j) == pool_id


@pytest.mark.parametrize("auto, lifetime, goes", [
    pytest.param(None, "job", False, id="no-auto-pool"),
    pytest.param(AUTO, "job", True, id="default-lifetime-is-job"),
    pytest.param(AUTO, "jobschedule", False, id="default-lifetime-not-the-schedule"),
    pytest.param({**AUTO, "poolLifetimeOption": "job"}, "job", True, id="job-lifetime"),
    pytest.param({**AUTO, "poolLifetimeOption": "jobschedule"}, "job", False, id="schedule-pool-outlives-the-job"),
    pytest.param({**AUTO, "poolLifetimeOption": "jobschedule"}, "jobschedule", True, id="schedule-lifetime"),
    pytest.param({**AUTO, "keepAlive": True}, "job", False, id="keep-alive"),
    pytest.param({**AUTO, "poolLifetimeOption": "jobschedule", "keepAlive": True}, "jobschedule", False,
                 id="keep-alive-schedule"),
])
def test_auto_pool_goes_with(auto, lifetime, goes):
    assert jobs.auto_pool_goes_with(auto, lifetime) is goes
