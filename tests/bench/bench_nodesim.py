"""Benchmark of the node simulator (hack/nodesim.py) beside the API server's raw pod-creation rate.

In one run, on the cluster named by --kubeconfig / $KUBECONFIG:

1. creates --nodes fake nodes (annotated kwok.x-k8s.io/node=fake) and waits until they are Ready;
2. raw API: creates --pods pods bound to a node nobody runs (no simulator work), with
   --create-concurrency concurrent requests, and measures pods/s; then deletes them;
3. nodesim: creates --pods pods bound round-robin to the fake nodes (instant by default,
   --duration to keep them Running a while) with the same client and measures how fast they
   reach Succeeded (first create to last Succeeded), plus the lag from each pod's creation to its
   Succeeded event (p50/p95/max) to show whether the simulator keeps up with the API server;
4. backlog drain: stops the fake nodes' heartbeats, creates --pods more pods on them (frozen),
   resumes all heartbeats at once and measures how fast the simulator alone takes them to
   Succeeded (its own rate, with no pod creation competing for the API server);
5. deletes everything it created (pods, nodes, namespace; leases go with their nodes).

Script:  .venv/bin/python tests/bench/bench_nodesim.py [--nodes 100 --pods 2000]
         (uses the running simulator if any, else starts one; 500 nodes / 10,000 pods: --nodes 500 --pods 10000)
pytest:  KUBECONFIG=... .venv/bin/pytest -m bench tests/bench/bench_nodesim.py -s
         (size from PODBATCH_BENCH_NODES / PODBATCH_BENCH_PODS)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
import nodesim as sim  # noqa: E402

from kubernetes_asyncio import client as k8s_client  # noqa: E402
from kubernetes_asyncio import config as k8s_config  # noqa: E402

TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
TOLERATION = {"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}


def pod_body(name: str, node: str, run_id: str, duration: float) -> dict:
    ann = {}
    if duration:
        ann[sim.DURATION_ANNOTATION] = str(duration)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench.podbatch.io/run": run_id}, "annotations": ann},
        "spec": {"nodeName": node, "restartPolicy": "Never", "automountServiceAccountToken": False,
                 "tolerations": [TOLERATION], "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent"}]},
    }


async def run_pool(n: int, concurrency: int, fn) -> None:
    """Run fn(i) for i in range(n), at most `concurrency` at once."""
    it = iter(range(n))

    async def worker():
        for i in it:
            await fn(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def retry(coro_fn, attempts: int = 30):
    for a in range(attempts):
        try:
            return await coro_fn()
        except sim.ApiError as e:
            # fresh namespace: the default ServiceAccount may not exist yet; 429/5xx: back off
            if a == attempts - 1 or not (e.status in (403, 429, 500, 503, 504) or "serviceaccount" in str(e).lower()):
                raise
            await asyncio.sleep(0.5)
        except (asyncio.TimeoutError, OSError):
            if a == attempts - 1:
                raise
            await asyncio.sleep(0.5)


async def bench(kubeconfig: str, nodes: int, pods: int, concurrency: int, duration: float,
                timeout: float, backlog: bool = True, log=print) -> dict:
    cfg = k8s_client.Configuration()
    await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = concurrency + 8
    api = k8s_client.ApiClient(cfg)
    kube = sim.Kube(api)
    run_id = uuid.uuid4().hex[:6]
    ns = f"bench-nodesim-{run_id}"
    node_names = [f"bench-{run_id}-{i:04d}" for i in range(nodes)]
    result: dict = {"nodes": nodes, "pods": pods}
    try:
        await kube.request("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"podbatch.io/test": "1", "bench.podbatch.io/run": run_id}}})

        # 1. fake nodes
        t0 = time.time()

        async def mk_node(i):
            await retry(lambda: kube.request("POST", "/api/v1/nodes", body={
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node_names[i],
                             "annotations": {sim.FAKE_ANNOTATION: sim.FAKE_VALUE},
                             "labels": {"bench.podbatch.io/run": run_id, "type": "kwok",
                                        "kubernetes.io/hostname": node_names[i]}},
                "spec": {"taints": [TAINT]},
                "status": {"capacity": {"cpu": "32", "memory": "256Gi", "pods": "500"}}}))

        await run_pool(nodes, min(concurrency, 16), mk_node)
        while True:
            lst = await kube.request("GET", "/api/v1/nodes", [("labelSelector", f"bench.podbatch.io/run={run_id}")])
            ready = sum(1 for n in lst["items"] if sim.Simulator._ready(n))
            if ready == nodes:
                break
            if time.time() - t0 > 120:
                raise TimeoutError(f"only {ready}/{nodes} simulated nodes Ready after 120 s")
            await asyncio.sleep(0.5)
        result["nodes_ready_s"] = round(time.time() - t0, 1)
        log(f"{nodes} simulated nodes Ready in {result['nodes_ready_s']} s")

        pods_path = f"/api/v1/namespaces/{ns}/pods"

        # 2. raw API pod-creation rate: pods bound to a node nobody runs
        nowhere = f"bench-{run_id}-nowhere"
        t0 = time.time()
        await run_pool(pods, concurrency, lambda i: retry(lambda: kube.request(
            "POST", pods_path, body=pod_body(f"raw-{i}", nowhere, run_id, 0))))
        raw_s = time.time() - t0
        result["raw_create_pods_per_s"] = round(pods / raw_s, 1)
        log(f"raw API pod create: {pods} pods in {raw_s:.1f} s = {pods / raw_s:.1f} pods/s")
        await run_pool(pods, concurrency, lambda i: retry(lambda: _delete_ignore(kube, f"{pods_path}/raw-{i}")))
        # wait until they are gone so they do not load the next phase's watches
        while (await kube.request("GET", pods_path, [("limit", 1)]))["items"]:
            await asyncio.sleep(0.5)

        # 3. the simulator, pods created while it runs
        created_at: dict = {}
        done_at: dict = {}
        failed: list = []
        all_done = asyncio.Event()
        watcher = await start_watch(kube, pods_path, "sim-", pods, done_at, failed, all_done)
        await asyncio.sleep(0.5)
        t0 = time.time()

        async def mk_pod(i):
            name = f"sim-{i}"
            await retry(lambda: kube.request("POST", pods_path,
                                             body=pod_body(name, node_names[i % nodes], run_id, duration)))
            created_at[name] = time.time()

        progress = asyncio.create_task(_progress(log, lambda: (len(created_at), len(done_at)), pods, t0))
        await run_pool(pods, concurrency, mk_pod)
        create_s = time.time() - t0
        try:
            await asyncio.wait_for(all_done.wait(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"only {len(done_at)}/{pods} pods finished within {timeout} s") from None
        finally:
            progress.cancel()
            watcher.cancel()
        sim_s = max(done_at.values()) - t0
        lags = sorted(done_at[n] - created_at[n] for n in done_at if n in created_at)
        result.update({
            "sim_pods_per_s": round(pods / sim_s, 1), "sim_seconds": round(sim_s, 1),
            "sim_create_pods_per_s": round(pods / create_s, 1),
            "lag_p50_s": round(statistics.median(lags), 2),
            "lag_p95_s": round(lags[int(len(lags) * 0.95) - 1], 2), "lag_max_s": round(lags[-1], 2),
            "failed": len(failed),
        })
        result["ratio"] = round(result["sim_pods_per_s"] / result["raw_create_pods_per_s"], 2)
        log(f"nodesim: {pods} pods to Succeeded in {sim_s:.1f} s = {result['sim_pods_per_s']} pods/s "
            f"| raw API pod create: {result['raw_create_pods_per_s']} pods/s | ratio {result['ratio']}")
        log(f"  ({nodes} nodes; pod creates during the run {result['sim_create_pods_per_s']} pods/s; "
            f"create->Succeeded lag p50 {result['lag_p50_s']} s, p95 {result['lag_p95_s']} s, "
            f"max {result['lag_max_s']} s; failed {len(failed)})")

        # 4. backlog drain: pods created on nodes whose heartbeat is stopped (frozen), then all
        #    nodes resume at once: the simulator's own rate, without creation in the way
        if backlog:
            await _set_heartbeat(kube, node_names, "stopped", concurrency)
            await asyncio.sleep(2.0)
            await run_pool(pods, concurrency, lambda i: retry(lambda: kube.request(
                "POST", pods_path, body=pod_body(f"backlog-{i}", node_names[i % nodes], run_id, duration))))
            await asyncio.sleep(1.0)
            lst = await kube.request("GET", pods_path, [("labelSelector", f"bench.podbatch.io/run={run_id}"),
                                                        ("fieldSelector", "status.phase=Succeeded")])
            early = sum(1 for p in lst["items"] if p["metadata"]["name"].startswith("backlog-"))
            done2: dict = {}
            all2 = asyncio.Event()
            watcher = await start_watch(kube, pods_path, "backlog-", pods, done2, failed, all2)
            t0 = time.time()
            await _set_heartbeat(kube, node_names, None, concurrency)
            try:
                await asyncio.wait_for(all2.wait(), timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"backlog: only {len(done2)}/{pods} pods finished within {timeout} s") from None
            finally:
                watcher.cancel()
            drain_s = max(done2.values()) - t0
            result.update({"backlog_pods_per_s": round(pods / drain_s, 1), "backlog_seconds": round(drain_s, 1),
                           "backlog_early": early})
            log(f"nodesim backlog drain: {pods} pods frozen on stopped nodes to Succeeded in {drain_s:.1f} s "
                f"after the heartbeats resumed = {result['backlog_pods_per_s']} pods/s"
                + (f" ({early} finished before the stop took hold)" if early else ""))
        return result
    finally:
        await _cleanup(kube, ns, run_id, log)
        await api.close()


async def start_watch(kube, pods_path: str, prefix: str, expected: int, done_at: dict, failed: list,
                      all_done: asyncio.Event) -> asyncio.Task:
    """Watch the namespace's pods and record when each pod named prefix* reaches a final phase."""
    lst = await kube.request("GET", pods_path, [("limit", 1)])
    rv = lst["metadata"]["resourceVersion"]

    async def watch():
        nonlocal rv
        while not all_done.is_set():
            q = [("watch", "true"), ("resourceVersion", rv), ("timeoutSeconds", "300")]
            async for ev in kube.stream(pods_path, q, read_timeout=330):
                obj = ev.get("object") or {}
                rv = obj.get("metadata", {}).get("resourceVersion", rv)
                phase = (obj.get("status") or {}).get("phase")
                name = obj.get("metadata", {}).get("name", "")
                if phase in ("Succeeded", "Failed") and name.startswith(prefix) and name not in done_at:
                    done_at[name] = time.time()
                    if phase == "Failed":
                        failed.append(name)
                    if len(done_at) == expected:
                        all_done.set()
                        return

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    return task


