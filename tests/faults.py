"""Fault injection on the local cluster of hack/ (tests/e2e/test_faults.py).

Everything here acts on processes that hack/cluster-up.sh started and recorded by pid
in $CLUSTER_DIR/pids, or on the operator the tests started:

* `restart_component` stops a control-plane process the way hack/cluster-down.sh does
  (TERM to its session, KILL after 15 s) and starts it again the way hack/cluster-up.sh
  does (its own session, the same argv, environment and working directory read from
  /proc, output appended to its log, pid file rewritten), so it comes back exactly as it
  was. Used for kube-apiserver; not for node 2's kubelet, which runs in a mount
  namespace of its own: `paused` SIGSTOPs it instead and SIGCONTs it afterwards.
* `paused` stops any process with SIGSTOP and always resumes it, also when the test
  process dies: a detached watchdog sends SIGCONT after a bound.
* `Traces`: tasks on the real nodes record their own lifetime (a line per 0.25 s, from
  /proc/uptime, one clock for both real nodes since they are one machine) into their
  node's shared directory; the test reads them from this machine, so attempts' overlap
  is judged from what the processes themselves did, not from API status.
* `PodTracker`: one watch on a namespace's task pods, in resourceVersion order, from
  which "no task ever had two pods" and "no node ever held more pods than its slots"
  are derived.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("PODBATCH_CACHE", Path.home() / ".cache/podbatch"))
CLUSTER_DIR = Path(os.environ.get("PODBATCH_CLUSTER_DIR", CACHE / "cluster"))
PID_DIR = CLUSTER_DIR / "pids"
LOG_DIR = CLUSTER_DIR / "logs"
LOCAL_KUBECONFIG = CLUSTER_DIR / "kubeconfig"
NODE_ROOT = "/var/lib/podbatch"
NODE2 = "127.0.0.2"
# Where each real node's /var/lib/podbatch is on this machine (hack/cluster-up.sh: node 2
# bind-mounts $CLUSTER_DIR/node2/podbatch there in its own mount namespace).
NODE_ROOT_ON_HOST = {"localhost": Path(NODE_ROOT), NODE2: CLUSTER_DIR / "node2" / "podbatch"}


# ------------------------------------------------------------------ the local cluster
def is_local_cluster(kubeconfig: str) -> bool:
    """The cluster under test is hack/'s, running on this machine (its processes are ours to hurt)."""
    return Path(kubeconfig).resolve() == LOCAL_KUBECONFIG.resolve() and (PID_DIR / "kube-apiserver.pid").exists()


def component_pid(name: str) -> int:
    pid = int((PID_DIR / f"{name}.pid").read_text().strip())
    os.kill(pid, 0)
    return pid


def uptime() -> float:
    """The clock the tasks on the real nodes write (/proc/uptime, seconds since boot)."""
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def api_ready(kubeconfig: str) -> bool:
    r = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "get", "--raw", "/readyz"],
                       capture_output=True, text=True, timeout=10)
    return r.returncode == 0


@dataclass
class Restart:
    name: str
    old_pid: int
    new_pid: int
    stopped_after: float   # seconds from the TERM until the old process was gone
    down_for: float        # seconds from the TERM until ready again


def restart_component(name: str, ready=None, ready_timeout: float = 120) -> Restart:
    """Stop hack/'s component NAME as cluster-down.sh does and start it again with the same
    argv, environment and cwd as cluster-up.sh started it; wait for ready() if given."""
    pid = component_pid(name)
    proc = Path(f"/proc/{pid}")
    argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    env = dict(e.decode().split("=", 1) for e in (proc / "environ").read_bytes().split(b"\0") if b"=" in e)
    cwd = os.readlink(proc / "cwd")
    t0 = time.monotonic()
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        os.kill(pid, signal.SIGTERM)
    deadline = t0 + 15
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    stopped = time.monotonic() - t0
    with open(LOG_DIR / f"{name}.log", "ab") as log:
        log.write(f"\n---- restarted by tests/faults.py at {time.strftime('%H:%M:%S')} ----\n".encode())
        log.flush()
        new = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    (PID_DIR / f"{name}.pid").write_text(f"{new.pid}\n")
    # the process outlives this test session (hack/cluster-down.sh stops it by pid):
    # keep Popen from reporting it as a leak
    new.returncode = 0
    if ready:
        deadline = time.monotonic() + ready_timeout
        while not ready():
            if new.poll() is not None and not _alive(new.pid):
                raise AssertionError(f"{name} exited after its restart; see {LOG_DIR / (name + '.log')}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not ready {ready_timeout}s after its restart; see {LOG_DIR / (name + '.log')}")
            time.sleep(0.2)
    return Restart(name, pid, new.pid, stopped, time.monotonic() - t0)


