"""Compute nodes: derive each node's Batch state from its Node and its start-task pod, run
the node-preparation pod of each boot, carry out reboot / reimage / remove / disable
scheduling. Step 2 of a pass."""
from __future__ import annotations

from podbatch.controllers import actions as A
from podbatch.controllers import clock
from podbatch.controllers.status import changed_keys, merged_conditions, node_address, node_condition, node_ready, now_iso, parse_time
from podbatch.controllers.store import key
from podbatch.core import conditions, naming, pods, removals, tenancy
from podbatch.core.nodes import NodeFacts, being_taken_back, is_schedulable, node_state, taint_to_restore
from podbatch.nodegroups import provider_for

NODE_COUNTS_EVERY = 2.0      # seconds between two reports of one node, at least...
NODE_REPORTS_PER_SECOND = 10.0   # ...and more on a large pool: all nodes' reports together stay near this rate
NODE_REPORT_EVERY_MAX = 30.0


def report_every(nodes: int) -> float:
    """Seconds between two report-only status writes of one compute node (its idle/running
    flips and task counts: what no decision reads back) when `nodes` compute nodes exist."""
    return min(NODE_REPORT_EVERY_MAX, max(NODE_COUNTS_EVERY, nodes / NODE_REPORTS_PER_SECOND))


# what a node's status write may change and still be a report (A.WriteStatus.report)
REPORTED_NODE_KEYS = {"state", "stateTransitionTime", "runningTasksCount", "runningTaskSlotsCount", "conditions"}

