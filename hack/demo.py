#!/usr/bin/env python3
"""`make demo`: run the quickstart jobs of examples/ on a cluster and show them.

Which cluster:
  * KUBECONFIG set                       -> that cluster (nothing is started or stopped);
  * root with apt-get                    -> the local cluster of hack/ (reused when up and
                                            left up; else brought up and taken down at the end);
  * not root, Docker and kind working    -> a kind cluster (hack/kind-up.sh; deleted at the end).

Then: install the CRDs, start the operator (its log in ~/.cache/podbatch/demo/), and run two
phases, each: apply the examples, show progress until the job ends (or a timeout says what
is stuck), print the results and where the outputs are.
  1. examples/quickstart/: job `quickstart`, 20 tasks on 3 simulated (kwok) nodes, so no
     process runs and there is no output;
  2. examples/quickstart-real-node/ (only when the cluster has a Node named `localhost`, the
     local cluster's real kubelet on this machine): job `quickstart-real`, 4 tasks on that
     node, whose stdout.txt files are then printed from the task dirs on disk.
Everything it started or applied is stopped and deleted at the end, also on Ctrl-C or
errors; the pool of phase 2 is waited for until it has released node localhost.
Exits non-zero when a job that ran did not complete.

Options: --namespace NS (default: default), --timeout SECONDS (600), --stall SECONDS (180),
--operator external (use an operator already running), --keep (leave the quickstart objects;
the pool of phase 2 then keeps node localhost until it is deleted).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HACK = Path(__file__).resolve().parent
REPO = HACK.parent
sys.path.insert(0, str(REPO / "operator"))

from podbatch.cli import format as fmt  # noqa: E402
from podbatch.cli import manifests  # noqa: E402
from podbatch.cli.kube import Cluster, CliError, apply_object, delete_object, install_crds, new_client  # noqa: E402
from podbatch.cli.main import LiveLine, progress_line, snapshot  # noqa: E402

CACHE = Path(os.environ.get("PODBATCH_CACHE", Path.home() / ".cache/podbatch"))
LOCAL_KUBECONFIG = CACHE / "cluster/kubeconfig"
KIND_KUBECONFIG = CACHE / "kind/kubeconfig"
DEMO_DIR = CACHE / "demo"
QUICKSTART = REPO / "examples/quickstart"
QUICKSTART_REAL = REPO / "examples/quickstart-real-node"
VENV_BIN = REPO / ".venv/bin"
REAL_NODE = "localhost"
POOL_LABEL = "podbatch.io/pool"   # on a Node a pool holds: "<namespace>.<pool>" (also the taint's key)


@dataclass
class Phase:
    """One example directory of the demo and its job (the pool has the same name)."""
    job: str
    directory: Path
    real_node: bool = False          # its pool adopts node REAL_NODE (phase 2)
    applied: list = field(default_factory=list)

    @property
    def pool(self) -> str:
        return self.job

    @property
    def where(self) -> str:
        return f"{self.directory.relative_to(REPO)}/"


def quickstart_phase() -> Phase:
    return Phase("quickstart", QUICKSTART)


def real_node_phase() -> Phase:
    return Phase("quickstart-real", QUICKSTART_REAL, real_node=True)


def say(msg: str) -> None:
    print(f"\033[1m==> {msg}\033[0m" if sys.stdout.isatty() else f"==> {msg}", flush=True)


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.ns = args.namespace
        self.cleanups: list[tuple[str, Callable[[], None]]] = []
        self.kubeconfig: str = ""
        self.operator: subprocess.Popen | None = None
        self.operator_log = DEMO_DIR / "operator.log"
        self.nodesim_log = DEMO_DIR / "nodesim.log"
        self.ns_checked = False

    # --- the cluster ------------------------------------------------------------------
    def choose_cluster(self) -> None:
        given = os.environ.get("KUBECONFIG")
        if given:
            say(f"cluster: the one of KUBECONFIG={given} (it is left as it is)")
            self.kubeconfig = given
            self.local = Path(given).resolve() == LOCAL_KUBECONFIG.resolve() if LOCAL_KUBECONFIG.exists() else False
            return
        if os.geteuid() == 0 and shutil.which("apt-get"):
            self.local = True
            self.kubeconfig = str(LOCAL_KUBECONFIG)
            if LOCAL_KUBECONFIG.exists() and _ready(self.kubeconfig):
                say(f"cluster: the local cluster, already running (KUBECONFIG={self.kubeconfig}); it stays up")
                return
            say("cluster: the local cluster of hack/ (root and apt-get are here); bringing it up with hack/cluster-up.sh")
            self.cleanups.append(("stopping the local cluster (hack/cluster-down.sh)",
                                  lambda: subprocess.run([str(HACK / "cluster-down.sh")], check=False)))
            r = subprocess.run([str(HACK / "cluster-up.sh")], stdout=subprocess.DEVNULL)
            if r.returncode != 0:
                raise CliError("hack/cluster-up.sh failed (its error is above)")
            return
        self.local = False
        if shutil.which("kind") and shutil.which("docker") and subprocess.run(
                ["docker", "info"], capture_output=True).returncode == 0:
            say("cluster: kind (not root or no apt-get, but Docker and kind work); creating it with hack/kind-up.sh")
            self.cleanups.append(("deleting the kind cluster (hack/kind-down.sh)",
                                  lambda: subprocess.run([str(HACK / "kind-down.sh")], check=False)))
            r = subprocess.run([str(HACK / "kind-up.sh")], stdout=subprocess.DEVNULL)
            if r.returncode != 0:
                raise CliError("hack/kind-up.sh failed (its error is above)")
            self.kubeconfig = str(KIND_KUBECONFIG)
            return
        why = "not root" if os.geteuid() != 0 else "no apt-get"
        raise CliError(f"no cluster to use: KUBECONFIG is not set, the local cluster cannot run here ({why}), "
                       "and Docker with kind is not available. Set KUBECONFIG to a cluster, or install Docker and kind.")

    # --- processes --------------------------------------------------------------------
    def start_nodesim(self) -> None:
        if self.local:
            return  # hack/cluster-up.sh runs the node simulator with the cluster
        if os.environ.get("PODBATCH_NODESIM") == "external":
            say("node simulator: external (PODBATCH_NODESIM=external)")
            return
        say(f"starting the node simulator for kwok nodes (log: {self.nodesim_log})")
        log = open(self.nodesim_log, "ab")
        proc = subprocess.Popen([sys.executable, str(HACK / "nodesim.py"), "--kubeconfig", self.kubeconfig],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.cleanups.append(("stopping the node simulator", lambda: _stop(proc)))

    def start_operator(self) -> bool:
        if self.args.operator == "external":
            say("operator: external (--operator external); not starting one")
            return True
        exe = VENV_BIN / "podbatch-operator"
        probe = subprocess.run([sys.executable, "-c", "import podbatch.controllers.run"], capture_output=True, text=True)
        if not exe.exists() or probe.returncode != 0:
            warn(f"the operator is not there yet ({exe} or podbatch.controllers.run missing); "
                 "the demo shows what exists without it")
            return False
        say(f"starting the operator for namespace {self.ns} (log: {self.operator_log})")
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "PODBATCH_NAMESPACES": self.ns}
        log = open(self.operator_log, "ab")
        log.write(f"\n--- demo {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
        log.flush()
        self.operator = subprocess.Popen([str(exe)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.cleanups.append(("stopping the operator", self.stop_operator))
        time.sleep(1.0)
        if self.operator.poll() is not None:
            warn(f"the operator exited at once (code {self.operator.returncode}); last lines of {self.operator_log}:")
            print(_tail(self.operator_log, 15), file=sys.stderr)
            return False
        return True

    def stop_operator(self) -> None:
        if self.operator is not None:
            _stop(self.operator)
            self.operator = None

    # --- the quickstart ---------------------------------------------------------------
    def ensure_namespace(self, cluster: Cluster) -> None:
        if self.ns_checked:
            return
        from kubernetes.client.rest import ApiException
        try:
            cluster.core.read_namespace(self.ns)
        except ApiException as e:
            if e.status != 404:
                raise
            say(f"creating namespace {self.ns}")
            core = cluster.core
            core.create_namespace({"metadata": {"name": self.ns}})
            if not self.args.keep:
                self.cleanups.append((f"deleting namespace {self.ns}", lambda: core.delete_namespace(self.ns)))
        self.ns_checked = True

    def apply(self, cluster: Cluster, phase: Phase) -> None:
        docs = manifests.load([phase.directory])
        problems = manifests.validate(docs)
        if problems:
            raise CliError(f"{phase.where} is invalid:\n" + fmt.validation_report(problems))
        self.ensure_namespace(cluster)
        # Registered before the first apply, so a failure half-way still deletes what was applied.
        self.cleanups.append((f"deleting the objects of {phase.where}", lambda: self.delete(cluster, phase)))
        order = {"Pool": 0, "Job": 1, "Task": 2}
        counts: dict[str, int] = {}
        for m in sorted(docs, key=lambda m: order.get(m.kind, -1)):
            apply_object(cluster.api, m.body, self.ns)
            phase.applied.append(m)
            counts[m.kind] = counts.get(m.kind, 0) + 1
        say(f"applied {phase.where} to namespace {self.ns} (server-side): "
            + ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in counts.items()))

    def delete(self, cluster: Cluster, phase: Phase) -> None:
        if self.args.keep:
            say(f"--keep: the objects of {phase.where} stay in namespace {self.ns}"
                + (f"; pool {phase.pool} holds node {REAL_NODE} until it is deleted" if phase.real_node else ""))
            return
        for m in reversed(phase.applied):
            try:
                delete_object(cluster.api, m.body, self.ns)
            except CliError as e:
                warn(str(e))
        # The operator's finalizers clean up nodes and pods; wait for them, then (operator
        # gone or stuck) drop podbatch's finalizers so nothing is left behind.
        deadline = time.monotonic() + (45 if self._operator_alive() else 5)
        while time.monotonic() < deadline and self._left(cluster, phase):
            time.sleep(1)
        left = self._left(cluster, phase)
        if left:
            warn(f"{len(left)} object(s) still terminating; removing podbatch finalizers: "
                 + ", ".join(f"{k}/{n}" for k, n in left[:5]))
            for kind, name in left:
                try:
                    cluster.custom.patch_namespaced_custom_object(
                        "podbatch.io", "v1alpha1", self.ns, _plural(kind), name, {"metadata": {"finalizers": None}},
                        _content_type="application/merge-patch+json")
                except Exception as e:  # noqa: BLE001
                    warn(f"{kind}/{name}: {e}")
        if phase.real_node:
            self.wait_node_released(cluster, phase)

    def _left(self, cluster: Cluster, phase: Phase) -> list[tuple[str, str]]:
        left = []
        for m in phase.applied:
            if m.is_podbatch and cluster.find(m.kind, m.name) is not None:
                left.append((m.kind, m.name))
        return left

    def _operator_alive(self) -> bool:
        if self.args.operator == "external":
            return True
        return self.operator is not None and self.operator.poll() is None

    # --- the real node ----------------------------------------------------------------
    def node_holder(self, cluster: Cluster) -> str | None:
        """The podbatch.io/pool label of node REAL_NODE ("" when free); None when there is no such Node."""
        from kubernetes.client.rest import ApiException
        try:
            node = cluster.core.read_node(REAL_NODE)
        except ApiException as e:
            if e.status == 404:
                return None
            raise CliError(f"reading node {REAL_NODE}: {e.reason}") from None
        return (node.metadata.labels or {}).get(POOL_LABEL) or ""

    def wait_node_free(self, cluster: Cluster, phase: Phase) -> None:
        """Node REAL_NODE may be held by another pool for a while (tests, another demo): wait up to
        --stall seconds for it to be given back before phase 2 gives up on it."""
        holder = self.node_holder(cluster)
        if not holder or holder == f"{self.ns}.{phase.pool}" or not self._operator_alive():
            return
        say(f"node {REAL_NODE} is held by another pool ({POOL_LABEL}={holder}); "
            f"waiting up to {self.args.stall:.0f}s for it to be released")
        live = LiveLine(sys.stdout)
        start = time.monotonic()
        while holder and holder != f"{self.ns}.{phase.pool}" and time.monotonic() - start < self.args.stall:
            live.show(f"node {REAL_NODE}: held by {holder} ({time.monotonic() - start:.0f}s)")
            time.sleep(2)
            holder = self.node_holder(cluster)
        live.done()

    def wait_node_released(self, cluster: Cluster, phase: Phase) -> None:
        """The pool's finalizer gives node REAL_NODE back (drops its label and taint); wait for it,
        and if it does not happen (operator gone or stuck) drop them here, so the node is free."""
        ours = f"{self.ns}.{phase.pool}"
        deadline = time.monotonic() + (60 if self._operator_alive() else 0)
        while True:
            holder = self.node_holder(cluster)
            if holder != ours:
                say(f"node {REAL_NODE} released by pool {phase.pool} (no {POOL_LABEL} label of ours left)")
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(1)
        warn(f"node {REAL_NODE} still carries {POOL_LABEL}={ours}; removing that label and taint")
        node = cluster.core.read_node(REAL_NODE)
        taints = [cluster.api.sanitize_for_serialization(t) for t in (node.spec.taints or [])
                  if not (t.key == POOL_LABEL and t.value == ours)]
        cluster.core.patch_node(REAL_NODE, {"metadata": {"labels": {POOL_LABEL: None}}, "spec": {"taints": taints or None}})

    # --- progress ---------------------------------------------------------------------
    def follow(self, cluster: Cluster, phase: Phase, operator_running: bool) -> dict[str, Any] | None:
        live = LiveLine(sys.stdout)
        start = last_change = time.monotonic()
        last_sig = None
        snap = None
        limit = self.args.timeout if operator_running else min(self.args.timeout, 20)
        while True:
            try:
                snap = snapshot(cluster, phase.job)
                live.show(progress_line(snap, ascii=not live.tty and not _utf8()))
                sig = _signature(snap)
            except CliError as e:
                live.show(f"job {phase.job}: {e}")
                sig = str(e)
            now = time.monotonic()
            if sig != last_sig:
                last_sig, last_change = sig, now
            if snap and fmt.job_done(snap["job"], snap["counts"]):
                live.done()
                say(f"job {phase.job} ended: state {(snap['job'].get('status') or {}).get('state')}")
                return snap
            if self.operator is not None and self.operator.poll() is not None:
                live.done()
                warn(f"the operator exited (code {self.operator.returncode}); last lines of {self.operator_log}:")
                print(_tail(self.operator_log, 20), file=sys.stderr)
                break
            if now - start > limit:
                live.done()
                if operator_running:
                    warn(f"timed out after {limit:.0f}s: the job has not completed")
                else:
                    warn("without the operator nothing moves; this is what exists:")
                break
            if operator_running and now - last_change > self.args.stall:
                live.done()
                warn(f"no progress for {self.args.stall:.0f}s")
                break
            time.sleep(1)
        self.explain_stuck(cluster, phase, snap)
        return snap

    def explain_stuck(self, cluster: Cluster, phase: Phase, snap: dict[str, Any] | None) -> None:
        """What exists, and where it waits."""
        pool = cluster.find("Pool", phase.pool)
        if pool is None:
            print(f"  pool {phase.pool}: not found")
        else:
            st = pool.get("status") or {}
            print(f"  pool {phase.pool}: allocationState={st.get('allocationState') or '<not set: the operator has not seen it>'} "
                  f"current={st.get('currentDedicatedNodes')} target={(pool.get('spec') or {}).get('targetDedicatedNodes')}")
            for err in st.get("resizeErrors") or []:
                print(f"    resize error {err.get('code')}: {err.get('message')}")
            nodes = cluster.nodes_of(phase.pool)
            if nodes:
                print("  compute nodes: " + ", ".join(f"{n['metadata']['name']}={(n.get('status') or {}).get('state') or '?'}" for n in nodes))
            else:
                print("  compute nodes: none yet")
        if phase.real_node:
            try:
                holder = self.node_holder(cluster)
            except CliError as e:
                holder = f"? ({e})"
            ours = f"{self.ns}.{phase.pool}"
            print(f"  node {REAL_NODE}: " + ("not found" if holder is None else "free (not adopted yet)" if not holder
                                           else "held by this pool" if holder == ours
                                           else f"held by another pool ({POOL_LABEL}={holder})"))
        if snap:
            print("\n".join("  " + line for line in fmt.status_report(snap["job"], snap["tasks"], snap["pool"], snap["nodes"], collections=snap.get("collections", ())).splitlines()))

    # --- results ----------------------------------------------------------------------
    def results(self, cluster: Cluster, phase: Phase, snap: dict[str, Any] | None) -> None:
        if not snap or not snap["tasks"]:
            return
        tasks = snap["tasks"]
        say(f"results of job {phase.job}")
        rows = []
        for t in fmt.sort_tasks(tasks):
            info = (t.get("status") or {}).get("executionInfo") or {}
            rows.append([fmt.task_id(t), fmt.task_state(t), fmt.task_result(t), info.get("exitCode"),
                         ((t.get("status") or {}).get("nodeInfo") or {}).get("nodeName"), info.get("retryCount", 0),
                         info.get("requeueCount", 0)])
        print(fmt.table(["task", "state", "result", "exit", "node", "retries", "requeues"], rows))
        c = snap["counts"]
        print(f"\n{c['completed']}/{c['total']} completed: {c['succeeded']} succeeded, {c['failed']} failed")

        done = [t for t in fmt.sort_tasks(tasks) if fmt.task_state(t) == "completed"]
        real = [t for t in done if _node_info(t).get("nodeName") == REAL_NODE]
        if not done:
            print("\nNo task has completed, so there is no output yet.")
            return
        print("\nWhere the outputs are:")
        if real:
            d = _node_info(real[0]).get("taskRootDirectory")
            print(f"  on the real node {REAL_NODE} (this machine): each task's dir holds stdout.txt and stderr.txt,"
                  f" e.g. {d}/stdout.txt")
        else:
            print("  these tasks ran on simulated (kwok) nodes: their pods exist and carry exit codes, but no process"
                  " ran, so there is no output to read. Tasks on a real node (examples/quickstart-real-node/, the"
                  " demo's second phase) write stdout.txt and stderr.txt into their task dir on the node, and their"
                  " pod logs hold the same:")
        sample = (real or done or tasks)[0]
        pod = (sample.get("status") or {}).get("podName") or f"{sample['metadata']['name']}-1"
        print(f"  through the API:  kubectl -n {self.ns} logs {pod} -c task")
        print(f"                    {VENV_BIN / 'kubectl-podbatch'} -n {self.ns} logs {sample['metadata']['name']}"
              "   (kubectl podbatch logs … once .venv/bin is on PATH)")
        print(f"  all tasks:        kubectl -n {self.ns} get btask   ·   kubectl podbatch -n {self.ns} tasks {phase.job}")
        for t in real:
            self.print_stdout(cluster, t)

    def print_stdout(self, cluster: Cluster, task: dict[str, Any]) -> None:
        """A real-node task's stdout.txt, read from its task dir on disk (the node is this machine);
        its pod log when the file is not here."""
        d = _node_info(task).get("taskRootDirectory")
        path = Path(d, "stdout.txt") if d else None
        if path and path.is_file():
            where, text = str(path), path.read_text(errors="replace")
        else:
            where = f"pod {(task.get('status') or {}).get('podName')} log ({path or 'no task dir'} is not on this machine)"
            try:
                from podbatch.cli.kube import read_pod_log
                p = cluster.current_pod(task)
                text = read_pod_log(cluster, p) if p else ""
            except CliError as e:
                text = f"(could not read it: {e})"
        print(f"\n{fmt.task_id(task)}: {where}")
        print("  " + "\n  ".join((text or "(empty)").rstrip().splitlines()))

    # --- the whole run ----------------------------------------------------------------
    def run_phase(self, cluster: Cluster, phase: Phase, operator_running: bool) -> bool:
        """Apply, follow and show one phase; True when its job completed. Its objects are
        deleted by the cleanups (registered by apply) at the end."""
        self.apply(cluster, phase)
        snap = self.follow(cluster, phase, operator_running)
        self.results(cluster, phase, snap)
        return bool(snap) and fmt.job_done(snap["job"], snap["counts"])

    def real_node_skip_reason(self, cluster: Cluster, phase: Phase) -> str | None:
        """Why phase 2 cannot run here, or None."""
        holder = self.node_holder(cluster)
        if holder is None:
            return (f"the cluster has no Node named {REAL_NODE} (only the local cluster of hack/ has one, its real"
                    f" kubelet on this machine); see the top of {phase.where}pool.yaml to use another node")
        if holder and holder != f"{self.ns}.{phase.pool}":
            return (f"node {REAL_NODE} is still held by another pool ({POOL_LABEL}={holder}), and a static pool"
                    " adopts only a free node; run the demo again when that pool is gone")
        if not self._operator_alive():
            return "the operator is not running, so nothing would run on it"
        return None

    def run(self) -> int:
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        outcome: dict[str, bool | None] = {}   # job -> completed; None: skipped
        try:
            self.choose_cluster()
            api, _ = new_client(self.kubeconfig)
            cluster = Cluster(api, self.ns)
            say("installing the CRDs (crds/)")
            install_crds(api)
            self.start_nodesim()
            operator_running = self.start_operator()
            first = quickstart_phase()
            outcome[first.job] = False
            outcome[first.job] = self.run_phase(cluster, first, operator_running)
            second = real_node_phase()
            self.wait_node_free(cluster, second)
            why = self.real_node_skip_reason(cluster, second)
            if why:
                outcome[second.job] = None
                say(f"skipping the real-node phase ({second.where}): {why}")
            else:
                say(f"phase 2: job {second.job} on the real node {REAL_NODE}, where its tasks really run")
                outcome[second.job] = False
                outcome[second.job] = self.run_phase(cluster, second, operator_running)
        except KeyboardInterrupt:
            print()
            warn("interrupted")
        except CliError as e:
            print(f"error: {e}", file=sys.stderr)
        finally:
            self.cleanup()
        ok = bool(outcome) and all(v is not False for v in outcome.values())
        summary = "; ".join(f"job {job} " + ("skipped" if v is None else "completed" if v else "did not complete")
                            for job, v in outcome.items()) or "nothing ran"
        say(f"demo done: {summary}")
        return 0 if ok else 1

    def cleanup(self) -> None:
        # Finish cleaning up, whatever happens (a second Ctrl-C must not leave a cluster running).
        old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            for what, fn in reversed(self.cleanups):
                say(what)
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - keep cleaning
                    warn(f"{what}: {e}")
            self.cleanups.clear()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)


def _node_info(task: dict[str, Any]) -> dict[str, Any]:
    return (task.get("status") or {}).get("nodeInfo") or {}


def _plural(kind: str) -> str:
    from podbatch.api import KINDS
    return KINDS[kind].plural


def _signature(snap: dict[str, Any]) -> tuple:
    counts = tuple(sorted(snap["counts"].items()))
    pool = snap["pool"] or {}
    nodes = tuple(sorted(((n.get("status") or {}).get("state") or "") for n in snap["nodes"]))
    return counts, (snap["job"].get("status") or {}).get("state"), str((pool.get("status") or {}).get("nodeCounts")), nodes


def _ready(kubeconfig: str) -> bool:
    kubectl = shutil.which("kubectl")
    if kubectl:
        return subprocess.run([kubectl, "--kubeconfig", kubeconfig, "get", "--raw", "/readyz"],
                              capture_output=True, timeout=20).returncode == 0
    try:
        from kubernetes import client
        api, _ = new_client(kubeconfig)
        client.VersionApi(api).get_code(_request_timeout=5)
        return True
    except Exception:  # noqa: BLE001
        return False


def _stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def _tail(path: Path, n: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _utf8() -> bool:
    return "utf" in (sys.stdout.encoding or "").lower()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="run the podbatch quickstart on a cluster and show it")
    p.add_argument("--namespace", default=os.environ.get("PODBATCH_DEMO_NAMESPACE", "default"))
    p.add_argument("--timeout", type=float, default=600, help="give up after this many seconds (default 600)")
    p.add_argument("--stall", type=float, default=180, help="give up after this many seconds without progress (default 180)")
    p.add_argument("--operator", choices=["start", "external"], default=os.environ.get("PODBATCH_DEMO_OPERATOR", "start"),
                   help="start the operator (default) or use one already running (e.g. the Helm chart's)")
    p.add_argument("--keep", action="store_true", help="leave the quickstart objects in place")
    args = p.parse_args(argv)

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    return Demo(args).run()


if __name__ == "__main__":
    sys.exit(main())
