#!/usr/bin/env python3
"""podbatch node simulator: plays kwok's part for Nodes annotated ``kwok.x-k8s.io/node: fake``.

One asyncio process runs every fake node of the cluster:

* keeps each node's Lease (``kube-node-lease``) renewed and its status (Ready, pressure
  conditions, capacity, allocatable, nodeInfo, addresses) fresh;
* takes every pod bound to a fake node (``spec.nodeName``) through
  Pending -> Running -> Succeeded/Failed via the status subresource, as a kubelet would;
* confirms pod deletion (final delete with grace period 0);
* stops a node's heartbeat on request to play a node failure.

Annotations (see docs/nodesim.md):

  on a Node
    kwok.x-k8s.io/node: fake            the simulator runs this node
    sim.podbatch.io/heartbeat: stopped  stop renewing its Lease and status; freeze its pods
    sim.podbatch.io/ip: 10.1.2.3        its InternalIP (default 10.254.x.y derived from the name)
  on a Pod
    sim.podbatch.io/duration: 2.5       seconds Running before the containers end (default 0)
    sim.podbatch.io/exit-code: 3        exit code of every container (default 0)
    sim.podbatch.io/exit-code.<ctr>: 1  exit code of one container (overrides the above)
    sim.podbatch.io/start-delay: 1      seconds Pending before Running (default 0)

A pod with restartPolicy Always and no duration annotation runs forever. A pod with
duration 0 and no start delay ("instant") goes from Pending to its final phase in a single
status write. ``activeDeadlineSeconds`` is honoured (Failed/DeadlineExceeded, exit 137).

Only one simulator is active per cluster (Lease kube-system/podbatch-nodesim); another one
stands by and takes over when it exits. A restart continues every pod from its status.

With ``--fake-cluster-api`` it also runs the fake Cluster API of hack/fakecapi.py
(MachineDeployments -> Machines -> fake Nodes).

Usage: python hack/nodesim.py [--kubeconfig PATH] [--log-level info] [--concurrency 48] [--fake-cluster-api]
See docs/nodesim.md.
"""
from __future__ import annotations

import argparse
import asyncio
import calendar
import json
import logging
import os
import random
import signal
import socket
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Optional

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config

log = logging.getLogger("nodesim")

FAKE_ANNOTATION = "kwok.x-k8s.io/node"
FAKE_VALUE = "fake"
SIM = "sim.podbatch.io/"
HEARTBEAT_ANNOTATION = SIM + "heartbeat"
IP_ANNOTATION = SIM + "ip"
DURATION_ANNOTATION = SIM + "duration"
EXIT_CODE_ANNOTATION = SIM + "exit-code"
START_DELAY_ANNOTATION = SIM + "start-delay"

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40
LEASE_RENEW = 10.0
STATUS_INTERVAL = 40.0
KUBELET_VERSION = "v1.20.2-nodesim"

DEFAULT_CAPACITY = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "1Ti"}

PENDING, RUNNING, DONE = 0, 1, 2
PHASE_ORDER = {"Pending": PENDING, "": PENDING, None: PENDING, "Running": RUNNING,
               "Unknown": RUNNING, "Succeeded": DONE, "Failed": DONE}

SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


# ----------------------------------------------------------------------------- helpers

def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def micro_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % int((t % 1) * 1e6)


def parse_time(s: Optional[str]) -> Optional[float]:
    if not s:
        return None
    try:
        frac = 0.0
        base = s.rstrip("Z")
        if "." in base:
            base, f = base.split(".", 1)
            frac = float("0." + f)
        return calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S")) + frac
    except (ValueError, TypeError):
        return None


def fake_ip(key: str, first: int = 10, second: Optional[int] = None) -> str:
    h = zlib.crc32(key.encode())
    if second is None:
        second = 128 + (h >> 24) % 120
    return f"{first}.{second}.{(h >> 8) & 0xFF}.{1 + (h & 0xFF) % 254}"


class ApiError(Exception):
    def __init__(self, status: int, body: Any):
        super().__init__(f"HTTP {status}: {str(body)[:300]}")
        self.status = status
        self.body = body


# ----------------------------------------------------------------------------- raw client

