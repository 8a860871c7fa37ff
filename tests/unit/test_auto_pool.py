"""Which pool a job runs on: poolId, or the name of its auto pool."""
from __future__ import annotations

from podbatch.core import jobs, naming


def _job(pool_info: dict, labels: dict | None = None) -> dict:
    return {"metadata": {"name": "nightly-1", "labels": labels or {}}, "spec": {"poolInfo": pool_info}}


def test_pool_id_wins():
    assert jobs.pool_id_of(_job({"poolId": "p"})) == "p" and jobs.auto_pool(_job({"poolId": "p"})) is None


def test_auto_pool_named_after_the_job_or_its_schedule():
    auto = {"autoPoolIdPrefix": "Render_Farm", "pool": {"nodeGroup": {"provider": "kwok"}}}
    assert jobs.pool_id_of(_job({"autoPoolSpecification": auto})) == "render-farm-nightly-1"
    shared = {**auto, "poolLifetimeOption": "jobschedule"}
    assert jobs.pool_id_of(_job({"autoPoolSpecification": shared}, {naming.LABEL_SCHEDULE: "nightly"})) == "render-farm-nightly"
    # jobschedule lifetime on a job no schedule made: the job's own pool
    assert jobs.pool_id_of(_job({"autoPoolSpecification": shared})) == "render-farm-nightly-1"
    assert jobs.pool_id_of(_job({"autoPoolSpecification": {"pool": {}}})) == "auto-nightly-1"
    assert jobs.pool_id_of(_job({})) == ""


def test_auto_pool_name_is_short_and_stable():
    long = naming.auto_pool_name("p", "j" * 80)
    assert len(long) <= 50 and long == naming.auto_pool_name("p", "j" * 80) != naming.auto_pool_name("p", "j" * 81)
