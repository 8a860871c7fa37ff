"""Microbenchmark of the pure scheduler: 100,000 queued tasks over 1,000 nodes x 4 slots.

Run alone:   .venv/bin/python tests/bench/bench_scheduler.py
Under pytest: .venv/bin/pytest -m bench -s tests/bench/bench_scheduler.py

Two passes are timed (best of a few runs each, snapshot building excluded):
- an empty pool: 4,000 bindings are made and 96,000 tasks get a queue position;
- a full pool (every slot busy): no binding, 100,000 tasks get a queue position;
- for reference, a pass with only 4,000 ready tasks, all of which bind.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from podbatch.core.scheduler import JobView, NodeView, PoolView, Snapshot, TaskView, plan  # noqa: E402

POOL = "bench/pool"
NODES = 1_000
SLOTS = 4
JOBS = 100
TASKS = 100_000
PRIORITIES = (0, 10, 100, 500)     # mixed job priorities, 25 jobs each


def build_snapshot(*, full: bool, tasks: int = TASKS) -> Snapshot:
    used = SLOTS if full else 0
    nodes = [
        NodeView(name=f"node-{i:04d}", pool=POOL, slots_total=SLOTS, slots_used=used,
                 schedulable=True, order=i)
        for i in range(NODES)
    ]
    jobs = {
        f"bench/job-{j:03d}": JobView(key=f"bench/job-{j:03d}", pool=POOL,
                                      priority=PRIORITIES[j % len(PRIORITIES)])
        for j in range(JOBS)
    }
    job_keys = list(jobs)
    # Tasks arrive interleaved across jobs, with a few task priorities inside each job.
    tasks = [
        TaskView(key=f"bench/task-{t:06d}", job=job_keys[t % JOBS], priority=t % 3, seq=t)
        for t in range(tasks)
    ]
    return Snapshot(pools={POOL: PoolView(key=POOL, fill_type="spread")}, nodes=nodes,
                    jobs=jobs, tasks=tasks)


def _best_of(snapshot: Snapshot, runs: int):
    best, result = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        result = plan(snapshot)
        best = min(best, time.perf_counter() - start)
    return best, result


def run_bench(runs: int = 3) -> dict[str, float]:
    empty_s, empty_plan = _best_of(build_snapshot(full=False), runs)
    full_s, full_plan = _best_of(build_snapshot(full=True), runs)
    only_s, only_plan = _best_of(build_snapshot(full=False, tasks=NODES * SLOTS), runs)
    assert len(only_plan.bindings) == NODES * SLOTS
    bindings = len(empty_plan.bindings)
    assert bindings == NODES * SLOTS
    assert len(empty_plan.pending) == TASKS - bindings
    assert not full_plan.bindings and len(full_plan.pending) == TASKS
    rate = bindings / empty_s
    print(f"\nscheduler: {bindings:,} bindings in {empty_s:.3f} s = {rate:,.0f} bindings/s "
          f"(pass over {TASKS:,} queued tasks, {NODES:,} nodes x {SLOTS} slots, {JOBS} jobs); "
          f"full-pool pass over {TASKS:,} queued tasks: {full_s:.3f} s; "
          f"{NODES * SLOTS:,} ready tasks only: {only_s:.3f} s = {NODES * SLOTS / only_s:,.0f} bindings/s")
    return {"bindings": bindings, "empty_pass_s": empty_s, "bindings_per_s": rate, "full_pass_s": full_s,
            "bind_only_s": only_s}


@pytest.mark.bench
def test_scheduler_microbenchmark():
    numbers = run_bench()
    # Generous ceilings: they catch an accidental O(n^2), not a slow CI machine.
    assert numbers["empty_pass_s"] < 5.0
    assert numbers["full_pass_s"] < 5.0


if __name__ == "__main__":
    run_bench()