def restart_apiserver(kubeconfig: str) -> Restart:
    return restart_component("kube-apiserver", ready=lambda: api_ready(kubeconfig))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:   # a zombie child of ours is gone for every purpose here
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@contextmanager
def paused(pid: int, at_most: float):
    """SIGSTOP pid for the block; SIGCONT when it ends, and at the latest after `at_most`
    seconds even if this process dies (a detached watchdog)."""
    watchdog = subprocess.Popen(["sh", "-c", f"sleep {int(at_most) + 1}; kill -CONT {pid}"],
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5
        while process_state(pid) not in ("T", "t") and time.monotonic() < deadline:
            time.sleep(0.02)
        yield
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        finally:
            watchdog.kill()
            watchdog.wait()


# ------------------------------------------------------------------ tasks that record their lifetime
def traced_command(long_seconds: int, short_seconds: int = 3) -> str:
    """A commandLine for a real node: appends `start U`, `tick U` every 0.25 s and `end U`
    (U from /proc/uptime) to $AZ_BATCH_NODE_SHARED_DIR/trace-<pod name>. It runs
    long_seconds, or short_seconds when the file `short` exists in the shared dir at its
    start (so the test can make later attempts quick)."""
    script = ('d=$AZ_BATCH_NODE_SHARED_DIR; f=$d/trace-$(hostname); n=%d; [ -e $d/short ] && n=%d; '
              'read u x </proc/uptime; echo "start $u" >>$f; s=${u%%.*}; '
              'while [ ${u%%.*} -lt $((s + n)) ]; do sleep 0.25; read u x </proc/uptime; echo "tick $u" >>$f; done; '
              'echo "end $u" >>$f') % (long_seconds, short_seconds)
    return f"/bin/sh -c '{script}'"


@dataclass
class Trace:
    pod: str
    node: str
    start: float
    last: float          # the last moment the process was seen alive
    ended: float | None  # when it ran to its end (None: killed, or still running)

    def __repr__(self) -> str:
        end = f"ended {self.ended:.2f}" if self.ended is not None else "no end"
        return f"<{self.pod} on {self.node}: {self.start:.2f}..{self.last:.2f} {end}>"


class Traces:
    """The trace files of one namespace's pool, on every real node of this machine."""

    def __init__(self, namespace: str, pool: str) -> None:
        self.dirs = {node: root / namespace / pool / "shared" for node, root in NODE_ROOT_ON_HOST.items()}

    def make_later_attempts_short(self) -> None:
        for d in self.dirs.values():
            d.mkdir(parents=True, exist_ok=True)
            (d / "short").write_text("")

    def read(self) -> list[Trace]:
        out = []
        for node, d in self.dirs.items():
            for f in sorted(d.glob("trace-*")) if d.is_dir() else ():
                start = last = None
                ended = None
                for line in f.read_text().splitlines():
                    parts = line.split()
                    if len(parts) != 2:
                        continue   # a line being written
                    kind, u = parts[0], float(parts[1])
                    if kind == "start":
                        start = u
                    if kind == "end":
                        ended = u
                    last = u if last is None else max(last, u)
                if start is not None:
                    out.append(Trace(f.name[len("trace-"):], node, start, last, ended))
        return sorted(out, key=lambda t: t.start)

    def of(self, pod: str) -> Trace | None:
        return next((t for t in self.read() if t.pod == pod), None)

    def settle(self, quiet: float = 2.0, timeout: float = 90) -> list[Trace]:
        """The traces once no process has written for `quiet` seconds (all ended or killed)."""
        deadline = time.monotonic() + timeout
        while True:
            traces = self.read()
            now = uptime()
            if all(t.ended is not None or now - t.last > quiet for t in traces) or time.monotonic() > deadline:
                return traces
            time.sleep(0.5)


def overlaps(traces: list[Trace]) -> list[tuple[Trace, Trace]]:
    """Pairs of attempts whose processes were alive at the same moment (as they recorded it)."""
    return [(a, b) for i, a in enumerate(traces) for b in traces[i + 1:] if b.start < a.last]


def remove_node_dirs(namespace: str) -> None:
    import shutil
    for root in NODE_ROOT_ON_HOST.values():
        shutil.rmtree(root / namespace, ignore_errors=True)


# ------------------------------------------------------------------ watching pods
@dataclass
class PodEvent:
    at: float
    type: str
    name: str
    uid: str
    task: str
    job: str
    attempt: str
    node: str
    phase: str
    deleting: bool


@dataclass
class PodTracker:
    """Every event of a namespace's task pods (label podbatch.io/role=task), in order."""
    core_v1: object
    namespace: str
    selector: str = "podbatch.io/role=task"
    events: list[PodEvent] = field(default_factory=list)
    relists: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._rv = self.core_v1.list_namespaced_pod(self.namespace, label_selector=self.selector).metadata.resource_version
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _record(self, typ: str, p) -> None:
        labels = p.metadata.labels or {}
        self.events.append(PodEvent(time.monotonic(), typ, p.metadata.name, p.metadata.uid,
                                    labels.get("podbatch.io/task", ""), labels.get("podbatch.io/job", ""),
                                    labels.get("podbatch.io/attempt", ""), p.spec.node_name or "",
                                    (p.status.phase if p.status else "") or "", p.metadata.deletion_timestamp is not None))

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client.rest import ApiException
        while not self._stop.is_set():
            try:
                w = watch.Watch()
                for ev in w.stream(self.core_v1.list_namespaced_pod, self.namespace, label_selector=self.selector,
                                   resource_version=self._rv, timeout_seconds=30, allow_watch_bookmarks=False):
                    if ev["type"] == "ERROR":
                        raise ApiException(status=(ev.get("raw_object") or {}).get("code", 500))
                    self._record(ev["type"], ev["object"])
                    self._rv = ev["object"].metadata.resource_version
                    if self._stop.is_set():
                        break
            except ApiException as e:
                if e.status == 410:   # a gap: what was missed is only partly known; note it
                    self.relists += 1
                    lst = self.core_v1.list_namespaced_pod(self.namespace, label_selector=self.selector)
                    for p in lst.items:
                        self._record("RELISTED", p)
                    self._rv = lst.metadata.resource_version
                else:
                    time.sleep(0.5)
            except Exception:
                time.sleep(0.5)

    def stop(self) -> "PodTracker":
        time.sleep(1.0)   # the last events
        self._stop.set()
        self._thread.join(35)
        return self

    def pods_by_task(self) -> dict[str, dict[str, str]]:
        """task -> {pod uid: pod name} of every pod it ever had."""
        out: dict[str, dict[str, str]] = {}
        for e in self.events:
            out.setdefault(e.task, {})[e.uid] = e.name
        return out

    def last_node_of(self) -> dict[str, str]:
        """pod name -> the node it was bound to (as last seen)."""
        return {e.name: e.node for e in self.events}

    def max_per_node(self) -> dict[str, tuple[int, list[str]]]:
        """node -> (most pods it held at once, those pods): a pod holds its node from its
        creation until it is Succeeded/Failed or gone (a deleting pod still runs)."""
        live: dict[str, tuple[str, str]] = {}   # uid -> (node, name)
        worst: dict[str, tuple[int, list[str]]] = {}
        for e in self.events:
            if e.type == "DELETED" or e.phase in ("Succeeded", "Failed"):
                live.pop(e.uid, None)
            elif e.node:
                live[e.uid] = (e.node, e.name)
            else:
                continue
            if e.node:
                held = sorted(n for node, n in live.values() if node == e.node)
                if len(held) > worst.get(e.node, (0, []))[0]:
                    worst[e.node] = (len(held), held)
        return worst


def watch_until(list_fn, *args, predicate, resource_version: str, timeout: float, **kwargs):
    """The first object from a watch of list_fn(*args, **kwargs) (from resource_version)
    for which predicate(obj) holds: reacts within milliseconds of the write."""
    from kubernetes import watch
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        w = watch.Watch()
        for ev in w.stream(list_fn, *args, resource_version=resource_version,
                           timeout_seconds=max(1, int(deadline - time.monotonic())), **kwargs):
            obj = ev["object"]
            last = obj
            if ev["type"] in ("ADDED", "MODIFIED") and predicate(obj):
                w.stop()
                return obj
            rv = (obj.get("metadata") or {}).get("resourceVersion") if isinstance(obj, dict) else obj.metadata.resource_version
            resource_version = rv or resource_version
    raise AssertionError(f"timed out after {timeout}s watching for the condition; last seen: {last!r}"[:2000])
