"""Pools: grow and shrink each pool's node group, keep one ComputeNode per member Node,
evaluate autoscale formulas, and write the pool's status. Step 1 of a pass."""
from __future__ import annotations

import json

from podbatch import API_VERSION
from podbatch.controllers import actions as A
from podbatch.controllers import clock
from podbatch.controllers.status import CLEANUP_STUCK, body_key, changed_keys, merged_conditions, node_ready, now_iso, parse_time
from podbatch.controllers.executor import Conflict, NotLeader
from podbatch.controllers.store import key
from podbatch.core import autoscale, conditions
from podbatch.core import jobs as jobcore
from podbatch.core import naming, pods, removals, resources, tenancy
from podbatch.core.durations import seconds
from podbatch.core.nodes import nodes_to_release
from podbatch.nodegroups import provider_for


class Pools:
    async def reconcile_pool(self, pool: dict) -> None:
        """Two steps, each decided then applied: the node group (grow, shrink, one ComputeNode
        per member), then the status, which shows what growing answered."""
        plan, errors = self.decide_pool_nodes(pool)
        if plan is None:
            return await self.ex.apply(errors)   # an invalid pool: its plan is only its status
        failure = None
        try:
            results = await self.ex.apply(plan)
        except (NotLeader, Conflict):
            raise
        except Exception as e:   # shown in the pool's status, then retried after its backoff
            failure, results = e, []
            errors.append({"code": "NodeGroupError", "message": f"changing the node group failed: {_reason(e)}"})
        for a, res in zip(plan, results):
            if isinstance(a, A.GrowNodes):
                errors += [{"code": "InsufficientNodes", "message": m} for m in res or []]
        await self.ex.apply(self.decide_pool_status(self.store.pools.get(body_key(pool), pool), errors))
        if failure is not None:
            raise failure

    def decide_pool_nodes(self, pool: dict) -> tuple[list | None, list]:
        """The node group's plan and the errors known before applying it; (None, plan) for
        an invalid pool, whose plan is only its status."""
        meta, spec = pool["metadata"], pool["spec"]
        ns, name = meta["namespace"], meta["name"]
        pk = key(ns, name)
        status = pool.get("status") or {}
        invalid = self._validate(pool)
        if invalid:
            conds = merged_conditions(status.get("conditions"), conditions.pool_conditions(
                invalid=f"{invalid}. Fix the Pool spec and apply it again.", deleting=False, allocation_state="", target=0,
                current=0, node_counts={}), meta.get("generation"))
            if not conditions.same(status.get("conditions"), conds) or status.get("observedGeneration") != meta.get("generation"):
                return None, [A.WriteStatus("pools", pool, {"conditions": conds, "observedGeneration": meta.get("generation")})]
            return None, []
        members = self.store.pool_members(ns, name)
        deleting = bool(meta.get("deletionTimestamp"))
        errors: list[dict] = []
        self._sample_pool(pk, members)
        auto_run, want_d, want_l = None, *removals.effective_targets(
            dedicated=int(spec.get("targetDedicatedNodes", 0)), low_priority=int(spec.get("targetLowPriorityNodes", 0)),
            annotation=(meta.get("annotations") or {}).get(naming.ANNOTATION_REMOVALS), generation=meta.get("generation"))
        if spec.get("enableAutoScale"):
            auto_run, want_d, want_l = self._autoscale_pool(pool, members)
        self._pool_decided[pk] = (auto_run, want_d, want_l)
        target = 0 if deleting else want_d + want_l
        try:
            provider = provider_for(pool, self.ex, self.settings)
        except NotImplementedError as e:
            provider, errors = None, [{"code": "ProviderNotImplemented", "message": str(e)}]
        # within what a cluster admin granted the namespace? If not, the pool takes no more
        # nodes (it keeps those it has and may shrink); the condition and Event say why.
        grant = self._grant_decision(pool, want_d, want_l) if not deleting else tenancy.Decision(applies=False)
        if grant.refusal:
            errors.insert(0, {"code": tenancy.REASON_NOT_GRANTED, "message": grant.refusal})
        live = [m for m in members if not m["metadata"].get("deletionTimestamp")]
        plan: list = []
        missing = 0 if grant.refusal else max(0, target - len(live))
        if provider and (missing or getattr(provider, "settles", False)):   # (a settling provider tidies up too)
            plan.append(A.GrowNodes(provider, {**pool, "spec": {**spec, "targetDedicatedNodes": want_d, "targetLowPriorityNodes": want_l}},
                                    live, missing, want_l))
        if provider and len(live) > target:
            plan += self._shrink(pool, provider, live, len(live) - target)
        # one ComputeNode per member Node
        cnodes = {c["spec"]["nodeName"]: c for c in self.store.cnodes_of(pk)}
        member_names = {m["metadata"]["name"] for m in members}
        for m in members:
            mname = m["metadata"]["name"]
            if mname not in cnodes and not m["metadata"].get("deletionTimestamp"):
                plan.append(A.CreateObject("computenodes", ns, {
                    "apiVersion": API_VERSION, "kind": "ComputeNode",
                    "metadata": {"name": self._cnode_name(name, mname, ns), "namespace": ns,
                                 "labels": {naming.LABEL_POOL: naming.label_value(name)},
                                 "ownerReferences": [pods.owner_reference(pool)]},
                    "spec": {"poolName": name, "nodeName": mname,
                             "isDedicated": naming.LABEL_LOW_PRIORITY not in (m["metadata"].get("labels") or {})}}))
        for node_name, c in cnodes.items():
            if node_name not in member_names and not c["metadata"].get("deletionTimestamp"):
                plan.append(A.DeleteObject("computenodes", ns, c["metadata"]["name"]))
        return plan, errors

    def decide_pool_status(self, pool: dict, errors: list[dict]) -> list:
        """The pool's status: node counts by state, allocation state, resize and autoscale
        errors, conditions (and the Events of a resize that completed)."""
        meta, spec = pool["metadata"], pool["spec"]
        ns, name = meta["namespace"], meta["name"]
        pk = key(ns, name)
        status = pool.get("status") or {}
        members = self.store.pool_members(ns, name)
        deleting = bool(meta.get("deletionTimestamp"))
        auto_run, want_d, want_l = self._pool_decided.get(pk, (None, 0, 0))
        target = 0 if deleting else want_d + want_l
        grant = self._grant_decision(pool, want_d, want_l) if not deleting else tenancy.Decision(applies=False)
        live = [m for m in members if not m["metadata"].get("deletionTimestamp")]
        cnodes = {c["spec"]["nodeName"]: c for c in self.store.cnodes_of(pk)}
        member_names = {m["metadata"]["name"] for m in members}
        plan: list = []
        states = [((c.get("status") or {}).get("state") or "creating") for c in cnodes.values() if c["spec"]["nodeName"] in member_names]
        counts = {k: 0 for k in ("creating", "starting", "waitingForStartTask", "startTaskFailed", "idle", "running",
                                 "offline", "rebooting", "reimaging", "leavingPool", "unusable", "unknown", "preempted")}
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
            if since and clock.time() - since > limit:
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
        conds = merged_conditions(status.get("conditions"), conditions.pool_conditions(
            invalid=None, deleting=deleting, allocation_state=alloc, target=target, current=len(members), node_counts=counts,
            resize_error=errors[0] if errors else None, autoscale_error=(auto_run or {}).get("error"))
            + self._granted_conditions(pool, grant, plan), meta.get("generation"))
        if alloc != status.get("allocationState"):
            new["allocationStateTransitionTime"] = now_iso()
            if alloc == "steady" and status.get("allocationState") == "resizing":
                plan.append(A.Event(pool, "Normal", "ResizeComplete", f"pool has {len(members)} nodes"))
        changed = bool(changed_keys(status, new)) or not conditions.same(status.get("conditions"), conds)
        if changed:
            new["conditions"] = conds
            plan.insert(0, A.WriteStatus("pools", pool, new))
        return plan

    def _grant_decision(self, pool: dict, want_d: int, want_l: int) -> tenancy.Decision:
        """The pool (at its effective targets) against the PoolGrants of its namespace."""
        if not self.store.grants and not self.settings.require_grants:
            return tenancy.Decision(applies=False)   # single-tenant: nothing to check
        ns = pool["metadata"]["namespace"]
        return tenancy.decide(
            {**pool, "spec": {**pool["spec"], "targetDedicatedNodes": want_d, "targetLowPriorityNodes": want_l}},
            list(self.store.grants.values()), self.store.namespace_labels(ns), require_grants=self.settings.require_grants,
            namespace_pools=[p for p in self.store.pools.values() if p["metadata"]["namespace"] == ns])

    def _granted_conditions(self, pool: dict, grant: tenancy.Decision, plan: list) -> list:
        """`Granted` when PoolGrants govern the namespace; a new refusal is also an Event."""
        if not grant.applies:
            return []
        if grant.refusal is None:
            return [conditions.Cond("Granted", True, tenancy.REASON_GRANTED, f"within PoolGrant {grant.granted_by}")]
        old = next((c for c in (pool.get("status") or {}).get("conditions") or [] if c.get("type") == "Granted"), {})
        if old.get("message") != grant.refusal:
            plan.append(A.Event(pool, "Warning", tenancy.REASON_NOT_GRANTED, grant.refusal))
        return [conditions.Cond("Granted", False, tenancy.REASON_NOT_GRANTED, grant.refusal)]

    SAMPLE_KEEP = 24 * 3600.0

    def _sample_pool(self, pk: str, members: list[dict]) -> None:
        """Batch's service-defined metrics of a pool, one sample every 30 s, kept 24 h in memory."""
        samples = self._samples.setdefault(pk, {})
        now = clock.time()
        last = samples.get("$ActiveTasks")
        if last and now - last[-1].time < self.settings.autoscale_sample_seconds:
            return
        values = self.pool_demand(pk, members)
        for metric, v in values.items():
            series = samples.setdefault(metric, [])
            series.append(autoscale.Sample(time=now, value=float(v)))
            while series and now - series[0].time > self.SAMPLE_KEEP:
                series.pop(0)

    def pool_demand(self, pk: str, members: list[dict]) -> dict[str, int]:
        """The pool's task metrics as Batch counts them. $ActiveTasks: tasks ready to run (their
        dependencies met, their job enabled) that are not running, each multi-instance task
        counted by its instances; a task that can never fit the pool's nodes (more slots than
        taskSlotsPerNode, or requests above a node's allocatable) is not demand: adding nodes
        would not run it (its pending reason says why). $RunningTasks: instances preparing or
        running on the pool's nodes. $PendingTasks = active + running. The *TaskSlots variables
        count the same in task slots."""
        ns, name = pk.split("/", 1)
        pool = self.store.pools.get(pk) or {"spec": {}}
        slots_per_node = int(pool["spec"].get("taskSlotsPerNode", 1))
        node_size = self._node_allocatable(pool, members)
        ready, jobs, _ = self._ready_tasks_by_pool({pk})
        active = active_slots = 0
        for tv in ready.get(pk, []):
            job = jobs.get(tv.job)
            if job is None or not job.enabled or tv.required_slots > slots_per_node:
                continue
            if tv.requests and node_size is not None and not resources.fits(dict(tv.requests), node_size):
                continue
            active += tv.instances
            active_slots += tv.instances * tv.required_slots
        running = running_slots = 0
        for c in self.store.cnodes_of(pk):
            for tk in self.store.inflight.get(body_key(c), ()):
                t = self.store.tasks.get(tk)
                if t:
                    running += 1
                    running_slots += int(t["spec"].get("requiredSlots", 1))
        done = dict.fromkeys(("succeeded", "failed"), 0)
        for j in self.store.jobs.values():
            if j["metadata"]["namespace"] == ns and jobcore.pool_id_of(j) == name:
                counts = (j.get("status") or {}).get("taskCounts") or {}
                for k in done:
                    done[k] += int(counts.get(k, 0))
        return {"$ActiveTasks": active, "$RunningTasks": running, "$PendingTasks": active + running,
                "$ActiveTaskSlots": active_slots, "$RunningTaskSlots": running_slots,
                "$PendingTaskSlots": active_slots + running_slots,
                "$SucceededTasks": done["succeeded"], "$FailedTasks": done["failed"]}

    def _node_allocatable(self, pool: dict, members: list[dict]) -> dict | None:
        """What one node of the pool offers: the largest allocatable of its Nodes, or (none yet)
        the kwok template's capacity; None when unknown."""
        sizes = [resources.amounts((m.get("status") or {}).get("allocatable")) for m in members]
        sizes = [x for x in sizes if x]
        if sizes:
            return {k: max(x.get(k, 0) for x in sizes) for k in set().union(*sizes)}
        group = pool["spec"].get("nodeGroup") or {}
        if group.get("provider", "kwok") == "kwok":
            return resources.amounts((group.get("kwok") or {}).get("capacity") or {"cpu": "32", "memory": "256Gi", "pods": "110"})
        return None

    def _autoscale_pool(self, pool: dict, members: list[dict]) -> tuple[dict | None, int, int]:
        """Evaluate the pool's formula every autoScaleEvaluationInterval (and at once when it
        changes). On an error the size stays as it was, as in Batch, and the error is shown."""
        meta, spec = pool["metadata"], pool["spec"]
        pk = body_key(pool)
        state = self._autoscale.get(pk) or {}
        interval = seconds(spec.get("autoScaleEvaluationInterval")) or 900
        now = clock.time()
        fresh = state.get("generation") == meta.get("generation") and now - state.get("at", 0) < interval
        if fresh:
            return state["run"], state["dedicated"], state["low"]
        low_now = sum(1 for m in members if naming.LABEL_LOW_PRIORITY in (m["metadata"].get("labels") or {}))
        keep_d = state.get("dedicated", len(members) - low_now)
        keep_l = state.get("low", low_now)
        run: dict = {"timestamp": now_iso()}
        err_text, dealloc = None, None
        try:
            program = autoscale.parse(spec.get("autoScaleFormula") or "")
            result = autoscale.evaluate(program, autoscale.Metrics(
                now=now, samples=self._samples.get(pk, {}),
                scalars={"$CurrentDedicatedNodes": len(members) - low_now, "$CurrentLowPriorityNodes": low_now,
                         "$TargetDedicatedNodes": keep_d, "$TargetLowPriorityNodes": keep_l,
                         "$TaskSlotsPerNode": int(spec.get("taskSlotsPerNode", 1)),
                         "$UsableNodeCount": len(members), "$PreemptedNodeCount": self._preempted_count(pk)}))
            run["results"] = result.results_string()
            dedicated, low = result.target_dedicated, result.target_low_priority
            dealloc = result.node_deallocation_option
        except autoscale.FormulaError as e:
            run["error"] = {"code": getattr(e, "code", "FormulaError") or "FormulaError",
                            "message": f"{e}. Fix spec.autoScaleFormula; the pool keeps its size until it evaluates."}
            dedicated, low = keep_d, keep_l
            err_text = str(e)
            if state.get("error") != err_text:
                self.ex.event(pool, "Warning", "AutoScaleFormulaError", run["error"]["message"])
        self._autoscale[pk] = {"generation": meta.get("generation"), "at": now, "run": run,
                               "dedicated": dedicated, "low": low, "error": err_text,
                               "dealloc": dealloc if not err_text else state.get("dealloc")}
        return run, dedicated, low

    def _preempted_count(self, pk: str) -> int:
        return sum(1 for c in self.store.cnodes_of(pk) if (c.get("status") or {}).get("state") == "preempted")

    @staticmethod
    def _cnode_name(pool: str, node_name: str, ns: str) -> str:
        prefix = naming.kwok_node_name(ns, pool, 0)[:-1]
        suffix = node_name[len(prefix):] if node_name.startswith(prefix) else node_name
        return naming.label_value(f"{pool}-{suffix}")

    def _shrink(self, pool: dict, provider, members: list[dict], count: int) -> list:
        """Prefer idle nodes; apply nodeDeallocationOption to tasks on the others (the autoscale
        formula's $NodeDeallocationOption when it assigned one)."""
        pk = body_key(pool)
        option = ((self._autoscale.get(pk) or {}).get("dealloc") if pool["spec"].get("enableAutoScale") else None) \
            or pool["spec"].get("nodeDeallocationOption", "requeue")
        by_node = {c["spec"]["nodeName"]: c for c in self.store.cnodes_of(pk)}
        load = self._inflight_by_cnode()

        def busy(m: dict) -> int:
            c = by_node.get(m["metadata"]["name"])
            return len(load.get(body_key(c), ())) if c else 0
        by_name = {m["metadata"]["name"]: m for m in members}
        victims = [by_name[n] for n in nodes_to_release({n: busy(m) for n, m in by_name.items()}, count)]
        plan: list = []
        for m in victims:
            c = by_node.get(m["metadata"]["name"])
            tasks = load.get(body_key(c), set()) if c else set()
            if tasks and option in ("taskcompletion", "retaineddata"):
                if c and (c["spec"].get("schedulingState") != "disabled"):
                    plan.append(A.PatchObject("computenodes", c, {"spec": {"schedulingState": "disabled",
                                                                            "nodeDisableSchedulingOption": "taskcompletion"}}))
                continue   # released once its tasks end
            plan += self._stop_tasks(tasks, option, "the node was removed from the pool")
            plan += self._release(pool, provider, m, c)
        return plan

    def _release(self, pool: dict, provider, node: dict, c: dict | None) -> list:
        """The plan giving a node back, after wiping the pool's directories on it (real nodes
        only: a simulated node has no disk)."""
        fake = (node["metadata"].get("annotations") or {}).get(naming.ANNOTATION_FAKE_NODE) == "fake"
        if c is not None and not fake and node_ready(node) == "True" and not tenancy.refused(pool):
            placement = self._placement(pool, c)
            phase, plan = self._remove_dirs(placement, [pods.node_root_dir(placement)], f"release-{self._boot_of(c)}",
                                            owner=pods.owner_reference(c))
            if phase == CLEANUP_STUCK:
                msg = (f"the directory cleanup on node {node['metadata']['name']} did not end within "
                       f"{self.settings.cleanup_timeout_seconds:.0f}s (PODBATCH_CLEANUP_TIMEOUT_SECONDS); the node is "
                       f"released with {pods.node_root_dir(placement)} left on it: remove it by hand")
                plan += [A.Event(pool, "Warning", "CleanupStuck", msg), A.Event(c, "Warning", "CleanupStuck", msg)]
            elif phase not in ("Succeeded", "Failed"):
                return plan   # released on a later pass, once the directories are gone
            return plan + [A.ReleaseNode(provider, pool, node)]
        return [A.ReleaseNode(provider, pool, node)]

    def _remove_dirs(self, placement: pods.Placement, paths: list[str], tag: str, owner: dict) -> tuple[str, list]:
        """Run (once per tag) a pod deleting `paths` on the node: its phase (or CLEANUP_STUCK
        when it has not ended within PODBATCH_CLEANUP_TIMEOUT_SECONDS of being first seen: a
        node's release or a Pool's finalizer must not wait for ever), and the plan creating it."""
        name = naming.cleanup_pod_name(placement.compute_node, tag)
        rec = self.store.pods.get(key(placement.namespace, name))
        if rec:
            if rec.view.phase in ("Succeeded", "Failed"):
                self._cleanup_since.pop(name, None)
                return rec.view.phase, []
            since = self._cleanup_since.setdefault(name, clock.monotonic())
            if clock.monotonic() - since > self.settings.cleanup_timeout_seconds:
                return CLEANUP_STUCK, []
            return rec.view.phase, []
        self._cleanup_since[name] = clock.monotonic()
        return "Pending", [A.CreatePod(pods.cleanup_pod(placement=placement, paths=paths, name=name,
                                                        tools_image=self.settings.tools_image, owner=owner))]


def _reason(e: Exception) -> str:
    """An API error's own message (the Status body's), else the exception's text."""
    body = getattr(e, "body", None)
    if body:
        try:
            return str(json.loads(body).get("message") or body)[:500]
        except (ValueError, AttributeError):
            return str(body)[:500]
    return f"{type(e).__name__}: {e}"[:500]
