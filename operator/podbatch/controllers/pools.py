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
from podbatch.core import conditions
from podbatch.core import naming, pods, removals, tenancy
from podbatch.core.durations import seconds
from podbatch.core.nodes import nodes_to_release
from podbatch.nodegroups import UnknownProvider, provider_for


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
        except UnknownProvider as e:
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
        evaluation = self.evaluation_request(pool, members)
        if evaluation is not None:
            new["autoScaleEvaluation"] = evaluation
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
