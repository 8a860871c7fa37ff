"""An in-memory Kubernetes for the engine's fault harness (issue 10): an API server, a
kubelet and the controllers podbatch relies on, on a fake clock, plus a driver that runs
the real engine against them, kills it after any write, restarts it from the server's
state and checks after every change that no task runs twice.

Why in memory: the crash-after-every-write sweep needs thousands of engine restarts per
scenario; against a real API server that is hours, here it is seconds, deterministic.

The pieces, each as faithful as the invariants need and no more:

* `FakeApiServer` implements every public async method of `controllers.kube.Kube` with the
  real one's semantics (create: the body, None on 409 AlreadyExists; delete: None when
  missing; patch: None when missing; merge patches, None deletes a key; resourceVersion
  preconditions -> ApiException(409); generation, uid, creationTimestamp; pods deleted
  gracefully keep running with a deletionTimestamp until their kubelet confirms).
  Watches feed Stores as kopf's event handlers do (`handlers._record`), deep copies, with
  delivery `sync` (before the call returns), `soon` (when the caller next yields: the
  default), held (delayed) or dropped (a watch gap; the harness relists afterwards).
  Faults: `crash_after(k, applied=…)` kills the engine at its k-th write (the write
  reaching the server or not) by raising `Crash` (a BaseException, so no `except
  Exception` in the engine swallows it) for that call and every later one; `Faults`
  injects conflicts (a concurrent writer), 500s and 504s (a 504 may or may not have been
  applied, as a real timeout).
* `FakeKubelet`: pods bound to a Node run as "containers" on the fake clock
  (annotations `sim.podbatch.io/duration` / `exit-code`, as hack/nodesim.py; a pod whose
  wrapper ConfigMap is missing stays Pending, as the kubelet cannot mount it), end after a
  graceful delete's grace, and a partitioned node keeps running its containers while
  reporting nothing: the node lifecycle controller marks it Unknown after 40 s, a force
  delete removes the API object but not the container. That container is still *live*:
  only a terminal status from the kubelet, a confirmed graceful delete, or the node's
  end proves a pod stopped.
* the garbage collector (ownerReferences, background), the pod GC (pods of deleted
  nodes), the node lifecycle controller.
* `Harness`: one engine (`Engine(store, kube, settings)`) over the fake cluster. A pass is
  what Engine.run does per turn (`resync_if_needed()` where it exists, then `reconcile()`);
  between passes the cluster takes a step (kubelet, controllers, held events) and fake time
  advances 1 s, or jumps to the next timer (≤ 30 s) when a pass changed nothing and asked
  for no early pass. On `Crash` the engine is restarted at once from a fresh Store filled
  by `controllers.sync.full_sync` (put_* of every object where that module is absent); a
  healed watch gap goes to `store.relisted` (or is relisted by the harness). `Invariants`
  are checked after every change of the server or of a container. Time: `use_fake_time`
  puts controllers.clock (and any engine module still importing `time`) on the fake clock.

A scenario, e.g.:

    async def requeue_on_node_disable(h):
        h.apply(pool_body("p", nodes=3, slots=2))
        h.apply(job_body("j", "p", onAllTasksComplete="terminatejob"))
        for i in range(1, 5):
            h.apply(task_body(f"j-{i}", "j", duration=30)); h.expect(f"j-{i}")
        await h.run_until(lambda: len(h.running_pods()) == 4)
        node = h.running_pods("j-1")[0]["spec"]["nodeName"]
        h.expect("j-1", requeues=1)    # and any other task on that node
        h.cli("node", "disable", h.cnode_of(node), "--option", "requeue")
        await h.run_until(h.job_state("j", "completed"))
        return lambda: h.final_checks("j")

run_scenario(s) runs it clean; crash_sweep(s, writes=n) once per k <= n and per variant.
"""
from __future__ import annotations

import asyncio
import functools
import importlib
import itertools
import json
import logging
import random
import sys
import types
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from kubernetes_asyncio.client.rest import ApiException

from podbatch.core import pods as podcore

GROUP, VERSION = "podbatch.io", "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CUSTOM = ("pools", "computenodes", "jobs", "tasks", "jobschedules", "taskcollections")
WATCHED = ("nodes", "pools", "computenodes", "jobs", "jobschedules", "pods", "tasks", "taskcollections")   # sync order
KIND = {"pools": "Pool", "computenodes": "ComputeNode", "jobs": "Job", "tasks": "Task", "jobschedules": "JobSchedule",
        "taskcollections": "TaskCollection",
        "pods": "Pod", "nodes": "Node", "configmaps": "ConfigMap", "serviceaccounts": "ServiceAccount", "roles": "Role", "rolebindings": "RoleBinding"}
PLURAL = {v: k for k, v in KIND.items()}
PUT = {"pools": "put_pool", "computenodes": "put_cnode", "jobs": "put_job", "tasks": "put_task",
       "jobschedules": "put_jobschedule", "pods": "put_pod", "nodes": "put_knode", "taskcollections": "put_collection"}
ROLE = f"{GROUP}/role"
TASK_UID = f"{GROUP}/task-uid"
COLLECTION_INDEX = f"{GROUP}/collection-index"


def task_key(labels: dict) -> str:
    """Which task a task pod runs: its Task's uid, or for a TaskCollection's task (whose
    pods carry the collection's uid) the uid and its index, `uid#index`."""
    uid, index = labels.get(TASK_UID, ""), labels.get(COLLECTION_INDEX)
    return f"{uid}#{index}" if index is not None else uid
ATTEMPT = f"{GROUP}/attempt"
SIM = "sim.podbatch.io/"
NODE_MONITOR_GRACE = 40.0     # kube-controller-manager --node-monitor-grace-period
DEFAULT_GRACE = 30


class Crash(BaseException):
    """The operator's process died here: raised for the crashing write and every call after it."""


# ----------------------------------------------------------------------------- time

class FakeClock:
    """Time that moves only when the harness says so (`controllers.clock.use(...)`)."""
    EPOCH = 1_750_000_000.0

    def __init__(self, start: float = EPOCH) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now - self.EPOCH + 10_000.0

    def advance(self, dt: float) -> None:
        self.now += dt


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s: str | None) -> float | None:
    if not s:
        return None
    return datetime.fromisoformat(s.rstrip("Z")[:19]).replace(tzinfo=timezone.utc).timestamp()


class _TimeShim(types.ModuleType):
    """Stands in for the `time` module in engine modules not yet on controllers.clock."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__("time")
        self._clock = clock

    def time(self) -> float:
        return self._clock.time()

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def __getattr__(self, name: str):
        import time as real
        return getattr(real, name)


def _datetime_shim(clock: FakeClock):
    class FakeDatetime(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromtimestamp(clock.time(), tz)

        @classmethod
        def utcnow(cls):
            return datetime.fromtimestamp(clock.time(), timezone.utc).replace(tzinfo=None)
    return FakeDatetime


class use_fake_time:
    """Put every podbatch module on the fake clock while the harness runs: controllers.clock
    when it exists, and (a bridge until every module reads that clock) a `time`/`datetime`
    stand-in in modules that still import the real ones."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._undo: list[tuple[Any, str, Any]] = []

    def __enter__(self):
        import time as real_time
        importlib.import_module("podbatch.controllers.engine")   # every engine module loaded, so all are patched
        try:
            from podbatch.controllers import clock as pb_clock
        except ImportError:
            pb_clock = None
        if pb_clock is not None:
            prev = pb_clock._clock
            pb_clock.use(self.clock)
            self._undo.append((pb_clock, "_clock", prev))
        shim, dt = _TimeShim(self.clock), _datetime_shim(self.clock)
        for name, mod in list(sys.modules.items()):
            if not name.startswith(("podbatch.controllers", "podbatch.nodegroups")) or mod is None or mod is pb_clock:
                continue
            if getattr(mod, "time", None) is real_time:
                self._undo.append((mod, "time", real_time))
                mod.time = shim
            if getattr(mod, "datetime", None) is datetime:
                self._undo.append((mod, "datetime", datetime))
                mod.datetime = dt
        return self

    def __exit__(self, *exc):
        for mod, attr, old in reversed(self._undo):
            setattr(mod, attr, old)
        self._undo.clear()


# ----------------------------------------------------------------------------- helpers

