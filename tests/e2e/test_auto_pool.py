"""Jobs with poolInfo.autoPoolSpecification: podbatch makes the pool and removes it."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kit import job, sim, task, wait_for

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "auto-pool" / "job.yaml"


def _pools(objects) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in objects.list("Pool")}


def test_auto_pool_is_made_for_the_job_and_deleted_when_it_completes(operator, objects, core_v1, namespace):
    for d in yaml.safe_load_all(EXAMPLE.read_text()):
        objects.create(d)
    pool = wait_for("the auto pool", lambda: _pools(objects).get("render-render-frames"), 60)
    owner = pool["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Job", "render-frames")
    assert pool["spec"]["targetDedicatedNodes"] == 2
    st = objects.wait_job_done("render-frames", 180)
    assert st["taskCounts"]["succeeded"] == 2 and st["executionInfo"]["poolId"] == "render-render-frames", st
    assert "schedulingError" not in st["executionInfo"] or not st["executionInfo"]["schedulingError"], st
    wait_for("the auto pool deleted", lambda: "render-render-frames" not in _pools(objects), 120)
    wait_for("its nodes released", lambda: not core_v1.list_node(
        label_selector=f"podbatch.io/pool={namespace}.render-render-frames").items, 120)


def test_keep_alive_keeps_the_pool_until_the_job_is_deleted(operator, objects):
    objects.create(job("keep", "unused", onAllTasksComplete="terminatejob", poolInfo={"autoPoolSpecification": {
        "keepAlive": True, "pool": {"nodeGroup": {"provider": "kwok"}, "targetDedicatedNodes": 1}}}))
    objects.create(task("k1", "keep", annotations=sim(0)))
    objects.wait_job_done("keep", 180)
    assert "auto-keep" in _pools(objects)
    objects.delete("Job", "keep")   # the owner goes: Kubernetes' garbage collector takes the pool
    wait_for("the kept pool deleted with its job", lambda: "auto-keep" not in _pools(objects), 120)


def test_jobs_of_a_schedule_share_its_pool_until_the_schedule_completes(operator, objects):
    objects.create({"kind": "JobSchedule", "metadata": {"name": "hourly"}, "spec": {
        "schedule": {"recurrenceInterval": "PT1H"},
        "jobSpecification": {"poolInfo": {"autoPoolSpecification": {
            "autoPoolIdPrefix": "shared", "poolLifetimeOption": "jobschedule",
            "pool": {"nodeGroup": {"provider": "kwok"}, "targetDedicatedNodes": 1}}},
            "jobManagerTask": {"commandLine": "/bin/true"}}}})
    first = wait_for("the first job", lambda: ((objects.status("JobSchedule", "hourly").get("executionInfo") or {})
                                               .get("recentJob") or {}).get("name"))
    st = objects.wait_job_done(first, 120)
    assert st["executionInfo"]["poolId"] == "shared-hourly", st
    pool = _pools(objects)["shared-hourly"]
    assert pool["metadata"]["ownerReferences"][0]["kind"] == "JobSchedule"
    assert not pool["metadata"].get("deletionTimestamp"), "the job ended, but the pool is the schedule's"
    objects.patch("JobSchedule", "hourly", {"spec": {"desiredState": "terminated"}})
    objects.wait_state("JobSchedule", "hourly", "completed", 60)
    wait_for("the schedule's pool deleted", lambda: "shared-hourly" not in _pools(objects), 120)
