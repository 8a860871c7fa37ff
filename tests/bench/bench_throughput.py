"""End-to-end throughput: podbatch next to Kubernetes' Job controller and the raw API limit.

In one run, on one cluster, on the same fake nodes (a kwok Pool of BENCH_NODES nodes x
BENCH_SLOTS slots, in a fresh namespace, served by an operator process this bench starts):

1. podbatch: a Job of BENCH_TASKS instant tasks (created by ~32 threads of the sync client;
   the job is created with onAllTasksComplete=noaction and switched to terminatejob once every
   task exists, the Batch pattern that keeps it from completing before the last task is added).
   Timed from the first create to the job's state `completed`; the create phase alone too.
2. Kubernetes' Job controller: a batch/v1 Job of BENCH_TASKS completions, parallelism
   nodes x slots (200), pods placed by kube-scheduler on the same nodes (nodeSelector +
   tolerations). Indexed (completionMode: Indexed) when the server is >= 1.22; on older
   servers (1.20 here) a plain non-indexed Job, which the output says.
3. single Jobs, the per-object peer of a single Task: BENCH_TASKS batch/v1 Jobs of one
   completion each (the same pod template), created by the same threads, timed from the first
   create until every Job has succeeded=1 (seen by a watch).
4. raw: BENCH_TASKS pods bound directly (spec.nodeName) to the fake nodes by ~32 threads,
   until all are Succeeded (the node simulator completes them): the API server + simulator limit.
5. collection (collection.py): one TaskCollection of BENCH_COLLECTION_TASKS (10,000) instant
   tasks, timed to its job's `completed`; its peers at the same N: one batch/v1 Job of N
   completions and N raw pods (phases 2 and 4 at that N).
6. steady state (steady.py): single Tasks at steady rates, create -> pod Running latency.
7. memory: BENCH_MEMORY_TASKS (10,000) tasks of a second Job on a Pool of 0 nodes (they
   stay queued, in flight in the operator's view); the operator's RSS before and after, and
   its scheduler pass time at that queue depth (its /metrics).
8. collmemory (collection.py): the same with one collection of BENCH_MEMORY_COLLECTION
   (100,000) tasks queued.
9. prints one table: each phase's rate, podbatch's ratio to it, API writes and kube-apiserver
   CPU ms per task or pod, CPU seconds of the operator and the control plane processes.
Then deletes the Pools (their finalizer must release the fake nodes; if it does not, the
bench deletes them and reports it) and the namespace.

Script:  KUBECONFIG=... .venv/bin/python tests/bench/bench_throughput.py [--tasks 2000 --nodes 50]
pytest:  KUBECONFIG=... .venv/bin/pytest -m bench -s tests/bench/bench_throughput.py
Env:     BENCH_TASKS (2000), BENCH_NODES (50), BENCH_SLOTS (4), BENCH_MEMORY_TASKS (10000, 0 = skip),
         BENCH_COLLECTION_TASKS (10000), BENCH_MEMORY_COLLECTION (100000, 0 = skip),
         BENCH_THREADS (32), BENCH_OTHER_OPERATOR_WAIT (seconds to wait for another cluster-wide
         podbatch operator to go away before failing, 300), BENCH_PHASES (all of
         podbatch,jobcontroller,singlejobs,raw,collection,steady,memory,collmemory), BENCH_STEADY_* (see steady.py)
Results are also written as JSON to /tmp/podbatch-test-logs/bench-throughput-<id>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/ (kit) when run as a script
sys.path.insert(0, str(Path(__file__).resolve().parent))       # tests/bench/ (meters, steady)

import urllib3  # noqa: E402

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)   # the local cluster's kubeconfig skips TLS verify

from kit import GROUP, LOG_DIR, VERSION, OperatorProcess, install_crds, job, kwok_pool, sim, task  # noqa: E402
from meters import (CpuMeter, JobWatch, PodWatch, apiserver_requests, control_plane_pids,  # noqa: E402
                    free_port, operator_metrics, other_operators, proc_cpu_seconds, proc_rss_mib, raw,
                    request_delta, retrying, run_threads, wait_until)
from steady import Steady, steady_params  # noqa: E402
from collection import collection_memory, collection_phase  # noqa: E402
from podbatch.cli.main import with_job_owner  # noqa: E402
from throughput_report import summary  # noqa: E402

LOCAL_KUBECONFIG = Path(os.environ.get("PODBATCH_CACHE", Path.home() / ".cache/podbatch")) / "cluster/kubeconfig"
POOL, EMPTY_POOL = "bench", "empty"
RUN_LABEL = "bench.podbatch.io/run"
PHASES = ("podbatch", "jobcontroller", "singlejobs", "raw", "collection", "steady", "memory", "collmemory")


RESULT_KEYS = {"collmemory": "collection_memory"}   # a phase's key in the result, where it is not its name


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {os.environ.get(name)!r}") from None


def phases_from(text: str | None) -> tuple[str, ...]:
    """BENCH_PHASES / --phases: a comma list of PHASES, all by default."""
    if not text:
        return PHASES
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PHASES]
    if unknown:
        raise ValueError(f"unknown bench phase(s) {unknown}; choose from {', '.join(PHASES)}")
    return tuple(p for p in PHASES if p in chosen)


def pass_times(before: dict, after: dict) -> dict:
    """Mean scheduler plan() and reconcile pass times between two reads of the operator's
    /metrics (histogram _sum/_count deltas); None where no pass ran or the metric is absent."""
    out = {}
    for short, name in (("scheduler", "podbatch_scheduler_pass_seconds"), ("reconcile", "podbatch_reconcile_pass_seconds")):
        n = after.get(name + "_count", 0.0) - before.get(name + "_count", 0.0)
        total = after.get(name + "_sum", 0.0) - before.get(name + "_sum", 0.0)
        out[f"{short}_passes"] = int(n)
        out[f"{short}_pass_ms"] = round(total / n * 1000, 1) if n > 0 else None
    return out


def describe_passes(p: dict) -> str:
    def one(short: str) -> str:
        ms = p.get(f"{short}_pass_ms")
        return f"{short} pass {ms} ms mean of {p[f'{short}_passes']}" if ms is not None else f"no {short} pass measured"
    return f"{one('scheduler')} (plan() alone), {one('reconcile')}"


# ---------------------------------------------------------------------------- the bench
class Bench:
    def __init__(self, kubeconfig: str, tasks: int, nodes: int, slots: int, memory_tasks: int,
                 threads: int, other_wait: float, phases: tuple[str, ...] = PHASES, steady: dict | None = None,
                 log=print, collection_tasks: int = 10000, memory_collection: int = 100000) -> None:
        from kubernetes import client, config
        self.kubeconfig, self.n, self.nodes, self.slots = kubeconfig, tasks, nodes, slots
        self._jobs: dict[str, dict] = {}   # job name -> the Job as read once (its uid, for ownerReferences)
        self.memory_tasks, self.threads, self.other_wait, self.log = memory_tasks, threads, other_wait, log
        self.phases, self.steady = phases, steady or steady_params()
        self.collection_tasks, self.memory_collection = collection_tasks, memory_collection
        self.pool = POOL
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = threads + 8
        self.api = client.ApiClient(cfg)
        self.core = client.CoreV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.run_id = uuid.uuid4().hex[:6]
        self.ns = f"bench-tp-{self.run_id}"
        self.pool_label = f"{self.ns}.{POOL}"
        self.metrics_port = free_port()
        self.op: OperatorProcess | None = None
        self.result: dict = {"tasks": tasks, "nodes": nodes, "slots": slots, "run": self.run_id, "namespace": self.ns,
                             "cpus": os.cpu_count(), "problems": []}

    # --- small API helpers
    def cr(self, plural: str, body: dict) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", **body}
        body["metadata"]["namespace"] = self.ns
        retrying(lambda: raw(self.custom.create_namespaced_custom_object, GROUP, VERSION, self.ns, plural, body))

    def task(self, name: str, jname: str, **kw) -> dict:
        """A Task of job `jname` as `kubectl podbatch apply` creates it: with its ownerReference
        to the Job, so the operator has no adoption write to make (BENCH_TASK_OWNER=0: without,
        as plain `kubectl apply` creates it, and the operator adopts it: one write more)."""
        body = task(name, jname, **kw)
        if os.environ.get("BENCH_TASK_OWNER", "1") == "0":
            return body
        return with_job_owner(body, self.job_of(jname))

    def job_of(self, jname: str) -> dict:
        """The Job as read once (its uid names it in its Tasks' ownerReferences)."""
        if jname not in self._jobs:
            self._jobs[jname] = self.get_cr("jobs", jname)
        return self._jobs[jname]

    def get_cr(self, plural: str, name: str) -> dict:
        return raw(self.custom.get_namespaced_custom_object, GROUP, VERSION, self.ns, plural, name)

    def list_cr(self, plural: str) -> list[dict]:
        return raw(self.custom.list_namespaced_custom_object, GROUP, VERSION, self.ns, plural)["items"]

    def pool_nodes(self, pool: str) -> list[str]:
        lst = raw(self.core.list_node, label_selector=f"podbatch.io/pool={self.ns}.{pool}")
        return [n["metadata"]["name"] for n in lst["items"]]

    def op_cpu(self) -> float:
        return proc_cpu_seconds(self.op.proc.pid)

    def op_rss(self) -> float:
        return proc_rss_mib(self.op.proc.pid)

    def assert_operator(self) -> None:
        assert self.op and self.op.alive(), f"the operator died; see {self.op.log_path if self.op else ''}"

    # --- setup
    def wait_for_none(self, deadline: float, found, failure, waiting) -> None:
        """Wait until `found()` finds nothing; fail with `failure(found)` past the deadline."""
        while True:
            got = found()
            if not got:
                return
            if time.monotonic() > deadline:
                raise AssertionError(failure(got))
            self.log(waiting(got))
            time.sleep(5)

    def setup(self) -> None:
        from kubernetes import client
        install_crds(self.api)
        self.server = client.VersionApi(self.api).get_code()
        minor = int(re.sub(r"\D", "", self.server.minor) or 0)
        self.indexed = int(self.server.major) > 1 or minor >= 22
        self.result["server"] = self.server.git_version
        deadline = time.monotonic() + self.other_wait
        self.wait_for_none(deadline, lambda: other_operators(None, self.ns),
                           lambda pids: f"another podbatch operator serving all namespaces is running (pids {pids}); it would "
                                        f"also reconcile the bench's objects and spoil the numbers. Stop it or set its "
                                        f"PODBATCH_NAMESPACES, or raise BENCH_OTHER_OPERATOR_WAIT",
                           lambda pids: f"waiting for another cluster-wide podbatch operator (pids {pids}) to stop ...")
        # another bench's namespace still being deleted loads the API server as much as a phase
        self.wait_for_none(deadline, lambda: [n.metadata.name for n in self.core.list_namespace(label_selector=RUN_LABEL).items],
                           lambda busy: f"another bench's namespace is still there ({', '.join(busy)}): deleting its objects "
                                        f"loads the API server and would spoil the numbers. Wait for it to go (a namespace "
                                        f"of 100,000 Tasks takes about 20 minutes), or raise BENCH_OTHER_OPERATOR_WAIT",
                           lambda busy: f"waiting for another bench's namespace to go ({', '.join(busy)}) ...")
        self.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
            name=self.ns, labels={"podbatch.io/test": "1", RUN_LABEL: self.run_id})))
        wait_until("the namespace's default ServiceAccount",
                   lambda: self.core.list_namespaced_service_account(self.ns, field_selector="metadata.name=default").items, 60)
        self.op = OperatorProcess(self.kubeconfig, f"bench-throughput-{self.run_id}",
                                  env={"PODBATCH_NAMESPACES": self.ns, "PODBATCH_METRICS_PORT": str(self.metrics_port)}).start()
        time.sleep(2)
        self.assert_operator()
        self.result["operator_log"] = str(self.op.log_path)
        self.cluster_pids = control_plane_pids()
        self.log(f"server {self.server.git_version}; namespace {self.ns}; operator pid {self.op.proc.pid}, log {self.op.log_path}")
        t0 = time.monotonic()
        self.cr("pools", kwok_pool(POOL, self.nodes, slots=self.slots))

        def idle():
            cn = self.list_cr("computenodes")
            n = sum(1 for c in cn if (c.get("status") or {}).get("state") == "idle")
            self._idle = f"{n}/{self.nodes} compute nodes idle ({len(cn)} exist)"
            return n >= self.nodes
        wait_until(f"{self.nodes} idle compute nodes", idle, 300, 1.0, progress=lambda: self._idle, log=self.log)
        self.assert_operator()
        self.node_names = sorted(self.pool_nodes(POOL))
        assert len(self.node_names) == self.nodes, self.node_names
        self.result["pool_ready_s"] = round(time.monotonic() - t0, 1)
        self.log(f"pool of {self.nodes} nodes x {self.slots} slots: all compute nodes idle in {self.result['pool_ready_s']} s")
        time.sleep(3)   # let the node-preparation churn settle before measuring

    def meter(self) -> CpuMeter:
        return CpuMeter({"operator": self.op.proc.pid, **self.cluster_pids})

    # --- 1. podbatch
    def phase_podbatch(self) -> None:
        n, jname = self.n, "tp"
        self.log(f"[podbatch] job of {n} instant tasks on {self.nodes} x {self.slots} slots")
        req0, opm0 = apiserver_requests(self.api), operator_metrics(self.metrics_port)
        meter = self.meter()
        t0 = time.monotonic()
        self.cr("jobs", job(jname, POOL, onAllTasksComplete="noaction"))
        ann = sim(0)
        self.job_of(jname)
        create_s = run_threads(n, self.threads, lambda i: self.cr("tasks", self.task(f"tp-{i:05d}", jname, annotations=ann)))
        self.terminate_when_done(jname)
        self.log(f"    created {n} tasks in {create_s:.1f} s ({n / create_s:.0f}/s)")
        status = self.wait_completed(jname, n, lambda st: f"counts {st.get('taskCounts')}")
        total = time.monotonic() - t0
        cpu = meter.stop()
        counts = status.get("taskCounts") or {}
        if counts.get("succeeded") != n:
            self.result["problems"].append(f"podbatch job completed with counts {counts}, expected {n} succeeded")
        req = request_delta(req0, apiserver_requests(self.api))
        opm1 = operator_metrics(self.metrics_port)
        opm = {k: round(v - opm0.get(k, 0.0), 3) for k, v in opm1.items() if v - opm0.get(k, 0.0)}
        self.result["podbatch"] = {
            "seconds": round(total, 2), "tasks_per_s": round(n / total, 1),
            "create_seconds": round(create_s, 2), "create_per_s": round(n / create_s, 1),
            "after_create_seconds": round(total - create_s, 2), "counts": counts, "cpu": cpu,
            "api_writes": req, "operator_metrics": opm,
            "task_status_patches_per_task": round(req.get("PATCH tasks/status", 0) / n, 2) if req else None,
            "writes_per_task": round(sum(v for k, v in req.items() if k != "POST tasks") / n, 2) if req else None,
        }
        self.log(f"    podbatch: {n} tasks done in {total:.1f} s = {n / total:.1f} tasks/s "
                 f"(create phase {create_s:.1f} s = {n / create_s:.0f}/s); operator CPU {cpu['cpu_s'].get('operator')} s")

    def terminate_when_done(self, jname: str) -> None:
        """Switch the Job to onAllTasksComplete: terminatejob (once all its tasks exist)."""
        retrying(lambda: raw(self.custom.patch_namespaced_custom_object,
                             GROUP, VERSION, self.ns, "jobs", jname, {"spec": {"onAllTasksComplete": "terminatejob"}},
                             _content_type="application/merge-patch+json"))

    def wait_completed(self, jname: str, n: int, progress) -> dict:
        """Wait until the podbatch Job's state is completed, logging progress(status); its status."""
        status: dict = {}

        def done():
            nonlocal status
            status = self.get_cr("jobs", jname).get("status") or {}
            return status.get("state") == "completed"

        def prog():
            self.assert_operator()
            return f"job {status.get('state')} {progress(status)}; operator CPU {self.op_cpu():.0f} s, RSS {self.op_rss():.0f} MiB"
        wait_until(f"podbatch job {jname} completed", done, max(600, n * 0.5), 0.25, progress=prog, log=self.log)
        return status

    # --- 2. the Job controller
    def phase_jobcontroller(self, n: int | None = None, key: str = "jobcontroller", name: str = "k8s-tp") -> None:
        """One batch/v1 Job of n completions (BENCH_TASKS); its result under `key`."""
        n = n or self.n
        par = self.nodes * self.slots
        mode = "Indexed" if self.indexed else "NonIndexed (server < 1.22 has no Indexed Jobs)"
        self.result[f"{key}_mode"] = mode
        self.log(f"[jobcontroller] one batch/v1 Job: {n} completions, parallelism {par}, {mode}")
        spec = {"completions": n, "parallelism": par, "backoffLimit": n,
                "template": {"metadata": {"labels": {RUN_LABEL: self.run_id, "bench": name},
                                          "annotations": {"sim.podbatch.io/duration": "0"}},
                             "spec": self.pod_spec(node=None)}}
        if self.indexed:
            spec["completionMode"] = "Indexed"
        body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": self.ns}, "spec": spec}
        req0 = apiserver_requests(self.api)
        meter = self.meter()
        t0 = time.monotonic()
        raw(self.batch.create_namespaced_job, self.ns, body)
        st = {}

        def done():
            nonlocal st
            st = raw(self.batch.read_namespaced_job_status, name, self.ns).get("status") or {}
            return (st.get("succeeded") or 0) >= n
        wait_until(f"Job {name} succeeded={n}", done, max(900, n * 0.75), 0.25,
                   progress=lambda: f"active {st.get('active')} succeeded {st.get('succeeded')} failed {st.get('failed')}", log=self.log)
        total = time.monotonic() - t0
        self.result[key] = {"seconds": round(total, 2), "pods_per_s": round(n / total, 1), "mode": mode, "n": n,
                                        "cpu": meter.stop(), "api_writes": request_delta(req0, apiserver_requests(self.api))}
        self.log(f"    Job controller: {n} pods Succeeded in {total:.1f} s = {n / total:.1f} pods/s")

    # --- 3. single-completion Jobs
    def phase_single_jobs(self) -> None:
        n = self.n
        self.log(f"[singlejobs] {n} batch/v1 Jobs of one completion each, {self.threads} threads")
        watch = JobWatch(self.batch, self.ns, "bench=single")
        watch.start()
        req0 = apiserver_requests(self.api)
        meter = self.meter()
        t0 = time.monotonic()

        def mk(i: int) -> None:
            body = {"apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": f"single-{i:05d}", "labels": {RUN_LABEL: self.run_id, "bench": "single"}},
                    "spec": {"completions": 1, "parallelism": 1, "backoffLimit": 6,
                             "template": {"metadata": {"labels": {RUN_LABEL: self.run_id, "bench": "single-pod"},
                                                       "annotations": {"sim.podbatch.io/duration": "0"}},
                                          "spec": self.pod_spec(node=None)}}}
            retrying(lambda: raw(self.batch.create_namespaced_job, self.ns, body))
        try:
            create_s = run_threads(n, self.threads, mk)
            self.log(f"    created {n} Jobs in {create_s:.1f} s ({n / create_s:.0f}/s)")
            wait_until(f"{n} single Jobs succeeded", lambda: len(watch.done) >= n, max(600, n * 0.75), 0.25,
                       progress=lambda: f"{len(watch.done)} succeeded, {len(watch.failed)} with a failed pod", log=self.log)
        finally:
            watch.stop()
        total = max(watch.done.values()) - t0
        self.result["singlejobs"] = {"seconds": round(total, 2), "pods_per_s": round(n / total, 1),
                                     "create_seconds": round(create_s, 2), "create_per_s": round(n / create_s, 1),
                                     "cpu": meter.stop(), "api_writes": request_delta(req0, apiserver_requests(self.api))}
        self.log(f"    single Jobs: {n} Jobs succeeded in {total:.1f} s = {n / total:.1f} Jobs/s")

    def pod_spec(self, node: str | None) -> dict:
        spec = {"restartPolicy": "Never", "automountServiceAccountToken": False, "terminationGracePeriodSeconds": 0,
                "enableServiceLinks": False,
                "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent", "command": ["true"]}]}
        if node:
            spec["nodeName"] = node
        else:
            spec["nodeSelector"] = {"podbatch.io/pool": self.pool_label}
        spec["tolerations"] = [
            {"key": "podbatch.io/pool", "operator": "Equal", "value": self.pool_label, "effect": "NoSchedule"},
            {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}]
        return spec

    # --- 3. raw
    def phase_raw(self, n: int | None = None, key: str = "raw", prefix: str = "raw") -> None:
        """n pods (BENCH_TASKS) bound directly to the fake nodes; the result under `key`."""
        n = n or self.n
        self.log(f"[{key}] {n} pods bound directly to the {self.nodes} fake nodes, {self.threads} threads")
        watch = PodWatch(self.core, self.ns, f"bench={prefix}")
        watch.start()
        req0 = apiserver_requests(self.api)
        meter = self.meter()
        t0 = time.monotonic()

        def mk(i: int) -> None:
            body = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"{prefix}-{i:06d}", "labels": {RUN_LABEL: self.run_id, "bench": prefix},
                                 "annotations": {"sim.podbatch.io/duration": "0"}},
                    "spec": self.pod_spec(self.node_names[i % len(self.node_names)])}
            retrying(lambda: raw(self.core.create_namespaced_pod, self.ns, body))
        create_s = run_threads(n, self.threads, mk)
        try:
            wait_until(f"{n} raw pods Succeeded", lambda: len(watch.done) >= n, max(600, n * 0.5), 0.2,
                       progress=lambda: f"{len(watch.done)} Succeeded, {len(watch.failed)} Failed", log=self.log)
        finally:
            watch.stop()
        total = max(watch.done.values()) - t0
        self.result[key] = {"seconds": round(total, 2), "pods_per_s": round(n / total, 1), "n": n,
                              "create_seconds": round(create_s, 2), "create_per_s": round(n / create_s, 1),
                              "failed": len(watch.failed), "cpu": meter.stop(),
                              "api_writes": request_delta(req0, apiserver_requests(self.api))}
        self.log(f"    raw: {n} pods Succeeded in {total:.1f} s = {n / total:.1f} pods/s (create phase {n / create_s:.0f}/s)")

    # --- 5. memory
    def phase_memory(self) -> None:
        m = self.memory_tasks
        self.log(f"[memory] {m} tasks queued on a pool of 0 nodes")
        self.cr("pools", kwok_pool(EMPTY_POOL, 0, slots=self.slots))
        wait_until("the empty pool's status", lambda: (self.get_cr("pools", EMPTY_POOL).get("status") or {}).get("allocationState"), 60)
        self.cr("jobs", job("mem", EMPTY_POOL))
        idle_rate = self.idle_cpu_rate()
        before, cpu0 = self.op_rss(), self.op_cpu()
        ann = sim(0)
        self.job_of("mem")
        create_s = run_threads(m, self.threads, lambda i: self.cr("tasks", self.task(f"mem-{i:05d}", "mem", annotations=ann)))
        after_create = self.op_rss()
        mine = f"namespace={self.ns},pool={EMPTY_POOL},"

        def held() -> float | None:
            """Tasks of the empty pool in the operator's podbatch_tasks gauge; None when it has no such gauge."""
            opm = operator_metrics(self.metrics_port)
            gauge = [v for k, v in opm.items() if k.startswith("podbatch_tasks{")]
            return sum(v for k, v in opm.items() if k.startswith("podbatch_tasks{") and mine in k) if gauge else None

        def seen():
            h = held()
            return h is None and time.monotonic() - t0 > 10 or (h or 0) >= m
        t0 = time.monotonic()
        all_seen = True
        try:
            wait_until("the operator to hold every task", seen, 300, 1.0,
                       progress=lambda: f"{held()} tasks held; RSS {self.op_rss():.0f} MiB", log=self.log)
        except AssertionError as e:
            all_seen = False
            self.result["problems"].append(f"memory: {e}")
        seen_rss, opm_seen = self.op_rss(), operator_metrics(self.metrics_port)
        # then let the operator finish its writes for them (initial status, pending reason): idle CPU
        settled, peak, calm = self.settle(idle_rate, seen_rss)
        self.assert_operator()
        settled_s = time.monotonic() - t0
        passes = self.poke("mem", opm_seen)
        per_k = (settled - before) / (m / 1000)
        self.result["memory"] = {
            "tasks": m, "rss_before_mib": round(before, 1), "rss_after_create_mib": round(after_create, 1),
            "rss_all_seen_mib": round(seen_rss, 1), "rss_settled_mib": round(settled, 1), "rss_peak_mib": round(peak, 1),
            "mib_per_1000_tasks": round(per_k, 2), "create_seconds": round(create_s, 1),
            "seen_and_settled_seconds": round(settled_s, 1), "all_seen": all_seen, "held_by_gauge": held(),
            "settled": calm, "idle_cpu_share": round(idle_rate, 3), "operator_cpu_s": round(self.op_cpu() - cpu0, 1),
            **passes}
        self.log(f"    operator RSS {before:.0f} MiB before -> {settled:.0f} MiB with {m} more tasks in flight "
                 f"(peak {peak:.0f}) = {per_k:.1f} MiB per 1,000 tasks; {describe_passes(passes)}")

    def idle_cpu_rate(self) -> float:
        """The operator's CPU share (CPU-s per s) over 4 s when nothing happens."""
        c, t = self.op_cpu(), time.monotonic()
        time.sleep(4)
        return (self.op_cpu() - c) / (time.monotonic() - t)

    def settle(self, idle_rate: float, rss: float) -> tuple[float, float, bool]:
        """Wait (at most 120 s) until the operator's CPU is back to idle for 6 s: its RSS then,
        its peak RSS meanwhile, and whether it settled (an operator that never idles did not)."""
        last_cpu, quiet, peak = self.op_cpu(), 0, rss
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and quiet < 3:
            time.sleep(2)
            cpu = self.op_cpu()
            peak = max(peak, self.op_rss())
            quiet = quiet + 1 if (cpu - last_cpu) / 2 < idle_rate * 1.5 + 0.05 else 0
            last_cpu = cpu
        return self.op_rss(), peak, quiet >= 3

    def poke(self, jname: str, opm_before: dict) -> dict:
        """3 more tasks of job `jname`, 2 s apart, so its pool is planned again at the depth it
        has even by an operator that idles; the mean pass times since `opm_before`."""
        for k in range(3):
            self.cr("tasks", self.task(f"{jname}-poke-{k}", jname, annotations=sim(0)))
            time.sleep(2)
        time.sleep(2)
        return pass_times(opm_before, operator_metrics(self.metrics_port))

    # --- cleanup
    def cleanup(self) -> None:
        from kubernetes.client.rest import ApiException
        if self.op and not self.op.alive():
            self.log("the operator is not running; starting one for the cleanup (the pool finalizer needs it)")
            self.op = OperatorProcess(self.kubeconfig, f"bench-throughput-{self.run_id}-cleanup",
                                      env={"PODBATCH_NAMESPACES": self.ns}).start()
        try:
            pools = [p["metadata"]["name"] for p in self.list_cr("pools")]
        except ApiException:
            pools = []
        for p in pools:
            try:
                self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, "pools", p)
            except ApiException as e:
                if e.status != 404:
                    raise
        t0 = time.monotonic()
        leftovers: list[str] = []
        while time.monotonic() - t0 < 180:
            leftovers = [n for p in pools for n in self.pool_nodes(p)]
            if not leftovers:
                break
            time.sleep(1)
        if leftovers:
            msg = (f"operator bug: {len(leftovers)} fake nodes still there 180 s after their Pools were deleted "
                   f"(finalizer did not release them); deleted by the bench")
            self.result["problems"].append(msg)
            self.log("    " + msg)
            for name in leftovers:
                try:
                    self.core.delete_node(name)
                except ApiException:
                    pass
        else:
            self.result["pool_release_s"] = round(time.monotonic() - t0, 1)
            self.log(f"    pools deleted; their fake nodes released in {self.result['pool_release_s']} s")
        try:
            self.core.delete_namespace(self.ns)
        except ApiException:
            pass
        t0 = time.monotonic()
        # its pods and Tasks go with it: ~3 s per 100 (100,000 queued Tasks took about 20 minutes)
        queued = self.memory_tasks if "memory" in self.phases else 0
        wait = 300 + 3 * (((self.result.get("collection") or {}).get("n") or 0) + queued) / 100
        while time.monotonic() - t0 < wait:
            try:
                self.core.read_namespace(self.ns)
            except ApiException as e:
                if e.status == 404:
                    self.log(f"    namespace {self.ns} deleted in {time.monotonic() - t0:.0f} s")
                    break
            time.sleep(2)
        else:
            self.result["problems"].append(f"namespace {self.ns} still terminating after {wait:.0f} s")
        if self.op:
            self.op.stop()

    # --- 5. steady state (steady.py)
    def phase_steady(self) -> None:
        self.result["steady"] = Steady(self, **self.steady).run()

    def run(self) -> dict:
        try:
            self.setup()
            for phase in self.phases:
                if phase == "memory" and not self.memory_tasks or phase == "collmemory" and not self.memory_collection:
                    continue
                {"podbatch": self.phase_podbatch, "jobcontroller": self.phase_jobcontroller,
                 "singlejobs": self.phase_single_jobs, "raw": self.phase_raw, "steady": self.phase_steady,
                 "memory": self.phase_memory, "collection": lambda: collection_phase(self),
                 "collmemory": lambda: collection_memory(self)}[phase]()
                self.assert_operator()
        except BaseException as e:
            self.result["problems"].append(f"aborted: {e!r}"[:500])
            raise
        finally:
            try:
                self.log(summary(self.result))
            finally:
                try:
                    self.cleanup()
                finally:
                    LOG_DIR.mkdir(parents=True, exist_ok=True)
                    out = LOG_DIR / f"bench-throughput-{self.run_id}.json"
                    out.write_text(json.dumps(self.result, indent=2, default=str))
                    self.log(f"results: {out}")
        return self.result