def _copy(obj):
    # JSON bodies only: a round trip through json is ~3x faster than deepcopy
    return json.loads(json.dumps(obj))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; returns a new value, never aliases `patch`."""
    if not isinstance(patch, dict):
        return _copy(patch) if isinstance(patch, list) else patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def obj_key(ns: str | None, name: str) -> str:
    return f"{ns}/{name}" if ns else name


def api_error(status: int, reason: str) -> ApiException:
    return ApiException(status=status, reason=reason)


# ----------------------------------------------------------------------------- faults

class Faults:
    """Random API errors with a fixed seed: per call, with probability `rate`, one of
    `kinds`: "conflict" (another writer changed the object just before: a patch carrying a
    resourceVersion then gets a real 409), "500" (not applied), "504" (a timeout: applied
    or not, at random). Reads get 500/504 only."""

    def __init__(self, rng: random.Random, rate: float = 0.1, kinds: tuple[str, ...] = ("conflict", "500", "504")) -> None:
        self.rng, self.rate, self.kinds = rng, rate, kinds
        self.injected: Counter = Counter()

    def pick(self, verb: str) -> str | None:
        if self.rate <= 0 or self.rng.random() >= self.rate:
            return None
        kinds = [k for k in self.kinds if k != "conflict" or verb == "patch"]
        if verb in ("list", "get"):
            kinds = [k for k in kinds if k in ("500", "504")]
        if not kinds:
            return None
        k = self.rng.choice(kinds)
        self.injected[k] += 1
        return k


class WatchChaos:
    """Random watch trouble with a fixed seed: an event is held back (delivered at a later
    step, in order with the rest of its kind) with probability `hold`; a kind's watch breaks
    with probability `gap` (its events are lost until the gap heals, at a later step with
    probability `heal`, and the harness relists the kind)."""

    def __init__(self, rng: random.Random, hold: float = 0.2, gap: float = 0.02, heal: float = 0.5, release: float = 0.6) -> None:
        self.rng, self.hold, self.gap, self.heal, self.release = rng, hold, gap, heal, release


class Watch:
    """One watcher of every kind the store holds, delivering to a Store as kopf's event
    handlers do: `put_<kind>(body, deleted=…)`, each a deep copy the store may keep."""

    def __init__(self, server: "FakeApiServer", store, mode: str = "soon", chaos: WatchChaos | None = None) -> None:
        self.server, self.store, self.mode, self.chaos = server, store, mode, chaos
        self.closed = False
        self.held: dict[str, deque] = defaultdict(deque)
        self.gaps: set[str] = set()         # kinds whose events are being dropped
        self.healed: set[str] = set()       # kinds whose gap ended: the harness relists them
        self.delivered = 0
        self.dropped = 0

    def offer(self, plural: str, etype: str, body: dict) -> None:
        if self.closed:
            return
        if plural in self.gaps:
            self.dropped += 1
            return
        c = self.chaos
        if c is not None and c.rng.random() < c.gap:
            self.gaps.add(plural)
            self.dropped += 1
            return
        ev = (plural, etype, _copy(body))
        if self.mode == "hold" or self.held[plural] or (c is not None and c.rng.random() < c.hold):
            self.held[plural].append(ev)
        elif self.mode == "sync":
            self._put(*ev)
        else:
            asyncio.get_running_loop().call_soon(self._put, *ev)

    def _put(self, plural: str, etype: str, body: dict) -> None:
        if self.closed:
            return
        self.delivered += 1
        getattr(self.store, PUT[plural])(body, deleted=etype == "DELETED")

    def release(self, plural: str | None = None) -> None:
        """Deliver held events (of one kind, or all), in order."""
        for p in [plural] if plural else list(self.held):
            q = self.held.get(p)
            while q:
                self._put(*q.popleft())

    def step(self) -> None:
        """Between passes: release held events and heal gaps, at random under chaos, else all."""
        c = self.chaos
        for p in list(self.held):
            if c is None or c.rng.random() < c.release:
                self.release(p)
        for p in list(self.gaps):
            if c is None or c.rng.random() < c.heal:
                self.release(p)   # what the broken stream had delivered comes first, then the relist
                self.gaps.discard(p)
                self.healed.add(p)

    def close(self) -> None:
        self.closed = True


# ----------------------------------------------------------------------------- API server

class FakeApiServer:
    """In-memory API server with the interface (and semantics) of controllers.kube.Kube."""

    def __init__(self, clock: FakeClock, *, faults: Faults | None = None) -> None:
        self.clock = clock
        self.faults = faults
        self.objects: dict[str, dict[str, dict]] = defaultdict(dict)   # plural -> key -> body
        self.rv = 0
        self._uids = itertools.count(1)
        self.watches: list[Watch] = []
        self.observers: list[Callable[[str, str, dict | None, dict | None], None]] = []
        self.writes = 0                  # the engine's write calls so far
        self.log: list[str] = []         # one line per engine write, for failure reports
        self.events: list[dict] = []     # posted Kubernetes Events
        self.crashed = False
        self._crash_at: int | None = None
        self._crash_applied = True
        self.crash_note = ""
        self.mutations = 0               # every change of state, by anyone (quiescence)
        self._rules: list[list] = []      # [match, status, times left, applied]: deterministic faults
        self._holds: list[tuple] = []     # (match, event): calls held until the event is set (hold)
        self.held: set = set()            # the asyncio tasks waiting in a held call

    # --- control --------------------------------------------------------------------
    def crash_after(self, k: int, *, applied: bool = True) -> None:
        """The engine dies at its k-th write: the write reaches the server (applied) or not."""
        self._crash_at, self._crash_applied = k, applied

    def inject(self, match: Callable[[str, str], bool], status: int = 500, *, times: int | None = None,
               applied: bool = False) -> None:
        """Fail the engine's calls `match(verb, what)` accepts (verb: create/patch/delete/list/get;
        what: as in the write log, e.g. "tasks default/j-1", "tasks/status default/j-1", "pod
        default/j-1-1 grace=None") with ApiException(status), `times` times (None: always).
        `applied`: the call reached the server all the same (a timeout after the fact)."""
        self._rules.append([match, status, times, applied])

    def _injected(self, verb: str, what: str) -> tuple[int, bool] | None:
        for rule in self._rules:
            match, status, times, applied = rule
            if (times is None or times > 0) and match(verb, what):
                if times is not None:
                    rule[2] = times - 1
                return status, applied
        return None

    def recover(self) -> None:
        """A new operator process: calls work again (the crash is spent)."""
        self.crashed, self._crash_at = False, None

    def watch(self, store, mode: str = "soon", chaos: WatchChaos | None = None) -> Watch:
        w = Watch(self, store, mode, chaos)
        self.watches.append(w)
        return w

    # --- storage primitives (the cluster's own components use these directly) --------
    def get(self, plural: str, ns: str | None, name: str) -> dict | None:
        return self.objects[plural].get(obj_key(ns, name))

    def items(self, plural: str) -> list[dict]:
        return list(self.objects[plural].values())

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _emit(self, plural: str, etype: str, old: dict | None, new: dict | None) -> None:
        self.mutations += 1
        body = new if new is not None else old
        if plural in PUT and not (plural == "pods" and ROLE not in (body["metadata"].get("labels") or {})):
            for w in self.watches:
                w.offer(plural, etype, body)
        for obs in self.observers:
            obs(plural, etype, old, new)

    def create(self, plural: str, body: dict) -> dict | None:
        """Create; None when the name is taken (409 AlreadyExists)."""
        body = _copy(body)
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{next(self._uids):05d}"
        ns = None if plural == "nodes" else meta.setdefault("namespace", "default")
        k = obj_key(ns, meta["name"])
        if k in self.objects[plural]:
            return None
        body.setdefault("kind", KIND.get(plural, ""))
        body.setdefault("apiVersion", API_VERSION if plural in CUSTOM else "v1")
        for f in ("deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(f, None)
        meta["uid"] = f"uid-{next(self._uids):06d}"
        meta["creationTimestamp"] = rfc3339(self.clock.time())
        meta["generation"] = 1
        meta["resourceVersion"] = self._next_rv()
        if plural in CUSTOM:
            body.pop("status", None)      # the status subresource: create ignores it
        elif plural == "pods":
            body["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        self.objects[plural][k] = body
        self._emit(plural, "ADDED", None, body)
        return body

    def patch(self, plural: str, ns: str | None, name: str, patch: dict, *, subresource: str | None = None) -> dict | None:
        """Merge patch; None when missing; ApiException(409) on a resourceVersion mismatch.
        `subresource="status"` applies only .status; the main resource ignores .status of
        kinds with a status subresource (all here)."""
        k = obj_key(ns, name)
        old = self.objects[plural].get(k)
        if old is None:
            return None
        patch = dict(patch)
        pmeta = dict(patch.get("metadata") or {})
        want_rv = pmeta.pop("resourceVersion", None)
        if want_rv is not None and str(want_rv) != old["metadata"]["resourceVersion"]:
            raise api_error(409, f"Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified")
        for f in ("uid", "name", "namespace", "creationTimestamp", "generation", "deletionTimestamp"):
            pmeta.pop(f, None)
        if subresource == "status":
            new = dict(old)
            new["status"] = merge_patch(old.get("status"), patch.get("status") or {})
        else:
            new = dict(old)
            if pmeta:
                new["metadata"] = merge_patch(old["metadata"], pmeta)
            for f, v in patch.items():
                if f in ("metadata", "status", "kind", "apiVersion"):
                    continue
                if plural == "pods" and f == "spec":
                    continue   # a pod's spec is immutable (what podbatch patches is metadata)
                new[f] = merge_patch(old.get(f), v)
        # stored bodies are never changed in place (every change builds a new one, sharing
        # what it did not touch), so events and answers copy them and nothing else needs to
        new["metadata"] = dict(new["metadata"])
        if new == old:
            return old    # a no-op patch: no new resourceVersion, no event
        if plural in CUSTOM and new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = self._next_rv()
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") and plural != "pods":
            del self.objects[plural][k]
            self._emit(plural, "DELETED", old, new)
            return new
        self.objects[plural][k] = new
        self._emit(plural, "MODIFIED", old, new)
        return new

    def delete(self, plural: str, ns: str | None, name: str, *, grace: int | None = None) -> dict | None:
        """Delete; None when missing. Pods bound to a node and not finished are deleted
        gracefully (deletionTimestamp = now + grace) until their kubelet confirms; grace 0
        removes them at once (a force delete: the container may still run). Objects with
        finalizers get a deletionTimestamp and stay until the finalizers are gone."""
        k = obj_key(ns, name)
        old = self.objects[plural].get(k)
        if old is None:
            return None
        now = self.clock.time()
        meta = old["metadata"]
        if plural == "pods":
            if grace is None:
                grace = int((old.get("spec") or {}).get("terminationGracePeriodSeconds", DEFAULT_GRACE))
            terminal = (old.get("status") or {}).get("phase") in ("Succeeded", "Failed")
            if grace > 0 and not terminal and (old.get("spec") or {}).get("nodeName"):
                until = now + grace
                if meta.get("deletionTimestamp"):
                    until = min(until, parse_rfc3339(meta["deletionTimestamp"]))
                    if rfc3339(until) == meta["deletionTimestamp"]:
                        return old
                new = {**old, "metadata": dict(meta)}
                new["metadata"]["deletionTimestamp"] = rfc3339(until)
                new["metadata"]["deletionGracePeriodSeconds"] = int(round(until - now))
                new["metadata"]["resourceVersion"] = self._next_rv()
                self.objects[plural][k] = new
                self._emit(plural, "MODIFIED", old, new)
                return new
        elif meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return old
            new = {**old, "metadata": dict(meta)}
            new["metadata"]["deletionTimestamp"] = rfc3339(now)
            new["metadata"]["resourceVersion"] = self._next_rv()
            self.objects[plural][k] = new
            self._emit(plural, "MODIFIED", old, new)
            return new
        new = {**old, "metadata": dict(meta)}
        new["metadata"].setdefault("deletionTimestamp", rfc3339(now))
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["metadata"]["resourceVersion"] = self._next_rv()
        del self.objects[plural][k]
        self._emit(plural, "DELETED", old, new)
        return new

    def touch(self, plural: str, ns: str | None, name: str) -> None:
        """Another client writes the object (a new resourceVersion): the engine's next
        precondition on the version it read fails with 409."""
        obj = self.get(plural, ns, name)
        if obj is not None:
            n = int((obj["metadata"].get("annotations") or {}).get("fake.podbatch.io/touched", 0)) + 1
            self.patch(plural, ns, name, {"metadata": {"annotations": {"fake.podbatch.io/touched": str(n)}}})

    # --- the engine's calls: gate, count, faults ----------------------------------------
    def _gate(self) -> None:
        if self.crashed:
            raise Crash(self.crash_note)

    def hold(self, match: Callable[[str, str], bool]) -> asyncio.Event:
        """A slow API server: calls that match(verb, what) wait until the returned event is set
        (the harness's drain after a pass leaves them waiting, as requests in flight)."""
        ev = asyncio.Event()
        self._holds.append((match, ev))
        return ev

    async def _call(self, verb: str, what: str, apply: Callable[[], Any], *, target: tuple | None = None) -> Any:
        self._gate()
        await asyncio.sleep(0)   # the request is in flight: other coroutines (and events) run
        for match, ev in self._holds:
            if not ev.is_set() and match(verb, what):
                me = asyncio.current_task()
                self.held.add(me)
                try:
                    await ev.wait()
                finally:
                    self.held.discard(me)
        self._gate()
        write = verb in ("create", "patch", "delete")
        fault = self.faults.pick(verb) if self.faults else None
        if write:
            self.writes += 1
            k = self.writes
            if self._crash_at is not None and k >= self._crash_at:
                self.crashed = True
                applied = self._crash_applied
                note = f"crash at write #{k} {verb} {what} ({'applied' if applied else 'not applied'})"
                self.crash_note = note
                self.log.append(note)
                if applied:
                    try:
                        apply()
                    except ApiException:
                        pass
                raise Crash(note)
            self.log.append(f"#{k} {verb} {what}" + (f" [{fault}]" if fault else ""))
        rule = self._injected(verb, what)
        if rule is not None:
            status, applied = rule
            if write:
                self.log[-1] += f" [injected {status}]"
            if applied:
                apply()
            raise api_error(status, f"injected: {verb} {what}")
        if fault == "conflict" and target is not None:
            self.touch(*target)
            fault = None
        if fault == "500":
            raise api_error(500, f"injected: {verb} {what} failed")
        if fault == "504":
            if self.faults.rng.random() < 0.5:
                apply()
            raise api_error(504, f"injected: {verb} {what}: no answer within 30s")
        return apply()

    # --- Kube: lists and reads ----------------------------------------------------------
    async def close(self) -> None:
        pass

    async def list_kind(self, plural: str) -> tuple[list[dict], str]:
        def apply():
            items = self.items(plural)
            if plural == "pods":
                items = [p for p in items if ROLE in (p["metadata"].get("labels") or {})]
            return _copy(items), str(self.rv)
        return await self._call("list", plural, apply)

    async def list_pages(self, plural: str):
        """The list as Kube.list_pages gives it: here one page."""
        yield await self.list_kind(plural)

    async def get_object(self, plural: str, ns: str, name: str) -> dict | None:
        return await self._call("get", f"{plural} {ns}/{name}", lambda: _copy(self.get(plural, ns, name)))

    async def node_names(self, label_selector: str) -> list[str]:
        def apply():
            k, _, v = label_selector.partition("=")
            return [n["metadata"]["name"] for n in self.items("nodes")
                    if k in (n["metadata"].get("labels") or {}) and (not v or n["metadata"]["labels"][k] == v)]
        return await self._call("list", "nodes", apply)

    async def pod_log_tail(self, ns: str, name: str, container: str, lines: int = 20) -> str:
        self._gate()
        return ""

    async def node_metrics(self) -> list[dict] | None:
        self._gate()
        return None   # no metrics API here, as on a cluster without metrics-server

    async def list_provisioning_requests(self, ns: str) -> list[dict] | None:
        self._gate()
        return None   # no ProvisioningRequest API here

    async def create_provisioning_request(self, ns: str, body: dict) -> dict | None:
        raise AssertionError("the fake API server serves no ProvisioningRequests")

    async def create_pod_template(self, ns: str, body: dict) -> dict | None:
        raise AssertionError("the fake API server serves no PodTemplates")

    async def post_event(self, body: dict, etype: str, reason: str, message: str) -> None:
        if self.crashed:
            return   # best effort, as the real one: never raises
        meta = body.get("metadata") or {}
        self.events.append({"t": self.clock.time(), "kind": body.get("kind"), "name": meta.get("name"),
                            "type": etype, "reason": reason, "message": message})

    # --- Kube: pods ---------------------------------------------------------------------
    async def create_pod(self, pod: dict) -> dict | None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        return await self._call("create", f"pod {ns}/{name}", lambda: _copy_or_none(self.create("pods", pod)))

    async def create_configmap(self, body: dict) -> dict | None:
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        return await self._call("create", f"configmap {ns}/{name}", lambda: _copy_or_none(self.create("configmaps", body)))

    async def delete_pod(self, ns: str, name: str, *, grace: int | None = None) -> dict | None:
        return await self._call("delete", f"pod {ns}/{name} grace={grace}",
                                lambda: _copy_or_none(self.delete("pods", ns, name, grace=grace)))

    async def patch_pod(self, ns: str, name: str, patch: dict) -> dict | None:
        return await self._call("patch", f"pod {ns}/{name}", lambda: _copy_or_none(self.patch("pods", ns, name, patch)),
                                target=("pods", ns, name))

    # --- Kube: nodes --------------------------------------------------------------------
    async def create_node(self, node: dict) -> dict | None:
        return await self._call("create", f"node {node['metadata']['name']}", lambda: self.create("nodes", node))

    async def delete_node(self, name: str) -> None:
        await self._call("delete", f"node {name}", lambda: self.delete("nodes", None, name))

    async def patch_node(self, name: str, patch: dict) -> dict | None:
        return await self._call("patch", f"node {name}", lambda: self.patch("nodes", None, name, patch), target=("nodes", None, name))

    # --- Kube: podbatch objects -----------------------------------------------------------
    async def patch_status(self, plural: str, ns: str, name: str, status: dict, *,
                           resource_version: str | None = None) -> dict | None:
        body = {"status": status, **({"metadata": {"resourceVersion": resource_version}} if resource_version else {})}
        return await self._call("patch", f"{plural}/status {ns}/{name}" + (f" @{resource_version}" if resource_version else ""),
                                lambda: _copy_or_none(self.patch(plural, ns, name, body, subresource="status")),
                                target=(plural, ns, name))

    async def patch_object(self, plural: str, ns: str, name: str, patch: dict, *,
                           resource_version: str | None = None) -> dict | None:
        if resource_version:
            patch = {**patch, "metadata": {**(patch.get("metadata") or {}), "resourceVersion": resource_version}}
        return await self._call("patch", f"{plural} {ns}/{name}", lambda: _copy_or_none(self.patch(plural, ns, name, patch)),
                                target=(plural, ns, name))

    async def create_object(self, plural: str, ns: str, body: dict) -> dict | None:
        body = {**body, "metadata": {**body.get("metadata", {}), "namespace": ns}}
        return await self._call("create", f"{plural} {ns}/{body['metadata'].get('name')}",
                                lambda: _copy_or_none(self.create(plural, body)))

    async def delete_object(self, plural: str, ns: str, name: str) -> None:
        await self._call("delete", f"{plural} {ns}/{name}", lambda: self.delete(plural, ns, name))

    async def ensure_task_writer_account(self, ns: str, name: str, owner: dict, rules: list[dict]) -> None:
        meta = {"name": name, "namespace": ns, "ownerReferences": [owner]}
        for plural, extra in (("serviceaccounts", {}), ("roles", {"rules": rules}),
                              ("rolebindings", {"roleRef": {"kind": "Role", "name": name},
                                                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]})):
            await self._call("create", f"{plural} {ns}/{name}", lambda p=plural, e=extra: self.create(p, {"metadata": dict(meta), **e}))

    # --- Kube: scale targets and Machines (this fake serves no Cluster API) -------------
    async def resource_plural(self, api_version: str, kind: str) -> str | None:
        return await self._call("get", f"discovery {api_version}", lambda: None)

    async def get_scale(self, group: str, version: str, plural: str, ns: str, name: str) -> dict | None:
        return await self._call("get", f"{plural}/scale {ns}/{name}", lambda: None)

    async def patch_scale(self, group: str, version: str, plural: str, ns: str, name: str, replicas: int, *,
                          resource_version: str | None = None) -> dict | None:
        return await self._call("patch", f"{plural}/scale {ns}/{name}", lambda: None)

    async def list_machines(self, ns: str, label_selector: str) -> list[dict]:
        return await self._call("list", f"machines {ns}", lambda: [])

    async def patch_machine(self, ns: str, name: str, patch: dict) -> dict | None:
        return await self._call("patch", f"machines {ns}/{name}", lambda: None)