class Nodes:
    def _inflight_by_cnode(self) -> dict[str, set[str]]:
        return self.store.inflight

    async def reconcile_nodes(self) -> dict:
        """Derive every compute node's state; returns {cnode key: (state, schedulable, body)}."""
        s = self.store
        inflight = self._inflight_by_cnode()
        view: dict[str, tuple[str, bool, dict]] = {}
        for ck, c in list(s.cnodes.items()):
            self._cnode_pool[ck] = key(c["metadata"]["namespace"], c["spec"].get("poolName", ""))
            got = None
            if not self.ex.backoff.waiting(f"node:{ck}"):
                got = await self._safely(f"node:{ck}", self._reconcile_node(ck, c, inflight.get(ck, set())))
            # a node whose reconcile failed keeps its last state; never "lost" for that alone
            view[ck] = got or ((c.get("status") or {}).get("state", "unknown"), False, c)
        self._inflight = inflight
        self._node_state_by_name = {v[2]["spec"]["nodeName"]: v[0] for v in view.values()}
        return view

    async def _reconcile_node(self, ck: str, c: dict, tasks: set[str]) -> tuple[str, bool, dict]:
        """Decide, apply, and report the node's state as the scheduler should see it."""
        decided: list = []

        async def decide() -> list:
            decided[:] = await self.decide_node(ck, self.store.cnodes.get(ck, c), tasks)
            return decided[2]
        await self._apply_soon(f"node:{ck}", decide)
        return decided[0], decided[1], self.store.cnodes.get(ck, c)

    def _lower_target_once(self, pool: dict, cnode_spec: dict, request_id: str) -> list:
        """Removing a node lowers its pool's effective target by one, as in Batch (or the node
        would come right back), without writing the spec a GitOps repo owns (core/removals.py):
        the request is recorded in the Pool's annotation, once per request id, on the Pool's
        version read (a 409 re-reads it), so neither a crash nor a second writer counts it twice."""
        if pool["spec"].get("enableAutoScale"):
            return []   # the formula owns the target
        value = removals.record((pool["metadata"].get("annotations") or {}).get(naming.ANNOTATION_REMOVALS),
                                generation=int(pool["metadata"].get("generation") or 0),
                                dedicated=cnode_spec.get("isDedicated", True), request_id=request_id)
        if value is None:
            return []
        return [A.PatchObject("pools", pool, {"metadata": {"annotations": {naming.ANNOTATION_REMOVALS: value}}}, precondition=True)]

    async def decide_node(self, ck: str, c: dict, tasks: set[str]) -> tuple[str, bool, list]:
        """The node's Batch state, whether it takes tasks, and the plan: node operations
        (each recorded in handledRequests before the next boot starts), its preparation pod,
        the tasks a lost node gives up, and its status."""
        s = self.store
        plan: list = []
        ns = c["metadata"]["namespace"]
        spec, status = c["spec"], c.get("status") or {}
        pool = s.pools.get(key(ns, spec["poolName"]))
        knode = s.knodes.get(spec["nodeName"])
        if pool is None:
            return status.get("state", "unknown"), False, []
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
                plan += self._stop_tasks(tasks, option, f"node {op} requested")
                if op == "remove":
                    # as in Batch, removing nodes lowers the pool's target, or the node would come right back
                    plan += self._lower_target_once(pool, spec, req["requestId"])
                    prov = provider_for(pool, self.ex, self.settings)
                    released = self._release(pool, prov, knode, c) if knode else []
                    handled[op] = req["requestId"]
                    plan += [*released, A.WriteStatus("computenodes", c, {"handledRequests": handled, "state": "leavingpool",
                                                                          "stateTransitionTime": now_iso()})]
                    return "leavingpool", False, plan
                plan += [A.DeletePod(ns, pk_.split("/", 1)[1], grace=0) for pk_ in list(s.prep_pods.get(ck, ()))]
                handled[op] = req["requestId"]
                wipe_boot = op == "reimage"   # only a reimage empties the node dirs, not a later reboot
                booted = {"handledRequests": handled, "startTaskInfo": None, "lastBootTime": now_iso()}
                plan += [A.WriteStatus("computenodes", c, booted),
                         A.Event(c, "Normal", op.capitalize(), f"node {op} carried out ({option})")]
                c = A.with_status(c, booted)   # the rest of the plan is decided on the node as it will be
                status = c["status"]
                rebooting = {"reboot": "rebooting", "reimage": "reimaging"}[op]
                tasks = set()
                break
        if not sched_enabled and spec.get("schedulingState") == "disabled" and tasks:
            option = spec.get("nodeDisableSchedulingOption", "requeue")
            if option in ("requeue", "terminate") and status.get("schedulingState") != "disabled":
                plan += self._stop_tasks(tasks, option, "scheduling was disabled on the node")
                tasks = set()
        # --- the pool's taint, put back if another writer dropped it (the label says it is ours)
        taints = taint_to_restore(knode, naming.pool_node_label(ns, spec["poolName"]))
        if taints is not None:
            plan += [A.PatchNode(spec["nodeName"], {"spec": {"taints": taints}}, knode["metadata"].get("resourceVersion")),
                     A.Event(c, "Warning", "PoolTaintRestored", f"node {spec['nodeName']} had lost the pool's "
                             f"NoSchedule taint {naming.TAINT_POOL}; put back so other pods stay off it")]
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
        ready = node_ready(knode)
        if knode and ready == "True" and not tenancy.refused(pool):   # a refused pool's root dir is not trusted
            retry = max(preps) if preps else 0
            rec = preps.get(retry)
            placement = self._placement(pool, c)
            if rec is None:
                plan.append(A.CreatePod(pods.nodeprep_pod(pool=pool, placement=placement, boot=boot, retry=retry,
                                                          wipe=wipe, tools_image=self.settings.tools_image,
                                                          owner=pods.owner_reference(c),
                                                          resource_files=await self._expanded_resource_files(start.get("resourceFiles")))))
                prep_phase = "Pending"
            else:
                prep_phase = rec.view.phase
                if prep_phase == "Failed" and (max_retry == -1 or retry < max_retry):
                    plan.append(A.CreatePod(pods.nodeprep_pod(pool=pool, placement=placement, boot=boot, retry=retry + 1,
                                                              wipe=False, tools_image=self.settings.tools_image,
                                                              owner=pods.owner_reference(c),
                                                              resource_files=await self._expanded_resource_files(start.get("resourceFiles")))))
                    prep_phase = "Pending"
                elif prep_phase == "Failed":
                    failed_for_good = True
                if rec.view.phase in ("Running", "Succeeded", "Failed"):
                    new_info = {"state": "completed" if rec.view.phase in ("Succeeded", "Failed") else "running",
                                "startTime": rec.view.started_at, "endTime": rec.view.finished_at,
                                "exitCode": rec.view.exit_code, "retryCount": retry,
                                "result": {"Succeeded": "success", "Failed": "failure"}.get(rec.view.phase)}
                    if failed_for_good and not info.get("stderrTail"):
                        tail = await self.ex.pod_log_tail(ns, rec.view.name, "start-task")
                        new_info["stderrTail"] = tail[-1000:]
                        new_info["failureInfo"] = rec.view.preprocessing_failure or {   # e.g. a pool's package missing
                            "category": "usererror", "code": "FailureExitCode",
                            "message": f"The start task exited with code {rec.view.exit_code}"}
                        plan.append(A.Event(c, "Warning", "StartTaskFailed", (
                            f"start task exited {rec.view.exit_code} on {spec['nodeName']}" if rec.view.exit_code is not None
                            else f"start task could not run on {spec['nodeName']}: {new_info['failureInfo']['message']}")[:1000]))
                    info = {**info, **{k: v for k, v in new_info.items() if v is not None}}
        since = parse_time((node_condition(knode, "Ready") or {}).get("lastTransitionTime"))
        facts = NodeFacts(exists=knode is not None, ready=ready, ever_ready=bool(status.get("lastBootTime")),
                          not_ready_seconds=max(0.0, clock.time() - since) if since and ready != "True" else 0.0,
                          lost_grace=self.settings.node_lost_grace_seconds,
                          prep_phase=prep_phase if rebooting == "" else "", prep_failed_for_good=failed_for_good,
                          wait_for_success=wait, scheduling_enabled=sched_enabled, running_tasks=len(tasks),
                          rebooting=rebooting if rebooting and tasks else "",
                          preempted=being_taken_back(knode, spec.get("isDedicated", True)))
        state = node_state(facts)
        if rebooting and not tasks and prep_phase != "Succeeded":
            state = rebooting
        if state == "preempted" and tasks:
            # the cloud takes the node back: requeued (no retry used), each old pod stopped and
            # seen gone (or its Node deleted) before the next attempt starts elsewhere
            plan += self._stop_tasks(tasks, "requeue", f"node {spec['nodeName']} was preempted (low-priority capacity "
                                     "taken back)")
            tasks = set()
        if state == "unusable" and tasks:
            plan += self._stop_tasks(tasks, "requeue", f"node {spec['nodeName']} was not ready for longer than "
                                     f"{self.settings.node_lost_grace_seconds:.0f}s (PODBATCH_NODE_LOST_GRACE_SECONDS)", force=True)
        addr = node_address(knode)
        new = {"state": state, "schedulingState": "enabled" if sched_enabled else "disabled",
               "runningTasksCount": len(tasks),
               "runningTaskSlotsCount": sum(int(s.tasks[t]["spec"].get("requiredSlots", 1)) for t in tasks if t in s.tasks),
               "isDedicated": spec.get("isDedicated", True), "ipAddress": addr, "startTaskInfo": info or None}
        if state in ("idle", "running") and not status.get("lastBootTime"):
            new["lastBootTime"] = now_iso()
        if state != status.get("state"):
            new["stateTransitionTime"] = now_iso()
        new["conditions"] = merged_conditions(status.get("conditions"), conditions.node_conditions(
            state=state, start_task_failure=info.get("failureInfo")), c["metadata"].get("generation"))
        new["observedGeneration"] = c["metadata"].get("generation")
        changed = changed_keys(status, new)
        # idle <-> running and the counts are a report; any other change is decided from later
        report = set(changed) <= REPORTED_NODE_KEYS and {state, status.get("state")} <= {"idle", "running"}
        if changed and report and clock.monotonic() - self._node_written.get(ck, 0) < report_every(len(s.cnodes)):
            self.store.changed.set()   # a busy node's flips and counts: reported at most every report_every() s
        elif changed:
            plan += [A.WriteStatus("computenodes", c, new, report=report),
                     A.Then("note the write", lambda: self._node_written.__setitem__(ck, clock.monotonic()))]
        return state, is_schedulable(state, sched_enabled), plan

    def _placement(self, pool: dict, c: dict) -> pods.Placement:
        return pods.Placement(namespace=c["metadata"]["namespace"], pool=pool["metadata"]["name"],
                              node_name=c["spec"]["nodeName"], compute_node=c["metadata"]["name"],
                              is_dedicated=c["spec"].get("isDedicated", True),
                              node_root=pool["spec"].get("nodeRootDir") or self.settings.node_root)
