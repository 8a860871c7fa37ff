"""The reconcile engine: one loop that turns what the store shows into API writes.

Handlers only record changes; this loop gathers them (debounced), then in one pass:
 1. pools: grow or shrink their node groups, keep one ComputeNode per member Node;
 2. compute nodes: derive each Batch node state, run the node-preparation (start task)
    pod of each boot, carry out reboot / reimage / disable / remove;
 3. tasks in flight: advance their state machine from their pod;
 4. scheduling: per pool, snapshot → core.scheduler.plan → bindings, each written as the
    task's status first and its pod second (so a crash in between only recreates the
    same pod name, never a second attempt);
 5. jobs: exact counts recomputed from the store, and the job state machine.
Per-pass cost follows what changed and what is queued, not the total ever seen.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import time
from datetime import datetime, timezone

from podbatch import API_VERSION
from podbatch.api import InvalidObject, validate_object
from podbatch.config import Settings
from podbatch.controllers.kube import Kube
from podbatch.controllers.schedules import JobSchedules
from podbatch.controllers.special import SpecialTasks
from podbatch.controllers.store import Store, key
from podbatch.core import autoscale
from podbatch.core import deps as depcore
from podbatch.core import files as rfiles
from podbatch.core import jobs as jobcore
from podbatch.core import naming, pods, scheduler
from podbatch.core.durations import seconds
from podbatch.core.nodes import NodeFacts, is_schedulable, node_state
from podbatch.core.tasks import (ACTIVE, COMPLETED, PREPARING, RUNNING, Outcome, complete, dependency_action,
                                 new_attempt, observe_attempt)
from podbatch import metrics
from podbatch.nodegroups import provider_for

log = logging.getLogger("podbatch.engine")
# A waiting task's pendingReason is written once it has waited this long: tasks bound
# within a pass or two never cost a write for it.
PENDING_REASON_AFTER = 1.5
# A task's `running` is written once its pod has run this long: a task that ends sooner
# goes from preparing to completed in one write (its previousState still says running).
RUNNING_WRITE_AFTER = 1.0
NODE_COUNTS_EVERY = 2.0
# Reasons only the user can clear: written at once, with an Event.
USER_FIXABLE = {"RequiredSlotsExceedNode", "InterNodeCommunicationDisabled", "DependencyCycle", "PoolNotFound"}


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str | None) -> float | None:
    """An RFC 3339 time of the API (…Z) as epoch seconds. fromisoformat, not strptime: the
    scheduler reads every queued task's creationTimestamp each pass (strptime took ~25% of
    a pass over 10,000 queued tasks)."""
    if not s:
        return None
    return datetime.fromisoformat(s[:19]).replace(tzinfo=timezone.utc).timestamp()


def condition(ctype: str, ok: bool, reason: str, message: str, generation: int | None = None) -> dict:
    return {"type": ctype, "status": "True" if ok else "False", "reason": reason, "message": message,
            "lastTransitionTime": now_iso(), "observedGeneration": generation}


def _pruned(v):
    """A status value as the API server keeps it after a merge patch: keys set to None are gone."""
    if isinstance(v, dict):
        return {k: _pruned(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_pruned(x) for x in v]
    return v


def changed_keys(status: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """The keys of a status patch `new` that would change the stored `status`. Compared as
    the server keeps them (None keys pruned): a plain comparison made every pass rewrite a
    job whose executionInfo held a None, and each write woke the job and replanned its pool."""
    return [k for k, v in new.items() if k not in ignore and _pruned(status.get(k)) != _pruned(v)]


def _same_conditions(old: list | None, new: list) -> bool:
    strip = lambda cs: [(c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in cs or []]
    return strip(old) == strip(new)


_EVENTS: set[asyncio.Task] = set()
_KUBE: Kube | None = None   # set by the engine; events go through its client


def _event(body: dict, etype: str, reason: str, message: str) -> None:
    """Post a Kubernetes Event about an object, in the background (best effort)."""
    if _KUBE is None:
        return
    task = asyncio.get_running_loop().create_task(_KUBE.post_event(body, etype, reason, message))
    _EVENTS.add(task)
    task.add_done_callback(_EVENTS.discard)


class Engine(SpecialTasks, JobSchedules):
    def __init__(self, store: Store, kube: Kube, settings: Settings) -> None:
        self.store, self.kube, self.settings = store, kube, settings
        global _KUBE
        _KUBE = kube
        self.invalid: dict[str, str] = {}        # object key -> last reported validation message
        self._terminate_requests: set[str] = set()   # jobs a task's exit conditions asked to terminate
        self._inflight: dict[str, set[str]] = {}
        self._last_bound: dict[str, int] = {}        # job -> binding counter value of its latest binding
        self._auto_pools_announced: set[str] = set()   # auto pools whose creation was announced by an event
        self._bindings = 0
        self._pending_since: dict[str, float] = {}   # tasks seen waiting, not yet bound
        self._running_since: dict[str, float] = {}   # tasks whose pod runs, `running` not written yet
        self._deferred: set[str] = set()             # tasks to look at again next pass
        self._samples: dict[str, dict[str, list[autoscale.Sample]]] = {}   # pool -> metric -> samples (24 h)
        self._autoscale: dict[str, dict] = {}         # pool -> last evaluation
        self._cycles: dict[str, tuple[int, list[str] | None]] = {}   # job -> (task count, cycle)
        self._node_written: dict[str, float] = {}     # compute node -> when its status was last written
        self._last_node_states: dict[str, tuple] = {}
        self._replan: set[str] = set()                # pools to plan again next pass (deferred pending reasons)
        self._cnode_pool: dict[str, str] = {}
        self._retention_due: list[tuple[float, str]] = []   # (when, task) heap
        self._retention_known: set[str] = set()

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        while not self.store.synced:
            await asyncio.sleep(0.2)
        while True:
            try:
                await asyncio.wait_for(self.store.changed.wait(), timeout=self.settings.tick_seconds)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(self.settings.debounce_seconds)
            self.store.changed.clear()
            started = time.monotonic()
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile pass failed; retrying")
                await asyncio.sleep(1)
                self.store.changed.set()
            metrics.RECONCILE_PASS_SECONDS.observe(time.monotonic() - started)

    async def reconcile(self) -> None:
        s = self.store
        changed_pools, s.dirty_pools = s.dirty_pools, set()
        dirty_tasks, s.dirty_tasks = s.dirty_tasks | self._deferred, set()
        self._deferred = set()
        dirty_jobs, s.dirty_jobs = s.dirty_jobs, set()
        for pk in list(s.pools):   # pools are few: every pass (timers, autoscale, resize)
            await self._safely(f"pool {pk}", self.reconcile_pool(s.pools[pk]))
        node_view = await self.reconcile_nodes()
        node_states = {ck: v[:2] for ck, v in node_view.items()}
        if node_states != self._last_node_states:   # a node came, went or changed state: its pool replans
            changed_pools.update(key(v[2]["metadata"]["namespace"], v[2]["spec"]["poolName"]) for ck, v in node_view.items()
                                 if self._last_node_states.get(ck) != v[:2])
            changed_pools.update(self._pools_of_cnodes(set(self._last_node_states) - set(node_states)))
            self._last_node_states = node_states
        dirty_jobs |= await self.advance_tasks(dirty_tasks, node_view)
        sched_pools = changed_pools | self._replan | {self._pool_of_job(jk) for jk in dirty_jobs | s.dirty_jobs}
        self._replan = set()
        dirty_jobs |= await self.schedule(node_view, sched_pools)
        await self.expire_retention()
        await self.reconcile_schedules()
        for jk in dirty_jobs | self._jobs_with_timers():
            if jk in s.jobs:
                await self._safely(f"job {jk}", self.reconcile_job(s.jobs[jk]), redo=(s.dirty_jobs, jk))
        self._gauge_tasks()

    # ------------------------------------------------------------------ helpers
    async def _safely(self, what: str, coro, *, redo: tuple[set, str] | None = None):
        """One object's failure (an API error, a bad spec) never stops the pass for the others;
        the object is looked at again on the next pass."""
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("%s failed, will retry: %s", what, str(e)[:500])
            if redo:
                redo[0].add(redo[1])
            self.store.changed.set()
            return None

    async def _patch_status(self, plural: str, body: dict, status: dict) -> dict | None:
        meta = body["metadata"]
        res = await self.kube.patch_status(plural, meta["namespace"], meta["name"], status)
        if res:
            put = {"pools": self.store.put_pool, "computenodes": self.store.put_cnode, "jobs": self.store.put_job,
                   "tasks": self.store.put_task, "jobschedules": self.store.put_jobschedule}[plural]
            put(res)
        return res

    def _validate(self, body: dict) -> str | None:
        """None when valid; otherwise report once as a condition + Event and return the message."""
        k = f"{body['kind']}/{body['metadata'].get('namespace')}/{body['metadata']['name']}@{body['metadata'].get('generation')}"
        if k in self.invalid:
            return self.invalid[k]
        try:
            meta = {k2: v for k2, v in body["metadata"].items() if k2 in ("name", "namespace", "labels", "annotations")}
            validate_object({"apiVersion": body["apiVersion"], "kind": body["kind"], "metadata": meta, "spec": body.get("spec")})
            return None
        except InvalidObject as e:
            msg = str(e)
        except Exception as e:  # a model bug must not stop the engine
            log.warning("validation of %s raised %r", k, e)
            return None
        self.invalid[k] = msg
        _event(body, "Warning", "InvalidSpec", msg)
        return msg

    # ------------------------------------------------------------------ 1. pools
    async def reconcile_pool(self, pool: dict) -> None:
        meta, spec = pool["metadata"], pool["spec"]
        ns, name = meta["namespace"], meta["name"]
        pk = key(ns, name)
        status = pool.get("status") or {}
        invalid = self._validate(pool)
        if invalid:
            conds = [condition("Valid", False, "InvalidSpec", f"{invalid}. Fix the Pool spec and apply it again.", meta.get("generation"))]
            if not _same_conditions(status.get("conditions"), conds):
                await self._patch_status("pools", pool, {"conditions": conds})
            return
        members = self.store.pool_members(ns, name)
        deleting = bool(meta.get("deletionTimestamp"))
        errors: list[dict] = []
        self._sample_pool(pk, members)
        auto_run, want_d, want_l = None, int(spec.get("targetDedicatedNodes", 0)), int(spec.get("targetLowPriorityNodes", 0))
        if spec.get("enableAutoScale"):
            auto_run, want_d, want_l = self._autoscale_pool(pool, members)
        target = 0 if deleting else want_d + want_l
        try:
            provider = provider_for(pool, self.kube)
        except NotImplementedError as e:
            provider, errors = None, [{"code": "ProviderNotImplemented", "message": str(e)}]
        live = [m for m in members if not m["metadata"].get("deletionTimestamp")]
        if provider and len(live) < target:
            msgs = await provider.grow({**pool, "spec": {**spec, "targetDedicatedNodes": want_d, "targetLowPriorityNodes": want_l}},
                                       live, target - len(live), self.store.knodes, want_l)
            errors += [{"code": "InsufficientNodes", "message": m} for m in msgs]
        elif provider and len(live) > target:
            await self._shrink(pool, provider, live, len(live) - target)
        # one ComputeNode per member Node
        cnodes = {c["spec"]["nodeName"]: c for c in self.store.cnodes_of(pk)}
        member_names = {m["metadata"]["name"] for m in members}
        for m in members:
            mname = m["metadata"]["name"]
            if mname not in cnodes and not m["metadata"].get("deletionTimestamp"):
                await self.kube.create_object("computenodes", ns, {
                    "apiVersion": API_VERSION, "kind": "ComputeNode",
                    "metadata": {"name": self._cnode_name(name, mname, ns), "namespace": ns,
                                 "labels": {naming.LABEL_POOL: naming.label_value(name)},
                                 "ownerReferences": [pods.owner_reference(pool)]},
                    "spec": {"poolName": name, "nodeName": mname,
                             "isDedicated": naming.LABEL_LOW_PRIORITY not in (m["metadata"].get("labels") or {})}})
        for node_name, c in cnodes.items():
            if node_name not in member_names and not c["metadata"].get("deletionTimestamp"):
                await self.kube.delete_object("computenodes", ns, c["metadata"]["name"])
        # status
        states = [((c.get("status") or {}).get("state") or "creating") for c in cnodes.values() if c["spec"]["nodeName"] in member_names]
        counts = {k: 0 for k in ("creating", "starting", "waitingForStartTask", "startTaskFailed", "idle", "running",
                                 "offline", "rebooting", "reimaging", "leavingPool", "unusable")}
        camel = {"waitingforstarttask": "waitingForStartTask", "starttaskfailed": "startTaskFailed", "leavingpool": "leavingPool"}
        for st in states:
            ck = camel.get(st, st)
            if ck in counts:
                counts[ck] += 1
        counts["total"] = len(members)
        low = sum(1 for m in members if naming.LABEL_LOW_PRIORITY in (m["metadata"].get("labels") or {}))
        alloc = "stopping" if deleting else ("steady" if len(members) == target and not any(m["metadata"].get("deletionTimestamp") for m in members) else "resizing")
        if alloc == "resizing" and status.get("allocationState") == "resizing":
            since = parse_time(status.get("allocationStateTransitionTime"))
            limit = seconds(spec.get("resizeTimeout")) or 900
            if since and time.time() - since > limit:
                errors.append({"code": "AllocationTimedOut",
                               "message": f"the pool did not reach its target of {target} nodes within resizeTimeout "
                                          f"({spec.get('resizeTimeout', 'PT15M')}); it has {len(members)}. "
                                          "podbatch keeps trying; check the node group (kwok/nodes/Cluster API)"})
        if errors:
            alloc = "steady" if len(members) >= len(live) and alloc == "resizing" and not deleting else alloc
        new = {"allocationState": alloc, "currentDedicatedNodes": len(members) - low, "currentLowPriorityNodes": low,
               "nodeCounts": counts, "resizeErrors": errors or None, "observedGeneration": meta.get("generation")}
        if auto_run:
            new["autoScaleRun"] = auto_run
        ready = counts["idle"] + counts["running"]
        conds = [condition("Valid", True, "SpecAccepted", "the pool spec is valid", meta.get("generation")),
                 condition("Ready", ready > 0, "NodesReady" if ready else "NoNodeReady",
                           f"{ready} of {len(members)} nodes can take tasks", meta.get("generation"))]
        if errors:
            conds.append(condition("ResizeError", True, errors[0]["code"], errors[0]["message"], meta.get("generation")))
        if auto_run and auto_run.get("error"):
            conds.append(condition("AutoScaleError", True, auto_run["error"]["code"], auto_run["error"]["message"], meta.get("generation")))
        if alloc != status.get("allocationState"):
            new["allocationStateTransitionTime"] = now_iso()
            if alloc == "steady" and status.get("allocationState") == "resizing":
                _event(pool, "Normal", "ResizeComplete", f"pool has {len(members)} nodes")
        changed = bool(changed_keys(status, new)) or not _same_conditions(status.get("conditions"), conds)
        if changed:
            new["conditions"] = conds
            await self._patch_status("pools", pool, new)

    # ------------------------------------------------------------------ autoscale
    SAMPLE_SECONDS = 30.0
    SAMPLE_KEEP = 24 * 3600.0

    def _sample_pool(self, pk: str, members: list[dict]) -> None:
        """Batch's service-defined metrics of a pool, one sample every 30 s, kept 24 h in memory."""
        samples = self._samples.setdefault(pk, {})
        now = time.time()
        last = samples.get("$ActiveTasks")
        if last and now - last[-1].time < self.SAMPLE_SECONDS:
            return
        ns, name = pk.split("/", 1)
        totals = dict.fromkeys(("active", "running", "succeeded", "failed"), 0)
        for j in self.store.jobs.values():
            if j["metadata"]["namespace"] == ns and jobcore.pool_id_of(j) == name:
                counts = (j.get("status") or {}).get("taskCounts") or {}
                for k in totals:
                    totals[k] += int(counts.get(k, 0))
        values = {"$ActiveTasks": totals["active"], "$RunningTasks": totals["running"],
                  "$PendingTasks": totals["active"] + totals["running"], "$SucceededTasks": totals["succeeded"],
                  "$FailedTasks": totals["failed"]}
        for metric, v in values.items():
            series = samples.setdefault(metric, [])
            series.append(autoscale.Sample(time=now, value=float(v)))
            while series and now - series[0].time > self.SAMPLE_KEEP:
                series.pop(0)

    def _autoscale_pool(self, pool: dict, members: list[dict]) -> tuple[dict | None, int, int]:
        """Evaluate the pool's formula every autoScaleEvaluationInterval (and at once when it
        changes). On an error the size stays as it was, as in Batch, and the error is shown."""
        meta, spec = pool["metadata"], pool["spec"]
        pk = body_key(pool)
        state = self._autoscale.get(pk) or {}
        interval = seconds(spec.get("autoScaleEvaluationInterval")) or 900
        now = time.time()
        fresh = state.get("generation") == meta.get("generation") and now - state.get("at", 0) < interval
        if fresh:
            return state["run"], state["dedicated"], state["low"]
        low_now = sum(1 for m in members if naming.LABEL_LOW_PRIORITY in (m["metadata"].get("labels") or {}))
        keep_d = state.get("dedicated", len(members) - low_now)
        keep_l = state.get("low", low_now)
        run: dict = {"timestamp": now_iso()}
        err_text = None
        try:
            program = autoscale.parse(spec.get("autoScaleFormula") or "")
            result = autoscale.evaluate(program, autoscale.Metrics(
                now=now, samples=self._samples.get(pk, {}),
                scalars={"$CurrentDedicatedNodes": len(members) - low_now, "$CurrentLowPriorityNodes": low_now,
                         "$TargetDedicatedNodes": keep_d, "$TargetLowPriorityNodes": keep_l,
                         "$TaskSlotsPerNode": int(spec.get("taskSlotsPerNode", 1)),
                         "$UsableNodeCount": len(members), "$PreemptedNodeCount": 0}))
            run["results"] = result.results_string()
            dedicated, low = result.target_dedicated, result.target_low_priority
        except autoscale.FormulaError as e:
            run["error"] = {"code": getattr(e, "code", "FormulaError") or "FormulaError",
                            "message": f"{e}. Fix spec.autoScaleFormula; the pool keeps its size until it evaluates."}
            dedicated, low = keep_d, keep_l
            err_text = str(e)
            if state.get("error") != err_text:
                _event(pool, "Warning", "AutoScaleFormulaError", run["error"]["message"])
        self._autoscale[pk] = {"generation": meta.get("generation"), "at": now, "run": run,
                               "dedicated": dedicated, "low": low, "error": err_text}
        return run, dedicated, low

    @staticmethod
    def _cnode_name(pool: str, node_name: str, ns: str) -> str:
        prefix = naming.kwok_node_name(ns, pool, 0)[:-1]
        suffix = node_name[len(prefix):] if node_name.startswith(prefix) else node_name
        return naming.label_value(f"{pool}-{suffix}")

    async def _shrink(self, pool: dict, provider, members: list[dict], count: int) -> None:
        """Prefer idle nodes; apply nodeDeallocationOption to tasks on the others."""
        option = pool["spec"].get("nodeDeallocationOption", "requeue")
        pk = body_key(pool)
        by_node = {c["spec"]["nodeName"]: c for c in self.store.cnodes_of(pk)}
        load = self._inflight_by_cnode()

        def busy(m: dict) -> int:
            c = by_node.get(m["metadata"]["name"])
            return len(load.get(body_key(c), ())) if c else 0
        victims = sorted(members, key=lambda m: (busy(m), m["metadata"]["name"]), reverse=False)
        victims = sorted(victims[:count], key=lambda m: m["metadata"]["name"])
        for m in victims:
            c = by_node.get(m["metadata"]["name"])
            tasks = load.get(body_key(c), set()) if c else set()
            if tasks and option in ("taskcompletion", "retaineddata"):
                if c and (c["spec"].get("schedulingState") != "disabled"):
                    await self.kube.patch_object("computenodes", c["metadata"]["namespace"], c["metadata"]["name"],
                                                 {"spec": {"schedulingState": "disabled", "nodeDisableSchedulingOption": "taskcompletion"}})
                continue   # released once its tasks end
            await self._stop_tasks(tasks, option, "the node was removed from the pool")
            await self._release(pool, provider, m, c)

    async def _release(self, pool: dict, provider, node: dict, c: dict | None) -> None:
        """Give a node back, after wiping the pool's directories on it (real nodes only:
        a simulated node has no disk)."""
        fake = (node["metadata"].get("annotations") or {}).get(naming.ANNOTATION_FAKE_NODE) == "fake"
        if c is not None and not fake and _ready(node) == "True":
            placement = self._placement(pool, c)
            phase = await self._remove_dirs(placement, [pods.node_root_dir(placement)], f"release-{self._boot_of(c)}",
                                            owner=pods.owner_reference(c))
            if phase not in ("Succeeded", "Failed"):
                return   # released on a later pass, once the directories are gone
        await provider.release(pool, node)

    async def _remove_dirs(self, placement: pods.Placement, paths: list[str], tag: str, owner: dict) -> str:
        """Run (once per tag) a pod deleting `paths` on the node; returns its phase."""
        name = naming.cleanup_pod_name(placement.compute_node, tag)
        rec = self.store.pods.get(key(placement.namespace, name))
        if rec:
            return rec.view.phase
        res = await self.kube.create_pod(pods.cleanup_pod(placement=placement, paths=paths, name=name,
                                                          tools_image=self.settings.tools_image, owner=owner))
        if res:
            self.store.put_pod(res)
        return "Pending"

    # ------------------------------------------------------------------ 2. compute nodes
    def _inflight_by_cnode(self) -> dict[str, set[str]]:
        return self.store.inflight

    async def reconcile_nodes(self) -> dict:
        """Derive every compute node's state; returns {cnode key: (state, schedulable, body)}."""
        s = self.store
        inflight = self._inflight_by_cnode()
        view: dict[str, tuple[str, bool, dict]] = {}
        for ck, c in list(s.cnodes.items()):
            self._cnode_pool[ck] = key(c["metadata"]["namespace"], c["spec"].get("poolName", ""))
            got = await self._safely(f"compute node {ck}", self.reconcile_node(ck, c, inflight.get(ck, set())))
            view[ck] = got or ((c.get("status") or {}).get("state", "unusable"), False, c)
        self._inflight = inflight
        return view

    async def reconcile_node(self, ck: str, c: dict, tasks: set[str]) -> tuple[str, bool, dict]:
        s = self.store
        ns = c["metadata"]["namespace"]
        spec, status = c["spec"], c.get("status") or {}
        pool = s.pools.get(key(ns, spec["poolName"]))
        knode = s.knodes.get(spec["nodeName"])
        if pool is None:
            return status.get("state", "unusable"), False, c
        handled = dict(status.get("handledRequests") or {})
        start = pool["spec"].get("startTask") or {}
        wait = start.get("waitForSuccess", True) if start.get("commandLine") else True
        max_retry = int(start.get("maxTaskRetryCount", 0)) if start.get("commandLine") else 0
        sched_enabled = spec.get("schedulingState", "enabled") == "enabled"
        rebooting = ""
        wipe_boot: bool | None = None   # set when this pass starts a new boot
        # --- node operations: reboot / reimage / remove / disable scheduling
        for op, opt_key in (("remove", "nodeDeallocationOption"), ("reimage", "nodeReimageOption"), ("reboot", "nodeRebootOption")):
            req = spec.get(op) or {}
            if req.get("requestId") and req["requestId"] != handled.get(op):
                option = req.get(opt_key, "requeue")
                if tasks and option in ("taskcompletion", "retaineddata"):
                    rebooting = {"reboot": "rebooting", "reimage": "reimaging", "remove": ""}[op]
                    sched_enabled = False
                    break
                await self._stop_tasks(tasks, option, f"node {op} requested")
                if op == "remove":
                    # as in Batch, removing nodes lowers the pool's target, or the node would come right back
                    field = "targetDedicatedNodes" if spec.get("isDedicated", True) else "targetLowPriorityNodes"
                    target = int(pool["spec"].get(field, 0))
                    if target > 0 and not pool["spec"].get("enableAutoScale"):
                        await self.kube.patch_object("pools", ns, spec["poolName"], {"spec": {field: target - 1}})
                    prov = provider_for(pool, self.kube)
                    if knode:
                        await self._release(pool, prov, knode, c)
                    handled[op] = req["requestId"]
                    await self._patch_status("computenodes", c, {"handledRequests": handled, "state": "leavingpool",
                                                                  "stateTransitionTime": now_iso()})
                    return "leavingpool", False, c
                for pk_ in list(s.prep_pods.get(ck, ())):
                    await self.kube.delete_pod(ns, pk_.split("/", 1)[1], grace=0)
                handled[op] = req["requestId"]
                wipe_boot = op == "reimage"   # only a reimage empties the node dirs, not a later reboot
                res = await self._patch_status("computenodes", c, {"handledRequests": handled, "startTaskInfo": None,
                                                                   "lastBootTime": now_iso()})
                c = res or c
                status = c.get("status") or {}
                _event(c, "Normal", op.capitalize(), f"node {op} carried out ({option})")
                rebooting = {"reboot": "rebooting", "reimage": "reimaging"}[op]
                tasks = set()
                break
        if not sched_enabled and spec.get("schedulingState") == "disabled" and tasks:
            option = spec.get("nodeDisableSchedulingOption", "requeue")
            if option in ("requeue", "terminate") and status.get("schedulingState") != "disabled":
                await self._stop_tasks(tasks, option, "scheduling was disabled on the node")
                tasks = set()
        # --- node preparation pod of this boot
        boot = naming.boot_token(f"{handled.get('reboot', '')}|{handled.get('reimage', '')}".strip("|") or None)
        # the boot's first prep pod is normally made in the pass that starts the boot; when the
        # node was not ready then, fall back to "a reimage was ever handled"
        wipe = wipe_boot if wipe_boot is not None else bool(handled.get("reimage"))
        preps = {}
        for pk_ in s.prep_pods.get(ck, ()):
            rec = s.pods.get(pk_)
            if rec and rec.boot == boot:
                retry = int(pk_.rsplit("-", 1)[1])
                preps[retry] = rec
        info = dict(status.get("startTaskInfo") or {})
        prep_phase, failed_for_good = "", False
        ready = _ready(knode)
        if knode and ready == "True":
            retry = max(preps) if preps else 0
            rec = preps.get(retry)
            placement = self._placement(pool, c)
            if rec is None:
                await self.kube.create_pod(pods.nodeprep_pod(pool=pool, placement=placement, boot=boot, retry=retry,
                                                             wipe=wipe, tools_image=self.settings.tools_image,
                                                             owner=pods.owner_reference(c),
                                                             resource_files=await self._expanded_resource_files(start.get("resourceFiles"))))
                prep_phase = "Pending"
            else:
                prep_phase = rec.view.phase
                if prep_phase == "Failed" and (max_retry == -1 or retry < max_retry):
                    await self.kube.create_pod(pods.nodeprep_pod(pool=pool, placement=placement, boot=boot, retry=retry + 1,
                                                                 wipe=False, tools_image=self.settings.tools_image,
                                                                 owner=pods.owner_reference(c),
                                                                 resource_files=await self._expanded_resource_files(start.get("resourceFiles"))))
                    prep_phase = "Pending"
                elif prep_phase == "Failed":
                    failed_for_good = True
                if rec.view.phase in ("Running", "Succeeded", "Failed"):
                    new_info = {"state": "completed" if rec.view.phase in ("Succeeded", "Failed") else "running",
                                "startTime": rec.view.started_at, "endTime": rec.view.finished_at,
                                "exitCode": rec.view.exit_code, "retryCount": retry,
                                "result": {"Succeeded": "success", "Failed": "failure"}.get(rec.view.phase)}
                    if failed_for_good and not info.get("stderrTail"):
                        tail = await self.kube.pod_log_tail(ns, rec.view.name, "start-task")
                        new_info["stderrTail"] = tail[-1000:]
                        new_info["failureInfo"] = {"category": "usererror", "code": "FailureExitCode",
                                                   "message": f"The start task exited with code {rec.view.exit_code}"}
                        _event(c, "Warning", "StartTaskFailed", f"start task exited {rec.view.exit_code} on {spec['nodeName']}")
                    info = {**info, **{k: v for k, v in new_info.items() if v is not None}}
        facts = NodeFacts(exists=knode is not None, ready=ready, ever_ready=bool(status.get("lastBootTime")),
                          prep_phase=prep_phase if rebooting == "" else "", prep_failed_for_good=failed_for_good,
                          wait_for_success=wait, scheduling_enabled=sched_enabled, running_tasks=len(tasks),
                          rebooting=rebooting if rebooting and tasks else "")
        state = node_state(facts)
        if rebooting and not tasks and prep_phase != "Succeeded":
            state = rebooting
        if state == "unusable" and tasks:
            await self._stop_tasks(tasks, "requeue", f"node {spec['nodeName']} is not ready", force=True)
        addr = _address(knode)
        new = {"state": state, "schedulingState": "enabled" if sched_enabled else "disabled",
               "runningTasksCount": len(tasks),
               "runningTaskSlotsCount": sum(int(s.tasks[t]["spec"].get("requiredSlots", 1)) for t in tasks if t in s.tasks),
               "isDedicated": spec.get("isDedicated", True), "ipAddress": addr, "startTaskInfo": info or None}
        if state in ("idle", "running") and not status.get("lastBootTime"):
            new["lastBootTime"] = now_iso()
        if state != status.get("state"):
            new["stateTransitionTime"] = now_iso()
        changed = changed_keys(status, new)
        counts_only = set(changed) <= {"runningTasksCount", "runningTaskSlotsCount"}
        if changed and counts_only and time.monotonic() - self._node_written.get(ck, 0) < NODE_COUNTS_EVERY:
            self.store.changed.set()   # busy nodes report their counts at most every NODE_COUNTS_EVERY seconds
        elif changed:
            res = await self._patch_status("computenodes", c, new)
            self._node_written[ck] = time.monotonic()
            c = res or c
        return state, is_schedulable(state, sched_enabled), c

    def _placement(self, pool: dict, c: dict) -> pods.Placement:
        return pods.Placement(namespace=c["metadata"]["namespace"], pool=pool["metadata"]["name"],
                              node_name=c["spec"]["nodeName"], compute_node=c["metadata"]["name"],
                              is_dedicated=c["spec"].get("isDedicated", True),
                              node_root=pool["spec"].get("nodeRootDir") or self.settings.node_root)

    async def _stop_tasks(self, tasks: set[str], option: str, why: str, force: bool = False) -> None:
        """requeue: back to the queue without using a retry; terminate: completed, failed."""
        for tk in list(tasks):
            t = self.store.tasks.get(tk)
            if not t:
                continue
            st = t.get("status") or {}
            if st.get("state") not in (PREPARING, RUNNING):
                continue
            if option == "terminate":
                new = complete(st, now=now_iso(), exit_code=None, result="failure",
                               failure={"category": "servererror", "code": "TaskEnded", "message": f"The task was terminated: {why}"})
            else:
                new = new_attempt(st, now=now_iso(), kind="requeue", reason=why)
                metrics.TASK_REQUEUES.inc()
            # status first: the old attempt is no longer current, then its pod goes
            await self._patch_status("tasks", t, new)
            if st.get("podName"):
                await self.kube.delete_pod(t["metadata"]["namespace"], st["podName"], grace=0 if force else None)
            _event(t, "Warning", "TaskRequeued" if option != "terminate" else "TaskTerminated", why)

    # ------------------------------------------------------------------ 3. tasks
    async def advance_tasks(self, dirty: set[str], node_view: dict) -> set[str]:
        s = self.store
        touched_jobs: set[str] = set()
        now = now_iso()
        await asyncio.gather(*(self._safely(f"task {tk}", self._advance_task(tk, node_view, now, touched_jobs),
                                            redo=(s.dirty_tasks, tk)) for tk in dirty))
        return touched_jobs

    async def _advance_task(self, tk: str, node_view: dict, now: str, touched_jobs: set[str]) -> bool:
        """Initialise a new task, apply retention to a completed one, or advance one in flight."""
        s = self.store
        t = s.tasks.get(tk)
        if not t:
            self._running_since.pop(tk, None)
            return True
        st = t.get("status") or {}
        ns = t["metadata"]["namespace"]
        job = s.jobs.get(key(ns, t["spec"].get("jobName", "")))
        state = st.get("state")
        if not state:
            # A new task is `active` without a write of its own: its first status write is its
            # binding (or its pending reason), which saves one API write per task.
            invalid = self._validate(t)
            if invalid:
                await self._patch_status("tasks", t, {**_initial_status(now), "conditions": [
                    condition("Valid", False, "InvalidSpec", f"{invalid}. Fix the Task and apply it again.")]})
            touched_jobs.add(key(ns, t["spec"].get("jobName", "")))
            return True
        if t["spec"].get("desiredState") == "terminated" and state != COMPLETED:
            await self._patch_status("tasks", t, complete(st, now=now, exit_code=None, result="failure", failure={
                "category": "usererror", "code": "TaskEnded", "message": "The task was terminated (spec.desiredState: terminated)"}))
            if st.get("podName"):
                await self.kube.delete_pod(ns, st["podName"])
            await self._delete_subtask_pods(t, st)
            touched_jobs.add(key(ns, t["spec"].get("jobName", "")))
            return True
        request = t["spec"].get("reactivateRequestId")
        if state == COMPLETED and request and request != st.get("handledReactivateRequestId"):
            info = st.get("executionInfo") or {}
            if info.get("result") == "failure" and t["spec"].get("desiredState") != "terminated":
                # Batch: a reactivated task runs again with its retry count reset
                await self._patch_status("tasks", t, {
                    "state": ACTIVE, "previousState": state, "stateTransitionTime": now, "attempt": int(st.get("attempt", 1)) + 1,
                    "podName": None, "nodeInfo": None, "subtasks": None, "handledReactivateRequestId": request,
                    "executionInfo": {"retryCount": 0, "requeueCount": info.get("requeueCount", 0), "startTime": None,
                                      "endTime": None, "exitCode": None, "result": None, "failureInfo": None}})
                _event(t, "Normal", "TaskReactivated", "the failed task was reactivated and will run again")
            else:
                await self._patch_status("tasks", t, {"handledReactivateRequestId": request})
                _event(t, "Warning", "ReactivateIgnored", "only a failed task can be reactivated; this one "
                       + ("succeeded" if info.get("result") == "success" else "was terminated"))
            touched_jobs.add(key(ns, t["spec"].get("jobName", "")))
            return True
        if state == COMPLETED:
            self._note_retention(tk, t, st)
            return True
        if state not in (PREPARING, RUNNING) or job is None:
            return True
        pod_rec = self._own_pod(t, st.get("podName"))
        cnode_key = key(ns, (st.get("nodeInfo") or {}).get("nodeId", ""))
        gang_nodes = [cnode_key] + [key(ns, x["nodeName"]) for x in st.get("subtasks") or [] if x.get("id", 0)]
        lost = any(node_view.get(n, ("unusable", False, None))[0] == "unusable" or n not in s.cnodes for n in gang_nodes)
        view = pod_rec.view if pod_rec else None
        failed_instance = None
        if len(gang_nodes) > 1:   # Batch: an instance that fails fails the task (retried as a whole)
            failed_instance = next((r.view for x in st.get("subtasks") or [] if x.get("id", 0)
                                    for r in [self._own_pod(t, x.get("podName"))]
                                    if r and r.view.phase == "Failed" and not r.view.deleting), None)
            if failed_instance and not (view and view.phase in ("Succeeded", "Failed")):
                view = failed_instance
            else:
                failed_instance = None
        out: Outcome = observe_attempt(task_spec=t["spec"], job_spec=job["spec"], status=st,
                                       pod=view, now=now, node_lost=lost)
        if failed_instance and out.status.get("state") in (ACTIVE, COMPLETED) and st.get("podName"):
            await self.kube.delete_pod(ns, st["podName"], grace=0)   # the primary goes with the gang
        if out.status.get("state") == RUNNING and st.get("state") == PREPARING and len(gang_nodes) == 1 \
                and not (out.create_pod or out.delete_pod or out.event):
            since = self._running_since.setdefault(tk, time.monotonic())
            if time.monotonic() - since < RUNNING_WRITE_AFTER:
                self._deferred.add(tk)   # a short task then costs one status write less
                self.store.changed.set()
                return True
        self._running_since.pop(tk, None)
        if out.completed and st.get("state") == PREPARING and view is not None and view.exit_code is not None \
                and not view.preprocessing_failure:
            out.status["previousState"] = RUNNING   # it ran; it ended before `running` was written
        if out.status and len(gang_nodes) > 1 and out.status.get("state") in (ACTIVE, COMPLETED):
            final = "completed" if out.status.get("state") == COMPLETED else ACTIVE
            out.status["subtasks"] = [{**x, "state": final} for x in st.get("subtasks") or []] if final == COMPLETED else None
            await self._delete_subtask_pods(t, st)
        elif len(gang_nodes) > 1:
            subtasks = st.get("subtasks") or []
            ips = await self._publish_host_list(t, st)
            if ips and any(x.get("ipAddress") != ip for x, ip in zip(subtasks, ips)):
                subtasks = [{**x, "ipAddress": ip} for x, ip in zip(subtasks, ips)]
                out.status = {**out.status, "subtasks": subtasks}
            if pod_rec and pod_rec.view.phase == "Running" and subtasks and subtasks[0].get("state") != RUNNING:
                out.status = {**out.status, "subtasks": [{**x, "state": RUNNING} for x in subtasks]}
        await self._apply_outcome(t, st, out, job)
        if out.status:
            touched_jobs.add(key(ns, t["spec"]["jobName"]))
        return True

    async def _apply_outcome(self, t: dict, st: dict, out: Outcome, job: dict) -> None:
        ns = t["metadata"]["namespace"]
        if out.status:
            await self._patch_status("tasks", t, out.status)
            metrics.TASK_TRANSITIONS.labels(out.status.get("state", st.get("state"))).inc()
            if out.status.get("state") == ACTIVE and (out.status.get("executionInfo") or {}).get("retryCount", 0) > (st.get("executionInfo") or {}).get("retryCount", 0):
                metrics.TASK_RETRIES.inc()
            if out.completed:
                info = out.status.get("executionInfo") or {}
                a, b = parse_time(info.get("startTime")), parse_time(info.get("endTime"))
                if a and b:
                    metrics.TASK_RUN_SECONDS.observe(max(0.0, b - a))
        if out.delete_pod:
            await self.kube.delete_pod(ns, out.delete_pod, grace=0 if out.force_delete else None)
        if out.create_pod:
            await self._create_task_pod(t, st, job)
        if out.event:
            _event(t, *out.event)
        if out.job_action in ("terminate", "disable") and job["spec"].get("onTaskFailure") == "performexitoptionsjobaction":
            if out.job_action == "terminate":
                self._terminate_requests.add(key(ns, job["metadata"]["name"]))
            else:
                await self.kube.patch_object("jobs", ns, job["metadata"]["name"], {"spec": {"desiredState": "disabled", "disableTasks": "wait"}})

    async def _create_task_pod(self, t: dict, st: dict, job: dict) -> None:
        """Create the current attempt's pod(s), once the job's preparation task allows it."""
        s = self.store
        ns = t["metadata"]["namespace"]
        ni = st.get("nodeInfo") or {}
        c = s.cnodes.get(key(ns, ni.get("nodeId", "")))
        pool = s.pools.get(key(ns, ni.get("poolId", "")))
        if not c or not pool:
            return
        prep = await self.ensure_prep(job, c, pool)
        if prep == "failed":
            await self._stop_tasks({key(ns, t["metadata"]["name"])}, "requeue",
                                   f"the job preparation task failed on node {c['metadata']['name']}")
            return
        if prep == "pending" and job["spec"]["jobPreparationTask"].get("waitForSuccess", True):
            return   # stays `preparing`; the preparation pod's end brings it back here
        attempt = int(st.get("attempt", 1))
        subtasks = [x for x in st.get("subtasks") or [] if x.get("id", 0)]
        gang = bool(subtasks)
        env = self.prep_env(job, self._placement(pool, c))
        placements = [(0, c, None)] + [(x["id"], s.cnodes.get(key(ns, x["nodeName"])), x["podName"]) for x in subtasks]
        multi = t["spec"].get("multiInstanceSettings") or {}
        coordination = multi.get("coordinationCommandLine")
        resource_files = await self._expanded_resource_files(t["spec"].get("resourceFiles"))
        common: list[dict] = []
        if gang:   # every instance, the primary too, gets the common ones (in the task directory)
            common = rfiles.into_task_dir(await self._expanded_resource_files(multi.get("commonResourceFiles")))
        for idx, cn, pod_name in placements:
            if cn is None:
                continue
            placement = self._placement(pool, cn)
            extra = dict(env)
            if gang:
                root = pods.node_root_dir(placement)
                tid = t["spec"].get("id") or t["metadata"]["name"]
                extra.update({"AZ_BATCH_IS_CURRENT_NODE_MASTER": "true" if idx == 0 else "false",
                              "AZ_BATCH_TASK_SHARED_DIR": f"{root}/workitems/{job['metadata']['name']}/job-1/{tid}/shared"})
            pod = pods.task_pod(task=t, job=job, pool_spec=pool["spec"], placement=placement, attempt=attempt,
                                owner=pods.owner_reference(t), extra_env=extra, pod_name=pod_name,
                                service_account=self.job_manager_account(job, t),
                                coordination=coordination if gang else None, then_wait=idx > 0, gang=gang,
                                resource_files=[*common, *(resource_files or [])] if idx == 0 else common,
                                tools_image=self.settings.tools_image)
            if await self.clear_stale_pod(pod):
                continue
            res = await self.kube.create_pod(pod)
            if res:
                s.put_pod(res)

    async def _expanded_resource_files(self, resource_files: list[dict] | None) -> list[dict] | None:
        """Resource files with every storageContainerUrl listed (IO here; pods stay pure).
        A listing failure becomes the task's preprocessing error through its init container."""
        listings: dict = {}
        for url, prefix in rfiles.container_listing_wanted(resource_files):
            try:
                from azure.core.exceptions import HttpResponseError
                from azure.storage.blob.aio import ContainerClient

                async def _names() -> list[str]:
                    async with ContainerClient.from_container_url(url, retry_total=1, connection_timeout=10, read_timeout=30) as cc:
                        return [b.name async for b in cc.list_blobs(name_starts_with=prefix or None)]
                listings[(url, prefix)] = await asyncio.wait_for(_names(), 90)
            except HttpResponseError as e:
                listings[(url, prefix)] = f"listing the container failed: HTTP {e.status_code} {e.reason or ''} {getattr(e, 'error_code', None) or ''}".strip()
            except Exception as e:   # noqa: BLE001 - any failure is the task's preprocessing error
                listings[(url, prefix)] = f"listing the container failed: {type(e).__name__}: {e}"[:500]
        return rfiles.expand_resource_files(resource_files, listings) if listings else resource_files

    def _own_pod(self, t: dict, name: str | None):
        """The record of the task's pod `name`, unless that pod belongs to an earlier Task of
        the same name (deleted and applied again while its pods still terminate)."""
        rec = self.store.pods.get(key(t["metadata"]["namespace"], name or ""))
        return rec if rec and rec.owned_by(t["metadata"].get("uid")) else None

    async def _publish_host_list(self, t: dict, st: dict) -> list[str] | None:
        """Once every instance of a gang has a pod IP, write the host list (primary first) on
        each instance's pod; their wrappers wait for it (a downward-API file) before the
        coordination command starts. The annotation is the record: idempotent after a restart.
        Returns the instances' addresses in subtask order, or None while some have none."""
        ns = t["metadata"]["namespace"]
        subtasks = st.get("subtasks") or []
        names = [x.get("podName") for x in subtasks]
        recs = [self._own_pod(t, n) for n in names]
        if not recs or any(r is None or not r.view.pod_ip for r in recs):
            return None
        ips = [r.view.pod_ip for r in recs]
        hosts = ",".join(ips)
        for name, r in zip(names, recs):
            if r.view.host_list != hosts and not r.view.deleting:
                await self.kube.patch_pod(ns, name, {"metadata": {"annotations": {naming.ANNOTATION_HOST_LIST: hosts}}})
        return ips

    async def _delete_subtask_pods(self, t: dict, st: dict) -> None:
        for sub in st.get("subtasks") or []:
            if sub.get("id", 0) and sub.get("podName"):
                await self.kube.delete_pod(t["metadata"]["namespace"], sub["podName"], grace=0)

    def _note_retention(self, tk: str, t: dict, st: dict) -> None:
        """Remember when a completed task's retention ends (a heap: no scan of old tasks)."""
        if tk in self._retention_known or any(c.get("type") == "Retained" and c.get("status") == "False"
                                              for c in st.get("conditions") or []):
            return
        keep = seconds((t["spec"].get("constraints") or {}).get("retentionTime")) or 7 * 86400
        end = parse_time((st.get("executionInfo") or {}).get("endTime")) or time.time()
        heapq.heappush(self._retention_due, (end + keep, tk))
        self._retention_known.add(tk)

    async def expire_retention(self) -> None:
        """retentionTime: delete the task's pod and, on a real node, its task directory."""
        now = time.time()
        while self._retention_due and self._retention_due[0][0] <= now:
            _, tk = heapq.heappop(self._retention_due)
            self._retention_known.discard(tk)
            t = self.store.tasks.get(tk)
            if t:
                await self._safely(f"retention of {tk}", self._expire(t))

    async def _expire(self, t: dict) -> None:
        s = self.store
        st = t.get("status") or {}
        ns = t["metadata"]["namespace"]
        ni = st.get("nodeInfo") or {}
        c = s.cnodes.get(key(ns, ni.get("nodeId", "")))
        pool = s.pools.get(key(ns, ni.get("poolId", "")))
        knode = s.knodes.get(ni.get("nodeName", ""))
        if c and pool and knode and (knode["metadata"].get("annotations") or {}).get(naming.ANNOTATION_FAKE_NODE) != "fake" \
                and ni.get("taskRootDirectory"):
            await self._remove_dirs(self._placement(pool, c), [ni["taskRootDirectory"]],
                                    f"task-{t['metadata']['uid']}-{st.get('attempt')}", owner=pods.owner_reference(t))
        for sub in [st.get("podName")] + [x.get("podName") for x in st.get("subtasks") or []]:
            if sub:
                await self.kube.delete_pod(ns, sub)
        conds = [c2 for c2 in st.get("conditions") or [] if c2.get("type") != "Retained"]
        conds.append(condition("Retained", False, "RetentionTimeExpired",
                               "the task's pod and directory were removed after constraints.retentionTime"))
        await self._patch_status("tasks", t, {"conditions": conds})

    # ------------------------------------------------------------------ 4. scheduling
    def _ready_tasks_by_pool(self, only_pools: set[str] | None = None) -> tuple[dict[str, list], dict[str, scheduler.JobView], dict[str, dict]]:
        s = self.store
        jobs: dict[str, scheduler.JobView] = {}
        tasks: dict[str, list] = {}
        waiting_deps: dict[str, dict] = {}
        seq = 0
        for jk, j in s.jobs.items():
            jst = j.get("status") or {}
            if jst.get("state") in ("completed", "terminating", "deleting") or j["metadata"].get("deletionTimestamp"):
                continue
            pool_id = jobcore.pool_id_of(j)
            pk = key(j["metadata"]["namespace"], pool_id)
            if only_pools is not None and pk not in only_pools:
                continue
            counts = s.job_state_counts.get(jk) or {}
            running = counts.get(PREPARING, 0) + counts.get(RUNNING, 0)
            ids = None
            cycle = None
            pool_body = s.pools.get(pk)
            for tk in s.active_by_job.get(jk, ()):
                t = s.tasks.get(tk)
                if not t:
                    continue
                st = t.get("status") or {}
                state = st.get("state")
                if state not in (None, ACTIVE) or any(c.get("reason") == "InvalidSpec" and c.get("status") == "False" for c in st.get("conditions") or []):
                    continue
                if t["spec"].get("desiredState") == "terminated":
                    continue
                deps = t["spec"].get("dependsOn")
                if deps and j["spec"].get("usesTaskDependencies"):
                    if ids is None:
                        ids = {(x["spec"].get("id") or x["metadata"]["name"]): x for x in (s.tasks.get(k2) for k2 in s.tasks_by_job.get(jk, ())) if x}
                        cycle = self._dependency_cycle(jk, ids)
                    tid = t["spec"].get("id") or t["metadata"]["name"]
                    if cycle and tid in cycle:
                        waiting_deps[tk] = {"reason": "DependencyCycle", "queuePosition": 0,
                                            "message": f"tasks {' -> '.join(cycle)} depend on each other in a cycle and can never start; "
                                                       "fix dependsOn of one of them"}
                        continue
                    blocker = _blocking_dependency(deps, ids)
                    if blocker:
                        waiting_deps[tk] = {"reason": "WaitingForDependencies", "message": blocker, "queuePosition": 0}
                        continue
                mi = t["spec"].get("multiInstanceSettings") or {}
                if int(mi.get("numberOfInstances", 1)) > 1 and pool_body and not pool_body["spec"].get("enableInterNodeCommunication"):
                    waiting_deps[tk] = {"reason": "InterNodeCommunicationDisabled", "queuePosition": 0,
                                        "message": f"a multi-instance task needs a pool with enableInterNodeCommunication: true; "
                                                   f"pool {pool_id} does not have it. Use another pool or set it on this one"}
                    continue
                seq += 1
                tasks.setdefault(pk, []).append(scheduler.TaskView(
                    key=tk, job=jk, required_slots=int(t["spec"].get("requiredSlots", 1)),
                    priority=int(t["spec"].get("priority", 0)), seq=_seq(t, seq),
                    instances=int((t["spec"].get("multiInstanceSettings") or {}).get("numberOfInstances", 1)),
                    is_job_manager=(t["metadata"].get("labels") or {}).get(naming.LABEL_JOB_MANAGER) == "true",
                    run_exclusive=(t["metadata"].get("labels") or {}).get(naming.LABEL_JOB_MANAGER) == "true"
                    and (j["spec"].get("jobManagerTask") or {}).get("runExclusive", True)))
            jobs[jk] = scheduler.JobView(key=jk, pool=pk, priority=int(j["spec"].get("priority", 0)),
                                         enabled=jst.get("state", "active") in ("active", "enabling"),
                                         max_parallel_tasks=int(j["spec"].get("maxParallelTasks", -1)), running_tasks=running,
                                         last_bound=self._last_bound.get(jk, 0), prep_blocked_nodes=self.prep_blocked(j))
        return tasks, jobs, waiting_deps

    async def schedule(self, node_view: dict, pools: set[str]) -> set[str]:
        """Plan the pools whose queue, jobs or nodes changed since the last pass."""
        s = self.store
        ready, jobs, waiting_deps = self._ready_tasks_by_pool(pools)
        touched: set[str] = set()
        now = now_iso()
        pending_writes = []
        for pk, tlist in ready.items():
            pool = s.pools.get(pk)
            nodes = []
            if pool:
                for ck, (state, schedulable, c) in node_view.items():
                    if c["metadata"]["namespace"] + "/" + c["spec"]["poolName"] != pk:
                        continue
                    running = tuple((t, self._job_priority(t), int(s.tasks[t]["spec"].get("requiredSlots", 1)))
                                    for t in sorted(self._inflight.get(ck, ())) if t in s.tasks)
                    nodes.append(scheduler.NodeView(name=ck, pool=pk, slots_total=int(pool["spec"].get("taskSlotsPerNode", 1)),
                                                    slots_used=sum(r[2] for r in running), schedulable=schedulable,
                                                    order=_order(c), running_job_priorities=running))
            pools = {pk: scheduler.PoolView(key=pk, fill_type=((pool or {}).get("spec", {}).get("taskSchedulingPolicy") or {}).get("nodeFillType", "spread"))} if pool else {}
            snap = scheduler.Snapshot(pools=pools, nodes=nodes, jobs={j.key: j for j in jobs.values() if j.pool == pk}, tasks=tlist)
            t0 = time.monotonic()
            # plan() is pure over an immutable snapshot: a big queue is planned off the event
            # loop so kopf's watches keep flowing meanwhile.
            plan = scheduler.plan(snap) if len(tlist) < 2000 else await asyncio.to_thread(scheduler.plan, snap)
            metrics.SCHEDULER_PASS_SECONDS.observe(time.monotonic() - t0)
            for p in plan.preemptions:
                pending_writes.append(self._safely(f"preemption of {p.task}", self._stop_tasks(
                    {p.task}, "requeue", "preempted to make room for a job manager task of a higher-priority job")))
            for b in plan.bindings:
                pending_writes.append(self._safely(f"binding {b.task}", self._bind(b, pool, now)))
                touched.add(s.tasks[b.task]["metadata"]["namespace"] + "/" + s.tasks[b.task]["spec"]["jobName"])
            limit = self.settings.pending_reason_limit
            for tk, p in plan.pending.items():
                if limit and p.queue_position > limit and p.reason not in USER_FIXABLE:
                    continue   # deep in the queue: its reason is written once it is within the first `limit`
                pending_writes.append(self._safely(f"pending reason of {tk}", self._set_pending(
                    tk, {"reason": p.reason, "message": p.message, "queuePosition": p.queue_position})))
        for tk, p in waiting_deps.items():
            pending_writes.append(self._safely(f"pending reason of {tk}", self._set_pending(tk, p)))
        if pending_writes:
            await asyncio.gather(*pending_writes)
        return touched

    def _dependency_cycle(self, jk: str, ids: dict[str, dict]) -> list[str] | None:
        """A cycle among the job's task dependencies; recomputed only when its task set changes."""
        cached = self._cycles.get(jk)
        if cached and cached[0] == len(ids):
            return cached[1]
        graph = {tid: depcore.wanted_ids(t["spec"].get("dependsOn")) for tid, t in ids.items()}
        cycle = depcore.find_cycle(graph)
        self._cycles[jk] = (len(ids), cycle)
        if cycle:
            j = self.store.jobs.get(jk)
            if j:
                _event(j, "Warning", "DependencyCycle", f"tasks {' -> '.join(cycle)} depend on each other in a cycle")
        return cycle

    def _pool_of_job(self, jk: str) -> str:
        j = self.store.jobs.get(jk)
        if not j:
            return ""
        return key(j["metadata"]["namespace"], jobcore.pool_id_of(j))

    def _pools_of_cnodes(self, cnodes: set[str]) -> set[str]:
        return {self._cnode_pool[c] for c in cnodes if c in self._cnode_pool}

    def _job_priority(self, tk: str) -> int:
        t = self.store.tasks[tk]
        j = self.store.jobs.get(key(t["metadata"]["namespace"], t["spec"].get("jobName", "")))
        return int(j["spec"].get("priority", 0)) if j else 0

    async def _set_pending(self, tk: str, reason: dict) -> None:
        t = self.store.tasks.get(tk)
        if not t:
            return
        old = (t.get("status") or {}).get("pendingReason") or {}
        if old.get("reason") == reason["reason"] and old.get("message") == reason["message"]:
            return   # positions move constantly; rewrite only when the reason changes
        first = self._pending_since.setdefault(tk, time.monotonic())
        if time.monotonic() - first < PENDING_REASON_AFTER and reason["reason"] not in USER_FIXABLE:
            self._replan.add(self._pool_of_job(key(t["metadata"]["namespace"], t["spec"].get("jobName", ""))))
            self.store.changed.set()   # look again; most tasks are bound before this
            return
        if reason["reason"] in USER_FIXABLE:
            _event(t, "Warning", reason["reason"], reason["message"])
        st = t.get("status") or {}
        await self._patch_status("tasks", t, {"pendingReason": reason, **({} if st.get("state") else _initial_status(now_iso()))})

    async def _bind(self, b, pool: dict, now: str) -> None:
        s = self.store
        t = s.tasks[b.task]
        st = t.get("status") or {}
        ns = t["metadata"]["namespace"]
        c = s.cnodes[b.nodes[0]]
        attempt = int(st.get("attempt", 1))
        root = pods.node_root_dir(self._placement(pool, c))
        tid = t["spec"].get("id") or t["metadata"]["name"]
        info = st.get("executionInfo") or {}
        new = {"state": PREPARING, "previousState": st.get("state") or ACTIVE, "stateTransitionTime": now, "attempt": attempt,
               "executionInfo": {"retryCount": info.get("retryCount", 0), "requeueCount": info.get("requeueCount", 0)},
               "podName": naming.task_pod_name(t["metadata"]["name"], attempt), "pendingReason": None,
               "nodeInfo": {"poolId": pool["metadata"]["name"], "nodeId": c["metadata"]["name"],
                            "nodeName": c["spec"]["nodeName"],
                            "taskRootDirectory": f"{root}/workitems/{t['spec']['jobName']}/job-1/{tid}"},
               "subtasks": [{"id": i, "state": PREPARING, "nodeName": s.cnodes[n]["metadata"]["name"],
                             "podName": naming.task_pod_name(t["metadata"]["name"], attempt) if i == 0
                             else naming.subtask_pod_name(t["metadata"]["name"], attempt, i)}
                            for i, n in enumerate(b.nodes)] if len(b.nodes) > 1 else None}
        res = await self._patch_status("tasks", t, new)
        self._pending_since.pop(b.task, None)
        if not res:
            return
        job = s.jobs.get(key(ns, t["spec"]["jobName"]))
        if job:
            await self._create_task_pod(res, res.get("status") or {}, job)
        metrics.BINDINGS.inc()
        self._bindings += 1
        self._last_bound[key(ns, t["spec"]["jobName"])] = self._bindings
        if attempt == 1:
            created = parse_time(t["metadata"].get("creationTimestamp"))
            if created:
                metrics.SCHEDULING_LATENCY.observe(max(0.0, time.time() - created))

    # ------------------------------------------------------------------ 5. jobs
    def _jobs_with_timers(self) -> set[str]:
        return {k for k, j in self.store.jobs.items()
                if (j["spec"].get("constraints") or {}).get("maxWallClockTime") and (j.get("status") or {}).get("state") not in ("completed",)}

    async def ensure_auto_pool(self, job: dict, auto: tuple[str, dict]) -> None:
        """Create the job's auto pool (autoPoolSpecification) unless it exists. It is owned by
        the job, or with poolLifetimeOption jobschedule by the JobSchedule, so deleting the
        owner deletes it (and its nodes, through the pool's finalizer)."""
        name, spec = auto
        ns = job["metadata"]["namespace"]
        if key(ns, name) in self.store.pools:
            return
        owner, kind = job, "Job"
        schedule = (job["metadata"].get("labels") or {}).get(naming.LABEL_SCHEDULE)
        if spec.get("poolLifetimeOption") == "jobschedule" and schedule and key(ns, schedule) in self.store.jobschedules:
            owner, kind = self.store.jobschedules[key(ns, schedule)], "JobSchedule"
        body = {"apiVersion": API_VERSION, "kind": "Pool",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {naming.LABEL_AUTO_POOL_OF: naming.label_value(f"{kind.lower()}.{owner['metadata']['name']}")},
                             "ownerReferences": [pods.owner_reference({**owner, "kind": kind})]},
                "spec": spec.get("pool") or {}}
        await self.kube.create_object("pools", ns, body)   # 409 (made by an earlier pass) is fine
        if name not in self._auto_pools_announced:
            self._auto_pools_announced.add(name)
            _event(job, "Normal", "AutoPoolCreated", f"created pool {name} from spec.poolInfo.autoPoolSpecification")

    async def end_auto_pool(self, job: dict, auto: tuple[str, dict]) -> None:
        """poolLifetimeOption job: the pool goes when the job completes, unless keepAlive."""
        name, spec = auto
        ns = job["metadata"]["namespace"]
        pool = self.store.pools.get(key(ns, name))
        if not jobcore.auto_pool_goes_with(spec, "job") or not pool or pool["metadata"].get("deletionTimestamp"):
            return
        await self.kube.delete_object("pools", ns, name)
        _event(job, "Normal", "AutoPoolDeleted", f"the job completed: deleting its pool {name} (keepAlive is false)")

    async def reconcile_job(self, job: dict) -> None:
        s = self.store
        meta, spec = job["metadata"], job["spec"]
        ns = meta["namespace"]
        jk = key(ns, meta["name"])
        status = job.get("status") or {}
        invalid = self._validate(job)
        if not invalid and status.get("state") not in ("completed", "terminating"):
            await self.ensure_job_manager(job)
        counts, slots = jobcore.empty_counts(), jobcore.empty_counts()
        running: set[str] = set()
        for tk in s.tasks_by_job.get(jk, ()):
            t = s.tasks.get(tk)
            if not t:
                continue
            st = t.get("status") or {}
            jobcore.add_task(counts, slots, st.get("state"), (st.get("executionInfo") or {}).get("result"),
                             int(t["spec"].get("requiredSlots", 1)))
            if st.get("state") in (PREPARING, RUNNING):
                running.add(tk)
        pool_id = jobcore.pool_id_of(job)
        info = dict(status.get("executionInfo") or {})
        info.setdefault("startTime", meta.get("creationTimestamp"))
        info["poolId"] = pool_id
        sched_err = None
        auto = jobcore.auto_pool(job)
        if auto:   # the pool is podbatch's to make: its absence is not the user's error
            if not invalid and status.get("state") != "completed":
                await self.ensure_auto_pool(job, auto)
        elif pool_id and key(ns, pool_id) not in s.pools:
            sched_err = {"category": "usererror", "code": "PoolNotFound",
                         "message": f"pool {pool_id!r} does not exist in namespace {ns}; create it or fix spec.poolInfo.poolId"}
        elif not pool_id:
            sched_err = {"category": "usererror", "code": "NoPool",
                         "message": "spec.poolInfo has neither poolId nor autoPoolSpecification; name the Pool this job runs on"}
        info["schedulingError"] = sched_err
        wall = seconds((spec.get("constraints") or {}).get("maxWallClockTime"))
        started = parse_time(info.get("startTime"))
        expired = bool(wall and started and time.time() - started > wall)
        step = jobcore.job_step(jobcore.JobFacts(
            state=status.get("state", ""), desired=spec.get("desiredState", "active"),
            disable_tasks=spec.get("disableTasks", "requeue"), on_all_complete=spec.get("onAllTasksComplete", "noaction"),
            counts=counts, wall_clock_expired=expired, task_requested_terminate=jk in self._terminate_requests,
            job_manager_completed=self.job_manager_ended(job)))
        if step.state == "completed" and not await self.run_release(job):
            step = jobcore.JobStep("terminating", step.terminate_reason)   # completed once every release task ended
        if step.stop_running and running:
            await self._stop_tasks(running, step.stop_running,
                                   f"job {meta['name']} is {step.state} ({step.terminate_reason or spec.get('disableTasks', '')})")
        if step.terminate_reason and not info.get("terminateReason"):
            info["terminateReason"] = step.terminate_reason
        if auto and step.state == "completed":
            await self.end_auto_pool(job, auto)
        if step.state == "completed" and not info.get("endTime"):
            info["endTime"] = now_iso()
            self._terminate_requests.discard(jk)
            _event(job, "Normal", "JobCompleted", f"{counts['succeeded']} succeeded, {counts['failed']} failed"
                   + (f"; {info.get('terminateReason')}" if info.get("terminateReason") else ""))
        conds = [condition("Valid", invalid is None, "InvalidSpec" if invalid else "SpecAccepted",
                           f"{invalid}. Fix the Job and apply it again." if invalid else "the job spec is valid", meta.get("generation"))]
        if sched_err:
            conds.append(condition("Schedulable", False, sched_err["code"], sched_err["message"], meta.get("generation")))
            if status.get("executionInfo", {}).get("schedulingError") != sched_err:
                _event(job, "Warning", sched_err["code"], sched_err["message"])
        cycle = (self._cycles.get(jk) or (0, None))[1]
        if cycle:
            conds.append(condition("DependencyCycle", True, "DependencyCycle",
                                   f"tasks {' -> '.join(cycle)} depend on each other in a cycle; fix dependsOn of one of them",
                                   meta.get("generation")))
        conds.append(condition("Completed", step.state == "completed", info.get("terminateReason") or "Running",
                               f"{counts['completed']} of {counts['active'] + counts['running'] + counts['completed']} tasks completed"))
        new = {"state": step.state, "executionInfo": info, "taskCounts": counts, "taskSlotCounts": slots,
               "observedGeneration": meta.get("generation"), **self.special_status(job)}
        if step.state != status.get("state"):
            new["previousState"] = status.get("state")
            new["stateTransitionTime"] = now_iso()
        if changed_keys(status, new, ignore=("previousState", "stateTransitionTime")) \
                or not _same_conditions(status.get("conditions"), conds):
            new["conditions"] = conds
            await self._patch_status("jobs", job, new)

    def _gauge_tasks(self) -> None:
        for st in ("active", "preparing", "running", "completed"):
            metrics.TASKS.labels(st).set(self.store.state_counts.get(st, 0))