def _copy_or_none(body: dict | None) -> dict | None:
    return _copy(body) if body is not None else None


# ----------------------------------------------------------------------------- kubelet

@dataclass
class Container:
    """A pod's process on a node: what actually runs, whatever the API server says."""
    uid: str
    ns: str
    name: str
    node: str
    role: str
    task_uid: str
    attempt: int
    instance: int
    started: float
    ends: float | None            # natural end; None = runs until stopped
    exit_code: int
    deadline: float | None = None
    state: str = "running"        # running | exited | killed | lost
    ended: float | None = None
    reported: bool = False        # the terminal status was written
    how: str = ""                 # exit | deadline | grace | orphan | node-gone

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass
class NodeSim:
    name: str
    uid: str
    ip: str
    partitioned: bool = False
    dead: bool = False            # the machine is gone: nothing runs, nothing reports, for good
    heartbeat: float = 0.0


def _instance(pod_name: str) -> int:
    tail = pod_name.rsplit("-s", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else 0


class FakeKubelet:
    """Every fake node's kubelet, plus the node lifecycle controller, the pod GC and the
    garbage collector: what a cluster does to pods and nodes on its own between passes."""

    def __init__(self, server: FakeApiServer, *, node_monitor_grace: float = NODE_MONITOR_GRACE) -> None:
        self.server = server
        self.clock = server.clock
        self.node_monitor_grace = node_monitor_grace
        self.nodes: dict[str, NodeSim] = {}
        self.containers: dict[str, Container] = {}       # pod uid -> container
        self._ips = itertools.count(1)
        self.outcomes: list[Container] = []             # task containers that ended, in order

    # --- the test's hands on the nodes ------------------------------------------------
    def partition(self, node: str) -> None:
        """The node stops talking to the API server; its containers keep running."""
        self.nodes[node].partitioned = True

    def kill(self, node: str) -> None:
        """The machine dies: its containers end with it; its Node object stays (NotReady after
        the monitor grace) until someone deletes it."""
        sim = self.nodes[node]
        sim.partitioned = sim.dead = True
        for c in self.containers.values():
            if c.node == node and c.running:
                self._stop(c, "lost", "node-dead", 137)

    def heal(self, node: str) -> None:
        """The node reconnects: its kubelet reports and syncs its pods at once."""
        sim = self.nodes[node]
        assert not sim.dead, f"node {node} is dead"
        sim.partitioned = False
        now = self.clock.time()
        self._run_containers(node, now)
        sim.heartbeat = now
        self._report_node(node, sim)
        self._sync_pods(sim, [p for p in self.server.items("pods") if (p.get("spec") or {}).get("nodeName") == node], now)

    # --- one step of the cluster ---------------------------------------------------------
    def step(self) -> None:
        now = self.clock.time()
        s = self.server
        # nodes: register new ones, forget deleted ones (their containers are gone with them)
        for n in s.items("nodes"):
            name, uid = n["metadata"]["name"], n["metadata"]["uid"]
            sim = self.nodes.get(name)
            if sim is None or sim.uid != uid:
                if sim is not None:
                    self._node_gone(name)
                self.nodes[name] = NodeSim(name, uid, f"10.0.0.{len(self.nodes) + 1}", heartbeat=now)
        for name in [n for n in self.nodes if s.get("nodes", None, n) is None]:
            self._node_gone(name)
        by_node: dict[str, list[dict]] = defaultdict(list)
        for p in s.items("pods"):
            by_node[(p.get("spec") or {}).get("nodeName") or ""].append(p)
        for name, sim in self.nodes.items():
            self._run_containers(name, now)
            if sim.partitioned:
                continue
            sim.heartbeat = now
            self._report_node(name, sim)
            self._sync_pods(sim, by_node.get(name, []), now)
        self._node_lifecycle(now)
        self._pod_gc()
        self._garbage_collect()

    def _node_gone(self, name: str) -> None:
        self.nodes.pop(name, None)
        for c in self.containers.values():
            if c.node == name and c.running:
                self._stop(c, "lost", "node-gone", 137)

    def _stop(self, c: Container, state: str, how: str, code: int | None = None, at: float | None = None) -> None:
        c.state, c.how, c.ended = state, how, at if at is not None else self.clock.time()
        if code is not None:
            c.exit_code = code
        if c.role == "task":
            self.outcomes.append(c)
        self.server.mutations += 1
        for obs in self.server.observers:
            obs("containers", "STOPPED", None, None)

    def _run_containers(self, node: str, now: float) -> None:
        for c in self.containers.values():
            if c.node != node or not c.running:
                continue
            if c.deadline is not None and now >= c.deadline and (c.ends is None or c.deadline < c.ends):
                self._stop(c, "killed", "deadline", 137, at=c.deadline)
            elif c.ends is not None and now >= c.ends:
                self._stop(c, "exited", "exit", at=c.ends)

    def _report_node(self, name: str, sim: NodeSim) -> None:
        node = self.server.get("nodes", None, name)
        conds = {c.get("type"): c for c in (node.get("status") or {}).get("conditions") or []}
        if (conds.get("Ready") or {}).get("status") == "True":
            return
        ts = rfc3339(self.clock.time())
        self.server.patch("nodes", None, name, {"status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake kubelet",
                            "lastHeartbeatTime": ts, "lastTransitionTime": ts}],
            "addresses": [{"type": "InternalIP", "address": sim.ip}, {"type": "Hostname", "address": name}]}},
            subresource="status")

    def _sync_pods(self, sim: NodeSim, pods: list[dict], now: float) -> None:
        s = self.server
        seen = set()
        for p in pods:
            meta = p["metadata"]
            uid = meta["uid"]
            seen.add(uid)
            c = self.containers.get(uid)
            deleting = parse_rfc3339(meta.get("deletionTimestamp"))
            phase = (p.get("status") or {}).get("phase")
            if c is None:
                if deleting is not None or phase in ("Succeeded", "Failed"):
                    if deleting is not None:
                        s.delete("pods", meta["namespace"], meta["name"], grace=0)   # never started: confirm at once
                    continue
                wrapper = podcore.wrapper_configmap_of(p)
                if wrapper and self.server.get("configmaps", meta["namespace"], wrapper) is None:
                    continue   # its volume cannot be mounted: it waits, as the kubelet retries it
                c = self._start(p, sim, now)
            if c.running and deleting is not None and now >= deleting:
                self._stop(c, "killed", "grace", 137, at=now)
            if not c.running and not c.reported:
                self._write_terminal(p, c, sim)
                c.reported = True
            if deleting is not None and not c.running:
                s.delete("pods", meta["namespace"], meta["name"], grace=0)   # the kubelet's confirmation
        for c in self.containers.values():   # containers whose pod is gone (force-deleted): killed now
            if c.node == sim.name and c.running and c.uid not in seen:
                self._stop(c, "killed", "orphan", 137)

    def _start(self, p: dict, sim: NodeSim, now: float) -> Container:
        meta, spec = p["metadata"], p.get("spec") or {}
        ann, labels = meta.get("annotations") or {}, meta.get("labels") or {}
        main = (spec.get("containers") or [{}])[0]
        env = {e.get("name"): e.get("value") for e in main.get("env") or []}
        waits = env.get("PODBATCH_THEN_WAIT") == "1"
        forever = waits or (spec.get("restartPolicy", "Always") == "Always" and SIM + "duration" not in ann)
        duration = float(ann.get(SIM + "duration", 0) or 0)
        code = int(ann.get(f"{SIM}exit-code.{main.get('name')}", ann.get(SIM + "exit-code", 0)) or 0)
        ads = spec.get("activeDeadlineSeconds")
        c = Container(uid=meta["uid"], ns=meta["namespace"], name=meta["name"], node=sim.name,
                      role=labels.get(ROLE, ""), task_uid=task_key(labels), attempt=int(labels.get(ATTEMPT, 0) or 0),
                      instance=_instance(meta["name"]), started=now, ends=None if forever else now + duration,
                      exit_code=code, deadline=now + ads if ads else None)
        self.containers[c.uid] = c
        self.server.mutations += 1
        if c.ends is not None and c.ends <= now:
            self._stop(c, "exited", "exit", at=now)
            return c   # an instant pod: one terminal status write, as nodesim
        ip = f"10.1.{next(self._ips)}.1"
        self.server.patch("pods", meta["namespace"], meta["name"], {"status": {
            "phase": "Running", "hostIP": sim.ip, "podIP": ip, "startTime": rfc3339(now),
            "containerStatuses": [{"name": x.get("name"), "ready": True, "started": True, "restartCount": 0,
                                   "state": {"running": {"startedAt": rfc3339(now)}}} for x in spec.get("containers") or []]}},
            subresource="status")
        return c

    def _write_terminal(self, p: dict, c: Container, sim: NodeSim) -> None:
        meta, spec = p["metadata"], p.get("spec") or {}
        ok = c.how == "exit" and c.exit_code == 0
        term = {"exitCode": c.exit_code, "reason": "Completed" if ok else "Error",
                "startedAt": rfc3339(c.started), "finishedAt": rfc3339(c.ended or self.clock.time())}
        status = {"phase": "Succeeded" if ok else "Failed", "hostIP": sim.ip, "startTime": rfc3339(c.started),
                  "containerStatuses": [{"name": x.get("name"), "ready": False, "started": False, "restartCount": 0,
                                         "state": {"terminated": term}} for x in spec.get("containers") or []]}
        if c.how == "deadline":
            status.update(reason="DeadlineExceeded", message="Pod was active on the node longer than the specified deadline")
        self.server.patch("pods", meta["namespace"], meta["name"], {"status": status}, subresource="status")

    # --- kube-controller-manager --------------------------------------------------------
    def _node_lifecycle(self, now: float) -> None:
        """A node that has not reported for node-monitor-grace-period becomes Ready=Unknown."""
        for name, sim in self.nodes.items():
            if not sim.partitioned or now - sim.heartbeat < self.node_monitor_grace:
                continue
            node = self.server.get("nodes", None, name)
            ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
            if ready.get("status") != "Unknown":
                ts = rfc3339(now)
                self.server.patch("nodes", None, name, {"status": {"conditions": [
                    {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                     "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": rfc3339(sim.heartbeat),
                     "lastTransitionTime": ts}]}}, subresource="status")

    def _pod_gc(self) -> None:
        """Pods bound to a node that no longer exists are deleted (force)."""
        for p in self.server.items("pods"):
            node = (p.get("spec") or {}).get("nodeName")
            if node and self.server.get("nodes", None, node) is None:
                self.server.delete("pods", p["metadata"]["namespace"], p["metadata"]["name"], grace=0)

    def _garbage_collect(self) -> None:
        """Background cascading deletion: an object all of whose owners are gone is deleted."""
        s = self.server
        uids = {(o["metadata"].get("namespace"), o["metadata"]["uid"]) for objs in s.objects.values() for o in objs.values()}
        for plural in list(s.objects):
            for o in list(s.objects[plural].values()):
                refs = o["metadata"].get("ownerReferences") or []
                if refs and not o["metadata"].get("deletionTimestamp") and \
                        all((o["metadata"].get("namespace"), r.get("uid")) not in uids for r in refs):
                    s.delete(plural, o["metadata"].get("namespace"), o["metadata"]["name"])

    # --- what runs ----------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """The next fake time at which something happens on its own."""
        now, ts = self.clock.time(), []
        for c in self.containers.values():
            if c.running:
                ts += [t for t in (c.ends, c.deadline) if t is not None]
        for p in self.server.items("pods"):
            d = parse_rfc3339(p["metadata"].get("deletionTimestamp"))
            if d is not None:
                ts.append(d)
        for sim in self.nodes.values():
            if sim.partitioned:
                ts.append(sim.heartbeat + self.node_monitor_grace)
        ts = [t for t in ts if t > now]
        return min(ts) if ts else None


