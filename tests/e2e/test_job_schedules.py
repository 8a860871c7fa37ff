"""JobSchedules create Jobs from jobSpecification on their recurrence."""
from __future__ import annotations

from datetime import datetime

import pytest

from kit import kwok_pool, wait_for

pytestmark = pytest.mark.e2e


def test_schedule_creates_a_job_at_once_then_waits_for_the_next_occurrence(operator, objects):
    objects.create(kwok_pool("p", 1))
    objects.create({"kind": "JobSchedule", "metadata": {"name": "nightly"}, "spec": {
        "schedule": {"recurrenceInterval": "PT1M"},
        "jobSpecification": {"poolInfo": {"poolId": "p"}, "jobManagerTask": {"commandLine": "/bin/true"}}}})
    st = wait_for("the first job", lambda: (lambda s: s if (s.get("executionInfo") or {}).get("recentJob") else None)(
        objects.status("JobSchedule", "nightly")))
    first = st["executionInfo"]["recentJob"]["name"]
    assert first.startswith("nightly-") and st["state"] == "active"
    job = objects.get("Job", first)
    assert job["spec"]["poolInfo"]["poolId"] == "p" and job["metadata"]["labels"]["podbatch.io/job-schedule"] == "nightly"
    objects.wait_job_done(first, 90)
    nxt = wait_for("next run time", lambda: (objects.status("JobSchedule", "nightly").get("executionInfo") or {}).get("nextRunTime"))
    created = datetime.fromisoformat(job["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    gap = (datetime.fromisoformat(nxt.replace("Z", "+00:00")) - created).total_seconds()
    assert 30 <= gap <= 62, (nxt, job["metadata"]["creationTimestamp"])
    assert [j["metadata"]["name"] for j in objects.list("Job")] == [first]   # one occurrence so far

    objects.patch("JobSchedule", "nightly", {"spec": {"desiredState": "terminated"}})
    objects.wait_state("JobSchedule", "nightly", "completed", 60)


def test_a_bad_cron_is_reported(operator, objects):
    objects.create({"kind": "JobSchedule", "metadata": {"name": "bad"}, "spec": {
        "schedule": {"cron": "61 * * * *"}, "jobSpecification": {"poolInfo": {"poolId": "p"}}}})
    cond = wait_for("a Valid condition", lambda: next((c for c in objects.status("JobSchedule", "bad").get("conditions") or []
                                                       if c["type"] == "Valid"), None))
    assert cond["status"] == "False" and "minute" in cond["message"]
