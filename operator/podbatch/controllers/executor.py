"""The engine's only writer. Reconcilers decide and return plans (actions.py); `apply`
carries a plan out in its order, stopping at the first failure.

What it adds to the bare client (kube.py), for every write:
- the leader gate: a replica that is not (or no longer) the leader writes nothing
  (`NotLeader`), so a deposed leader cannot act on a stale picture;
- preconditions: a status or spec patch carries the resourceVersion of the body it was
  decided on; 409 means someone wrote since, so the object is read again into the store
  and decided again on the next pass (`Conflict`) — two writers can never both bind one
  task or both lower one pool's target;
- assume, as Kueue assumes a workload: a write's response goes into the store at once,
  so the rest of the pass (and the next) acts on it before its watch echo arrives, and
  the store's resourceVersion check keeps an older echo from undoing it; a pod delete
  records the pod as terminating (or gone, on 404);
- per-object backoff (`Backoff`): an object whose reconcile failed is looked at again
  after 0.5 s, 1 s, 2 s … up to a minute, not on every pass.
"""
from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from kubernetes_asyncio.client.rest import ApiException

from podbatch import metrics
from podbatch.controllers import actions as A
from podbatch.controllers import clock
from podbatch.controllers.store import Store, key
from podbatch.core import binding
from podbatch.core import collections as collcore
from podbatch.core import pods

log = logging.getLogger("podbatch.executor")
EVENT_GROUP_SECONDS = 600.0
WRAPPER_RECHECK = 60.0   # seconds a namespace's wrapper ConfigMap is taken to exist before it is created again
PUTS = {"pools": "put_pool", "computenodes": "put_cnode", "jobs": "put_job", "tasks": "put_task",
        "jobschedules": "put_jobschedule", "taskcollections": "put_collection"}


class NotLeader(Exception):
    """This replica does not hold the leader Lease: it must not write."""


class Conflict(Exception):
    """The object changed since it was read (409): decided again on a later pass."""


class Backoff:
    """Exponential per-object retry delays (0.5 s doubling to 60 s), cleared on success."""

    def __init__(self, base: float = 0.5, cap: float = 60.0) -> None:
        self.base, self.cap = base, cap
        self._failures: dict[str, int] = {}
        self._until: dict[str, float] = {}

    def failed(self, k: str) -> float:
        n = self._failures.get(k, 0)
        self._failures[k] = n + 1
        delay = min(self.cap, self.base * 2 ** min(n, 32))   # (an object failing for days: no float overflow)
        self._until[k] = clock.monotonic() + delay
        return delay

    def succeeded(self, k: str) -> None:
        self._failures.pop(k, None)
        self._until.pop(k, None)

    def waiting(self, k: str) -> bool:
        """Whether k is still inside its backoff window."""
        until = self._until.get(k)
        return until is not None and clock.monotonic() < until

    def due(self) -> list[str]:
        """Keys whose backoff has ended (they should be looked at again now)."""
        now = clock.monotonic()
        out = [k for k, t in self._until.items() if t <= now]
        for k in out:
            del self._until[k]
        return out

    def next_in(self) -> float | None:
        if not self._until:
            return None
        return max(0.0, min(self._until.values()) - clock.monotonic())