# ----------------------------------------------------------------------------- invariants

@dataclass
class Violation:
    rule: str
    task: str
    detail: str
    at: float
    write: int

    def __str__(self) -> str:
        return f"[{self.rule}] task {self.task} at t+{self.at:.0f}s after write #{self.write}: {self.detail}"


class Invariants:
    """Checked after every change of the cluster (engine write, kubelet, controllers):

    one-live-pod      at most one live pod per task instance (live: not Succeeded/Failed,
                      whether or not it is being deleted, or its container still runs)
    older-attempt     no pod of attempt n+1 exists while a pod of attempt <= n can still run
    status-first      no pod of an attempt the task's status has not reached (a new Task,
                      with no status yet, is at attempt 1: its pod may record its binding)
    attempt-reused    a pod name (an attempt) is created at most once
    succeeded-twice   a task's work succeeds at most once
    completed-twice   a task's status reaches `completed` at most once
    """

    def __init__(self, server: FakeApiServer, kubelet: FakeKubelet) -> None:
        self.server, self.kubelet = server, kubelet
        self.violations: list[Violation] = []
        self.created: Counter = Counter()                 # (ns, pod name, task uid) -> creates
        self.completions: Counter = Counter()             # task uid -> times it became completed
        self.task_names: dict[str, str] = {}              # task uid -> ns/name
        self._seen: set[tuple[str, str]] = set()
        server.observers.append(self.observe)

    def _flag(self, rule: str, task_uid: str, detail: str) -> None:
        base, _, index = task_uid.partition("#")
        name = self.task_names.get(base, base) + (f"-{index}" if index else "")
        if (rule, name) in self._seen:
            return   # the first occurrence per task and rule tells the story
        self._seen.add((rule, name))
        self.violations.append(Violation(rule, name, detail, self.server.clock.time() - FakeClock.EPOCH, self.server.writes))

    def observe(self, plural: str, etype: str, old: dict | None, new: dict | None) -> None:
        if plural == "taskcollections" and new is not None:
            self.task_names[new["metadata"]["uid"]] = f"{new['metadata']['namespace']}/{new['metadata']['name']}"
        if plural == "tasks" and new is not None:
            self.task_names[new["metadata"]["uid"]] = f"{new['metadata']['namespace']}/{new['metadata']['name']}"
            was = ((old or {}).get("status") or {}).get("state")
            st = new.get("status") or {}
            if st.get("state") == "completed" and was != "completed":
                uid = new["metadata"]["uid"]
                self.completions[uid] += 1
                run = (uid, st.get("handledReactivateRequestId"))   # a reactivated task may complete again
                self.completions[run] += 1
                if self.completions[run] > 1:
                    self._flag("completed-twice", uid, "its status became completed a second time")
        if plural == "pods" and etype == "ADDED":
            labels = new["metadata"].get("labels") or {}
            if labels.get(ROLE) == "task":
                k = (new["metadata"]["namespace"], new["metadata"]["name"], task_key(labels))
                self.created[k] += 1
                if self.created[k] > 1:
                    self._flag("attempt-reused", k[2], f"pod {k[1]} was created again: that attempt runs a second time")
        self.check()

    def live(self) -> dict[str, list[tuple[int, int, str, str]]]:
        """Per task uid: (attempt, instance, pod name, why live) of every pod that can still run."""
        out: dict[str, list] = defaultdict(list)
        kube = self.kubelet
        for p in self.server.items("pods"):
            labels = p["metadata"].get("labels") or {}
            if labels.get(ROLE) != "task":
                continue
            c = kube.containers.get(p["metadata"]["uid"])
            node = (p.get("spec") or {}).get("nodeName")
            if c is not None:
                if not c.running:
                    continue
                why = "running" + (" (deleting)" if p["metadata"].get("deletionTimestamp") else "") + \
                      (f" on partitioned {c.node}" if kube.nodes.get(c.node) and kube.nodes[c.node].partitioned else f" on {c.node}")
            elif (p.get("status") or {}).get("phase") in ("Succeeded", "Failed") or \
                    (node and self.server.get("nodes", None, node) is None) or (kube.nodes.get(node) and kube.nodes[node].dead):
                continue
            else:
                why = f"not started yet on {node}"
            out[task_key(labels)].append((int(labels.get(ATTEMPT, 0) or 0), _instance(p["metadata"]["name"]),
                                                  p["metadata"]["name"], why))
        api_uids = {p["metadata"]["uid"] for p in self.server.items("pods")}
        for c in kube.containers.values():
            if c.role == "task" and c.running and c.uid not in api_uids:
                out[c.task_uid].append((c.attempt, c.instance, c.name, f"its pod was deleted but its container still runs on {c.node}"
                                        + (" (partitioned)" if kube.nodes.get(c.node) and kube.nodes[c.node].partitioned else "")))
        return out

    def check(self) -> None:
        live = self.live()
        existing: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for p in self.server.items("pods"):
            labels = p["metadata"].get("labels") or {}
            if labels.get(ROLE) == "task":
                existing[task_key(labels)].append((int(labels.get(ATTEMPT, 0) or 0), p["metadata"]["name"]))
        tasks = {t["metadata"]["uid"]: t for t in self.server.items("tasks")}
        for uid, pods in live.items():
            by_instance = defaultdict(list)
            for a, i, name, why in pods:
                by_instance[i].append(f"{name} ({why})")
            for i, names in by_instance.items():
                if len(names) > 1:
                    self._flag("one-live-pod", uid, f"{len(names)} live pods of instance {i}: " + "; ".join(names))
            oldest = min(pods)
            newer = [(a, n) for a, n in existing.get(uid, []) if a > oldest[0]]
            if newer:
                self._flag("older-attempt", uid, f"pod {newer[0][1]} of attempt {newer[0][0]} exists while {oldest[2]} "
                                                 f"of attempt {oldest[0]} can still run: {oldest[3]}")
        for uid, pods in existing.items():
            t = tasks.get(uid)
            if t is None:
                continue
            at = int((t.get("status") or {}).get("attempt") or 1)
            ahead = [(a, n) for a, n in pods if a > at]
            if ahead:
                self._flag("status-first", uid, f"pod {ahead[0][1]} exists but the task's status is at attempt {at}")
        wins = Counter(c.task_uid for c in self.kubelet.outcomes if c.how == "exit" and c.exit_code == 0 and c.instance == 0)
        for uid, n in wins.items():
            if n > 1:
                names = [c.name for c in self.kubelet.outcomes if c.task_uid == uid and c.how == "exit" and c.exit_code == 0]
                self._flag("succeeded-twice", uid, f"its work succeeded {n} times: pods {', '.join(names)}")


