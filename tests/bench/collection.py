"""Task collections in the throughput bench (issue 13), run by bench_throughput.py on its
pool, nodes and operator.

`collection`: one TaskCollection (a parametric sweep) of BENCH_COLLECTION_TASKS instant
tasks in a Job created with onAllTasksComplete=noaction and switched to terminatejob once the
collection exists; timed from the Job's create to its state `completed`. A watch of the
collection counts its status writes and stamps when its own state was `completed`. Its
peers at the same N, in the same run, on the same nodes: one batch/v1 Job of N completions
(parallelism = slots; Indexed where the server has it) and N pods bound directly (the raw
limit).

`collmemory`: a collection of BENCH_MEMORY_COLLECTION tasks in a Job on a second Pool of 0
nodes (they stay queued); the operator's RSS before, once its status counts them all, and
once its CPU is back to idle; then the scheduler and reconcile pass times at that depth
(its /metrics), as the `memory` phase measures single Tasks.
"""
from __future__ import annotations

import os
import time

from kit import GROUP, VERSION, job, kwok_pool, sim
from meters import StatusWatch, apiserver_requests, operator_metrics, request_delta, wait_until
from podbatch.cli.main import with_job_owner

RUN_LABEL = "bench.podbatch.io/run"
EMPTY_POOL = "empty-coll"


def sweep(name: str, job_name: str, n: int, annotations: dict, labels: dict) -> dict:
    """A parametric sweep of n tasks (indexes 0..n-1), the node simulator's annotations on
    the collection (its pods get them), the index substituted as a render job would."""
    return {"kind": "TaskCollection",
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"jobName": job_name, "parametricSweep": {
                "parameterSets": [{"start": 0, "end": n - 1}],
                "repeatTask": {"commandLine": "/bin/true", "environmentSettings": [{"name": "FRAME", "value": "{0}"}]}}}}


def _create_collection(b, name: str, jname: str, n: int, bench_label: str) -> None:
    body = sweep(name, jname, n, sim(0), {RUN_LABEL: b.run_id, "bench": bench_label})
    if os.environ.get("BENCH_TASK_OWNER", "1") != "0":   # as the bench creates Tasks: with the Job's ownerReference
        body = with_job_owner(body, b.job_of(jname))
    b.cr("taskcollections", body)


def _watch(b, bench_label: str) -> StatusWatch:
    w = StatusWatch(lambda ns, **kw: b.custom.list_namespaced_custom_object(GROUP, VERSION, ns, "taskcollections", **kw),
                    b.ns, f"bench={bench_label}")
    w.start()
    return w


def collection_phase(b) -> None:
    n = b.collection_tasks
    run_collection(b, n)
    b.assert_operator()
    b.phase_jobcontroller(n=n, key="collection_jobcontroller", name="k8s-coll")
    b.phase_raw(n=n, key="collection_raw", prefix="rawc")


def run_collection(b, n: int) -> None:
    jname, cname = "coll", "sweep"
    b.log(f"[collection] one TaskCollection of {n} instant tasks on {b.nodes} x {b.slots} slots")
    watch = _watch(b, "coll")
    req0, opm0 = apiserver_requests(b.api), operator_metrics(b.metrics_port)
    meter = b.meter()
    t0 = time.monotonic()
    b.cr("jobs", job(jname, b.pool, onAllTasksComplete="noaction"))
    _create_collection(b, cname, jname, n, "coll")
    b.terminate_when_done(jname)
    create_s = time.monotonic() - t0

    def prog(_st: dict) -> str:
        cst = watch.status.get(cname) or {}
        return (f"; collection {cst.get('state')} counts {cst.get('taskCounts')} after "
                f"{watch.writes.get(cname, 0)} status writes")
    try:
        status = b.wait_completed(jname, n, prog)
        total = time.monotonic() - t0
        cpu = meter.stop()
        time.sleep(1)   # the watch's last events
    finally:
        watch.stop()
    counts = status.get("taskCounts") or {}
    if counts.get("succeeded") != n:
        b.result["problems"].append(f"collection: job completed with counts {counts}, expected {n} succeeded")
    req = request_delta(req0, apiserver_requests(b.api))
    opm1 = operator_metrics(b.metrics_port)
    opm = {k: round(v - opm0.get(k, 0.0), 3) for k, v in opm1.items() if v - opm0.get(k, 0.0)}
    coll_done = watch.done.get(cname)
    b.result["collection"] = {
        "n": n, "seconds": round(total, 2), "tasks_per_s": round(n / total, 1), "create_seconds": round(create_s, 2),
        "collection_completed_seconds": round(coll_done - t0, 2) if coll_done else None,
        "counts": counts, "collection_counts": (watch.status.get(cname) or {}).get("taskCounts"),
        "status_writes_watched": watch.writes.get(cname, 0), "cpu": cpu, "api_writes": req, "operator_metrics": opm}
    b.log(f"    collection: {n} tasks done in {total:.1f} s = {n / total:.1f} tasks/s; {watch.writes.get(cname, 0)} "
          f"collection status writes; operator CPU {cpu['cpu_s'].get('operator')} s")


def collection_memory(b) -> None:
    m, jname, cname = b.memory_collection, "cmem", "cmem"
    b.log(f"[collmemory] one collection of {m} tasks queued on a pool of 0 nodes")
    b.cr("pools", kwok_pool(EMPTY_POOL, 0, slots=b.slots))
    wait_until("the empty pool's status", lambda: (b.get_cr("pools", EMPTY_POOL).get("status") or {}).get("allocationState"), 60)
    b.cr("jobs", job(jname, EMPTY_POOL))
    idle_rate = b.idle_cpu_rate()
    before, cpu0 = b.op_rss(), b.op_cpu()
    watch = _watch(b, "cmem")
    t0 = time.monotonic()
    _create_collection(b, cname, jname, m, "cmem")

    def seen():
        st = watch.status.get(cname) or {}
        return st.get("size") == m and (st.get("taskCounts") or {}).get("active") == m

    all_seen = True
    try:
        wait_until("the collection's status to count every task", seen, 300, 0.5,
                   progress=lambda: f"collection status {(watch.status.get(cname) or {}).get('taskCounts')}; RSS {b.op_rss():.0f} MiB",
                   log=b.log)
    except AssertionError as e:
        all_seen = False
        b.result["problems"].append(f"collmemory: {e}")
    seen_s = time.monotonic() - t0
    seen_rss, opm_seen = b.op_rss(), operator_metrics(b.metrics_port)
    settled, peak, calm = b.settle(idle_rate, seen_rss)
    b.assert_operator()
    settled_s = time.monotonic() - t0
    passes = b.poke(jname, opm_seen)
    watch.stop()
    b.result["collection_memory"] = {
        "tasks": m, "rss_before_mib": round(before, 1), "rss_all_seen_mib": round(seen_rss, 1),
        "rss_settled_mib": round(settled, 1), "rss_peak_mib": round(peak, 1),
        "mib_per_100000_tasks": round((settled - before) / (m / 100_000), 2), "seen_seconds": round(seen_s, 1),
        "seen_and_settled_seconds": round(settled_s, 1), "all_seen": all_seen, "settled": calm,
        "status_writes_watched": watch.writes.get(cname, 0), "idle_cpu_share": round(idle_rate, 3),
        "operator_cpu_s": round(b.op_cpu() - cpu0, 1), **passes}
    b.log(f"    operator RSS {before:.0f} MiB before -> {settled:.0f} MiB with one collection of {m} tasks queued "
          f"(peak {peak:.0f}); counted in its status after {seen_s:.1f} s")
