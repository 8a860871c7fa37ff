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