# ----------------------------------------------------------------------------- builders

def pool_body(name: str, *, nodes: int = 2, slots: int = 2, ns: str = "default", **spec) -> dict:
    return {"apiVersion": API_VERSION, "kind": "Pool", "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeGroup": {"provider": "kwok", "kwok": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"}}},
                     "image": "busybox", "targetDedicatedNodes": nodes, "taskSlotsPerNode": slots, **spec}}


def job_body(name: str, pool: str, *, ns: str = "default", **spec) -> dict:
    return {"apiVersion": API_VERSION, "kind": "Job", "metadata": {"name": name, "namespace": ns},
            "spec": {"poolInfo": {"poolId": pool}, **spec}}


def task_body(name: str, job: str, *, duration: float = 2, exit_code: int = 0, ns: str = "default", **spec) -> dict:
    return {"apiVersion": API_VERSION, "kind": "Task",
            "metadata": {"name": name, "namespace": ns,
                         "annotations": {SIM + "duration": str(duration), SIM + "exit-code": str(exit_code)}},
            "spec": {"jobName": job, "commandLine": "/bin/sh -c true", **spec}}


def collection_body(name: str, job: str, n: int, *, duration: float = 2, exit_code: int = 0, ns: str = "default",
                    **task) -> dict:
    """A TaskCollection: a sweep of n tasks (indexes 0..n-1), every task's pods with these
    node-simulator annotations."""
    return {"apiVersion": API_VERSION, "kind": "TaskCollection",
            "metadata": {"name": name, "namespace": ns,
                         "annotations": {SIM + "duration": str(duration), SIM + "exit-code": str(exit_code)}},
            "spec": {"jobName": job, "parametricSweep": {"parameterSets": [{"start": 0, "end": n - 1}],
                                                         "repeatTask": {"commandLine": "/bin/sh -c true", **task}}}}