async def _set_heartbeat(kube, names: list, value, concurrency: int) -> None:
    await run_pool(len(names), concurrency, lambda i: retry(lambda: kube.request(
        "PATCH", f"/api/v1/nodes/{names[i]}", body={"metadata": {"annotations": {sim.HEARTBEAT_ANNOTATION: value}}},
        content_type=sim.MERGE)))


async def _progress(log, counts, total, t0):
    while True:
        await asyncio.sleep(5)
        c, d = counts()
        log(f"  t={time.time() - t0:5.1f}s created {c}/{total} finished {d}/{total}")


async def _delete_ignore(kube, path, body=None):
    try:
        await kube.request("DELETE", path, body=body or {"gracePeriodSeconds": 0})
    except sim.ApiError as e:
        if e.status != 404:
            raise


async def _cleanup(kube, ns: str, run_id: str, log) -> None:
    sel = [("labelSelector", f"bench.podbatch.io/run={run_id}")]
    try:
        await kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods", sel + [("gracePeriodSeconds", "0")],
                           body={"gracePeriodSeconds": 0}, timeout=300)
    except sim.ApiError as e:
        if e.status not in (500, 504):   # many pods: the server times out the request but goes on deleting
            log(f"cleanup: pods: {e}")
    except Exception as e:  # noqa: BLE001
        log(f"cleanup: pods: {e}")
    try:
        await kube.request("DELETE", "/api/v1/nodes", sel, timeout=120)
    except Exception as e:  # noqa: BLE001
        log(f"cleanup: nodes: {e}")
    await _delete_ignore(kube, f"/api/v1/namespaces/{ns}", body={})
    t0 = time.time()
    while time.time() - t0 < 300:   # leave nothing behind: wait for the namespace's pods to go
        try:
            await kube.request("GET", f"/api/v1/namespaces/{ns}")
        except sim.ApiError as e:
            if e.status == 404:
                return
        await asyncio.sleep(2)
    log(f"cleanup: namespace {ns} still terminating after 300 s")