class Kube:
    """A thin JSON client on kubernetes_asyncio's ApiClient (auth, TLS) without model (de)serialisation."""

    def __init__(self, api: k8s_client.ApiClient):
        self.api = api
        self.writes = 0
        self.errors = 0

    async def request(self, method: str, path: str, query: Optional[list] = None, body: Any = None,
                      content_type: str = "application/json", timeout: float = 30.0) -> Any:
        resp = await self.api.call_api(
            path, method, query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body, auth_settings=["BearerToken"], _preload_content=False,
            _request_timeout=timeout)
        try:
            data = await resp.read()
        finally:
            resp.release()
        if method != "GET":
            self.writes += 1
        if not 200 <= resp.status < 300:
            try:
                parsed = json.loads(data)
            except ValueError:
                parsed = data[:300]
            raise ApiError(resp.status, parsed)
        return json.loads(data) if data else None

    async def stream(self, path: str, query: list, read_timeout: float):
        """Yield watch events (dicts) until the server closes the stream."""
        resp = await self.api.call_api(
            path, "GET", query_params=query, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"], _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_timeout))
        try:
            if resp.status != 200:
                raise ApiError(resp.status, (await resp.read())[:300])
            buf = b""
            async for chunk in resp.content.iter_any():
                buf += chunk
                while True:
                    nl = buf.find(b"\n")
                    if nl < 0:
                        break
                    line, buf = buf[:nl], buf[nl + 1:]
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release()


class Gone(Exception):
    pass


async def list_and_watch(kube: Kube, path: str, selector: dict, name: str,
                         on_sync: Callable[[list], None], on_event: Callable[[str, dict], None],
                         stopping: asyncio.Event) -> None:
    """Informer: list (paginated), hand the full set to on_sync, then watch from its
    resourceVersion; re-list on 410 Gone or any error."""
    backoff = 0.5
    while not stopping.is_set():
        try:
            items: list = []
            cont = None
            while True:
                q = [(k, v) for k, v in selector.items()] + [("limit", 500)]
                if cont:
                    q.append(("continue", cont))
                page = await kube.request("GET", path, q, timeout=120)
                items.extend(page.get("items") or [])
                cont = (page.get("metadata") or {}).get("continue")
                if not cont:
                    rv = page["metadata"]["resourceVersion"]
                    break
            on_sync(items)
            log.debug("%s: listed %d at rv %s", name, len(items), rv)
            backoff = 0.5
            while not stopping.is_set():
                q = [(k, v) for k, v in selector.items()] + [
                    ("watch", "true"), ("resourceVersion", rv), ("allowWatchBookmarks", "true"),
                    ("timeoutSeconds", str(240 + random.randint(0, 60)))]
                async for ev in kube.stream(path, q, read_timeout=360):
                    typ = ev.get("type")
                    obj = ev.get("object") or {}
                    if typ == "ERROR":
                        if obj.get("code") == 410:
                            raise Gone()
                        raise ApiError(obj.get("code") or 0, obj)
                    new_rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if new_rv:
                        rv = new_rv
                    if typ == "BOOKMARK":
                        continue
                    on_event(typ, obj)
        except asyncio.CancelledError:
            raise
        except Gone:
            log.info("%s: watch expired (410 Gone), re-listing", name)
        except Exception as e:  # noqa: BLE001 - any failure: back off and re-list
            if stopping.is_set():
                return
            kube.errors += 1
            log.warning("%s: %s: %s; re-listing in %.1fs", name, type(e).__name__, e, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)


# ----------------------------------------------------------------------------- state

@dataclass
class NodeState:
    name: str
    uid: str
    obj: dict
    ip: str
    stopped: bool = False
    last_status: float = 0.0
    last_lease: float = 0.0


@dataclass
class PodState:
    uid: str
    obj: dict
    node: str
    stage: int = PENDING          # what we know (local writes or observed), never goes back
    start_time: Optional[float] = None   # status.startTime
    started_at: Optional[float] = None   # containers' running.startedAt
    deleted: bool = False
    pending_written: bool = False


class Simulator:
    def __init__(self, kube: Kube, concurrency: int = 48, lease_renew: float = LEASE_RENEW,
                 status_interval: float = STATUS_INTERVAL):
        self.kube = kube
        self.lease_renew = lease_renew
        self.status_interval = status_interval
        self.concurrency = concurrency
        self.nodes: dict[str, NodeState] = {}
        self.pods: dict[str, PodState] = {}
        self.pods_by_node: dict[str, set] = {}
        self.queue: asyncio.Queue = asyncio.Queue()
        self.dirty: set = set()
        self.processing: set = set()
        self.timers: dict = {}
        self.failures: dict = {}
        self.extra_tasks: list = []
        self.stopping = asyncio.Event()
        self.loop = asyncio.get_event_loop()
        self.c = {"started": 0, "finished": 0, "failed": 0, "deleted": 0, "leases": 0, "statuses": 0}

    # -- work queue ----------------------------------------------------------------------

    def enqueue(self, key: tuple) -> None:
        if key in self.dirty:
            return
        self.dirty.add(key)
        if key not in self.processing:
            self.queue.put_nowait(key)

    def arm(self, key: tuple, when: float) -> None:
        """Enqueue key at wall-clock time `when` (one timer per key, the earliest wins)."""
        old = self.timers.get(key)
        if old is not None:
            if old[0] <= when and not old[1].cancelled():
                return
            old[1].cancel()
        delay = max(0.0, when - time.time())
        h = self.loop.call_later(delay, self._fire, key)
        self.timers[key] = (when, h)

    def _fire(self, key: tuple) -> None:
        self.timers.pop(key, None)
        self.enqueue(key)

    def disarm(self, key: tuple) -> None:
        old = self.timers.pop(key, None)
        if old is not None:
            old[1].cancel()

    async def worker(self) -> None:
        while True:
            key = await self.queue.get()
            self.dirty.discard(key)
            self.processing.add(key)
            try:
                kind = key[0]
                if kind == "pod":
                    await self.reconcile_pod(key[1])
                elif kind == "lease":
                    await self.renew_lease(key[1])
                elif kind == "status":
                    await self.update_node_status(key[1])
            except asyncio.CancelledError:
                raise
                self.failures.pop(key, None)
            except Exception as e:  # noqa: BLE001
                self.kube.errors += 1
                n = self.failures[key] = self.failures.get(key, 0) + 1
                delay = min(30.0, 0.5 * 2 ** n) * random.uniform(0.8, 1.2)
                (log.warning if n <= 3 else log.debug)(
                    "%s %s: %s: %s; retry %d in %.1fs", key[0], key[1], type(e).__name__, e, n, delay)
                self.arm(key, time.time() + delay)
            finally:
                self.processing.discard(key)
                if key in self.dirty:
                    self.queue.put_nowait(key)

    # -- nodes ---------------------------------------------------------------------------

    def on_nodes_sync(self, items: list) -> None:
        seen = set()
        for obj in items:
            seen.add(obj["metadata"]["name"])
            self.on_node_event("ADDED", obj)
        for name in list(self.nodes):
            if name not in seen:
                self._remove_node(name)

    def on_node_event(self, typ: str, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        ann = meta.get("annotations") or {}
        fake = ann.get(FAKE_ANNOTATION) == FAKE_VALUE
        if typ == "DELETED" or not fake:
            if name in self.nodes:
                self._remove_node(name)
            return
        st = self.nodes.get(name)
        if st is not None and st.uid != meta.get("uid"):
            self._remove_node(name)
            st = None
        stopped = ann.get(HEARTBEAT_ANNOTATION) == "stopped"
        if st is None:
            ip = ann.get(IP_ANNOTATION) or fake_ip(name, 10, 254)
            st = NodeState(name=name, uid=meta.get("uid"), obj=obj, ip=ip, stopped=stopped)
            self.nodes[name] = st
            log.info("node added: %s (ip %s%s)", name, ip, ", heartbeat stopped" if stopped else "")
            if not stopped:
                self._wake_node(st)
            return
        st.obj = obj
        st.ip = ann.get(IP_ANNOTATION) or st.ip
        if stopped != st.stopped:
            st.stopped = stopped
            if stopped:
                log.info("node %s: heartbeat stopped", name)
                self.disarm(("lease", name))
                self.disarm(("status", name))
            else:
                log.info("node %s: heartbeat resumed", name)
                self._wake_node(st)
            return
        if not stopped and not self._ready(obj) and time.time() - st.last_status > 5.0:
            self.enqueue(("status", name))

    def _wake_node(self, st: NodeState) -> None:
        # lease and status now (the first lease renewal after that is spread over the
        # interval so 500 nodes added at once do not renew in lockstep), pods resume
        self.enqueue(("status", st.name))
        self.enqueue(("lease", st.name))
        for uid in self.pods_by_node.get(st.name, ()):
            self.enqueue(("pod", uid))

    def _remove_node(self, name: str) -> None:
        self.nodes.pop(name, None)
        self.failures.pop(("lease", name), None)
        self.failures.pop(("status", name), None)
        self.disarm(("lease", name))
        self.disarm(("status", name))
        for uid in self.pods_by_node.get(name, ()):
            self.disarm(("pod", uid))
        log.info("node removed: %s", name)

    @staticmethod
    def _ready(obj: dict) -> bool:
        for c in (obj.get("status") or {}).get("conditions") or []:
            if c.get("type") == "Ready":
                return c.get("status") == "True"
        return False

    async def renew_lease(self, name: str) -> None:
        st = self.nodes.get(name)
        if st is None or st.stopped:
            return
        now = time.time()
        owner = [{"apiVersion": "v1", "kind": "Node", "name": name, "uid": st.uid}]
        spec = {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION, "renewTime": micro_time(now)}
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"
        try:
            await self.kube.request("PATCH", f"{path}/{name}",
                                    body={"metadata": {"ownerReferences": owner}, "spec": spec},
                                    content_type=MERGE)
        except ApiError as e:
            if e.status != 404:
                raise
            try:
                await self.kube.request("POST", path, body={
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "namespace": LEASE_NAMESPACE, "ownerReferences": owner},
                    "spec": spec})
            except ApiError as e2:
                if e2.status != 409:
                    raise
                self.arm(("lease", name), time.time() + 0.2)
                return
        self.c["leases"] += 1
        first = st.last_lease == 0.0
        st.last_lease = now
        nxt = self.lease_renew * (random.uniform(0.1, 1.0) if first else random.uniform(0.9, 1.0))
        if name in self.nodes and not self.nodes[name].stopped:
            self.arm(("lease", name), now + nxt)

    async def update_node_status(self, name: str) -> None:
        st = self.nodes.get(name)
        if st is None or st.stopped:
            return
        now = time.time()
        ts = rfc3339(now)
        status = st.obj.get("status") or {}
        old = {c.get("type"): c for c in status.get("conditions") or []}

        def cond(typ: str, value: str, reason: str, message: str) -> dict:
            prev = old.get(typ) or {}
            trans = prev.get("lastTransitionTime") if prev.get("status") == value else None
            return {"type": typ, "status": value, "reason": reason, "message": message,
                    "lastHeartbeatTime": ts, "lastTransitionTime": trans or ts}

        capacity = dict(DEFAULT_CAPACITY)
        capacity.update(status.get("capacity") or {})
        allocatable = dict(capacity)
        allocatable.update(status.get("allocatable") or {})
        info = dict(status.get("nodeInfo") or {})
        for k, v in {"kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                     "containerRuntimeVersion": "nodesim://0.1", "operatingSystem": "linux",
                     "architecture": "amd64", "osImage": "podbatch nodesim", "kernelVersion": "0.0.0-nodesim",
                     "machineID": st.uid.replace("-", ""), "systemUUID": st.uid, "bootID": st.uid}.items():
            if not info.get(k):
                info[k] = v
        body = {"status": {
            "phase": "Running",
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status (nodesim)"),
            ],
            "capacity": capacity, "allocatable": allocatable, "nodeInfo": info,
            "addresses": [{"type": "InternalIP", "address": st.ip}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        }}
        try:
            new = await self.kube.request("PATCH", f"/api/v1/nodes/{name}/status", body=body, content_type=SMP)
        except ApiError as e:
            if e.status == 404:
                return
            raise
        self.c["statuses"] += 1
        st.last_status = now
        if new and self.nodes.get(name) is st:
            st.obj = new
        if name in self.nodes and not self.nodes[name].stopped:
            self.arm(("status", name), now + self.status_interval * random.uniform(0.9, 1.0))

    # -- pods ----------------------------------------------------------------------------

    def on_pods_sync(self, items: list) -> None:
        seen = set()
        for obj in items:
            seen.add(obj["metadata"]["uid"])
            self.on_pod_event("ADDED", obj)
        for uid in list(self.pods):
            if uid not in seen:
                self._drop_pod(uid)

    def on_pod_event(self, typ: str, obj: dict) -> None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if typ == "DELETED":
            self._drop_pod(uid)
            return
        status = obj.get("status") or {}
        stage = PHASE_ORDER.get(status.get("phase"), PENDING)
        p = self.pods.get(uid)
        if p is None:
            if stage == DONE and not meta.get("deletionTimestamp"):
                return
            node = (obj.get("spec") or {}).get("nodeName") or ""
            p = PodState(uid=uid, obj=obj, node=node)
            self._observe(p, obj, stage)
            self.pods[uid] = p
            self.pods_by_node.setdefault(node, set()).add(uid)
        else:
            p.obj = obj
            if stage > p.stage:
                self._observe(p, obj, stage)
        if p.node in self.nodes:
            self.enqueue(("pod", uid))

    @staticmethod
    def _observe(p: PodState, obj: dict, stage: int) -> None:
        status = obj.get("status") or {}
        p.stage = max(p.stage, stage)
        p.start_time = p.start_time or parse_time(status.get("startTime"))
        if p.start_time:
            p.pending_written = True
        if stage >= RUNNING and p.started_at is None:
            for cs in status.get("containerStatuses") or []:
                t = parse_time(((cs.get("state") or {}).get("running") or {}).get("startedAt"))
                if t:
                    p.started_at = t
                    break
            if p.started_at is None:
                p.started_at = p.start_time or time.time()

    def _drop_pod(self, uid: str) -> None:
        self.failures.pop(("pod", uid), None)
        p = self.pods.pop(uid, None)
        if p is None:
            return
        s = self.pods_by_node.get(p.node)
        if s is not None:
            s.discard(uid)
            if not s:
                del self.pods_by_node[p.node]
        self.disarm(("pod", uid))

    async def reconcile_pod(self, uid: str) -> None:
        p = self.pods.get(uid)
        if p is None:
            return
        node = self.nodes.get(p.node)
        if node is None or node.stopped:
            return
        obj = p.obj
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            if not p.deleted:
                await self._delete_pod(p)
            return
        if p.stage == DONE:
            return
        now = time.time()
        spec = obj.get("spec") or {}
        ann = meta.get("annotations") or {}
        forever = spec.get("restartPolicy", "Always") == "Always" and DURATION_ANNOTATION not in ann
        duration = max(0.0, _num(ann.get(DURATION_ANNOTATION), 0.0, float))
        delay = max(0.0, _num(ann.get(START_DELAY_ANNOTATION), 0.0, float))
        ads = spec.get("activeDeadlineSeconds")
        if p.start_time is None:
            p.start_time = now
        deadline = p.start_time + ads if ads is not None else None

        if p.stage == PENDING:
            if deadline is not None and now >= deadline:
                await self._finish(p, node, now, deadline_exceeded=True)
                return
            run_at = p.start_time + delay
            if now < run_at:
                if not p.pending_written:
                    await self._write_status(p, self._pending_status(p, node))
                    p.pending_written = True
                self.arm(("pod", uid), min(run_at, deadline) if deadline is not None else run_at)
                return
            if not forever and duration == 0.0:
                p.started_at = now
                await self._finish(p, node, now)
                return
            p.started_at = now
            if await self._write_status(p, self._running_status(p, node)):
                p.stage = RUNNING
                self.c["started"] += 1
            else:
                return

        # RUNNING
        started = p.started_at or p.start_time
        end = None if forever else started + duration
        due = [t for t in (end, deadline) if t is not None]
        if not due:
            return
        t = min(due)
        if now >= t:
            await self._finish(p, node, now, deadline_exceeded=(deadline is not None and deadline <= t
                                                                   and (end is None or deadline < end)))
        else:
            self.arm(("pod", uid), t)

    async def _delete_pod(self, p: PodState) -> None:
        meta = p.obj["metadata"]
        try:
            await self.kube.request("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                                    body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                                          "preconditions": {"uid": p.uid}})
        except ApiError as e:
            if e.status not in (404, 409):
                raise
        p.deleted = True
        self.c["deleted"] += 1

    async def _write_status(self, p: PodState, status: dict) -> bool:
        meta = p.obj["metadata"]
        try:
            new = await self.kube.request("PATCH", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                                          body={"metadata": {"uid": p.uid}, "status": status}, content_type=MERGE)
        except ApiError as e:
            if e.status in (404, 409):   # gone, or replaced by a pod of the same name
                if e.status == 404:
                    self._drop_pod(p.uid)
                return False
            raise
        if new and p.uid in self.pods:
            p.obj = new
        return True

    # -- pod status documents -------------------------------------------------------------

    def _base(self, p: PodState, node: NodeState, ready: bool, reason: Optional[str] = None) -> dict:
        spec = p.obj.get("spec") or {}
        old = {c.get("type"): c for c in (p.obj.get("status") or {}).get("conditions") or []}
        ts = rfc3339(time.time())

        def cond(typ: str, ok: bool, why: Optional[str] = None) -> dict:
            value = "True" if ok else "False"
            prev = old.get(typ) or {}
            c = {"type": typ, "status": value, "lastProbeTime": None,
                 "lastTransitionTime": prev.get("lastTransitionTime") if prev.get("status") == value else ts}
            c["lastTransitionTime"] = c["lastTransitionTime"] or ts
            if why:
                c["reason"] = why
            return c

        pod_ip = node.ip if spec.get("hostNetwork") else fake_ip(p.uid)
        return {
            "hostIP": node.ip, "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
            "startTime": rfc3339(p.start_time or time.time()),
            "conditions": [cond("Initialized", True), cond("Ready", ready, reason),
                           cond("ContainersReady", ready, reason), cond("PodScheduled", True)],
            "initContainerStatuses": [self._init_status(c, p) for c in spec.get("initContainers") or []],
        }

    def _init_status(self, c: dict, p: PodState) -> dict:
        t = rfc3339(p.start_time or time.time())
        return {"name": c["name"], "image": c.get("image", ""), "imageID": "nodesim://" + c.get("image", ""),
                "containerID": f"nodesim://{p.uid[:8]}-{c['name']}", "ready": True, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t,
                                         "containerID": f"nodesim://{p.uid[:8]}-{c['name']}"}}, "lastState": {}}

    @staticmethod
    def _ctr(c: dict, p: PodState, state: dict, ready: bool, started: bool) -> dict:
        return {"name": c["name"], "image": c.get("image", ""), "imageID": "nodesim://" + c.get("image", ""),
                "containerID": f"nodesim://{p.uid[:8]}-{c['name']}", "ready": ready, "started": started,
                "restartCount": 0, "state": state, "lastState": {}}

    def _pending_status(self, p: PodState, node: NodeState) -> dict:
        s = self._base(p, node, False, "ContainersNotReady")
        s["phase"] = "Pending"
        s["initContainerStatuses"] = []
        s["conditions"][0]["status"] = "False" if (p.obj.get("spec") or {}).get("initContainers") else "True"
        s["containerStatuses"] = [self._ctr(c, p, {"waiting": {"reason": "ContainerCreating"}}, False, False)
                                  for c in (p.obj.get("spec") or {}).get("containers") or []]
        return s

    def _running_status(self, p: PodState, node: NodeState) -> dict:
        s = self._base(p, node, True)
        s["phase"] = "Running"
        st = {"running": {"startedAt": rfc3339(p.started_at)}}
        s["containerStatuses"] = [self._ctr(c, p, st, True, True)
                                  for c in (p.obj.get("spec") or {}).get("containers") or []]
        return s

    async def _finish(self, p: PodState, node: NodeState, now: float, deadline_exceeded: bool = False) -> None:
        ann = p.obj["metadata"].get("annotations") or {}
        s = self._base(p, node, False, "PodCompleted")
        started = rfc3339(p.started_at or now)
        fin = rfc3339(now)
        failed = False
        statuses = []
        for c in (p.obj.get("spec") or {}).get("containers") or []:
            if deadline_exceeded:
                code = 137
            else:
                code = _num(ann.get(f"{EXIT_CODE_ANNOTATION}.{c['name']}"),
                            _num(ann.get(EXIT_CODE_ANNOTATION), 0, int), int)
            failed = failed or code != 0
            term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started, "finishedAt": fin, "containerID": f"nodesim://{p.uid[:8]}-{c['name']}"}
            statuses.append(self._ctr(c, p, {"terminated": term}, False, False))
        s["containerStatuses"] = statuses
        s["phase"] = "Failed" if failed else "Succeeded"
        if deadline_exceeded:
            s["reason"] = "DeadlineExceeded"
            s["message"] = "Pod was active on the node longer than the specified deadline"
        if await self._write_status(p, s):
            if p.stage == PENDING:
                self.c["started"] += 1
            p.stage = DONE
            self.c["finished"] += 1
            if failed:
                self.c["failed"] += 1

    # -- main ----------------------------------------------------------------------------

    async def report(self, interval: float) -> None:
        last = dict(self.c)
        last_t = time.time()
        quiet = 0
        while True:
            await asyncio.sleep(interval)
            now = time.time()
            dt = now - last_t
            d = {k: self.c[k] - last[k] for k in self.c}
            active = sum(1 for p in self.pods.values() if p.node in self.nodes and p.stage != DONE)
            busy = d["started"] or d["finished"] or d["deleted"]
            quiet = 0 if busy else quiet + 1
            if busy or quiet % 6 == 1:
                log.info("nodes=%d (stopped %d) pods active=%d queue=%d | started %.1f/s finished %.1f/s "
                         "(failed %d) deleted %d | leases %.1f/s statuses %.1f/s | totals started=%d finished=%d "
                         "writes=%d errors=%d",
                         len(self.nodes), sum(1 for n in self.nodes.values() if n.stopped), active,
                         self.queue.qsize(), d["started"] / dt, d["finished"] / dt, d["failed"], d["deleted"],
                         d["leases"] / dt, d["statuses"] / dt, self.c["started"], self.c["finished"],
                         self.kube.writes, self.kube.errors)
            last, last_t = dict(self.c), now

    async def run(self, report_interval: float = 10.0) -> None:
        tasks = [asyncio.create_task(self.worker()) for _ in range(self.concurrency)]
        tasks.append(asyncio.create_task(list_and_watch(
            self.kube, "/api/v1/nodes", {}, "nodes", self.on_nodes_sync, self.on_node_event, self.stopping)))
        tasks.append(asyncio.create_task(list_and_watch(
            self.kube, "/api/v1/pods",
            {"fieldSelector": "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"},
            "pods", self.on_pods_sync, self.on_pod_event, self.stopping)))
        tasks.append(asyncio.create_task(self.report(report_interval)))
        tasks += [asyncio.create_task(c) for c in self.extra_tasks]
        log.info("node simulator running (concurrency %d)", self.concurrency)
        await self.stopping.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, h in self.timers.values():
            h.cancel()


