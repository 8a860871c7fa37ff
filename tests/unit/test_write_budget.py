"""What a task costs the API server, counted on the in-memory cluster: the binding is
recorded by the pod (no Task status write before it), a task shorter than the `running`
deferral has one status write in its life (its completion), a longer one two. Each still
ends with its node and pod named in its status."""
from __future__ import annotations

import pytest

from fakecluster import job_body, pool_body, run_scenario, summary, task_body

pytestmark = pytest.mark.unit


def _status_writes(h, name: str) -> list[str]:
    return [line for line in h.server.log if f"tasks/status default/{name} " in line + " "]


def budget(seen: dict):
    async def scenario(h):
        h.apply(pool_body("p", nodes=1, slots=2))
        h.apply(job_body("j", "p"))
        await h.run_until(lambda: any((c.get("status") or {}).get("state") == "idle" for c in h.server.items("computenodes")),
                          what="an idle node")
        h.apply(task_body("short", "j", duration=0.3))
        h.apply(task_body("long", "j", duration=6))
        h.expect("short")
        h.expect("long")
        await h.run_until(lambda: all(h.status("Task", n).get("state") == "completed" for n in ("short", "long")),
                          what="both completed")

        def checks() -> list[str]:
            errors = h.final_checks("j", job_state="active")
            for name, most in (("short", 1), ("long", 2)):
                writes = _status_writes(h, name)
                seen[name] = writes
                if len(writes) > most:
                    errors.append(f"{name}: {len(writes)} status writes, at most {most} expected: {writes}")
                st = h.status("Task", name)
                if not (st.get("nodeInfo") or {}).get("nodeId") or st.get("podName") != f"{name}-1":
                    errors.append(f"{name}: the binding is not in its final status: {st}")
                if (st.get("executionInfo") or {}).get("result") != "success" or st.get("previousState") != "running":
                    errors.append(f"{name}: ended {st}")
            return errors
        return checks
    return scenario


def test_a_short_task_costs_one_status_write_and_a_long_one_two():
    seen: dict = {}
    run = run_scenario(budget(seen))
    assert run.ok, summary([run])
    assert len(seen["short"]) == 1 and len(seen["long"]) == 2, seen


def slot_reuse(seen: dict):
    async def scenario(h):
        """One node, one slot, three short tasks in a row, and the API server refuses the first
        try of each completion write (500): the next task is bound in the pass that first tried
        to write the previous one's end (its pod ended: the slot is free), not once a retry lands."""
        h.server.inject(lambda verb, what: verb == "patch" and what.startswith("tasks/status default/a"), times=1)
        h.server.inject(lambda verb, what: verb == "patch" and what.startswith("tasks/status default/b"), times=1)
        orig = h.engine_pass

        async def marked():
            h.server.log.append("--- pass")
            await orig()
        h.engine_pass = marked
        h.apply(pool_body("p", nodes=1, slots=1))
        h.apply(job_body("j", "p"))
        for name in ("a", "b", "c"):
            h.apply(task_body(name, "j", duration=0.3, priority={"a": 3, "b": 2, "c": 1}[name]))
            h.expect(name)
        await h.run_until(lambda: all(h.status("Task", n).get("state") == "completed" for n in ("a", "b", "c")),
                          what="all completed")

        def checks() -> list[str]:
            errors = h.final_checks("j", job_state="active")
            passes, cur = [], []
            for line in h.server.log:
                if line == "--- pass":
                    passes.append(cur)
                    cur = []
                else:
                    cur.append(line)
            passes.append(cur)
            for done, nxt in (("a", "b"), ("b", "c")):
                where = [i for i, p in enumerate(passes) if any(f"tasks/status default/{done} " in x + " " for x in p)]
                if len(where) < 2:
                    errors.append(f"{done}: its completion was tried in passes {where}: the injected failure did not happen")
                made = [i for i, p in enumerate(passes) if any(f"create pod default/{nxt}-1" in x for x in p)]
                seen[done] = (where, made)
                if not where or not made or made[0] != where[0]:
                    errors.append(f"{nxt} was bound in pass {made} but {done}'s completion was written in pass {where}")
            return errors
        return checks
    return scenario


def test_a_slot_is_bound_again_in_the_pass_that_writes_the_end_of_its_task():
    seen: dict = {}
    run = run_scenario(slot_reuse(seen))
    assert run.ok, summary([run]) + f" {seen}"