def params() -> dict:
    return {"tasks": env_int("BENCH_TASKS", 2000), "nodes": env_int("BENCH_NODES", 50), "slots": env_int("BENCH_SLOTS", 4),
            "memory_tasks": env_int("BENCH_MEMORY_TASKS", 10000), "threads": env_int("BENCH_THREADS", 32),
            "collection_tasks": env_int("BENCH_COLLECTION_TASKS", 10000),
            "memory_collection": env_int("BENCH_MEMORY_COLLECTION", 100000),
            "other_wait": float(os.environ.get("BENCH_OTHER_OPERATOR_WAIT") or 300),
            "phases": phases_from(os.environ.get("BENCH_PHASES")), "steady": steady_params()}


@pytest.mark.bench
@pytest.mark.timeout(3600)
def test_throughput(kubeconfig, crds, nodesim):
    p = params()
    r = Bench(kubeconfig, **p, log=lambda s: print(s, flush=True)).run()
    skipped = {"memory": not p["memory_tasks"], "collmemory": not p["memory_collection"]}
    missing = [ph for ph in p["phases"] if RESULT_KEYS.get(ph, ph) not in r and not skipped.get(ph)]
    assert not missing, f"phases without a result: {missing}"
    if "podbatch" in r:
        assert r["podbatch"]["counts"].get("succeeded") == r["tasks"], r["podbatch"]["counts"]
    if "collection" in r:
        assert r["collection"]["counts"].get("succeeded") == r["collection"]["n"], r["collection"]["counts"]
    assert not [pr for pr in r["problems"] if pr.startswith("operator bug")], r["problems"]