def sim_already_running(kubeconfig: str) -> str | None:
    """Who already runs the fake nodes, if anyone: the local cluster's simulator (its pid file),
    or a simulator holding the leader-election lease, or PODBATCH_NODESIM=external."""
    if os.environ.get("PODBATCH_NODESIM") == "external":
        return "PODBATCH_NODESIM=external"
    cache = Path(os.environ.get("PODBATCH_CACHE", Path.home() / ".cache/podbatch")) / "cluster"
    pid_file = cache / "pids" / "nodesim.pid"
    if Path(kubeconfig).resolve() == (cache / "kubeconfig").resolve() and pid_file.exists():
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 0)
            return f"the local cluster's simulator (pid {pid})"
        except (OSError, ValueError):
            pass
    try:
        from kubernetes import client, config
        api = config.new_client_from_config(config_file=kubeconfig)
        lease = client.CoordinationV1Api(api).read_namespaced_lease(
            sim.LeaderElection.NAME, sim.LeaderElection.NAMESPACE)
        spec = lease.spec
        if spec.holder_identity and spec.renew_time and \
                spec.renew_time.timestamp() + (spec.lease_duration_seconds or 15) > time.time():
            return f"simulator {spec.holder_identity} (leader-election lease)"
    except Exception:  # noqa: BLE001 - no lease: nobody
        pass
    return None


