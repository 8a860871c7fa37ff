"""Batch task ids are unique within a job (issue 14): the pure rule (core/taskids.py), the
store's index of ids, and the real engine over the in-memory cluster refusing the second
Task with an id, even when killed after any of its writes."""
from __future__ import annotations

import pytest

from fakecluster import crash_sweep, job_body, pool_body, run_scenario, summary, task_body
from podbatch.controllers.store import Store
from podbatch.core.taskids import id_conflict


def t(name: str, *, id: str | None = None, created: str = "2026-01-01T00:00:00Z", state: str | None = None,
      refused: bool = False, job: str = "j") -> dict:
    status: dict = {}
    if state:
        status["state"] = state
    if refused:
        status["conditions"] = [{"type": "Valid", "status": "False", "reason": "InvalidSpec"}]
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": created, "resourceVersion": "1"},
            "spec": {"jobName": job, "commandLine": "x", **({"id": id} if id else {})}, "status": status}


EARLY, LATE = "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z"


@pytest.mark.parametrize("task, others, holder", [
    (t("b", id="x", created=LATE), [t("a", id="x", created=EARLY)], "a"),          # the later one is refused
    (t("a", id="x", created=EARLY), [t("b", id="x", created=LATE)], None),         # the earlier one keeps it
    (t("a", id="x", created=LATE), [t("z", id="x", created=EARLY)], "z"),          # time before name
    (t("b", id="x"), [t("a", id="x")], "a"),                                       # same second: the smaller name
    (t("a", id="x"), [t("b", id="x")], None),
    (t("a", id="x", created=EARLY), [t("b", id="x", created=LATE, state="running")], "b"),   # accepted wins
    (t("b", id="x", created=LATE), [t("a", id="x", created=EARLY, refused=True)], None),   # refused ones never hold
    (t("a", id="x"), [t("a", id="x")], None),                                      # itself
    (t("x"), [t("y", id="x", created=LATE, state="completed")], "y"),              # id defaults to the name
    (t("a", id="x"), [], None),
])
def test_the_first_task_keeps_its_id(task, others, holder):
    message = id_conflict(task, None, others)
    if holder is None:
        assert message is None
    else:
        assert message == (f"task id x is already used by Task {holder} in job j; "
                           "delete this Task and create it again with another spec.id")


@pytest.mark.parametrize("spec, tid, refused", [
    ({"jobPreparationTask": {"commandLine": "x"}}, "jobpreparation", True),
    ({"jobPreparationTask": {"commandLine": "x", "id": "prep"}}, "prep", True),
    ({"jobPreparationTask": {"commandLine": "x", "id": "prep"}}, "jobpreparation", False),
    ({"jobPreparationTask": {"commandLine": "x"}, "jobReleaseTask": {"commandLine": "y"}}, "jobrelease", True),
    ({}, "jobpreparation", False),
])
def test_a_task_may_not_take_the_id_of_the_jobs_preparation_or_release_task(spec, tid, refused):
    message = id_conflict(t("a", id=tid), {"spec": {"poolInfo": {"poolId": "p"}, **spec}}, [])
    assert (message is not None) == refused
    if refused:
        assert f"task id {tid} is the id of the job" in message and "another spec.id" in message


def test_the_store_indexes_tasks_by_job_and_id():
    s = Store()
    s.put_task(t("a", id="x"))
    s.put_task(t("b", id="x"))
    s.put_task(t("c"))
    assert set(s.holders("ns/j", "x")) == {"ns/a", "ns/b"} and s.holders("ns/j", "c") == ("ns/c",)
    moved = t("b", id="y")
    moved["metadata"]["resourceVersion"] = "2"
    s.put_task(moved)
    assert s.holders("ns/j", "x") == ("ns/a",) and s.holders("ns/j", "y") == ("ns/b",)
    gone = t("a", id="x")
    gone["metadata"]["resourceVersion"] = "3"
    s.put_task(gone, deleted=True)
    assert ("ns/j", "x") not in s.tasks_by_id and "ns/a" not in s._task_id


async def duplicate_id(h):
    """`second` is applied 5 s after `first` with the same id but a smaller name: it is
    refused and never runs; `first` runs to its end."""
    h.apply(pool_body("p", nodes=1, slots=2))
    h.apply(job_body("j", "p"))
    h.apply(task_body("z-first", "j", id="same", duration=3))
    await h.run_for(5)
    h.apply(task_body("a-second", "j", id="same", duration=3))
    h.expect("z-first")
    h.expect("a-second", state="active", result=None)
    await h.run_until(lambda: h.status("Task", "z-first").get("state") == "completed", what="z-first completed")
    await h.run_for(5)

    def checks() -> list[str]:
        errors = h.final_checks("j", job_state="active")
        conds = {c["type"]: c for c in h.status("Task", "a-second").get("conditions") or []}
        valid = conds.get("Valid") or {}
        if valid.get("status") != "False" or valid.get("reason") != "InvalidSpec" \
                or "already used by Task z-first in job j" not in (valid.get("message") or ""):
            errors.append(f"a-second: condition Valid {valid}, expected False InvalidSpec naming z-first")
        if h.task_pods("a-second"):
            errors.append("a-second: has pods")
        return errors
    return checks


def test_a_second_task_with_the_same_id_is_refused_and_never_runs():
    run = run_scenario(duplicate_id)
    assert run.ok, summary([run])


def test_the_refusal_holds_when_the_engine_is_killed_after_any_write():
    runs = crash_sweep(duplicate_id, writes=24, stop_at_failure=True)   # every write of a clean run
    assert all(r.ok for r in runs), summary(runs)