def main() -> int:
    d = params()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or str(LOCAL_KUBECONFIG))
    p.add_argument("--tasks", type=int, default=d["tasks"])
    p.add_argument("--nodes", type=int, default=d["nodes"])
    p.add_argument("--slots", type=int, default=d["slots"])
    p.add_argument("--memory-tasks", type=int, default=d["memory_tasks"], help="0 skips the memory phase")
    p.add_argument("--threads", type=int, default=d["threads"])
    p.add_argument("--collection-tasks", type=int, default=d["collection_tasks"])
    p.add_argument("--memory-collection", type=int, default=d["memory_collection"], help="0 skips the collmemory phase")
    p.add_argument("--other-operator-wait", type=float, default=d["other_wait"])
    p.add_argument("--phases", default=",".join(d["phases"]), help=f"a comma list of {', '.join(PHASES)}")
    a = p.parse_args()
    os.environ["KUBECONFIG"] = a.kubeconfig   # the operator child process reads it too
    Bench(a.kubeconfig, a.tasks, a.nodes, a.slots, a.memory_tasks, a.threads, a.other_operator_wait,
          phases=phases_from(a.phases), steady=d["steady"], log=lambda s: print(s, flush=True),
          collection_tasks=a.collection_tasks, memory_collection=a.memory_collection).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