def _initial_status(now: str) -> dict:
    return {"state": ACTIVE, "stateTransitionTime": now, "attempt": 1, "executionInfo": {"retryCount": 0, "requeueCount": 0}}


def body_key(body: dict | None) -> str:
    if not body:
        return ""
    return key(body["metadata"].get("namespace", ""), body["metadata"]["name"])


def _ready(knode: dict | None) -> str:
    if not knode:
        return ""
    for c in (knode.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status", "")
    return ""


def _address(knode: dict | None) -> str | None:
    for a in ((knode or {}).get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP":
            return a.get("address")
    return None


def _order(c: dict) -> int:
    name = c["metadata"]["name"]
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else hash(name) % 100000


def _seq(t: dict, fallback: int) -> int:
    ts = parse_time(t["metadata"].get("creationTimestamp"))
    return int(ts * 1000) * 1000 + fallback % 1000 if ts else fallback


def _blocking_dependency(deps: dict, ids: dict[str, dict]) -> str | None:
    """Why a task may not start yet: the first dependency not satisfied, or None."""
    for tid in depcore.wanted_ids(deps):
        t = ids.get(tid)
        if t is None:
            return f"task {tid} does not exist (yet)"
        st = t.get("status") or {}
        if st.get("state") != COMPLETED:
            return f"waiting for task {tid} ({st.get('state') or 'active'})"
        if dependency_action(t["spec"], st) != "satisfy":
            info = st.get("executionInfo") or {}
            how = (info.get("failureInfo") or {}).get("code") or f"exit code {info.get('exitCode')}"
            return f"task {tid} failed ({how}) and its exit conditions block dependents"
    return None
