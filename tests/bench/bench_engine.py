"""The engine's scheduling pass and memory at a deep queue, on the in-memory cluster
(tests/fakecluster.py): no API server in the way, so this measures the operator alone.

Run alone:    .venv/bin/python tests/bench/bench_engine.py [--tasks 100000]
Under pytest: .venv/bin/pytest -m bench -s tests/bench/bench_engine.py

A Pool of 50 nodes x 4 slots, all 200 slots busy with long tasks, and BENCH_ENGINE_TASKS
(100,000) tasks queued behind them in 10 jobs. Printed:
- the scheduling pass (`Engine.schedule` for the pool) with that queue, the median of a
  few passes: what a pass costs when one slot frees or one task comes;
- the same pass over a full read of the queue (every queued task, as before the job
  queues were kept in order and read only as deep as a pass can use), as the peer;
- the store's memory per 1,000 queued tasks (tracemalloc of the store alone).
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "operator"))
sys.path.insert(0, str(ROOT / "tests"))

from fakecluster import Harness, job_body, pool_body, task_body, use_fake_time  # noqa: E402

JOBS = 10


def _tasks(n: int) -> list[dict]:
    return [task_body(f"q{j}-{i:06d}", f"q{j}", duration=10_000) for i in range(n // JOBS) for j in range(JOBS)]


async def _run(n: int) -> dict:
    h = Harness()
    out: dict = {"tasks": n}
    with use_fake_time(h.clock):
        await h.start()
        h.apply(pool_body("p", nodes=50, slots=4))
        for j in range(JOBS):
            h.apply(job_body(f"q{j}", "p"))
        await h.run_until(lambda: sum(1 for c in h.server.items("computenodes")
                                      if (c.get("status") or {}).get("state") == "idle") == 50, what="50 idle nodes")
        for i in range(200):   # the busy slots
            h.apply(task_body(f"busy-{i:03d}", "q0", duration=10_000, priority=1000))
        await h.run_until(lambda: len(h.running_pods()) == 200, what="200 running")
        h.server.observers.remove(h.invariants.observe)   # the invariants' scan of every pod per change is the harness's cost
        t0 = time.perf_counter()
        for body in _tasks(n):
            h.server.create("tasks", body)
        await h.run_for(30)
        out["settle_s"] = time.perf_counter() - t0
        e, node_view = h.engine, None
        node_view = await e.reconcile_nodes()
        pool = {"default/p"}

        async def timed(depth_on: bool) -> float:
            times = []
            limit = e.settings.pending_reason_limit
            if not depth_on:
                e.settings.pending_reason_limit = 0   # no depth: every queued task is read and planned
            try:
                for _ in range(5):
                    t0 = time.perf_counter()
                    await e.schedule(node_view, pool)
                    times.append(time.perf_counter() - t0)
            finally:
                e.settings.pending_reason_limit = limit
            return statistics.median(times)
        out["queued"] = sum(len(e.store.queues[f"default/q{j}"]) for j in range(JOBS))
        out["pass_s"] = await timed(True)
        out["full_pass_s"] = await timed(False)
        h.watch.close()
    return out


def store_memory(n: int) -> float:
    """MiB per 1,000 queued tasks held by a Store (bodies as the API server returns them, each
    parsed on its own as a watch event is), the store's indexes included."""
    import gc

    from podbatch.controllers.store import Store
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    s = Store()
    bodies = []   # parsed one by one, as watch events are
    for i, b in enumerate(json.loads(json.dumps(x)) for x in _tasks(n)):
        b = {**b, "metadata": {**b["metadata"], "uid": f"00000000-0000-0000-0000-{i:012d}", "resourceVersion": str(1000 + i),
                               "creationTimestamp": "2026-12-01T00:00:00Z", "generation": 1}}
        bodies.append(b)
    for b in bodies:
        s.put_task(b)
    del bodies, b
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / 2**20 / (n / 1000)


def run(n: int) -> dict:
    out = asyncio.run(_run(n))
    out["store_mib_per_1000"] = store_memory(min(n, 20_000))
    print(f"engine pass with {out['queued']} queued behind 200 busy slots: {out['pass_s'] * 1000:.1f} ms "
          f"| full read of the queue: {out['full_pass_s'] * 1000:.1f} ms "
          f"| full/incremental = {out['full_pass_s'] / max(out['pass_s'], 1e-9):.1f}x "
          f"| {out['tasks']} tasks taken in (created, validated, queued) in {out['settle_s']:.0f} s "
          f"| store: {out['store_mib_per_1000']:.2f} MiB per 1,000 queued tasks")
    return out


@pytest.mark.bench
def test_engine_pass():
    run(int(os.environ.get("BENCH_ENGINE_TASKS") or 100_000))


if __name__ == "__main__":
    n = int(sys.argv[sys.argv.index("--tasks") + 1]) if "--tasks" in sys.argv else 100_000
    run(n)