# ----------------------------------------------------------------------------- the driver

class Stuck(AssertionError):
    pass


@dataclass
class Expect:
    state: str = "completed"
    result: str | None = "success"          # success | failure | None (not completed)
    retries: int | set = 0
    requeues: int | set = 0


class Harness:
    """The real engine over the fake cluster, restarted from the server's state on Crash.

    A scenario is an async function of a Harness: it applies objects (`apply`, `patch`,
    `delete` as a user would), waits with `run_until(predicate)` / `run_for(seconds)`,
    acts on nodes (`partition`, `heal`), and states what it expects of each task
    (`expect`). `run_scenario` then settles the cluster and checks the end state."""

    def __init__(self, *, seed: int = 0, crash_at: int | None = None, crash_applied: bool = True,
                 fault_rate: float = 0.0, chaos: bool = False, watch_mode: str = "soon", dt: float = 1.0,
                 settings=None) -> None:
        self.clock = FakeClock()
        self.server = FakeApiServer(self.clock, faults=Faults(random.Random(seed + 1), fault_rate) if fault_rate else None)
        self.kubelet = FakeKubelet(self.server)
        self.invariants = Invariants(self.server, self.kubelet)
        self.chaos = WatchChaos(random.Random(seed + 2)) if chaos else None
        self.watch_mode = watch_mode
        self.dt = dt
        self.settings = settings
        self.crash_at, self.crash_applied = crash_at, crash_applied
        self.restarts = 0
        self.passes = 0
        self.expected: dict[str, Expect] = {}
        self.store = self.engine = self.watch = None
        self._deadline: float | None = None     # run_for's end: the fast-forward stops there
        if crash_at is not None:
            self.server.crash_after(crash_at, applied=crash_applied)

    # --- the engine's life ---------------------------------------------------------------
    async def start(self) -> None:
        """A new operator process: a fresh Store synced from the server, a fresh Engine."""
        from podbatch.config import Settings
        from podbatch.controllers.engine import Engine
        from podbatch.controllers.store import Store
        if self.watch is not None:
            self.watch.close()
        self.store = Store()
        self.watch = self.server.watch(self.store, mode=self.watch_mode, chaos=self.chaos)
        for attempt in range(50):
            try:
                await self._full_sync()
                break
            except ApiException:
                self.clock.advance(1.0)
        else:
            raise Stuck("the store could not be synced (50 list failures)")
        self.engine = Engine(self.store, self.server, self.settings or Settings())

    async def _full_sync(self) -> None:
        try:
            from podbatch.controllers import sync
        except ImportError:
            sync = None
        if sync is not None and hasattr(sync, "full_sync"):
            await sync.full_sync(self.store, self.server)
            return
        for plural in WATCHED:   # before controllers/sync.py: what kopf's initial lists did
            items, _ = await self.server.list_kind(plural)
            for body in items:
                getattr(self.store, PUT[plural])(body)
        self.store.synced = True

    async def _relist(self, plural: str) -> None:
        try:
            from podbatch.controllers import sync
        except ImportError:
            sync = None
        if sync is not None and hasattr(sync, "relist"):
            await sync.relist(self.store, self.server, plural)
            return
        items, _ = await self.server.list_kind(plural)
        listed = set()
        table = {"pools": self.store.pools, "computenodes": self.store.cnodes, "jobs": self.store.jobs,
                 "tasks": self.store.tasks, "jobschedules": self.store.jobschedules, "pods": self.store.pods,
                 "nodes": self.store.knodes}[plural]
        put = getattr(self.store, PUT[plural])
        for body in items:
            m = body["metadata"]
            listed.add(obj_key(m.get("namespace"), m["name"]))
            put(body)
        for k in [k for k in table if k not in listed]:
            old = table[k]
            if plural == "pods":
                ns, name = k.split("/", 1)
                put({"metadata": {"namespace": ns, "name": name, "labels": old.labels}}, deleted=True)
            else:
                put(old, deleted=True)

    async def _drain(self) -> None:
        """Let every other coroutine of this loop (gathered writes, events) run to its end;
        the fake answers without waiting, so a few hundred turns of the loop finish them.
        What is left then (a task that would wait for ever) is cancelled, as a dead
        process's would be."""
        me = asyncio.current_task()
        for _ in range(300):
            if not any(t is not me and not t.done() and t not in self.server.held for t in asyncio.all_tasks()):
                return
            await asyncio.sleep(0)
        others = [t for t in asyncio.all_tasks() if t is not me and not t.done() and t not in self.server.held]
        for t in others:
            t.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def engine_pass(self) -> None:
        if self.engine is None:
            await self.start()
        for _ in range(3):
            await asyncio.sleep(0)     # events of the cluster's step arrive first
        while True:
            self.passes += 1
            self.store.changed.clear()   # as Engine.run: set again by whatever wants another pass soon
            try:
                resync = getattr(self.engine, "resync_if_needed", None)
                if resync is not None:    # Engine.run's pass: relists (and what follows them), then reconcile
                    await resync()
                await self.engine.reconcile()
                await self._drain()
                if self.server.crashed:    # the engine swallowed the Crash somewhere: it is dead all the same
                    raise Crash(self.server.crash_note)
                return
            except Crash:
                await self._drain()
                self.server.recover()
                self.restarts += 1
                await self.start()     # and the new process makes its first pass at once

    def cluster_step(self, dt: float) -> None:
        self.clock.advance(dt)
        self.kubelet.step()
        if self.watch is not None:
            self.watch.step()

    async def step(self) -> None:
        """One engine pass, then the cluster moves on (fast-forward when all is quiet)."""
        before = self.server.mutations
        await self.engine_pass()
        if self.watch is not None and self.watch.healed:
            healed, self.watch.healed = sorted(self.watch.healed), set()
            for plural in healed:
                if hasattr(self.store, "relisted"):
                    self.store.relisted.add(plural)     # as kopf's relist after a 410: the engine relists it
                    continue
                try:
                    await self._relist(plural)
                except ApiException:
                    self.watch.healed.add(plural)
        dt = self.dt
        if self.server.mutations == before and not self.store.changed.is_set() \
                and not (self.watch and any(self.watch.held.values())):
            # nothing moved and the engine asked for no early pass: on to the next timer
            nxt = self.kubelet.next_timer()
            dt = max(dt, min(nxt - self.clock.time(), 30.0) if nxt is not None else 30.0)
            backoff = getattr(getattr(self.engine, "ex", None), "backoff", None)
            assumed = getattr(self.store, "assumed_expire_in", None)   # as Engine.run: it wakes for both
            for retry_in in (backoff.next_in() if backoff is not None else None, assumed() if assumed else None):
                if retry_in is not None:
                    dt = max(self.dt, min(dt, retry_in + 0.01))
        if self._deadline is not None and self._deadline > self.clock.time():
            dt = min(dt, self._deadline - self.clock.time())   # run_for never overshoots
        self.cluster_step(dt)

    async def run_until(self, pred: Callable[[], bool], *, within: float = 600.0, what: str = "") -> None:
        """Run passes and cluster steps until `pred()` holds (fake seconds, at most `within`)."""
        give_up = self.clock.time() + within
        while True:
            if pred():
                return
            if self.clock.time() > give_up:
                raise Stuck(f"not reached within {within:.0f} fake seconds: {what or pred}\n{self.describe()}")
            await self.step()

    async def run_for(self, seconds: float) -> None:
        end = self.clock.time() + seconds
        self._deadline = end
        try:
            await self.run_until(lambda: self.clock.time() >= end, within=seconds + 1)
        finally:
            self._deadline = None

    async def settle(self, within: float = 300.0) -> None:
        """Until no task pod can run any more and a pass and a step change nothing."""
        give_up = self.clock.time() + within
        quiet = 0
        while quiet < 2:
            if self.clock.time() > give_up:
                raise Stuck(f"the cluster did not settle within {within:.0f} fake seconds\n{self.describe()}")
            before = self.server.mutations
            await self.step()
            busy = any(self.invariants.live().values()) or any(self.watch.held.values()) or self.watch.gaps \
                or self.watch.healed or getattr(self.store, "relisted", None)
            quiet = 0 if (self.server.mutations != before or busy) else quiet + 1
        if self.watch.gaps or self.watch.healed:
            raise Stuck("watch gaps still open after settling")

    # --- a user's hands -------------------------------------------------------------------
    def apply(self, body: dict) -> dict:
        got = self.server.create(PLURAL[body["kind"]], body)
        assert got is not None, f"{body['kind']} {body['metadata']['name']} exists already"
        return got

    def patch(self, kind: str, name: str, patch: dict, ns: str = "default") -> dict | None:
        return self.server.patch(PLURAL.get(kind, kind), ns, name, patch)

    def delete(self, kind: str, name: str, ns: str = "default") -> None:
        self.server.delete(PLURAL.get(kind, kind), ns, name)

    def cli(self, *argv: str, ns: str = "default") -> None:
        """A `kubectl podbatch` node/job/task operation: the CLI's own spec patch."""
        from podbatch.cli.main import spec_patch
        ids = itertools.count(1)
        kind, name, spec = spec_patch(_parse_cli(argv), lambda: f"req-{self.clock.time():.0f}-{next(ids)}")
        assert self.patch(kind, name, {"spec": spec}, ns) is not None, f"{kind} {name} not found"

    def partition(self, node: str) -> None:
        self.kubelet.partition(node)

    def heal(self, node: str) -> None:
        self.kubelet.heal(node)

    def kill_node(self, node: str) -> None:
        self.kubelet.kill(node)

    # --- what is there -----------------------------------------------------------------
    def get(self, kind: str, name: str, ns: str = "default") -> dict | None:
        return self.server.get(PLURAL.get(kind, kind), ns, name)

    def status(self, kind: str, name: str, ns: str = "default") -> dict:
        return ((self.get(kind, name, ns) or {}).get("status")) or {}

    def tasks(self, job: str, ns: str = "default") -> list[dict]:
        return sorted((t for t in self.server.items("tasks") if t["metadata"]["namespace"] == ns
                       and t["spec"].get("jobName") == job), key=lambda t: t["metadata"]["name"])

    def task_pods(self, task: str | None = None, ns: str = "default") -> list[dict]:
        return [p for p in self.server.items("pods") if (p["metadata"].get("labels") or {}).get(ROLE) == "task"
                and p["metadata"]["namespace"] == ns
                and (task is None or (p["metadata"].get("annotations") or {}).get(f"{GROUP}/task-name") == task)]

    def running_pods(self, task: str | None = None) -> list[dict]:
        """Task pods whose container runs now (on any node, reported or not)."""
        out = []
        for p in self.task_pods(task):
            c = self.kubelet.containers.get(p["metadata"]["uid"])
            if c is not None and c.running:
                out.append(p)
        return out

    def cnode_of(self, node_name: str) -> str:
        c = next(c for c in self.server.items("computenodes") if c["spec"]["nodeName"] == node_name)
        return c["metadata"]["name"]

    def job_state(self, job: str, state: str, ns: str = "default") -> Callable[[], bool]:
        return lambda: self.status("Job", job, ns).get("state") == state

    # --- expectations and the end state --------------------------------------------------------
    def expect(self, task: str, **kw) -> None:
        self.expected[task] = Expect(**kw)

    def final_checks(self, job: str, *, job_state: str | None = "completed", ns: str = "default") -> list[str]:
        """The end state: every expected task in its state once, exact counts, job counts."""
        errors: list[str] = []
        tasks = {t["metadata"]["name"]: t for t in self.tasks(job, ns)}
        outcomes = self.kubelet.outcomes
        for name, exp in self.expected.items():
            t = tasks.get(name)
            if t is None:
                if exp.state != "deleted":
                    errors.append(f"task {name}: missing")
                continue
            if exp.state == "deleted":
                errors.append(f"task {name}: still exists (state {(t.get('status') or {}).get('state')}), expected deleted")
                continue
            st = t.get("status") or {}
            info = st.get("executionInfo") or {}
            uid = t["metadata"]["uid"]
            state = st.get("state") or "active"
            if state != exp.state:
                errors.append(f"task {name}: state {state}, expected {exp.state}")
            if exp.state == "completed":
                if self.invariants.completions[uid] != 1:
                    errors.append(f"task {name}: became completed {self.invariants.completions[uid]} times")
                if info.get("result") != exp.result:
                    errors.append(f"task {name}: result {info.get('result')}, expected {exp.result}")
            for what, got, want in (("retryCount", info.get("retryCount", 0), exp.retries),
                                    ("requeueCount", info.get("requeueCount", 0), exp.requeues)):
                if got not in (want if isinstance(want, set) else {want}):
                    errors.append(f"task {name}: {what} {got}, expected {want}")
            attempt = int(st.get("attempt", 1) or 1)
            if state != "active" or st.get("attempt"):
                if attempt != 1 + info.get("retryCount", 0) + info.get("requeueCount", 0):
                    errors.append(f"task {name}: attempt {attempt} != 1 + retries {info.get('retryCount', 0)} "
                                  f"+ requeues {info.get('requeueCount', 0)}")
            mine = [c for c in outcomes if c.task_uid == uid and c.instance == 0]
            wins = [c.name for c in mine if c.how == "exit" and c.exit_code == 0]
            if exp.result == "success":
                if wins != [st.get("podName")]:
                    errors.append(f"task {name}: succeeded pods {wins}, expected exactly its final pod {st.get('podName')}")
            elif wins:
                errors.append(f"task {name}: result {exp.result} but pods {wins} succeeded")
            fails = [c.name for c in mine if c.how == "exit" and c.exit_code != 0]
            if exp.result == "failure" and isinstance(exp.retries, int) and info.get("failureInfo", {}).get("code") == "FailureExitCode":
                if len(fails) != exp.retries + 1:
                    errors.append(f"task {name}: {len(fails)} attempts exited non-zero ({fails}), expected {exp.retries + 1}")
        j = self.get("Job", job, ns)
        if job_state == "deleted":
            if j is not None:
                errors.append(f"job {job}: still exists")
        elif j is None:
            errors.append(f"job {job}: missing")
        else:
            js = j.get("status") or {}
            if job_state and js.get("state") != job_state:
                errors.append(f"job {job}: state {js.get('state')}, expected {job_state}")
            want = dict.fromkeys(("active", "running", "completed", "succeeded", "failed"), 0)
            for t in tasks.values():
                st = t.get("status") or {}
                k = {"preparing": "running", "running": "running", "completed": "completed"}.get(st.get("state") or "active", "active")
                want[k] += 1
                if k == "completed":
                    want["succeeded" if (st.get("executionInfo") or {}).get("result") == "success" else "failed"] += 1
            for c in self.server.items("taskcollections"):   # a collection's tasks count as the job's
                if c["metadata"]["namespace"] == ns and c["spec"].get("jobName") == job:
                    for k, v in ((c.get("status") or {}).get("taskCounts") or {}).items():
                        want[k] = want.get(k, 0) + v
            if (js.get("taskCounts") or {}) != want:
                errors.append(f"job {job}: taskCounts {js.get('taskCounts')}, tasks say {want}")
        live = self.invariants.live()
        if any(live.values()):
            errors.append(f"task pods still live at the end: {dict(live)}")
        return errors

    def collection_checks(self, name: str, n: int, *, failed: dict[int, int] | None = None,
                          requeues: dict[int, int] | None = None, ns: str = "default") -> list[str]:
        """A TaskCollection's end: every index completed once, as expected (`failed`: index ->
        retries it used before failing; the rest succeeded), with exact counts and ranges;
        each index's attempts are pods <name>-<i>-1.. created once each, a succeeded index's
        work succeeded exactly once (its last pod), a failed one's attempts all exited non-zero."""
        from podbatch.core import collections as coll
        failed, requeues = failed or {}, requeues or {}
        errors: list[str] = []
        c = self.get("TaskCollection", name, ns)
        if c is None:
            return [f"collection {name}: missing"]
        st = c.get("status") or {}
        ok = [i for i in range(n) if i not in failed]
        want = {"state": "completed", "size": n, "succeededIndexes": coll.ranges(ok) or None,
                "failedIndexes": coll.ranges(sorted(failed)) or None,
                "taskCounts": {"active": 0, "running": 0, "completed": n, "succeeded": len(ok), "failed": len(failed)}}
        for k, v in want.items():
            if st.get(k) != v:
                errors.append(f"collection {name}: {k} {st.get(k)!r}, expected {v!r}")
        if st.get("attempts"):
            errors.append(f"collection {name}: attempts left for completed tasks: {st['attempts']}")
        details = {f["index"]: f for f in st.get("failedTasks") or []}
        uid = c["metadata"]["uid"]
        pods = [p["metadata"]["name"] for p in self.server.items("pods")
                if (p["metadata"].get("labels") or {}).get(TASK_UID) == uid]
        for i in range(n):
            mine = [o for o in self.kubelet.outcomes if o.task_uid == f"{uid}#{i}" and o.instance == 0]
            wins = [o.name for o in mine if o.how == "exit" and o.exit_code == 0]
            attempts = 1 + failed.get(i, 0) + requeues.get(i, 0)
            if i in failed:
                f = details.get(i) or {}
                if (f.get("retryCount"), f.get("requeueCount", 0)) != (failed[i], requeues.get(i, 0)):
                    errors.append(f"task {name}-{i}: failed with {f}, expected retryCount {failed[i]}")
                if wins:
                    errors.append(f"task {name}-{i}: failed but pods {wins} succeeded")
            elif wins != [f"{name}-{i}-{attempts}"]:
                errors.append(f"task {name}-{i}: succeeded pods {wins}, expected exactly {name}-{i}-{attempts}")
            have = sorted(x for x in pods if x.startswith(f"{name}-{i}-"))
            if have and have[-1] != f"{name}-{i}-{attempts}":
                errors.append(f"task {name}-{i}: its last pod is {have[-1]}, expected attempt {attempts}")
        return errors

    def describe(self) -> str:
        lines = [f"t+{self.clock.time() - FakeClock.EPOCH:.0f}s, {self.server.writes} engine writes, "
                 f"{self.restarts} restarts, {self.passes} passes"]
        for t in sorted(self.server.items("tasks"), key=lambda t: t["metadata"]["name"]):
            st = t.get("status") or {}
            info = st.get("executionInfo") or {}
            lines.append(f"  task {t['metadata']['name']}: {st.get('state')} attempt {st.get('attempt')} pod {st.get('podName')} "
                         f"node {(st.get('nodeInfo') or {}).get('nodeName')} result {info.get('result')} "
                         f"retries {info.get('retryCount')} requeues {info.get('requeueCount')}")
        for p in sorted(self.server.items("pods"), key=lambda p: p["metadata"]["name"]):
            c = self.kubelet.containers.get(p["metadata"]["uid"])
            lines.append(f"  pod {p['metadata']['name']} on {p['spec'].get('nodeName')}: {(p.get('status') or {}).get('phase')}"
                         + (" deleting" if p["metadata"].get("deletionTimestamp") else "")
                         + (f" container {c.state}/{c.how}" if c else " no container"))
        for c in self.kubelet.containers.values():
            if c.running and self.server.get("pods", c.ns, c.name) is None:
                lines.append(f"  container of deleted pod {c.name} still runs on {c.node}")
        lines.append("  last writes: " + " | ".join(self.server.log[-12:]))
        return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def _parse_cli(argv: tuple[str, ...]):
    from podbatch.cli.main import parse_args
    return parse_args(list(argv))   # argparse builds the whole CLI each time: ~10 ms


