"""Steady state: single Tasks submitted at a steady rate onto the throughput bench's pool,
and the latency a client sees from its create call to the task's pod Running.

Run by bench_throughput.py on its pool, nodes and operator (the same 200 slots as its other
phases). For each rate of BENCH_STEADY_RATES, BENCH_STEADY_SECONDS of tasks are created by
several client threads paced to the rate; each runs a fixed time, chosen per rate so that
about BENCH_STEADY_BUSY of the pool's slots are busy (rate x duration = busy x slots), or
BENCH_STEADY_DURATION for every rate. A watch of the rate's pods (podbatch's labels) stamps
when each reached Running. The peer is raw pods bound directly to the same nodes at the
same rates and durations, for BENCH_STEADY_RAW_SECONDS per rate (10; 0 skips it).

A rate the system cannot keep up with shows as a growing backlog (tasks created and not yet
Running): the submission stops at its deadline, the wait for the last pods is bounded
(BENCH_STEADY_DRAIN), and a task that never ran counts as infinitely late in the
percentiles, so its p99 reads `inf` rather than hiding it.
"""
from __future__ import annotations

import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from kit import job, sim
from meters import PodWatch, raw, retrying, run_threads

TASK_NAME_ANNOTATION = "podbatch.io/task-name"   # on every task pod (core/pods.py)
TASK_LABEL, JOB_LABEL = "podbatch.io/task", "podbatch.io/job"
P99_TARGET_S = 1.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1); nan for no values. `inf` entries (never ran) count."""
    if not values:
        return math.nan
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {text!r}") from None


def steady_params() -> dict:
    env = os.environ.get

    def num(name: str, default: float) -> float:
        return _number(name, env(name)) if env(name) else default
    text = env("BENCH_STEADY_RATES") or "10,30,60"
    rates = [_number("BENCH_STEADY_RATES", r) for r in re.split(r"[,\s]+", text) if r]
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"BENCH_STEADY_RATES must be positive tasks/s, comma-separated, got {text!r}")
    return {"rates": sorted(rates), "seconds": num("BENCH_STEADY_SECONDS", 30), "busy": num("BENCH_STEADY_BUSY", 0.75),
            "duration": num("BENCH_STEADY_DURATION", 0) or None, "drain": num("BENCH_STEADY_DRAIN", 30),
            "threads": int(num("BENCH_STEADY_THREADS", 24)), "raw_seconds": num("BENCH_STEADY_RAW_SECONDS", 10)}


class Steady:
    """The steady-state phase of a Bench (bench_throughput.Bench: its clients, pool, nodes, log)."""

    def __init__(self, bench, rates: list[float], seconds: float, busy: float, duration: float | None,
                 drain: float, threads: int, raw_seconds: float) -> None:
        self.b, self.rates, self.seconds, self.busy = bench, rates, seconds, busy
        self.fixed_duration, self.drain, self.threads, self.raw_seconds = duration, drain, threads, raw_seconds
        self.slots = bench.nodes * bench.slots

    def duration(self, rate: float) -> float:
        return self.fixed_duration or round(self.busy * self.slots / rate, 2)

    def run(self) -> dict:
        out: dict = {"seconds": self.seconds, "raw_seconds": self.raw_seconds, "slots": self.slots, "busy": self.busy,
                     "podbatch": [], "raw": []}
        for rate in self.rates:
            out["podbatch"].append(self.one_rate("podbatch", rate, self.seconds))
            if self.raw_seconds > 0:
                out["raw"].append(self.one_rate("raw", rate, self.raw_seconds))
        for kind in ("podbatch", "raw"):
            ok = [r["rate"] for r in out[kind] if r["ok"]]
            out[f"{kind}_best_rate"] = max(ok) if ok else None
        return out

    # --- one rate
    def one_rate(self, kind: str, rate: float, seconds: float) -> dict:
        b, d = self.b, self.duration(rate)
        slug = f"{rate:g}".replace(".", "-")
        n = max(1, int(rate * seconds))
        b.log(f"[steady] {kind}: {rate:g} tasks/s for {seconds:g} s ({n} tasks running {d:g} s each, "
              f"~{min(rate * d / self.slots, 9.99):.0%} of {self.slots} slots), {self.threads} threads")
        if kind == "podbatch":
            jname = f"steady-{slug}"
            b.cr("jobs", job(jname, b.pool, onAllTasksComplete="noaction"))
            watch = PodWatch(b.core, b.ns, f"{JOB_LABEL}={jname}", key=_task_of_pod)
            ann = sim(d)
            b.job_of(jname)

            def create(i: int) -> tuple:
                name = f"{jname}-{i:05d}"
                return name, lambda: b.cr("tasks", b.task(name, jname, annotations=ann))
        else:
            label = f"steady-raw-{slug}"
            watch = PodWatch(b.core, b.ns, f"bench={label}")

            def create(i: int) -> tuple:
                name = f"{label}-{i:05d}"
                body = {"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": name, "labels": {"bench.podbatch.io/run": b.run_id, "bench": label},
                                     "annotations": {"sim.podbatch.io/duration": str(d)}},
                        "spec": b.pod_spec(b.node_names[i % len(b.node_names)])}
                return name, lambda: retrying(lambda: raw(b.core.create_namespaced_pod, b.ns, body))
        watch.start()
        # as many pooled connections as threads, so no create pays for a TLS handshake
        run_threads(self.threads * 2, self.threads, lambda i: raw(b.core.list_namespaced_pod, b.ns, limit=1))
        meter = b.meter()
        try:
            created, errors, backlog, submit_s, calls = self.submit(n, rate, create, watch)
            started_by = time.monotonic() + self.drain
            while time.monotonic() < started_by and sum(1 for k in list(created) if k in watch.running) < len(created):
                time.sleep(0.2)
            cpu = meter.stop()
            lat = [watch.running[k] - t if k in watch.running else math.inf for k, t in list(created.items())]
            not_started = sum(1 for x in lat if x == math.inf)
            # the next rate starts on an idle pool: wait (bounded) for this rate's task pods to
            # end (raw pods take no podbatch slot: no need)
            idle_by = time.monotonic() + (d + 60 if kind == "podbatch" else 0)
            while time.monotonic() < idle_by and len(watch.done) + len(watch.failed) < len(created):
                time.sleep(0.5)
            still = len(created) - len(watch.done) - len(watch.failed) if kind == "podbatch" else None
        finally:
            watch.stop()
        tail = [x for t, x in backlog if t >= submit_s * 0.75] or [0]
        growing = max(tail) > rate * 2   # more than 2 s of arrivals waiting at the end of the window
        submitted_rate = len(created) / max(submit_s, 1e-9)
        kept_up = not growing and not not_started and submitted_rate >= 0.9 * rate and not errors
        p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
        r = {"rate": rate, "duration_s": d, "tasks": n, "created": len(created), "create_errors": errors,
             "submitted_per_s": round(submitted_rate, 1), "p50_s": _r(p50), "p90_s": _r(percentile(lat, 0.9)),
             "p99_s": _r(p99), "max_s": _r(max(lat) if lat else math.nan), "not_started": not_started,
             "backlog_max": max(x for _, x in backlog) if backlog else 0, "backlog_end": max(tail),
             "backlog_growing": growing, "kept_up": kept_up, "ok": kept_up and p99 <= P99_TARGET_S,
             "unfinished_at_next_rate": still, "cpu": cpu, "create_call_p50_s": _r(percentile(calls, 0.5)),
             "create_call_p99_s": _r(percentile(calls, 0.99)),
             "apiserver_cpu_share": round(cpu["cpu_s"].get("kube-apiserver", math.nan) / max(cpu["wall_s"], 1e-9), 2),
             "operator_cpu_share": round(cpu["cpu_s"].get("operator", math.nan) / max(cpu["wall_s"], 1e-9), 2)}
        verdict = "OK" if r["ok"] else ("cannot keep up" if not kept_up else f"p99 > {P99_TARGET_S:g} s")
        r["verdict"] = verdict
        b.log(f"    {kind} {rate:g}/s: p50 {p50:.2f} s, p99 {p99:.2f} s, max {r['max_s']} s; submitted "
              f"{submitted_rate:.1f}/s (create calls p99 {_fmt(r['create_call_p99_s'])} s); backlog max {r['backlog_max']}, "
              f"at the end {r['backlog_end']}; kube-apiserver {r['apiserver_cpu_share']:.0%} of a core; "
              f"{not_started} never Running within {self.drain:g} s -> {verdict}")
        if still:
            b.log(f"    {still} pods of {kind} {rate:g}/s had not ended when the next step started")
        return r

    def submit(self, n: int, rate: float, create, watch: PodWatch):
        """Create n objects paced to `rate` from several threads. Returns {key: monotonic time of
        its create call}, the count of failed creates, backlog samples (seconds since the start,
        created and not yet Running), the submission's length (to the last create + one interval)
        and how long each create call took. Creation stops at 1.5x the
        window (+5 s), so a client or server that cannot take the rate does not hang the bench."""
        created: dict[str, float] = {}
        calls: list[float] = []   # seconds each create call took
        errors = 0
        nxt, lock = iter(range(n)), threading.Lock()
        t0 = time.monotonic()
        cutoff = t0 + n / rate * 1.5 + 5

        def worker() -> None:
            nonlocal errors
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if time.monotonic() > cutoff:
                    return
                key, call = create(i)
                created[key] = start = time.monotonic()
                try:
                    call()
                    calls.append(time.monotonic() - start)
                except Exception as e:
                    created.pop(key, None)
                    with lock:
                        errors += 1
                    if errors <= 3:
                        self.b.log(f"    create {key} failed: {e!r}"[:300])

        backlog: list[tuple[float, int]] = []
        next_log = t0 + 10
        with ThreadPoolExecutor(self.threads) as ex:
            futures = [ex.submit(worker) for _ in range(self.threads)]
            while not all(f.done() for f in futures):
                time.sleep(1.0)
                now = time.monotonic()
                keys = list(created)
                waiting = sum(1 for k in keys if k not in watch.running)
                backlog.append((round(now - t0, 1), waiting))
                if now >= next_log:
                    self.b.log(f"    ... {len(keys)} created, {waiting} not Running yet")
                    next_log = now + 10
            for f in futures:
                f.result()
        last = max(created.values(), default=t0)
        return created, errors, backlog, last - t0 + 1 / rate, calls


def _task_of_pod(pod: dict) -> str:
    meta = pod["metadata"]
    return (meta.get("annotations") or {}).get(TASK_NAME_ANNOTATION) or (meta.get("labels") or {}).get(TASK_LABEL, meta["name"])


def _r(x: float):
    return None if math.isnan(x) else (x if math.isinf(x) else round(x, 3))


def report_lines(st: dict) -> list[str]:
    """The steady-state rows of the bench's summary."""
    lines = [f"steady state: create -> pod Running as the client sees it; {st['seconds']:g} s per rate, {st['slots']} slots, "
             f"durations sized to keep ~{st['busy']:.0%} busy (p50 / p99 / max s; backlog at the end; kube-apiserver CPU)"]
    raws = {r["rate"]: r for r in st.get("raw", [])}
    lines.append(f"  {'rate/s':>7}{'run s':>7}  {'podbatch':<52}  raw pods bound directly ({st['raw_seconds']:g} s per rate)")
    for r in st.get("podbatch", []):
        q = raws.get(r["rate"])
        lines.append(f"  {r['rate']:>7g}{r['duration_s']:>7g}  {_cell(r):<52}  {_cell(q) if q else '-'}")
    lines.append(f"  highest rate with p99 <= {P99_TARGET_S:g} s: podbatch {_best(st.get('podbatch_best_rate'))} "
                 f"(issue 13 target: 60/s), raw {_best(st.get('raw_best_rate')) if raws else 'not run'}")
    return lines


def _cell(r: dict) -> str:
    return (f"{_fmt(r['p50_s'])} / {_fmt(r['p99_s'])} / {_fmt(r['max_s'])} "
            f"bl {r['backlog_end']} api {r['apiserver_cpu_share']:.0%} {r['verdict']}")


def _fmt(x) -> str:
    return "-" if x is None else ("inf" if x == math.inf else f"{x:.2f}")


def _best(rate) -> str:
    return "none" if rate is None else f"{rate:g}/s"