class LeaderElection:
    """One active simulator per cluster: a Lease kube-system/podbatch-nodesim.

    A second simulator (e.g. the test session's, while the cluster scripts already run one)
    stands by and takes over when the holder stops renewing or releases the lease on exit."""

    NAMESPACE = "kube-system"
    NAME = "podbatch-nodesim"
    DURATION = 15
    RENEW = 5.0

    def __init__(self, kube: Kube, identity: str):
        self.kube = kube
        self.identity = identity
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{self.NAMESPACE}/leases"
        self.lease: Optional[dict] = None

    def _spec(self, now: float, transitions: int) -> dict:
        return {"holderIdentity": self.identity, "leaseDurationSeconds": self.DURATION,
                "acquireTime": micro_time(now), "renewTime": micro_time(now), "leaseTransitions": transitions}

    async def acquire(self, stopping: asyncio.Event) -> bool:
        waiting_for = None
        while not stopping.is_set():
            try:
                if await self._try_acquire():
                    log.info("leader election: %s holds %s/%s", self.identity, self.NAMESPACE, self.NAME)
                    return True
                holder = (self.lease or {}).get("spec", {}).get("holderIdentity")
                if holder != waiting_for:
                    log.info("another node simulator (%s) is active; standing by", holder)
                    waiting_for = holder
            except ApiError as e:
                log.warning("leader election: %s", e)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                log.warning("leader election: %s: %s", type(e).__name__, e)
            try:
                await asyncio.wait_for(stopping.wait(), 2.0)
            except asyncio.TimeoutError:
                pass
        return False

    async def _try_acquire(self) -> bool:
        now = time.time()
        try:
            self.lease = await self.kube.request("GET", f"{self.path}/{self.NAME}")
        except ApiError as e:
            if e.status != 404:
                raise
            try:
                self.lease = await self.kube.request("POST", self.path, body={
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.NAME, "namespace": self.NAMESPACE}, "spec": self._spec(now, 0)})
                return True
            except ApiError as e2:
                if e2.status == 409:
                    return False
                raise
        spec = self.lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        expires = (parse_time(spec.get("renewTime")) or 0) + (spec.get("leaseDurationSeconds") or self.DURATION)
        if holder and holder != self.identity and expires > now:
            return False
        body = dict(self.lease, spec=self._spec(now, (spec.get("leaseTransitions") or 0) + (holder != self.identity)))
        try:
            self.lease = await self.kube.request("PUT", f"{self.path}/{self.NAME}", body=body)
            return True
        except ApiError as e:
            if e.status == 409:
                return False
            raise

    async def keep(self, stopping: asyncio.Event) -> None:
        """Renew while leading; on losing the lease to another simulator, stop this one."""
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), self.RENEW)
                return
            except asyncio.TimeoutError:
                pass
            try:
                body = dict(self.lease)
                body["spec"] = dict(body["spec"], renewTime=micro_time(time.time()), holderIdentity=self.identity)
                self.lease = await self.kube.request("PUT", f"{self.path}/{self.NAME}", body=body)
            except ApiError as e:
                if e.status in (404, 409):
                    if await self._try_acquire():
                        continue
                    log.error("leader election: lost %s/%s to %s; stopping", self.NAMESPACE, self.NAME,
                              (self.lease or {}).get("spec", {}).get("holderIdentity"))
                    stopping.set()
                    return
                log.warning("leader election: renew: %s", e)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                log.warning("leader election: renew: %s: %s", type(e).__name__, e)

    def holding(self) -> bool:
        return bool(self.lease) and (self.lease.get("spec") or {}).get("holderIdentity") == self.identity

    async def release(self) -> None:
        try:
            await self.kube.request("PATCH", f"{self.path}/{self.NAME}", content_type=MERGE, timeout=5,
                                    body={"metadata": {"resourceVersion": self.lease["metadata"]["resourceVersion"]},
                                          "spec": {"holderIdentity": None}})
        except Exception as e:  # noqa: BLE001 - best effort; the lease expires anyway
            log.debug("leader election: release: %s", e)