# ----------------------------------------------------------------------------- running scenarios

Scenario = Callable[[Harness], Awaitable[None]]


@dataclass
class Run:
    """The outcome of one run of a scenario."""
    label: str
    writes: int
    violations: list[Violation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    restarts: int = 0
    log_tail: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.errors


def run_scenario(scenario: Scenario, *, label: str = "clean", **kw) -> Run:
    """Run a scenario to its end on a fresh fake cluster (in its own event loop) and check
    its end state. `kw` go to Harness (crash_at, crash_applied, fault_rate, chaos, seed…)."""
    h = Harness(**kw)
    quiet = logging.getLogger("podbatch")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)

    async def main() -> list[str]:
        with use_fake_time(h.clock):
            try:
                await h.start()
                checks = await scenario(h)
                await h.settle()
                return list(checks() if callable(checks) else checks or [])
            except Stuck as e:
                return [str(e)]
            finally:
                if h.watch is not None:
                    h.watch.close()
                await h._drain()
    try:
        errors = asyncio.run(main())
    finally:
        quiet.setLevel(level)
    stats = {"passes": h.passes, "fake_seconds": round(h.clock.time() - FakeClock.EPOCH),
             "faults": dict(h.server.faults.injected) if h.server.faults else {},
             "events_delivered": sum(w.delivered for w in h.server.watches),
             "events_dropped": sum(w.dropped for w in h.server.watches)}
    return Run(label, h.server.writes, list(h.invariants.violations), errors, h.restarts, h.server.log[-8:], stats)


