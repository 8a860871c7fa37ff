"""Nothing accepted and ignored (issue 14): each Batch field podbatch once took and did not
use is now refused with a message that says what to do instead (userName,
containerRunOptions) or has its meaning (autoUser.scope, affinityInfo,
allowTaskPreemption), here through the models and through the real engine over the
in-memory cluster (tests/fakecluster.py)."""
from __future__ import annotations

import pytest

from fakecluster import job_body, pool_body, run_scenario, summary, task_body
from podbatch import API_VERSION
from podbatch.api import InvalidObject, validate_object
from podbatch.core.pods import security_context

T = {"jobName": "j", "commandLine": "/bin/true"}


def task(**spec) -> dict:
    return {"apiVersion": API_VERSION, "kind": "Task", "metadata": {"name": "t"}, "spec": {**T, **spec}}


def refusal(body: dict) -> str:
    with pytest.raises(InvalidObject) as e:
        validate_object(body)
    return str(e.value)


# -- refused, with what to do instead -------------------------------------------------------

@pytest.mark.parametrize("identity", [{"userName": "batchuser"}, {"userName": "u", "autoUser": {"scope": "pool"}}])
def test_a_named_user_is_refused_with_the_auto_user_to_use_instead(identity):
    message = refusal(task(userIdentity=identity))
    assert "spec.userIdentity.userName: Value error, userIdentity.userName is not supported: podbatch pools have " \
           "no named user accounts; remove it and use autoUser (elevationLevel nonadmin runs as uid 1000, " \
           "admin as root)" in message


def test_a_named_user_is_refused_on_every_kind_that_takes_a_user_identity():
    job = {"apiVersion": API_VERSION, "kind": "Job", "metadata": {"name": "j"}, "spec": {
        "poolInfo": {"poolId": "p"}, "jobManagerTask": {"commandLine": "x", "userIdentity": {"userName": "u"}}}}
    assert "spec.jobManagerTask.userIdentity.userName" in refusal(job)
    pool = {"apiVersion": API_VERSION, "kind": "Pool", "metadata": {"name": "p"}, "spec": {
        "nodeGroup": {"provider": "kwok"}, "startTask": {"commandLine": "x", "userIdentity": {"userName": "u"}}}}
    assert "spec.startTask.userIdentity.userName" in refusal(pool)


def test_container_run_options_are_refused_unless_empty():
    message = refusal(task(containerSettings={"imageName": "busybox", "containerRunOptions": "--rm --shm-size 1g"}))
    assert "spec.containerSettings.containerRunOptions: Value error, containerSettings.containerRunOptions is not " \
           "supported: podbatch runs pods, not docker create; remove it and set requests and limits with the " \
           "Task's resources" in message
    for empty in ("", "  "):
        validate_object(task(containerSettings={"imageName": "busybox", "containerRunOptions": empty}))


# -- autoUser.scope: both accepted, both the same user ---------------------------------------------

@pytest.mark.parametrize("elevation, uid", [("nonadmin", 1000), ("admin", 0)])
def test_both_auto_user_scopes_run_as_the_same_user(elevation, uid):
    contexts = []
    for scope in ("task", "pool"):
        identity = {"autoUser": {"scope": scope, "elevationLevel": elevation}}
        validate_object(task(userIdentity=identity))
        contexts.append(security_context(identity))
    assert contexts[0] == contexts[1] and contexts[0]["runAsUser"] == uid


# -- through the engine -----------------------------------------------------------------------

def _cnodes(h) -> list[str]:
    return sorted(c["metadata"]["name"] for c in h.server.items("computenodes"))


async def affinity(h):
    """Three empty nodes: spread would take the first; the task prefers the last and gets
    it; a second task preferring a node without room runs elsewhere at once."""
    h.apply(pool_body("p", nodes=3, slots=1))
    h.apply(job_body("j", "p"))
    await h.run_until(lambda: len(_cnodes(h)) == 3 and all(
        (c.get("status") or {}).get("state") == "idle" for c in h.server.items("computenodes")), what="3 idle nodes")
    last = _cnodes(h)[-1]
    h.apply(task_body("near", "j", duration=30, affinityInfo={"affinityId": last}))
    h.expect("near")
    await h.run_until(lambda: h.status("Task", "near").get("state") == "running", what="near running")
    h.apply(task_body("also", "j", duration=1, affinityInfo={"affinityId": last}))
    h.expect("also")
    await h.run_until(lambda: h.status("Task", "also").get("state") == "completed", what="also completed")

    def checks() -> list[str]:
        errors = h.final_checks("j", job_state="active")
        near = h.status("Task", "near").get("nodeInfo") or {}
        if (near.get("nodeId"), near.get("affinityId")) != (last, last):
            errors.append(f"near: nodeInfo {near}, expected node {last} (its affinity) and affinityId {last}")
        also = h.status("Task", "also").get("nodeInfo") or {}
        if also.get("nodeId") == last:
            errors.append(f"also: ran on {last}, whose only slot near held")
        return errors
    return checks


def test_a_task_runs_on_its_affinity_node_and_does_not_wait_for_a_busy_one():
    run = run_scenario(affinity)
    assert run.ok, summary([run])


def preemption(allow: bool):
    async def scenario(h):
        """One slot, a long task of a low-priority job; a job manager of a higher-priority job
        comes: it requeues the task only if the task's job allows preemption."""
        h.apply(pool_body("p", nodes=1, slots=1))
        h.apply(job_body("low", "p", allowTaskPreemption=allow))
        h.apply(task_body("hog", "low", duration=60))
        await h.run_until(lambda: h.status("Task", "hog").get("state") == "running", what="hog running")
        h.apply(job_body("boss", "p", priority=100, jobManagerTask={"commandLine": "/bin/true"}))
        h.expect("hog", requeues=1 if allow else 0)
        await h.run_for(20)
        hog = h.status("Task", "hog")
        if allow:
            assert (hog.get("executionInfo") or {}).get("requeueCount") == 1, hog
        else:
            assert hog.get("state") == "running" and hog.get("attempt") == 1, hog
            jm = h.status("Task", "boss-jobmanager")
            assert jm.get("state") == "active", jm
            assert "allowTaskPreemption" in (jm.get("pendingReason") or {}).get("message", ""), jm
        await h.run_until(lambda: h.status("Task", "hog").get("state") == "completed", what="hog completed")
        return lambda: h.final_checks("low", job_state="active")
    return scenario


@pytest.mark.parametrize("allow", [False, True])
def test_a_job_manager_preempts_only_tasks_of_jobs_that_allow_it(allow):
    run = run_scenario(preemption(allow))
    assert run.ok, summary([run])
