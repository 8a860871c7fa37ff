"""Scheduling: per pool, a snapshot of nodes, slots, jobs and ready tasks goes into the pure
`core.scheduler.plan`; a binding is the attempt's pod, which records it (core/binding.py;
a gang's, or one that waits for its job's preparation task, is the task's status first);
waiting tasks get their pending reason. Step 4."""
from __future__ import annotations

import asyncio

from podbatch import metrics
from podbatch.controllers import actions as A
from podbatch.controllers import clock
from podbatch.controllers.status import initial_status, now_iso, parse_time, with_task_conditions
from podbatch.controllers.store import key
from podbatch.core import deps as depcore
from podbatch.core import jobs as jobcore
from podbatch.core import naming, pods, resources, scheduler, taskids
from podbatch.core.tasks import ACTIVE, COMPLETED, PREPARING, RUNNING, dependency_action

# A waiting task's pendingReason is written once it has waited this long: tasks bound
# within a pass or two never cost a write for it.
PENDING_REASON_AFTER = 5.0
# Reasons only the user can clear: written at once, with an Event.
# Reasons a task can never be placed until its pool's nodes change: a pass plans over such
# tasks whatever the depth it reads a queue to (they would otherwise hide the tasks behind them).
NEVER_FITS = {scheduler.REQUIRED_SLOTS_EXCEED_NODE, scheduler.RESOURCES_EXCEED_NODE, scheduler.JOB_PREPARATION_FAILED}
# How many tasks past the free slots and the pending-reason places a pass reads of each job's
# queue: room for backfill (tasks that do not fit the free nodes are passed over).
QUEUE_MARGIN = 100
USER_FIXABLE = {"RequiredSlotsExceedNode", "InterNodeCommunicationDisabled", "DependencyCycle", "PoolNotFound",
                "ResourcesExceedNode"}