def crash_sweep(scenario: Scenario, *, writes: int, variants: tuple[bool, ...] = (True, False),
                stop_at_failure: bool = False, **kw) -> list[Run]:
    """The scenario once per k = 1..writes and per variant: the engine dies at its k-th
    write, which reached the server (True) or not (False), and is restarted from there."""
    runs = []
    for k in range(1, writes + 1):
        for applied in variants:
            runs.append(run_scenario(scenario, label=f"crash after write {k} ({'applied' if applied else 'not applied'})",
                                     crash_at=k, crash_applied=applied, **kw))
            if stop_at_failure and not runs[-1].ok:
                return runs
    return runs


def summary(runs: list[Run], limit: int = 12) -> str:
    """The failures of many runs, one line per distinct rule and task (the first run showing it)."""
    seen: dict[str, str] = {}
    for r in runs:
        for v in r.violations:
            seen.setdefault(f"{v.rule} {v.task}", f"{r.label}: {v}")
        for e in r.errors:
            seen.setdefault(e.split(":")[0][:80], f"{r.label}: {e}")
    bad = sum(1 for r in runs if not r.ok)
    lines = [f"{bad} of {len(runs)} runs broke an invariant or ended wrong:"] + list(seen.values())[:limit]
    return "\n".join(lines)
