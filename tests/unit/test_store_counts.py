"""The store keeps each job's taskCounts and taskSlotCounts as tasks change (a pass never
counts a job's tasks one by one): checked against a count from scratch after random
changes, adoptions, Tasks of an earlier Job of the same name, deletions and a relist."""
from __future__ import annotations

import random

import pytest

from podbatch.controllers.store import Store
from podbatch.core import jobs as jobcore

pytestmark = pytest.mark.unit

STATES = [(None, None), ("active", None), ("preparing", None), ("running", None),
          ("completed", "success"), ("completed", "failure")]


def _task(i: int, rv: int, state, result, owner: str | None, slots: int) -> dict:
    meta = {"namespace": "ns", "name": f"t{i}", "uid": f"u{i}", "resourceVersion": str(rv)}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "podbatch.io/v1alpha1", "kind": "Job", "name": "j", "uid": owner}]
    body = {"metadata": meta, "spec": {"jobName": "j", "requiredSlots": slots}}
    if state:
        body["status"] = {"state": state, "executionInfo": {"result": result}}
        if state in ("preparing", "running"):
            body["status"]["nodeInfo"] = {"nodeId": "n0"}
    return body


def _from_scratch(s: Store, uid: str) -> tuple[dict, dict]:
    counts, slots = jobcore.empty_counts(), jobcore.empty_counts()
    job = {"metadata": {"uid": uid}}
    for t in s.tasks.values():
        if jobcore.belongs_to(t, job):
            st = t.get("status") or {}
            jobcore.add_task(counts, slots, st.get("state"), (st.get("executionInfo") or {}).get("result"),
                             int(t["spec"]["requiredSlots"]))
    return counts, slots


def test_counts_kept_as_tasks_change_equal_a_count_from_scratch():
    rng = random.Random(7)
    s = Store()
    rv = 0
    for step in range(3000):
        rv += 1
        i = rng.randrange(60)
        if rng.random() < 0.1 and f"ns/t{i}" in s.tasks:
            s.put_task(_task(i, rv, None, None, None, 1), deleted=True)
        else:
            state, result = rng.choice(STATES)
            s.put_task(_task(i, rv, state, result, rng.choice([None, "job-1", "job-old"]), rng.choice([1, 2, 4])))
        if step % 500 == 0:
            for uid in ("job-1", "job-old"):
                assert s.counts_of("ns/j", uid) == _from_scratch(s, uid)
    items = list(s.tasks.values())[::2]   # a relist that no longer has half of them
    s.replace("tasks", items, str(rv + 1))
    for uid in ("job-1", "job-old", "job-new"):
        assert s.counts_of("ns/j", uid) == _from_scratch(s, uid)
    assert s.counts_of("ns/j", "job-1")[0]["active"] + s.counts_of("ns/j", "job-1")[0]["running"] \
        + s.counts_of("ns/j", "job-1")[0]["completed"] > 0
    running = {k for k in s.inflight_by_job["ns/j"]}
    assert running == {k for k, t in s.tasks.items() if (t.get("status") or {}).get("state") in ("preparing", "running")}
