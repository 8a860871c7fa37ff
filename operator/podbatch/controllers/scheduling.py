"""Scheduling: per pool, a snapshot of nodes, slots, jobs and ready tasks goes into the pure
`core.scheduler.plan`; its bindings are written as the task's status (the decision, on
the version read) and then its pod; waiting tasks get their pending reason. Step 4."""
from __future__ import annotations

import asyncio

from podbatch import metrics
from podbatch.controllers import actions as A
from podbatch.controllers import clock
from podbatch.controllers.status import initial_status, now_iso, parse_time, with_task_conditions
from podbatch.controllers.store import key
from podbatch.core import deps as depcore
from podbatch.core import jobs as jobcore
from podbatch.core import naming, pods, resources, scheduler
from podbatch.core.tasks import ACTIVE, COMPLETED, PREPARING, RUNNING, dependency_action

# A waiting task's pendingReason is written once it has waited this long: tasks bound
# within a pass or two never cost a write for it.
PENDING_REASON_AFTER = 1.5
# Reasons only the user can clear: written at once, with an Event.
USER_FIXABLE = {"RequiredSlotsExceedNode", "InterNodeCommunicationDisabled", "DependencyCycle", "PoolNotFound",
                "ResourcesExceedNode"}


class Scheduling:
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
                if not t or not jobcore.belongs_to(t, j):
                    continue
                st = t.get("status") or {}
                state = st.get("state")
                if state not in (None, ACTIVE) or any(c.get("reason") == "InvalidSpec" and c.get("status") == "False" for c in st.get("conditions") or []):
                    continue
                if t["spec"].get("desiredState") == "terminated" or st.get("stoppingPods"):
                    continue   # (the previous attempt's pods must be gone before the next is bound)
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
                    requests=tuple(sorted(resources.task_requests(t["spec"]).items())),
                    priority=int(t["spec"].get("priority", 0)), seq=_seq(t, seq),
                    instances=int((t["spec"].get("multiInstanceSettings") or {}).get("numberOfInstances", 1)),
                    is_job_manager=(t["metadata"].get("labels") or {}).get(naming.LABEL_JOB_MANAGER) == "true",
                    dedicated_only=(t["metadata"].get("labels") or {}).get(naming.LABEL_JOB_MANAGER) == "true"
                    and not (j["spec"].get("jobManagerTask") or {}).get("allowLowPriorityNode", True),
                    run_exclusive=(t["metadata"].get("labels") or {}).get(naming.LABEL_JOB_MANAGER) == "true"
                    and (j["spec"].get("jobManagerTask") or {}).get("runExclusive", True),
                    affinity=_affinity(t)))
            jobs[jk] = scheduler.JobView(key=jk, pool=pk, priority=int(j["spec"].get("priority", 0)),
                                         # the spec counts at once: no task starts after a terminate or
                                         # disable was asked, even before the job's status says so
                                         enabled=jst.get("state", "active") in ("active", "enabling")
                                         and j["spec"].get("desiredState", "active") == "active",
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
                    running = tuple(self._running_entry(t) for t in sorted(self._inflight.get(ck, ())) if t in s.tasks)
                    allocatable, free = self._node_resources(c, running)
                    nodes.append(scheduler.NodeView(name=ck, pool=pk, slots_total=int(pool["spec"].get("taskSlotsPerNode", 1)),
                                                    slots_used=sum(r[2] for r in running), schedulable=schedulable,
                                                    order=_order(c), running_job_priorities=running,
                                                    free_resources=free, allocatable=allocatable,
                                                    dedicated=c["spec"].get("isDedicated", True)))
            pools = {pk: scheduler.PoolView(key=pk, fill_type=(pool["spec"].get("taskSchedulingPolicy") or {}).get("nodeFillType", "spread"),
                                            slots_per_node=int(pool["spec"].get("taskSlotsPerNode", 1)))} if pool else {}
            snap = scheduler.Snapshot(pools=pools, nodes=nodes, jobs={j.key: j for j in jobs.values() if j.pool == pk}, tasks=tlist)
            t0 = clock.monotonic()
            # plan() is pure over an immutable snapshot: a big queue is planned off the event
            # loop so kopf's watches keep flowing meanwhile.
            plan = scheduler.plan(snap) if len(tlist) < 2000 else await asyncio.to_thread(scheduler.plan, snap)
            metrics.SCHEDULER_PASS_SECONDS.observe(clock.monotonic() - t0)
            for p in plan.preemptions:
                pending_writes.append(self._safely(f"bind:{p.task}", self._act(self._stop_tasks(
                    {p.task}, "requeue", "preempted to make room for a job manager task of a higher-priority job"))))
            for b in plan.bindings:
                pending_writes.append(self._safely(f"bind:{b.task}", self._act_task(b.task, self._bind(b, pool, now))))
                touched.add(s.tasks[b.task]["metadata"]["namespace"] + "/" + s.tasks[b.task]["spec"]["jobName"])
            limit = self.settings.pending_reason_limit
            for tk, p in plan.pending.items():
                if limit and p.queue_position > limit and p.reason not in USER_FIXABLE:
                    continue   # deep in the queue: its reason is written once it is within the first `limit`
                pending_writes.append(self._safely(f"pending:{tk}", self._act(self._set_pending(
                    tk, {"reason": p.reason, "message": p.message, "queuePosition": p.queue_position}))))
        for tk, p in waiting_deps.items():
            pending_writes.append(self._safely(f"pending:{tk}", self._act(self._set_pending(tk, p))))
        if pending_writes:
            await asyncio.gather(*pending_writes)
        return touched

    def _rejections_ended(self) -> set[str]:
        """Pools of the nodes whose kubelet rejection window just ended: they plan again."""
        now = clock.monotonic()
        ended = {name for name, (until, _) in self._rejected.items() if until <= now}
        for name in ended:
            del self._rejected[name]
        if not ended:
            return set()
        return {key(c["metadata"]["namespace"], c["spec"]["poolName"]) for c in self.store.cnodes.values()
                if c["spec"].get("nodeName") in ended}

    def _node_resources(self, c: dict, running: tuple) -> tuple[dict | None, dict | None]:
        """(allocatable, left) of the compute node's Node: what the kubelet admits, minus what
        the tasks bound there asked for. Pods other than podbatch's are not seen (pool nodes
        are tainted for podbatch; a DaemonSet's requests are not counted): a task the kubelet
        then turns away (OutOfcpu …) is requeued, not failed."""
        knode = self.store.knodes.get(c["spec"]["nodeName"])
        alloc = ((knode or {}).get("status") or {}).get("allocatable")
        if not alloc:
            return None, None
        allocatable = resources.amounts(alloc)
        used = [resources.task_requests(self.store.tasks[t]["spec"]) for t, *_ in running if t in self.store.tasks]
        free = resources.left(allocatable, used)
        until, resource = self._rejected.get(c["spec"]["nodeName"], (0.0, ""))
        if clock.monotonic() < until:
            free[resource] = 0   # its kubelet just turned a pod away for this resource (tasks.py)
        return allocatable, free

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
                self.ex.event(j, "Warning", "DependencyCycle", f"tasks {' -> '.join(cycle)} depend on each other in a cycle")
        return cycle

    def _pool_of_job(self, jk: str) -> str:
        j = self.store.jobs.get(jk)
        if not j:
            return ""
        return key(j["metadata"]["namespace"], jobcore.pool_id_of(j))

    def _pools_of_cnodes(self, cnodes: set[str]) -> set[str]:
        return {self._cnode_pool[c] for c in cnodes if c in self._cnode_pool}

    def _running_entry(self, tk: str) -> tuple[str, int, int, bool]:
        """A task running on a node as the scheduler weighs it for a job manager's preemption:
        (task, its job's priority, its slots, whether its job set allowTaskPreemption)."""
        t = self.store.tasks[tk]
        j = self.store.jobs.get(key(t["metadata"]["namespace"], t["spec"].get("jobName", ""))) or {"spec": {}}
        return (tk, int(j["spec"].get("priority", 0)), int(t["spec"].get("requiredSlots", 1)),
                bool(j["spec"].get("allowTaskPreemption", False)))

    def _set_pending(self, tk: str, reason: dict) -> list:
        """The plan writing why a task waits (once it has waited PENDING_REASON_AFTER)."""
        t = self.store.tasks.get(tk)
        if not t:
            return []
        old = (t.get("status") or {}).get("pendingReason") or {}
        if old.get("reason") == reason["reason"] and old.get("message") == reason["message"]:
            return []   # positions move constantly; rewrite only when the reason changes
        first = self._pending_since.setdefault(tk, clock.monotonic())
        if clock.monotonic() - first < PENDING_REASON_AFTER and reason["reason"] not in USER_FIXABLE:
            self._replan.add(self._pool_of_job(key(t["metadata"]["namespace"], t["spec"].get("jobName", ""))))
            self.store.changed.set()   # look again; most tasks are bound before this
            return []
        st = t.get("status") or {}
        plan: list = [A.WriteStatus("tasks", t, with_task_conditions(
            t, {"pendingReason": reason, **({} if st.get("state") else initial_status(now_iso()))}, user_fixable=USER_FIXABLE))]
        if reason["reason"] in USER_FIXABLE:
            # on the Job, grouped: a job of 10,000 tasks on a missing pool makes one Event, not 10,000
            job = self.store.jobs.get(key(t["metadata"]["namespace"], t["spec"].get("jobName", "")))
            plan.append(A.Event(job or t, "Warning", reason["reason"], reason["message"]))
        return plan

    async def _bind(self, b, pool: dict, now: str) -> list:
        """The plan binding a task: its status names the node(s) and the attempt's pod(s) (the
        decision, on the version read), then the pods are created."""
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
                            "nodeName": c["spec"]["nodeName"], "affinityId": c["metadata"]["name"],
                            "taskRootDirectory": f"{root}/workitems/{t['spec']['jobName']}/job-1/{tid}"},
               "subtasks": [{"id": i, "state": PREPARING, "nodeName": s.cnodes[n]["metadata"]["name"],
                             "podName": naming.task_pod_name(t["metadata"]["name"], attempt) if i == 0
                             else naming.subtask_pod_name(t["metadata"]["name"], attempt, i)}
                            for i, n in enumerate(b.nodes)] if len(b.nodes) > 1 else None}
        patch = with_task_conditions(t, new)
        plan: list = [A.WriteStatus("tasks", t, patch), A.Then("forget the wait", lambda: self._pending_since.pop(b.task, None))]
        job = s.jobs.get(key(ns, t["spec"]["jobName"]))
        if job:
            bound = A.with_status(t, patch)
            plan += await self._create_task_pod(bound, bound["status"], job)
        return plan + [A.Then("count the binding", lambda: self._count_binding(t, pool, attempt))]

    def _count_binding(self, t: dict, pool: dict, attempt: int) -> None:
        ns = t["metadata"]["namespace"]
        metrics.BINDINGS.labels(ns, pool["metadata"]["name"]).inc()
        self._bindings += 1
        self._last_bound[key(ns, t["spec"]["jobName"])] = self._bindings
        if attempt == 1:
            created = parse_time(t["metadata"].get("creationTimestamp"))
            if created:
                metrics.SCHEDULING_LATENCY.observe(max(0.0, clock.time() - created))


def _order(c: dict) -> int:
    name = c["metadata"]["name"]
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else hash(name) % 100000


def _affinity(t: dict) -> str | None:
    """The compute node (store key) a task prefers (Batch's affinityInfo.affinityId), if any."""
    name = (t["spec"].get("affinityInfo") or {}).get("affinityId")
    return key(t["metadata"]["namespace"], name) if name else None


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
