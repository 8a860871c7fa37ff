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
3. raw: BENCH_TASKS pods bound directly (spec.nodeName) to the fake nodes by ~32 threads,
   until all are Succeeded (the node simulator completes them): the API server + simulator limit.
4. prints the table and what bounds it: CPU seconds of the operator and of the control plane
   processes during each phase, API writes per task (from the API server's own metrics).
5. memory: BENCH_MEMORY_TASKS (10,000) tasks of a second Job on a Pool of 0 nodes (they
   stay queued, in flight in the operator's view); the operator's RSS before and after.
Then deletes the Pools (their finalizer must release the fake nodes; if it does not, the
bench deletes them and reports it) and the namespace.

Script:  KUBECONFIG=... .venv/bin/python tests/bench/bench_throughput.py [--tasks 2000 --nodes 50]
pytest:  KUBECONFIG=... .venv/bin/pytest -m bench -s tests/bench/bench_throughput.py
Env:     BENCH_TASKS (2000), BENCH_NODES (50), BENCH_SLOTS (4), BENCH_MEMORY_TASKS (10000, 0 = skip),
         BENCH_THREADS (32), BENCH_OTHER_OPERATOR_WAIT (seconds to wait for another cluster-wide
         podbatch operator to go away before failing, 300)
Results are also written as JSON to /tmp/podbatch-test-logs/bench-throughput-<id>.json.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # tests/ (kit) when run as a script

import urllib3  # noqa: E402

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)   # the local cluster's kubeconfig skips TLS verify

from kit import GROUP, LOG_DIR, VERSION, OperatorProcess, install_crds, job, kwok_pool, sim, task  # noqa: E402

LOCAL_KUBECONFIG = Path(os.environ.get("PODBATCH_CACHE", Path.home() / ".cache/podbatch")) / "cluster/kubeconfig"
CLK_TCK = os.sysconf("SC_CLK_TCK")
POOL, EMPTY_POOL = "bench", "empty"
RUN_LABEL = "bench.podbatch.io/run"


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


# ---------------------------------------------------------------------------- processes
def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


CONTROL_PLANE = {"kube-apiserver": "kube-apiserver", "etcd": "etcd ", "kube-controller-manager": "kube-controller-manager",
                 "kube-scheduler": "kube-scheduler", "nodesim": "nodesim.py"}


def control_plane_pids() -> dict[str, int]:
    """pids of the local cluster's processes (read-only look at /proc; absent on a remote cluster)."""
    found: dict[str, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        cmd = _cmdline(pid)
        first = cmd.split(" ", 1)[0]
        for name, marker in CONTROL_PLANE.items():
            if name in found:
                continue
            if (name == "nodesim" and marker in cmd and "bench" not in cmd) or (name != "nodesim" and first.endswith(marker.strip())):
                found[name] = int(pid)
    return found


def other_operators(mine: int | None, namespace: str) -> list[int]:
    """Other podbatch operator processes on this machine that would also serve `namespace`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if mine is not None and int(pid) == mine:
            continue
        cmd = _cmdline(pid)
        if "podbatch-operator" not in cmd and "podbatch.controllers.run" not in cmd:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            env = {}
        served = [n.strip() for n in env.get(b"PODBATCH_NAMESPACES", b"").decode().split(",") if n.strip()]
        if not served or any(fnmatch.fnmatchcase(namespace, pat) for pat in served):
            out.append(int(pid))
    return out


class CpuMeter:
    """CPU seconds of a set of processes between two points."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.start = self._read()

    def _read(self) -> dict[str, float]:
        out = {}
        for name, pid in self.pids.items():
            try:
                out[name] = proc_cpu_seconds(pid)
            except OSError:
                pass
        return out

    def stop(self) -> dict:
        end, wall = self._read(), time.monotonic() - self.t0
        return {"wall_s": round(wall, 2),
                "cpu_s": {n: round(end[n] - self.start[n], 2) for n in end if n in self.start}}


# ---------------------------------------------------------------------------- metrics
_METRIC = re.compile(r'^apiserver_request_total\{([^}]*)\} ([0-9.e+]+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def apiserver_requests(api_client) -> dict[tuple, float]:
    """apiserver_request_total summed by (verb, resource, subresource); {} if not readable."""
    try:
        cfg = api_client.configuration
        headers = {}
        token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
        if token:
            headers["Authorization"] = token if token.lower().startswith("bearer ") else f"Bearer {token}"
        resp = api_client.call_api("GET", cfg.host + "/metrics", header_params=headers)
        resp.read()
        if resp.status != 200:
            return {}
        text = resp.data.decode()
    except Exception:
        return {}
    out: dict[tuple, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(1)))
        k = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
        out[k] = out.get(k, 0.0) + float(m.group(2))
    return out


def request_delta(before: dict, after: dict) -> dict[str, int]:
    out = {}
    for k, v in after.items():
        d = int(v - before.get(k, 0.0))
        if d and k[0] in ("POST", "PATCH", "PUT", "DELETE", "CREATE", "UPDATE", "APPLY"):
            out[f"{k[0]} {k[1]}{'/' + k[2] if k[2] else ''}"] = d
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def operator_metrics(port: int) -> dict[str, float]:
    """The operator's own Prometheus metrics (name{labels} -> value); {} if not served."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except Exception:
        return {}
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("podbatch_") and not s.name.endswith("_created"):
                lab = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
                if "le" in s.labels:
                    continue
                out[s.name + (f"{{{lab}}}" if lab else "")] = s.value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- helpers
def raw(fn, *args, **kw) -> dict:
    """Call a client method without building model objects; read and release the response, so
    its connection goes back to the pool (an unread response costs a new TLS connection per call)."""
    resp = fn(*args, _preload_content=False, **kw)
    try:
        data = resp.data
    finally:
        resp.release_conn()
    return json.loads(data) if data else {}


def retrying(fn, attempts: int = 20):
    from kubernetes.client.rest import ApiException
    for a in range(attempts):
        try:
            return fn()
        except ApiException as e:
            if e.status == 409:
                return None   # a retried create that had gone through
            if a == attempts - 1 or not (e.status in (403, 429, 500, 503, 504) or "serviceaccount" in str(e.body).lower()):
                raise
        except Exception:
            if a == attempts - 1:
                raise
        time.sleep(0.2 * (a + 1))


def run_threads(n: int, threads: int, fn) -> float:
    """fn(i) for i in range(n) on `threads` threads; returns the wall time."""
    t0 = time.monotonic()
    with ThreadPoolExecutor(threads) as ex:
        for _ in ex.map(fn, range(n)):
            pass
    return time.monotonic() - t0


def wait_until(what: str, fn, timeout: float, interval: float = 0.5, progress=None, log=print):
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 10
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        if progress and time.monotonic() >= next_report:
            log(f"    ... {progress()}")
            next_report = time.monotonic() + 10
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {progress() if progress else last}")


class PodWatch(threading.Thread):
    """Counts pods of a label selector reaching Succeeded/Failed (one raw watch, cheap to parse)."""

    def __init__(self, core, ns: str, selector: str) -> None:
        super().__init__(daemon=True)
        self.core, self.ns, self.selector = core, ns, selector
        self.done: dict[str, float] = {}
        self.failed: set[str] = set()
        self.stopping = False
        self.rv = raw(core.list_namespaced_pod, ns, label_selector=selector, limit=1)["metadata"]["resourceVersion"]

    def run(self) -> None:
        while not self.stopping:
            try:
                resp = self.core.list_namespaced_pod(self.ns, label_selector=self.selector, watch=True,
                                                     resource_version=self.rv, timeout_seconds=60,
                                                     allow_watch_bookmarks=True, _preload_content=False)
                buf = b""
                try:
                    for chunk in resp.stream(65536):
                        if self.stopping:
                            break
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        for line in lines:
                            if line.strip():
                                self._event(json.loads(line))
                finally:
                    resp.release_conn()
            except Exception:
                time.sleep(0.5)

    def _event(self, ev: dict) -> None:
        obj = ev.get("object") or {}
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.rv = rv
        if ev.get("type") not in ("ADDED", "MODIFIED"):
            return
        phase = (obj.get("status") or {}).get("phase")
        name = obj["metadata"]["name"]
        if phase == "Succeeded" and name not in self.done:
            self.done[name] = time.monotonic()
        elif phase == "Failed":
            self.failed.add(name)


# ---------------------------------------------------------------------------- the bench
class Bench:
    def __init__(self, kubeconfig: str, tasks: int, nodes: int, slots: int, memory_tasks: int,
                 threads: int, other_wait: float, log=print) -> None:
        from kubernetes import client, config
        self.kubeconfig, self.n, self.nodes, self.slots = kubeconfig, tasks, nodes, slots
        self.memory_tasks, self.threads, self.other_wait, self.log = memory_tasks, threads, other_wait, log
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
    def setup(self) -> None:
        from kubernetes import client
        install_crds(self.api)
        self.server = client.VersionApi(self.api).get_code()
        minor = int(re.sub(r"\D", "", self.server.minor) or 0)
        self.indexed = int(self.server.major) > 1 or minor >= 22
        self.result["server"] = self.server.git_version
        deadline = time.monotonic() + self.other_wait
        while True:
            others = other_operators(None, self.ns)
            if not others:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"another podbatch operator serving all namespaces is running (pids {others}); it would "
                                     f"also reconcile the bench's objects and spoil the numbers. Stop it or set its "
                                     f"PODBATCH_NAMESPACES, or raise BENCH_OTHER_OPERATOR_WAIT")
            self.log(f"waiting for another cluster-wide podbatch operator (pids {others}) to stop ...")
            time.sleep(5)
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
        self.log(f"[1/3] podbatch: job of {n} instant tasks on {self.nodes} x {self.slots} slots")
        req0, opm0 = apiserver_requests(self.api), operator_metrics(self.metrics_port)
        meter = self.meter()
        t0 = time.monotonic()
        self.cr("jobs", job(jname, POOL, onAllTasksComplete="noaction"))
        ann = sim(0)
        create_s = run_threads(n, self.threads, lambda i: self.cr("tasks", task(f"tp-{i:05d}", jname, annotations=ann)))
        retrying(lambda: raw(self.custom.patch_namespaced_custom_object,
                             GROUP, VERSION, self.ns, "jobs", jname, {"spec": {"onAllTasksComplete": "terminatejob"}},
                             _content_type="application/merge-patch+json"))
        self.log(f"    created {n} tasks in {create_s:.1f} s ({n / create_s:.0f}/s)")
        status = {}

        def done():
            nonlocal status
            status = self.get_cr("jobs", jname).get("status") or {}
            return status.get("state") == "completed"

        def prog():
            self.assert_operator()
            return f"job {status.get('state')} counts {status.get('taskCounts')}; operator CPU {self.op_cpu():.0f} s, RSS {self.op_rss():.0f} MiB"
        wait_until(f"podbatch job {jname} completed", done, max(600, n * 0.5), 0.25, progress=prog, log=self.log)
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

    # --- 2. the Job controller
    def phase_jobcontroller(self) -> None:
        n, name = self.n, "k8s-tp"
        par = self.nodes * self.slots
        mode = "Indexed" if self.indexed else "NonIndexed (server < 1.22 has no Indexed Jobs)"
        self.result["jobcontroller_mode"] = mode
        self.log(f"[2/3] Kubernetes Job controller: {n} completions, parallelism {par}, {mode}")
        spec = {"completions": n, "parallelism": par, "backoffLimit": n,
                "template": {"metadata": {"labels": {RUN_LABEL: self.run_id, "bench": name},
                                          "annotations": {"sim.podbatch.io/duration": "0"}},
                             "spec": self._pod_spec(node=None)}}
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
        self.result["jobcontroller"] = {"seconds": round(total, 2), "pods_per_s": round(n / total, 1), "mode": mode,
                                        "cpu": meter.stop(), "api_writes": request_delta(req0, apiserver_requests(self.api))}
        self.log(f"    Job controller: {n} pods Succeeded in {total:.1f} s = {n / total:.1f} pods/s")

    def _pod_spec(self, node: str | None) -> dict:
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
    def phase_raw(self) -> None:
        n = self.n
        self.log(f"[3/3] raw: {n} pods bound directly to the {self.nodes} fake nodes, {self.threads} threads")
        watch = PodWatch(self.core, self.ns, "bench=raw")
        watch.start()
        req0 = apiserver_requests(self.api)
        meter = self.meter()
        t0 = time.monotonic()

        def mk(i: int) -> None:
            body = {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": f"raw-{i:05d}", "labels": {RUN_LABEL: self.run_id, "bench": "raw"},
                                 "annotations": {"sim.podbatch.io/duration": "0"}},
                    "spec": self._pod_spec(self.node_names[i % len(self.node_names)])}
            retrying(lambda: raw(self.core.create_namespaced_pod, self.ns, body))
        create_s = run_threads(n, self.threads, mk)
        try:
            wait_until(f"{n} raw pods Succeeded", lambda: len(watch.done) >= n, max(600, n * 0.5), 0.2,
                       progress=lambda: f"{len(watch.done)} Succeeded, {len(watch.failed)} Failed", log=self.log)
        finally:
            watch.stopping = True
        total = max(watch.done.values()) - t0
        self.result["raw"] = {"seconds": round(total, 2), "pods_per_s": round(n / total, 1),
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
        c, t = self.op_cpu(), time.monotonic()
        time.sleep(4)
        idle_rate = (self.op_cpu() - c) / (time.monotonic() - t)   # the operator's CPU when nothing happens
        before, cpu0 = self.op_rss(), self.op_cpu()
        ann = sim(0)
        create_s = run_threads(m, self.threads, lambda i: self.cr("tasks", task(f"mem-{i:05d}", "mem", annotations=ann)))
        after_create = self.op_rss()
        expected = self.n + m

        def seen():
            opm = operator_metrics(self.metrics_port)
            return sum(v for k, v in opm.items() if k.startswith("podbatch_tasks{")) >= expected
        t0 = time.monotonic()
        all_seen = True
        try:
            wait_until("the operator to hold every task", seen, 300, 1.0,
                       progress=lambda: f"RSS {self.op_rss():.0f} MiB", log=self.log)
        except AssertionError as e:
            all_seen = False
            self.result["problems"].append(f"memory: {e}")
        seen_rss = self.op_rss()
        # then let the operator finish its writes for them (initial status, pending reason): idle CPU
        samples, last_cpu, quiet, peak = [], self.op_cpu(), 0, seen_rss
        deadline = time.monotonic() + 120   # an operator that never idles is reported as not settled
        while time.monotonic() < deadline and quiet < 3:
            time.sleep(2)
            cpu = self.op_cpu()
            rss = self.op_rss()
            peak = max(peak, rss)
            samples.append(rss)
            quiet = quiet + 1 if (cpu - last_cpu) / 2 < idle_rate * 1.5 + 0.05 else 0
            last_cpu = cpu
        settled = self.op_rss()
        self.assert_operator()
        per_k = (settled - before) / (m / 1000)
        self.result["memory"] = {
            "tasks": m, "rss_before_mib": round(before, 1), "rss_after_create_mib": round(after_create, 1),
            "rss_all_seen_mib": round(seen_rss, 1), "rss_settled_mib": round(settled, 1), "rss_peak_mib": round(peak, 1),
            "mib_per_1000_tasks": round(per_k, 2), "create_seconds": round(create_s, 1),
            "seen_and_settled_seconds": round(time.monotonic() - t0, 1), "all_seen": all_seen,
            "settled": quiet >= 3, "idle_cpu_share": round(idle_rate, 3), "operator_cpu_s": round(self.op_cpu() - cpu0, 1)}
        self.log(f"    operator RSS {before:.0f} MiB before -> {settled:.0f} MiB with {m} more tasks in flight "
                 f"(peak {peak:.0f}) = {per_k:.1f} MiB per 1,000 tasks")

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
        while time.monotonic() - t0 < 300:
            try:
                self.core.read_namespace(self.ns)
            except ApiException as e:
                if e.status == 404:
                    self.log(f"    namespace {self.ns} deleted in {time.monotonic() - t0:.0f} s")
                    break
            time.sleep(2)
        else:
            self.result["problems"].append(f"namespace {self.ns} still terminating after 300 s")
        if self.op:
            self.op.stop()

    # --- report
    def report(self) -> str:
        r = self.result
        pb, jc, raw = r.get("podbatch", {}), r.get("jobcontroller", {}), r.get("raw", {})
        x, y, z = pb.get("tasks_per_s"), jc.get("pods_per_s"), raw.get("pods_per_s")
        r1 = round(x / y, 2) if x and y else None
        r2 = round(x / z, 2) if x and z else None
        r["ratios"] = {"podbatch_over_jobcontroller": r1, "podbatch_over_raw": r2}
        lines = ["", "=" * 100,
                 f"podbatch {self.n} tasks: {x} tasks/s | Job controller: {y} pods/s | raw: {z} pods/s | "
                 f"podbatch/JobController = {r1} | podbatch/raw = {r2}",
                 "=" * 100,
                 f"cluster {r.get('server')} on {r['cpus']} CPUs (control plane, simulator, operator and this client share them); "
                 f"{self.nodes} fake nodes x {self.slots} slots",
                 f"Job controller mode: {r.get('jobcontroller_mode')}"]
        if pb:
            lines.append(f"podbatch: {pb['seconds']} s total; create phase {pb['create_seconds']} s ({pb['create_per_s']}/s); "
                         f"{pb['after_create_seconds']} s more after the last create")
        if raw:
            lines.append(f"raw: {raw['seconds']} s total; create phase {raw['create_seconds']} s ({raw['create_per_s']}/s)")
        lines.append("CPU seconds used during each phase (wall seconds first):")
        names = ["operator", *CONTROL_PLANE]
        lines.append("  " + f"{'phase':<16}{'wall':>7}" + "".join(f"{n[:14]:>16}" for n in names))
        for label, ph in (("podbatch", pb), ("Job controller", jc), ("raw", raw)):
            if ph:
                c = ph["cpu"]["cpu_s"]
                lines.append("  " + f"{label:<16}{ph['cpu']['wall_s']:>7.1f}" + "".join(f"{c.get(n, float('nan')):>16.1f}" for n in names))
        if pb:
            op_share = pb["cpu"]["cpu_s"].get("operator", 0) / max(pb["cpu"]["wall_s"], 1e-9)
            pb["operator_cpu_share"] = round(op_share, 2)
            lines.append(f"operator CPU during the podbatch phase: {op_share:.0%} of one core "
                         + ("(single asyncio thread: CPU-bound)" if op_share > 0.8 else "(not CPU-saturated)"))
            if pb.get("api_writes"):
                lines.append(f"API writes per task in the podbatch phase (cluster-wide apiserver counters): "
                             f"{pb['writes_per_task']} (task status patches {pb['task_status_patches_per_task']}/task): "
                             + ", ".join(f"{k} {v}" for k, v in list(pb["api_writes"].items())[:8]))
            om = pb.get("operator_metrics") or {}
            passes = om.get("podbatch_reconcile_pass_seconds_count")
            if passes:
                lines.append(f"operator: {passes:.0f} reconcile passes, {om.get('podbatch_reconcile_pass_seconds_sum', 0):.1f} s in passes "
                             f"(mean {om.get('podbatch_reconcile_pass_seconds_sum', 0) / passes:.2f} s); scheduler plan() "
                             f"{om.get('podbatch_scheduler_pass_seconds_sum', 0):.2f} s in {om.get('podbatch_scheduler_pass_seconds_count', 0):.0f} calls; "
                             f"bindings {sum(v for k, v in om.items() if k.split('{')[0] == 'podbatch_bindings_total'):.0f}; mean task creation->pod latency "
                             f"{om.get('podbatch_task_scheduling_latency_seconds_sum', 0) / max(om.get('podbatch_task_scheduling_latency_seconds_count', 0), 1):.1f} s; API errors "
                             f"{sum(v for k, v in om.items() if k.startswith('podbatch_api_errors_total'))}")
        if jc.get("api_writes"):
            lines.append("Job controller phase writes: " + ", ".join(f"{k} {v}" for k, v in list(jc["api_writes"].items())[:6]))
        mem = r.get("memory")
        if mem:
            lines.append(f"memory: operator RSS {mem['rss_before_mib']} MiB -> {mem['rss_settled_mib']} MiB with {mem['tasks']} tasks "
                         f"queued (peak {mem['rss_peak_mib']}): {mem['mib_per_1000_tasks']} MiB per 1,000 tasks "
                         f"(settled after {mem['seen_and_settled_seconds']} s, operator CPU {mem['operator_cpu_s']} s)")
        if mem and not mem["settled"]:
            lines.append("memory: the operator was still busy (CPU) with the queued tasks when RSS was read")
        for p in r["problems"]:
            lines.append(f"PROBLEM: {p}")
        lines.append(f"operator log: {r.get('operator_log')}")
        return "\n".join(lines)

    def run(self) -> dict:
        try:
            self.setup()
            self.phase_podbatch()
            self.assert_operator()
            self.phase_jobcontroller()
            self.phase_raw()
            if self.memory_tasks:
                self.phase_memory()
        except BaseException as e:
            self.result["problems"].append(f"aborted: {e!r}"[:500])
            raise
        finally:
            try:
                self.log(self.report())
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
            "other_wait": float(os.environ.get("BENCH_OTHER_OPERATOR_WAIT") or 300)}


@pytest.mark.bench
@pytest.mark.timeout(3600)
def test_throughput(kubeconfig, crds, nodesim):
    r = Bench(kubeconfig, **params(), log=lambda s: print(s, flush=True)).run()
    assert r["podbatch"]["counts"].get("succeeded") == r["tasks"], r["podbatch"]["counts"]
    assert not [p for p in r["problems"] if p.startswith("operator bug")], r["problems"]


def main() -> int:
    d = params()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG") or str(LOCAL_KUBECONFIG))
    p.add_argument("--tasks", type=int, default=d["tasks"])
    p.add_argument("--nodes", type=int, default=d["nodes"])
    p.add_argument("--slots", type=int, default=d["slots"])
    p.add_argument("--memory-tasks", type=int, default=d["memory_tasks"], help="0 skips the memory phase")
    p.add_argument("--threads", type=int, default=d["threads"])
    p.add_argument("--other-operator-wait", type=float, default=d["other_wait"])
    a = p.parse_args()
    os.environ["KUBECONFIG"] = a.kubeconfig   # the operator child process reads it too
    Bench(a.kubeconfig, a.tasks, a.nodes, a.slots, a.memory_tasks, a.threads, a.other_operator_wait,
          log=lambda s: print(s, flush=True)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