def _num(value: Any, default, kind):
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except (TypeError, ValueError):
        try:
            return kind(float(value))
        except (TypeError, ValueError):
            return default


async def client_config(kubeconfig: Optional[str]) -> k8s_client.Configuration:
    """The client configuration of a kubeconfig path (default $KUBECONFIG, else in-cluster)."""
    cfg = k8s_client.Configuration()
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")
    if kubeconfig:
        await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        k8s_config.load_incluster_config(client_configuration=cfg)
    return cfg


async def poll(name: str, reconcile: Callable[[], Any], interval: float, stopping: asyncio.Event) -> None:
    """Run `reconcile` every `interval` seconds until `stopping`; an error is logged and the
    next round tries again (the fake controllers of hack/fakecapi.py and hack/fakeca.py)."""
    while not stopping.is_set():
        try:
            await reconcile()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - log and try again on the next round
            log.warning("%s: %s: %s", name, type(e).__name__, e)
        try:
            await asyncio.wait_for(stopping.wait(), interval)
        except asyncio.TimeoutError:
            pass


async def run_standalone(make: Callable[[Kube], Any], kubeconfig: Optional[str]) -> int:
    """Run a fake controller alone (`make(kube).run(stopping)`) until SIGTERM or SIGINT."""
    api = k8s_client.ApiClient(await client_config(kubeconfig))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await make(Kube(api)).run(stopping)
    finally:
        await api.close()
    return 0