def start_sim(kubeconfig: str, logfile: Path | None = None) -> subprocess.Popen:
    out = open(logfile, "ab") if logfile else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, str(ROOT / "hack" / "nodesim.py"), "--kubeconfig", kubeconfig],
                            stdout=out, stderr=subprocess.STDOUT)
    time.sleep(1.0)
    if proc.poll() is not None:
        raise RuntimeError("node simulator died at start")
    return proc


@pytest.mark.bench
def test_bench_nodesim(kubeconfig, nodesim):
    nodes = int(os.environ.get("PODBATCH_BENCH_NODES", "100"))
    pods = int(os.environ.get("PODBATCH_BENCH_PODS", "2000"))
    r = asyncio.run(bench(kubeconfig, nodes, pods, concurrency=32, duration=0.0, timeout=600))
    print(json.dumps(r))
    assert r["failed"] == 0
    assert r["sim_pods_per_s"] > 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--pods", type=int, default=2000)
    ap.add_argument("--create-concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=0.0, help="seconds each pod runs (default 0: instant)")
    ap.add_argument("--timeout", type=float, default=1200.0)
    ap.add_argument("--no-backlog", action="store_true", help="skip the backlog-drain phase")
    ap.add_argument("--sim", choices=["auto", "own", "external"], default="auto",
                    help="auto (default): use the running simulator if there is one, else start one; "
                         "own: always start one; external: one is already running")
    ap.add_argument("--external-sim", action="store_const", dest="sim", const="external", help="same as --sim external")
    ap.add_argument("--sim-log", default=None, help="log file of the simulator this script starts")
    ap.add_argument("--json", action="store_true", help="print the result as JSON too")
    args = ap.parse_args(argv)
    if not args.kubeconfig:
        ap.error("--kubeconfig or KUBECONFIG is required")
    running = sim_already_running(args.kubeconfig) if args.sim == "auto" else None
    if args.sim == "external" or running:
        print(f"using the running node simulator: {running or 'external'}")
        proc = None
    else:
        print("starting a node simulator for this run")
        proc = start_sim(args.kubeconfig, Path(args.sim_log) if args.sim_log else None)
    try:
        r = asyncio.run(bench(args.kubeconfig, args.nodes, args.pods, args.create_concurrency,
                              args.duration, args.timeout, backlog=not args.no_backlog))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    if args.json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