class Executor:
    def __init__(self, kube, store: Store) -> None:
        self.kube, self.store = kube, store
        self.is_leader = lambda: True   # leader election (handlers.py) puts its own check here
        self.backoff = Backoff()
        self.writes = 0
        self._events: set[asyncio.Task] = set()
        self._posted: OrderedDict = OrderedDict()   # (uid, reason, message) -> when a warning was last posted
        self._wrappers: dict[str, float] = {}       # "ns/ConfigMap" -> until when it is taken to exist
        self._wrapper_locks: dict[str, asyncio.Lock] = {}
        self._wrappers_used: set[str] = set()       # ... and those a pod was created to read since

    @property
    def leading(self) -> bool:
        return self.is_leader()

    def _gate(self) -> None:
        if not self.is_leader():
            raise NotLeader("not the leader: this replica writes nothing")
        self.writes += 1
        metrics.API_WRITES.inc()

    def _put(self, plural: str, body: dict | None) -> None:
        if body and body.get("metadata"):
            getattr(self.store, PUTS[plural])(body)

    async def _refresh(self, plural: str, ns: str, name: str) -> None:
        try:
            fresh = await self.kube.get_object(plural, ns, name)
        except ApiException:
            return
        if fresh:
            self._put(plural, fresh)

    # --- plans ----------------------------------------------------------------------
    async def apply(self, plan: list) -> list:
        """Apply a reconciler's plan (actions.py) in its order and return each step's result.
        The first failure stops the plan and is raised: nothing after a failed step is done,
        and the object is decided again after its backoff from what the API then says.

        Two writes of one plan to one object: the plan was decided on the version read, and
        the only change since is the plan's own earlier write, so the later write is
        preconditioned on the version that write returned."""
        written: dict[tuple, str] = {}   # (plural, ns, name) -> resourceVersion our last write returned
        out = []
        for a in plan:
            try:
                out.append(await self._apply_one(a, written))
            except Exception as e:
                e.failed_action = a   # which step failed (a pod the API server refused, …)
                raise
        return out

    async def _apply_one(self, a, written: dict):
        if isinstance(a, (A.WriteStatus, A.PatchObject, A.DeleteObject)) and a.plural == "tasks" \
                and collcore.virtual(getattr(a, "body", None) or self.store.tasks.get(key(a.namespace, a.name))):
            return await self._virtual(a)
        if isinstance(a, (A.WriteStatus, A.PatchObject)):
            meta = a.body["metadata"]
            k = (a.plural, meta["namespace"], meta["name"])
            body = a.body
            if k in written:
                body = {**body, "metadata": {**meta, "resourceVersion": written[k]}}
            if isinstance(a, A.WriteStatus):
                # a task bound by its pod: its first status write records the binding too
                status = binding.with_binding(a.status, meta.get(binding.MARK)) if a.plural == "tasks" else a.status
                res = await self.patch_status(a.plural, body, status, precondition=a.precondition)
            else:
                res = await self.patch_object(a.plural, body, patch=a.patch, precondition=a.precondition)
            if res and res.get("metadata", {}).get("resourceVersion"):
                written[k] = res["metadata"]["resourceVersion"]
            return res
        if isinstance(a, A.CreatePod):
            return await self.create_pod(a.pod)
        if isinstance(a, A.DeletePod):
            return await self.delete_pod(a.namespace, a.name, grace=a.grace)
        if isinstance(a, A.PatchPod):
            return await self.patch_pod(a.namespace, a.name, a.patch)
        if isinstance(a, A.PatchNode):
            return await self.patch_node(a.name, a.patch, resource_version=a.resource_version)
        if isinstance(a, A.CreateObject):
            return await self.create_object(a.plural, a.namespace, a.body)
        if isinstance(a, A.DeleteObject):
            return await self.delete_object(a.plural, a.namespace, a.name)
        if isinstance(a, A.EnsureAccount):
            return await self.ensure_task_writer_account(a.namespace, a.name, a.owner, a.rules)
        if isinstance(a, A.GrowNodes):
            return await a.provider.grow(a.pool, a.members, a.count, self.store.knodes, a.low_priority)
        if isinstance(a, A.ReleaseNode):
            return await a.provider.release(a.pool, a.node)
        if isinstance(a, A.Event):
            return self.event(a.body, a.type, a.reason, a.message)
        if isinstance(a, A.Then):
            return a.fn()
        raise TypeError(f"not an action: {a!r}")

    async def _virtual(self, a):
        """A write to a collection's task (core/collections.py), which is no API object: its
        status is kept in the store; what a crash must not lose is written to its collection's
        status before the plan goes on (a new attempt, a failure). Other writes of it (none is
        decided today) are refused."""
        if isinstance(a, A.DeleteObject):   # a task of a deleted job: it leaves memory (its collection goes with the job)
            name, index = collcore.virtual(self.store.tasks[key(a.namespace, a.name)])
            self.store.drop_virtual(key(a.namespace, name), index)
            return None
        if not isinstance(a, A.WriteStatus):
            raise TypeError(f"a collection's task is not an object: cannot apply {a!r}")
        status = binding.with_binding(a.status, a.body["metadata"].get(binding.MARK))
        body, urgent = self.store.write_virtual(a.body, status)
        if urgent:
            await self.write_collection(key(a.body["metadata"]["namespace"], collcore.virtual(a.body)[0]))
        return body

    async def write_collection(self, ck: str, extra: dict | None = None) -> None:
        """Write a collection's status from the store (its counts, ranges, failures, attempts)."""
        cs = self.store.collections.get(ck)
        if cs is None:
            return
        patch = {**self.store.status_patch(ck), **(extra or {})}
        cs.dirty = cs.urgent = False
        try:
            await self.patch_status("taskcollections", cs.body, patch, precondition=False)
        except BaseException:
            cs.dirty = cs.urgent = True
            raise

    # --- podbatch objects ---------------------------------------------------------
    async def patch_status(self, plural: str, body: dict, status: dict, *, precondition: bool = True) -> dict | None:
        """Patch .status on the version `body` was read at (precondition) and assume the result."""
        self._gate()
        meta = body["metadata"]
        rv = meta.get("resourceVersion") if precondition else None
        try:
            res = await self.kube.patch_status(plural, meta["namespace"], meta["name"], status, resource_version=rv)
        except ApiException as e:
            if e.status == 409:
                await self._refresh(plural, meta["namespace"], meta["name"])
                raise Conflict(f"{plural} {meta['namespace']}/{meta['name']} changed since it was read") from None
            raise
        self._put(plural, res)
        return res

    async def patch_object(self, plural: str, body_or_ns, name: str | None = None, patch: dict | None = None, *,
                           precondition: bool = False) -> dict | None:
        """Patch an object's spec/metadata. Called as (plural, body, patch=…) to precondition on
        the body's resourceVersion, or (plural, ns, name, patch)."""
        self._gate()
        if isinstance(body_or_ns, dict):
            ns, name = body_or_ns["metadata"]["namespace"], body_or_ns["metadata"]["name"]
            rv = body_or_ns["metadata"].get("resourceVersion") if precondition else None
        else:
            ns, rv = body_or_ns, None
        try:
            res = await self.kube.patch_object(plural, ns, name, patch, resource_version=rv)
        except ApiException as e:
            if e.status == 409:
                await self._refresh(plural, ns, name)
                raise Conflict(f"{plural} {ns}/{name} changed since it was read") from None
            raise
        self._put(plural, res)
        return res

    async def create_object(self, plural: str, ns: str, body: dict) -> dict | None:
        self._gate()
        res = await self.kube.create_object(plural, ns, body)
        self._put(plural, res)
        return res

    async def delete_object(self, plural: str, ns: str, name: str) -> None:
        self._gate()
        await self.kube.delete_object(plural, ns, name)

    # --- pods -----------------------------------------------------------------------
    async def ensure_wrapper(self, ns: str, name: str) -> None:
        """Create the task wrapper's ConfigMap in a namespace (core/pods.py WRAPPER_CONFIGMAP)
        before a pod there reads it: once per WRAPPER_RECHECK seconds and namespace (a 409
        says it is there), not once per pod."""
        k = f"{ns}/{name}"
        if self._wrappers.get(k, 0.0) > clock.monotonic():
            self._wrappers_used.add(k)
            return
        async with self._wrapper_locks.setdefault(k, asyncio.Lock()):   # one create for a burst of pods
            if self._wrappers.get(k, 0.0) > clock.monotonic():
                return
            self._gate()
            await self.kube.create_configmap(pods.wrapper_configmap(ns))
            self._wrappers[k] = clock.monotonic() + WRAPPER_RECHECK
            self._wrappers_used.discard(k)

    async def recheck_wrappers(self) -> None:
        """Each pass: a namespace that got task pods since its wrapper ConfigMap was last
        created has it created again once WRAPPER_RECHECK seconds have passed, so one deleted
        by hand is back within that time for the pods waiting for it (the kubelet retries
        their volume) even when no other pod comes."""
        now = clock.monotonic()
        for k in [k for k in self._wrappers_used if self._wrappers.get(k, 0.0) <= now]:
            ns, _, name = k.partition("/")
            try:
                await self.ensure_wrapper(ns, name)
            except ApiException as e:
                # its namespace is gone (404) or refuses it (403, a quota): forgotten here; the
                # next task pod there creates it first, and that pod's create fails with why
                self._wrappers_used.discard(k)
                log.info("wrapper ConfigMap %s not created (%s): %s", k, e.status, (e.reason or "")[:200])

    async def create_pod(self, pod: dict) -> dict | None:
        """Create a pod (None: its name is taken, 409), after the wrapper ConfigMap it reads.
        A pod the store assumed (`Store.assume_pod`) is dropped again if the create fails."""
        try:
            if (wrapper := pods.wrapper_configmap_of(pod)) is not None:
                await self.ensure_wrapper(pod["metadata"]["namespace"], wrapper)
            self._gate()
            res = await self.kube.create_pod(pod)
        except BaseException as e:
            # an answer (4xx, 500) says it was not created; a gateway timeout (504), a timeout
            # or a lost connection may hide a create that happened: its slot stays taken
            # until the watch tells (Store.forget_assumed_pod)
            lost = not isinstance(e, (ApiException, NotLeader, asyncio.CancelledError)) \
                or (isinstance(e, ApiException) and e.status == 504)
            self.store.forget_assumed_pod(pod["metadata"]["namespace"], pod["metadata"]["name"], maybe_created=lost)
            raise
        if res:
            self.store.put_pod(res)
        return res

    async def delete_pod(self, ns: str, name: str, *, grace: int | None = None) -> None:
        """Delete a pod; the store then shows it terminating (or gone) until the watch says more."""
        self._gate()
        res = await self.kube.delete_pod(ns, name, grace=grace)
        if res is None:
            self.store.forget_pod(ns, name)          # 404: it is gone already
        elif res.get("kind") == "Pod":
            self.store.put_pod(res)                  # terminating, with its deletionTimestamp

    async def patch_pod(self, ns: str, name: str, patch: dict) -> dict | None:
        self._gate()
        res = await self.kube.patch_pod(ns, name, patch)
        if res:
            self.store.put_pod(res)
        return res

    # --- nodes ------------------------------------------------------------------------
    async def create_node(self, node: dict) -> None:
        self._gate()
        res = await self.kube.create_node(node)
        if isinstance(res, dict) and res.get("metadata"):
            self.store.put_knode(res)   # assumed: the next pass counts it before its watch echo

    async def delete_node(self, name: str) -> None:
        self._gate()
        await self.kube.delete_node(name)

    async def patch_node(self, name: str, patch: dict, resource_version: str | None = None) -> None:
        self._gate()
        if resource_version:
            patch = {**patch, "metadata": {**patch.get("metadata", {}), "resourceVersion": resource_version}}
        try:
            res = await self.kube.patch_node(name, patch)
        except ApiException as e:
            if e.status == 409 and resource_version:
                raise Conflict(f"node {name} changed since it was read") from None
            raise
        if isinstance(res, dict) and res.get("metadata"):
            self.store.put_knode(res)   # assumed: an adopted node is a member at once

    async def ensure_task_writer_account(self, ns: str, name: str, owner: dict, rules: list[dict]) -> None:
        self._gate()
        await self.kube.ensure_task_writer_account(ns, name, owner, rules)

    # --- reads the decisions need that the watch cache cannot answer ----------------------
    async def node_names(self, label_selector: str) -> list[str]:
        return await self.kube.node_names(label_selector)

    async def pod_log_tail(self, ns: str, name: str, container: str, lines: int = 20) -> str:
        return await self.kube.pod_log_tail(ns, name, container, lines)

    async def node_metrics(self) -> list[dict] | None:
        return await self.kube.node_metrics()

    # --- ProvisioningRequests (autoscaler provider) ----------------------------------------
    async def list_provisioning_requests(self, ns: str) -> list[dict] | None:
        return await self.kube.list_provisioning_requests(ns)

    async def create_provisioning_request(self, ns: str, body: dict) -> dict | None:
        self._gate()
        return await self.kube.create_provisioning_request(ns, body)

    async def create_pod_template(self, ns: str, body: dict) -> dict | None:
        self._gate()
        return await self.kube.create_pod_template(ns, body)

    # --- events ------------------------------------------------------------------------
    def event(self, body: dict, etype: str, reason: str, message: str) -> None:
        """Post a Kubernetes Event about an object in the background (best effort; a
        replica that is not the leader posts none). A warning identical to one posted about
        the same object within EVENT_GROUP_SECONDS is not posted again."""
        if not self.leading:
            return
        v = collcore.virtual(body)
        if v is not None:   # a collection's task: the Event is its collection's
            cs = self.store.collections.get(key(body["metadata"]["namespace"], v[0]))
            if cs is None:
                return
            body, message = cs.body, f"task {body['spec'].get('id')}: {message}"
        if etype == "Warning":
            k = (body["metadata"].get("uid") or object_key(body), reason, message)
            now = clock.monotonic()
            last = self._posted.get(k)
            if last is not None and now - last < EVENT_GROUP_SECONDS:
                metrics.EVENTS_GROUPED.inc()
                return
            self._posted[k] = now
            self._posted.move_to_end(k)
            while len(self._posted) > 10_000:
                self._posted.popitem(last=False)
        try:
            task = asyncio.get_running_loop().create_task(self.kube.post_event(body, etype, reason, message))
        except RuntimeError:
            return
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    # --- scale targets (clusterapi provider) ---------------------------------------------
    async def resource_plural(self, api_version: str, kind: str) -> str | None:
        return await self.kube.resource_plural(api_version, kind)

    async def get_scale(self, group: str, version: str, plural: str, ns: str, name: str) -> dict | None:
        return await self.kube.get_scale(group, version, plural, ns, name)

    async def patch_scale(self, group: str, version: str, plural: str, ns: str, name: str, replicas: int, *,
                          resource_version: str | None = None) -> dict | None:
        """Set replicas on the version read (a 409 means the target changed: decided again)."""
        self._gate()
        try:
            return await self.kube.patch_scale(group, version, plural, ns, name, replicas, resource_version=resource_version)
        except ApiException as e:
            if e.status == 409:
                raise Conflict(f"{plural} {ns}/{name} changed since its scale was read") from None
            raise

    async def list_machines(self, ns: str, label_selector: str) -> list[dict]:
        return await self.kube.list_machines(ns, label_selector)

    async def patch_machine(self, ns: str, name: str, patch: dict) -> dict | None:
        self._gate()
        return await self.kube.patch_machine(ns, name, patch)

def object_key(body: dict) -> str:
    return key(body["metadata"].get("namespace", ""), body["metadata"]["name"])
