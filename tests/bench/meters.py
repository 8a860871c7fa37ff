"""What the benches measure with, shared by bench_throughput.py and steady.py: CPU and RSS
of local processes from /proc, the API server's and the operator's request counters, the
client helpers that keep connections pooled, and raw watches that stamp when an object
reached a phase as this client saw it."""
from __future__ import annotations

import fnmatch
import json
import os
import re
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

CLK_TCK = os.sysconf("SC_CLK_TCK")


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


class Watch(threading.Thread):
    """One raw watch of the objects of a namespace matching a label selector, on its own
    thread; `seen(obj, now)` gets every ADDED/MODIFIED object with the monotonic time its
    event arrived. An expired resourceVersion (410) lists again rather than spinning."""

    def __init__(self, list_fn, ns: str, selector: str) -> None:
        super().__init__(daemon=True)
        self.list_fn, self.ns, self.selector = list_fn, ns, selector
        self.stopping = False
        self.rv = self._list()

    def _list(self) -> str:
        lst = raw(self.list_fn, self.ns, label_selector=self.selector)
        now = time.monotonic()
        for obj in lst.get("items") or []:
            self.seen(obj, now)
        return lst["metadata"]["resourceVersion"]

    def run(self) -> None:
        while not self.stopping:
            try:
                resp = self.list_fn(self.ns, label_selector=self.selector, watch=True, resource_version=self.rv,
                                    timeout_seconds=60, allow_watch_bookmarks=True, _preload_content=False)
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
        if ev.get("type") == "ERROR":
            if obj.get("code") == 410:
                self.rv = self._list()
            return
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if rv:
            self.rv = rv
        if ev.get("type") in ("ADDED", "MODIFIED"):
            self.seen(obj, time.monotonic())
        elif ev.get("type") == "DELETED":
            self.deleted(obj, time.monotonic())

    def stop(self) -> None:
        self.stopping = True

    def seen(self, obj: dict, now: float) -> None:
        raise NotImplementedError

    def deleted(self, obj: dict, now: float) -> None:
        pass


class PodWatch(Watch):
    """When each pod was first seen Running (or past it: an instant pod may skip Running),
    Succeeded (or deleted after it ran), Failed. `key(pod)` names the entries: the pod's name unless given."""

    def __init__(self, core, ns: str, selector: str, key=None) -> None:
        self.key = key or (lambda pod: pod["metadata"]["name"])
        self.running: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.failed: set[str] = set()
        super().__init__(core.list_namespaced_pod, ns, selector)

    def seen(self, obj: dict, now: float) -> None:
        phase = (obj.get("status") or {}).get("phase")
        if phase not in ("Running", "Succeeded", "Failed"):
            return
        k = self.key(obj)
        self.running.setdefault(k, now)
        if phase == "Succeeded":
            self.done.setdefault(k, now)
        elif phase == "Failed":
            self.failed.add(k)

    def deleted(self, obj: dict, now: float) -> None:
        """A pod deleted once it ran (an operator may delete finished pods) has ended too."""
        k = self.key(obj)
        if k in self.running and k not in self.failed:
            self.done.setdefault(k, now)


class JobWatch(Watch):
    """When each batch/v1 Job was first seen with a succeeded pod."""

    def __init__(self, batch, ns: str, selector: str) -> None:
        self.done: dict[str, float] = {}
        self.failed: set[str] = set()
        super().__init__(batch.list_namespaced_job, ns, selector)

    def seen(self, obj: dict, now: float) -> None:
        st = obj.get("status") or {}
        if (st.get("succeeded") or 0) >= 1:
            self.done.setdefault(obj["metadata"]["name"], now)
        elif st.get("failed"):
            self.failed.add(obj["metadata"]["name"])


class StatusWatch(Watch):
    """Custom objects (`list_fn(ns, **kw)` lists them): how many times each one's status
    changed (each change is a status write: a write that changes nothing makes no event, a
    metadata or spec write leaves the status as it was), and when each was first seen with
    status.state `state`."""

    def __init__(self, list_fn, ns: str, selector: str, state: str = "completed") -> None:
        self.state = state
        self.status: dict[str, dict] = {}
        self.writes: dict[str, int] = {}
        self.done: dict[str, float] = {}
        super().__init__(list_fn, ns, selector)

    def seen(self, obj: dict, now: float) -> None:
        name = obj["metadata"]["name"]
        st = obj.get("status") or {}
        if name in self.status and st != self.status[name]:
            self.writes[name] = self.writes.get(name, 0) + 1
        elif name not in self.status and st:
            self.writes[name] = 1   # first seen with a status already written
        self.status[name] = st
        if st.get("state") == self.state:
            self.done.setdefault(name, now)
