"""The throughput bench's pure parts: percentiles of the steady phase, the phase list, and
the summary's per-object figures and ratios (the bench itself needs a cluster)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from bench_throughput import PHASES, pass_times, phases_from  # noqa: E402
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