class Scheduling:
    def _ready_tasks_by_pool(self, only_pools: set[str] | None = None, depth: dict[str, int | None] | None = None,
                             ) -> tuple[dict[str, list], dict[str, scheduler.JobView], dict[str, dict]]:
        """Per pool, the ready tasks a pass plans over. `depth` (per pool): read each job's
        queue (kept in order by the store, core/queue.py) only that many ready tasks deep: a
        pass can bind no more than the pool's free slots, and writes pending reasons only for
        the first PODBATCH_PENDING_REASON_LIMIT places, so the rest of a deep queue is not
        looked at. Tasks that can never fit the pool (their pending reason says so) and tasks
        waiting for dependencies do not count against it, so they never hide tasks behind
        them. No `depth` (the autoscale formula's counts): every ready task."""
        s = self.store
        jobs: dict[str, scheduler.JobView] = {}
        tasks: dict[str, list] = {}
        waiting_deps: dict[str, dict] = {}
        views, self._views = self._views, {}
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
            cap = None if depth is None else depth.get(pk)
            unplaceable = self._unplaceable.get(pk, ())
            taken = 0
            pool_body = s.pools.get(pk)
            uses_deps = bool(j["spec"].get("usesTaskDependencies"))
            cycle = self._dependency_cycle(jk) if uses_deps else None
            for tk in s.queues.get(jk, ()):
                if cap is not None and taken >= cap:
                    break
                t = s.tasks.get(tk)
                if not t or not jobcore.belongs_to(t, j):
                    continue
                st = t.get("status") or {}
                state = st.get("state")
                if state not in (None, ACTIVE) or any(c.get("reason") == "InvalidSpec" and c.get("status") == "False" for c in st.get("conditions") or []):
                    continue
                if t["spec"].get("desiredState") == "terminated" or st.get("stoppingPods") or s.held(t):
                    continue   # (the previous attempt's pods must be gone before the next is bound)
                deps = t["spec"].get("dependsOn")
                if deps and uses_deps:
                    tid = t["spec"].get("id") or t["metadata"]["name"]
                    if cycle and tid in cycle:
                        waiting_deps[tk] = {"reason": "DependencyCycle", "queuePosition": 0,
                                            "message": f"tasks {' -> '.join(cycle)} depend on each other in a cycle and can never start; "
                                                       "fix dependsOn of one of them"}
                        continue
                    blocker = _blocking_dependency(deps, lambda tid2: self._task_by_id(jk, tid2))
                    if blocker:
                        waiting_deps[tk] = {"reason": "WaitingForDependencies", "message": blocker, "queuePosition": 0}
                        continue
                mi = t["spec"].get("multiInstanceSettings") or {}
                if int(mi.get("numberOfInstances", 1)) > 1 and pool_body and not pool_body["spec"].get("enableInterNodeCommunication"):
                    waiting_deps[tk] = {"reason": "InterNodeCommunicationDisabled", "queuePosition": 0,
                                        "message": f"a multi-instance task needs a pool with enableInterNodeCommunication: true; "
                                                   f"pool {pool_id} does not have it. Use another pool or set it on this one"}
                    continue
                if tk not in unplaceable:
                    taken += 1
                cached = views.get(tk)
                stamp = (t["metadata"].get("resourceVersion"), j["metadata"].get("resourceVersion"))
                view = cached[1] if cached and cached[0] == stamp else _task_view(tk, jk, t, j)
                self._views[tk] = (stamp, view)
                tasks.setdefault(pk, []).append(view)
            jobs[jk] = scheduler.JobView(key=jk, pool=pk, priority=int(j["spec"].get("priority", 0)),
                                         # the spec counts at once: no task starts after a terminate or
                                         # disable was asked, even before the job's status says so
                                         enabled=jst.get("state", "active") in ("active", "enabling")
                                         and j["spec"].get("desiredState", "active") == "active",
                                         max_parallel_tasks=int(j["spec"].get("maxParallelTasks", -1)), running_tasks=running,
                                         last_bound=self._last_bound.get(jk, 0), prep_blocked_nodes=self.prep_blocked(j))
        if depth is None:
            self._views.update(views)   # a full read (autoscaling) keeps what the passes built
        return tasks, jobs, waiting_deps

    def _task_by_id(self, jk: str, tid: str) -> dict | None:
        """The job's task with this Batch id (the first applied, if a duplicate was refused)."""
        holders = self.store.holders(jk, tid)
        if not holders:
            return self.store.collection_task(jk, tid)   # a collection's task not in memory now
        if len(holders) == 1:
            return self.store.tasks.get(holders[0])
        return taskids.holder(t for t in (self.store.tasks.get(k) for k in holders) if t)

    def _holds_slot(self, tk: str) -> bool:
        """Whether a task in flight still holds its slots: not once its (single) pod has ended,
        although its completion is not written yet. The pass that writes the completion then
        binds the next task to that slot at once, not a pass later. A gang holds its nodes
        until its status says it ended."""
        t = self.store.task(tk)
        if t is None:
            return False
        st = t.get("status") or {}
        if st.get("subtasks"):
            return True
        rec = self._own_pod(t, st.get("podName"))
        return rec is None or rec.view.phase not in ("Succeeded", "Failed")

    def _queue_depth(self, pk: str, node_view: dict) -> int | None:
        """How deep a pass reads each job's queue of pool `pk`: its free slots now, plus the
        places that get a pending reason written, plus a margin for tasks that do not fit
        the first free node (backfill). None (all) when pending reasons are not limited."""
        limit = self.settings.pending_reason_limit
        if not limit:
            return None
        pool = self.store.pools.get(pk)
        per_node = int(pool["spec"].get("taskSlotsPerNode", 1)) if pool else 1
        free = 0
        for ck, (_, schedulable, c) in node_view.items():
            if schedulable and c["metadata"]["namespace"] + "/" + c["spec"]["poolName"] == pk:
                counted = [t for t in self.store.inflight.get(ck, ()) if self._holds_slot(t)]
                used = sum(int(self.store.tasks[t]["spec"].get("requiredSlots", 1)) for t in counted) \
                    + self.store.pod_slots_on(c["spec"]["nodeName"], counted)
                free += max(0, per_node - used)
        return free + limit + QUEUE_MARGIN

    async def schedule(self, node_view: dict, pools: set[str]) -> set[str]:
        """Plan the pools whose queue, jobs or nodes changed since the last pass."""
        s = self.store
        ready, jobs, waiting_deps = self._ready_tasks_by_pool(pools, {pk: self._queue_depth(pk, node_view) for pk in pools})
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
                    counted = [t for t in sorted(self._inflight.get(ck, ())) if self._holds_slot(t)]
                    running = tuple(self._running_entry(t) for t in counted)
                    allocatable, free = self._node_resources(c, running)
                    # every live task pod there holds its slots too, whatever its Task: a deleted
                    # job's pods still terminating, a requeued attempt's old pod (store.node_pods)
                    used = sum(r[2] for r in running) + s.pod_slots_on(c["spec"]["nodeName"], counted)
                    nodes.append(scheduler.NodeView(name=ck, pool=pk, slots_total=int(pool["spec"].get("taskSlotsPerNode", 1)),
                                                    slots_used=used, schedulable=schedulable,
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
            self._unplaceable[pk] = {tk for tk, p in plan.pending.items() if p.reason in NEVER_FITS}
            for p in plan.preemptions:
                pending_writes.append(self._safely(f"bind:{p.task}", self._act(self._stop_tasks(
                    {p.task}, "requeue", "preempted to make room for a job manager task of a higher-priority job"))))
            for b in plan.bindings:
                pending_writes.append(self._safely(f"bind:{b.task}", self._bind_soon(b, pool, now)))
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

    def _dependency_cycle(self, jk: str) -> list[str] | None:
        """A cycle among the job's task dependencies; recomputed only when its task set changes."""
        members = self.store.tasks_by_job.get(jk, ())
        cached = self._cycles.get(jk)
        if cached and cached[0] == len(members):
            return cached[1]
        ids = {(x["spec"].get("id") or x["metadata"]["name"]): x for x in (self.store.tasks.get(k2) for k2 in members) if x}
        graph = {tid: depcore.wanted_ids(t["spec"].get("dependsOn")) for tid, t in ids.items()}
        cycle = depcore.find_cycle(graph)
        self._cycles[jk] = (len(members), cycle)
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

    async def _bind_soon(self, b, pool: dict, now: str) -> None:
        """Decide a binding now. A plan that only creates the attempt's pod (which records the
        binding) is applied in the background, its pod assumed in the store at once: the pass
        does not wait for the API server, and the next pass already counts the node's slot and
        the task as bound. Any other plan (a status write first) is applied in the pass."""
        plan = await self._bind(b, pool, now)
        if plan and all(isinstance(a, (A.CreatePod, A.Then)) for a in plan):
            for a in plan:
                if isinstance(a, A.CreatePod):
                    self.store.assume_pod(a.pod)
            self._in_background(f"bind:{b.task}", self._act_task(b.task, plan))
            return
        await self._act_task(b.task, plan)

    async def _bind(self, b, pool: dict, now: str) -> list:
        """The plan binding a task: the attempt's pod, which records the binding, when it can
        be created now; otherwise (a gang, a job preparation task still to run on the node) the
        status names the node(s) and the attempt's pod(s) first, on the version read."""
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
        then = [A.Then("forget the wait", lambda: self._pending_since.pop(b.task, None)),
                A.Then("count the binding", lambda: self._count_binding(t, pool, attempt))]
        job = s.jobs.get(key(ns, t["spec"]["jobName"]))
        pod_plan = []
        if job:
            bound = A.with_status(t, patch)
            pod_plan = await self._create_task_pod(bound, bound["status"], job)
        if len(b.nodes) == 1 and any(isinstance(a, A.CreatePod) and a.name == new["podName"] for a in pod_plan):
            return pod_plan + then   # the pod records the binding (core/binding.py): no status write before it
        # a gang, or a pod that must wait (the job's preparation task): the status records it
        return [A.WriteStatus("tasks", t, patch), *pod_plan, *then]

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


def _seq(t: dict) -> int:
    """Creation time in ms: ties (one second's tasks) go by key, as the job's queue orders them."""
    ts = parse_time(t["metadata"].get("creationTimestamp"))
    return int(ts * 1000) if ts else 0


def _task_view(tk: str, jk: str, t: dict, j: dict) -> scheduler.TaskView:
    labels = t["metadata"].get("labels") or {}
    manager = labels.get(naming.LABEL_JOB_MANAGER) == "true"
    jm = j["spec"].get("jobManagerTask") or {}
    return scheduler.TaskView(
        key=tk, job=jk, required_slots=int(t["spec"].get("requiredSlots", 1)),
        requests=tuple(sorted(resources.task_requests(t["spec"]).items())),
        priority=int(t["spec"].get("priority", 0)), seq=_seq(t),
        instances=int((t["spec"].get("multiInstanceSettings") or {}).get("numberOfInstances", 1)),
        is_job_manager=manager, dedicated_only=manager and not jm.get("allowLowPriorityNode", True),
        run_exclusive=manager and jm.get("runExclusive", True), affinity=_affinity(t))


def _blocking_dependency(deps: dict, task_by_id) -> str | None:
    """Why a task may not start yet: the first dependency not satisfied, or None."""
    for tid in depcore.wanted_ids(deps):
        t = task_by_id(tid)
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
