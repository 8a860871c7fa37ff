"""The throughput bench's pure parts: percentiles of the steady phase, the phase list, and
the summary's per-object figures and ratios (the bench itself needs a cluster)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_throughput import PHASES, pass_times, phases_from  # noqa: E402
from collection import sweep  # noqa: E402
from meters import StatusWatch  # noqa: E402
from steady import percentile, steady_params  # noqa: E402
from throughput_report import per_object, summary  # noqa: E402


def test_percentile_is_nearest_rank_and_counts_tasks_that_never_ran():
    assert percentile([0.3, 0.1, 0.2, 0.4], 0.5) == 0.2
    assert percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert percentile([0.1] * 99 + [math.inf], 0.99) == 0.1
    assert percentile([0.1] * 98 + [math.inf] * 2, 0.99) == math.inf
    assert math.isnan(percentile([], 0.5))


def test_phases_keep_the_bench_order_and_name_an_unknown_one():
    assert phases_from("") == PHASES
    assert phases_from("memory, podbatch") == ("podbatch", "memory")
    assert phases_from("collmemory,collection") == ("collection", "collmemory")
    with pytest.raises(ValueError, match="unknown bench phase.*'singlejob'.*singlejobs"):
        phases_from("podbatch,singlejob")


def test_pass_times_are_means_of_histogram_deltas():
    before = {"podbatch_scheduler_pass_seconds_count": 10, "podbatch_scheduler_pass_seconds_sum": 1.0}
    after = {"podbatch_scheduler_pass_seconds_count": 14, "podbatch_scheduler_pass_seconds_sum": 1.2}
    p = pass_times(before, after)
    assert p["scheduler_passes"] == 4 and p["scheduler_pass_ms"] == 50.0
    assert p["reconcile_passes"] == 0 and p["reconcile_pass_ms"] is None


def _phase(seconds: float, n: int, writes: dict, apiserver_s: float, key: str = "pods_per_s") -> dict:
    return {"seconds": seconds, key: round(n / seconds, 1), "create_per_s": 200.0, "api_writes": writes,
            "cpu": {"wall_s": seconds, "cpu_s": {"operator": 1.0, "kube-apiserver": apiserver_s}}}


def test_per_object_separates_the_clients_own_create():
    ph = _phase(10, 100, {"POST tasks": 100, "PATCH tasks/status": 150, "POST pods": 100}, 2.0)
    assert per_object(ph, 100, "POST tasks") == {"writes": 3.5, "system_writes": 2.5, "apiserver_ms": 20.0}


def test_summary_prints_each_ratio_and_the_per_task_figures():
    n = 100
    pb = _phase(4, n, {"POST tasks": 100, "PATCH tasks/status": 100, "POST pods": 100}, 1.2, key="tasks_per_s")
    pb.update(create_seconds=1.0, after_create_seconds=3.0, task_status_patches_per_task=1.0)
    r = {"tasks": n, "nodes": 2, "slots": 4, "cpus": 2, "server": "v1.20.2", "problems": ["memory: slow"],
         "podbatch": pb,
         "jobcontroller": _phase(2, n, {"POST pods": 100, "POST pods/binding": 100}, 0.5),
         "singlejobs": _phase(8, n, {"POST jobs": 100, "POST pods": 100}, 1.0),
         "raw": _phase(1, n, {"POST pods": 100}, 0.2)}
    text = summary(r)
    assert r["ratios"] == {"podbatch_over_jobcontroller": 0.5, "podbatch_over_singlejobs": 2.0, "podbatch_over_raw": 0.25}
    assert "podbatch/single-Jobs = 2.0 (target >= 2.0)" in text
    assert "podbatch/raw = 0.25 (target >= 0.5)" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("podbatch Tasks"))
    assert row.split()[-3:] == ["3.0", "2.0", "12.0"]   # writes, besides the create, apiserver ms per task
    assert "PROBLEM: memory: slow" in text


def test_steady_settings_name_the_bad_variable(monkeypatch):
    monkeypatch.setenv("BENCH_STEADY_RATES", "30, 10")
    assert steady_params()["rates"] == [10.0, 30.0]
    monkeypatch.setenv("BENCH_STEADY_RATES", "10,fast")
    with pytest.raises(ValueError, match="BENCH_STEADY_RATES must be a number, got 'fast'"):
        steady_params()
    monkeypatch.setenv("BENCH_STEADY_RATES", "0")
    with pytest.raises(ValueError, match="positive"):
        steady_params()


def _collection_run(n: int = 1000) -> dict:
    coll = _phase(5, n, {"POST taskcollections": 1, "POST pods": n, "PATCH pods/status": n,
                         "PATCH taskcollections/status": 12}, 4.0, key="tasks_per_s")
    coll.update(n=n, create_seconds=0.05, collection_completed_seconds=4.9, counts={"succeeded": n},
                status_writes_watched=11)
    return {"tasks": 2000, "nodes": 2, "slots": 4, "cpus": 2, "server": "v1.20.2", "problems": [],
            "collection_jobcontroller_mode": "NonIndexed (server < 1.22 has no Indexed Jobs)",
            "collection": coll,
            "collection_jobcontroller": {**_phase(4, n, {"POST jobs": 1, "POST pods": n, "POST pods/binding": n}, 3.0), "n": n},
            "collection_raw": {**_phase(4, n, {"POST pods": n, "PATCH pods/status": n}, 2.0), "n": n}}


def test_summary_of_a_collection_run_prints_its_ratios_targets_and_per_task_costs():
    r = _collection_run()
    text = summary(r)
    assert {k: v for k, v in r["ratios"].items() if v is not None} == {"collection_over_jobcontroller": 0.8,
                                                                        "collection_over_raw": 0.8}
    assert "collection/one-Job = 0.8 (target >= 1.2) | collection/raw = 0.8 (target >= 0.8)" in text
    assert "one Job of 1000: 250.0/s" in text and "NonIndexed" in text
    # per task: 2001 + 12 writes, 2012 besides the client's create; 4 CPU-s of kube-apiserver
    assert "collection: 2.01 API writes per task (2.01 besides the client's create), kube-apiserver 4.0 ms CPU per task" in text
    assert "TaskCollection status writes: 11 (watched), 12 (API server counter)" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("TaskCollection"))
    assert row.split()[1:3] == ["5.0", "200.0"], row
    # no single-task phase ran: its table and its ratios are not printed
    assert "podbatch/one-Job" not in text and "single Tasks" not in text


def test_collection_memory_lines_give_mb_against_the_target_and_say_what_was_not_reached():
    r = _collection_run()
    r["collection_memory"] = {"tasks": 100000, "rss_before_mib": 200.0, "rss_settled_mib": 286.1, "rss_peak_mib": 290.0,
                              "mib_per_100000_tasks": 86.1, "seen_seconds": 3.0, "seen_and_settled_seconds": 9.0,
                              "operator_cpu_s": 4.2, "status_writes_watched": 2, "scheduler_pass_ms": 0.5,
                              "scheduler_passes": 3, "reconcile_pass_ms": 12.0, "reconcile_passes": 4,
                              "all_seen": False, "settled": True}
    text = summary(r)
    assert "-> 286.1 MiB = 300 MB (target <= 300 MB) with one collection of 100000 tasks queued" in text
    assert "scheduler plan() 0.5 ms mean of 3 passes (target <= 100)" in text
    assert "never counted every task" in text and "still busy" not in text


def test_the_bench_sweep_is_a_valid_task_collection_of_n_tasks():
    from podbatch.api.taskcollection import TaskCollection
    from podbatch.core import collections as collcore
    body = sweep("s", "j", 10000, {"sim.podbatch.io/duration": "0"}, {"bench": "coll"})
    TaskCollection.model_validate(body)
    assert collcore.size(body["spec"]) == 10000
    assert body["metadata"]["annotations"] == {"sim.podbatch.io/duration": "0"}


class _EmptyList:
    """A list response (as the client returns it with _preload_content=False) of no object."""
    data = b'{"items": [], "metadata": {"resourceVersion": "1"}}'

    def release_conn(self) -> None:
        pass


def test_status_watch_counts_each_status_change_not_metadata_writes():
    w = StatusWatch(lambda ns, **kw: _EmptyList(), "ns", "bench=coll")
    obj = {"metadata": {"name": "c"}}
    w.seen(obj, 1.0)                                                     # created, no status
    w.seen({**obj, "status": {"state": "active", "size": 3}}, 2.0)
    w.seen({"metadata": {"name": "c", "ownerReferences": []}, "status": {"state": "active", "size": 3}}, 3.0)   # metadata only
    w.seen({**obj, "status": {"state": "completed", "size": 3}}, 4.0)
    w.seen({**obj, "status": {"state": "completed", "size": 3, "x": 1}}, 5.0)
    assert w.writes == {"c": 3} and w.done == {"c": 4.0}
    w.seen({"metadata": {"name": "d"}, "status": {"state": "active"}}, 6.0)   # first seen with a status
    assert w.writes["d"] == 1