def fake_main(description: str, add_args: Callable[[argparse.ArgumentParser], None],
              amain: Callable[[argparse.Namespace], Any], argv: Optional[list] = None) -> int:
    """The command line of a fake controller run alone: --kubeconfig, --interval and
    --log-level, plus its own options (`add_args`)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--kubeconfig", default=None, help="kubeconfig path (default $KUBECONFIG, else in-cluster)")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between reconcile rounds")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_args(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    return asyncio.run(amain(args))


async def amain(args: argparse.Namespace) -> int:
    cfg = await client_config(args.kubeconfig)
    cfg.connection_pool_maxsize = args.concurrency + 8
    api = k8s_client.ApiClient(cfg)
    sim = Simulator(Kube(api), concurrency=args.concurrency, lease_renew=args.lease_renew_interval,
                    status_interval=args.status_interval)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sim.stopping.set)
    election = None
    try:
        if args.leader_election:
            election = LeaderElection(sim.kube, f"{socket.gethostname()}-{os.getpid()}")
            if not await election.acquire(sim.stopping):
                return 0
            sim.extra_tasks.append(election.keep(sim.stopping))
        if args.fake_cluster_api:   # hack/fakecapi.py, on this simulator's client (only while it is active)
            sys.modules.setdefault("nodesim", sys.modules[__name__])
            from fakecapi import FakeClusterApi
            sim.extra_tasks.append(FakeClusterApi(sim.kube).run(sim.stopping))
        await sim.run(report_interval=args.report_interval)
        if election is not None and election.holding():
            await election.release()
    finally:
        await api.close()
    log.info("node simulator stopped")
    return 0


def main(argv: Optional[list] = None) -> int:
    ap = argparse.ArgumentParser(description="podbatch node simulator (kwok's part for fake nodes)")
    ap.add_argument("--kubeconfig", default=None, help="kubeconfig path (default $KUBECONFIG, else in-cluster)")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ap.add_argument("--concurrency", type=int, default=48, help="bound on concurrent API writes")
    ap.add_argument("--lease-renew-interval", type=float, default=LEASE_RENEW,
                    help="seconds between Lease renewals of each node (lease duration stays 40 s)")
    ap.add_argument("--status-interval", type=float, default=STATUS_INTERVAL,
                    help="seconds between node status heartbeats")
    ap.add_argument("--no-leader-election", dest="leader_election", action="store_false",
                    help="run even if another simulator holds the lease kube-system/podbatch-nodesim")
    ap.add_argument("--report-interval", type=float, default=10.0, help="seconds between counter lines")
    ap.add_argument("--fake-cluster-api", action="store_true",
                    help="also run the fake Cluster API of hack/fakecapi.py (its CRDs: hack/fakecapi-crds/)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
