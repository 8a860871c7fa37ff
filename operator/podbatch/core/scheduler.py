"""podbatch's task scheduler: one pure pass from a snapshot to a plan.

Why it exists: podbatch, not the Kubernetes scheduler, decides which pool node runs a
task (Azure Batch semantics: task slots, job priority, fill type, job managers, gangs).
Keeping the decision a pure function of a snapshot makes it testable with tables,
benchmarkable alone, and safe to rerun after a crash: the controller observes, calls
`plan(snapshot)`, and executes the bindings, preemptions and pending reasons it returns.

The pass, per pool (pools in key order, so the plan is deterministic):

1. Nodes: only schedulable ones count; free slots = slots_total - slots_used. Nodes are
   kept in buckets by free slots (a heap of node ranks per bucket plus a bitmask of the
   non-empty buckets), so choosing a node is O(log n), not a scan:
   spread takes the highest bucket, pack the lowest bucket that fits; ties go to the
   lowest `order` (then name).
2. Job managers of the pool first (job priority desc, task priority desc, seq): a free
   node if one fits (run_exclusive: a node with no task at all); otherwise the running
   tasks to requeue, only from nodes whose running tasks all belong to strictly
   lower-priority jobs, and only tasks of jobs that allow preemption (Batch's
   allowTaskPreemption; run_exclusive: every task of the node must allow it), fewest
   requeues first. The job manager then stays pending (WaitingForPreemption) with that
   node held for it (`reserved`); the next pass places it. Nothing else preempts.
3. Other tasks, by job priority level (desc). Within a level jobs share fairly: the next
   task always goes to the job with the fewest tasks running or bound so far (ties: the
   job whose oldest ready task is oldest, then key). With equal starting counts that is
   plain round-robin, and because running tasks count it stays fair across passes (one
   slot freeing at a time alternates between jobs). Within a job: task priority desc,
   then seq asc. A task that does not fit is left pending and its job's next task is
   tried (backfill); a job at maxParallelTasks is skipped.
4. Gangs (instances > 1) are placed on `instances` distinct nodes at once or not at all.
   The highest-ranked gang of the pool that cannot be placed holds the nodes it would
   need (those with the most free slots now, tie: lowest order), returned in `reserved`;
   lower-ranked tasks, including small ones, do not get slots on them in this pass, so
   the gang is not starved as they free up. Only that one gang holds nodes: two gangs
   each holding half of what they need would deadlock. Holding is strict (no backfill of
   small tasks onto held nodes): the scheduler has no run-time estimates, so it cannot
   tell which small task would end before the gang could start. Since a gang is always
   placed whole within one pass, two competing gangs are never both partially started.
5. Resources: besides slots, a task's requests (CPU, memory, GPUs and other extended
   resources, `TaskView.requests`) must fit what the node has left (`NodeView.
   free_resources`: allocatable minus what the tasks bound there asked for); a node that
   does not fit is passed over like a node that is full. A task no ready node could ever
   hold (requests above every node's allocatable) waits with ResourcesExceedNode; one
   that fits a node's allocatable but not what is left now waits with
   WaitingForResources. Nodes whose resources are unknown (None) count slots only.
6. Once the pool has no free slot left (or no ready node), the remaining tasks are only
   ranked, not placed: each gets a Pending with its queue position, O(1) per task.
7. Affinity (Batch's affinityInfo, a soft locality hint): when a task's turn comes and
   the node it names is ready, not held, and has its slots and resources, it goes there
   whatever the fill type (a gang's primary too); otherwise the usual choice applies at
   once: a task never waits for its node. O(1) per such task (the pool's nodes are
   indexed by name once per pass, when the first such task comes); nothing for the others.

Queue positions are 1-based per pool, in the order the tasks would be placed (job
managers first, then the fair order above). Tasks that are not waiting in the queue
(their job is disabled or missing, the pool is missing, the task can never fit a node,
or the job's preparation task failed on every ready node) get position 0.

`plan()` never reads the clock and does no I/O; the same snapshot always yields the same
plan.
"""
from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from podbatch.core.resources import show as show_amounts

__all__ = [
    "NodeView", "PoolView", "JobView", "TaskView", "Snapshot",
    "Binding", "Pending", "Preemption", "Plan", "plan",
    "NO_NODE_READY", "ALL_SLOTS_BUSY", "JOB_DISABLED", "JOB_NOT_FOUND",
    "HIGHER_PRIORITY_JOB_AHEAD", "MAX_PARALLEL_TASKS_REACHED",
    "REQUIRED_SLOTS_EXCEED_NODE", "WAITING_FOR_GANG_NODES", "NOT_ENOUGH_NODES",
    "POOL_NOT_FOUND", "WAITING_FOR_PREEMPTION", "JOB_PREPARATION_FAILED",
    "PREEMPTED_FOR_JOB_MANAGER", "RESOURCES_EXCEED_NODE", "WAITING_FOR_RESOURCES",
]

# Pending reasons (CamelCase, as they appear in a Task's status).
NO_NODE_READY = "NoNodeReady"
ALL_SLOTS_BUSY = "AllSlotsBusy"
JOB_DISABLED = "JobDisabled"
JOB_NOT_FOUND = "JobNotFound"
HIGHER_PRIORITY_JOB_AHEAD = "HigherPriorityJobAhead"
MAX_PARALLEL_TASKS_REACHED = "MaxParallelTasksReached"
REQUIRED_SLOTS_EXCEED_NODE = "RequiredSlotsExceedNode"
WAITING_FOR_GANG_NODES = "WaitingForGangNodes"
NOT_ENOUGH_NODES = "NotEnoughNodes"
POOL_NOT_FOUND = "PoolNotFound"
WAITING_FOR_PREEMPTION = "WaitingForPreemption"
JOB_PREPARATION_FAILED = "JobPreparationFailed"
RESOURCES_EXCEED_NODE = "ResourcesExceedNode"
WAITING_FOR_RESOURCES = "WaitingForResources"
# Preemption reason.
PREEMPTED_FOR_JOB_MANAGER = "PreemptedForJobManager"


@dataclass(frozen=True, slots=True)
class NodeView:
    name: str            # ComputeNode name (unique in the snapshot)
    pool: str            # pool key "ns/name"
    slots_total: int     # the pool's taskSlotsPerNode
    slots_used: int      # slots held by tasks already bound (running or starting)
    schedulable: bool    # state idle/running, scheduling enabled, start task ok
    order: int = 0       # stable tie-break (creation order)
    # (task_key, job priority, slots, its job allows preemption) of running tasks, for
    # job-manager preemption
    running_job_priorities: tuple[tuple[str, int, int, bool], ...] = ()
    # resources (see core/resources.py units) the node has left, and its allocatable; None: unknown
    free_resources: Mapping[str, int] | None = None
    allocatable: Mapping[str, int] | None = None
    dedicated: bool = True       # false: a low-priority (spot) node


@dataclass(frozen=True, slots=True)
class PoolView:
    key: str
    fill_type: str = "spread"   # "spread" | "pack"
    slots_per_node: int = 0     # taskSlotsPerNode: judges requiredSlots while the pool has no node yet


@dataclass(frozen=True, slots=True)
class JobView:
    key: str
    pool: str
    priority: int = 0
    enabled: bool = True
    max_parallel_tasks: int = -1
    running_tasks: int = 0
    prep_blocked_nodes: frozenset[str] = frozenset()   # nodes where this job's preparation task failed
    last_bound: int = 0   # when this job last got a slot (any increasing counter): ties go to the longest-waiting job


@dataclass(frozen=True, slots=True)
class TaskView:
    key: str
    job: str
    required_slots: int = 1
    priority: int = 0
    seq: int = 0                 # creation order within the snapshot (FIFO tie-break)
    instances: int = 1           # >1: a multi-instance gang, needs `instances` DISTINCT nodes at once
    is_job_manager: bool = False  # starts before other tasks of its job, may preempt lower-priority jobs' tasks
    run_exclusive: bool = False  # job manager with runExclusive: needs a whole node
    needs_prep_on: frozenset[str] | None = None  # unused by the scheduler
    requests: tuple[tuple[str, int], ...] = ()   # (resource, amount) each instance asks of its node
    dedicated_only: bool = False  # a job manager with allowLowPriorityNode false
    affinity: str | None = None   # the node (NodeView.name) it prefers when that node has room


@dataclass(frozen=True, slots=True)
class Snapshot:
    pools: Mapping[str, PoolView]
    nodes: Sequence[NodeView]
    jobs: Mapping[str, JobView]
    tasks: Sequence[TaskView]    # ready: dependencies met, not yet bound


@dataclass(frozen=True, slots=True)
class Binding:
    task: str
    nodes: tuple[str, ...]       # one node, or `instances` distinct nodes (first = primary)


@dataclass(frozen=True, slots=True)
class Pending:
    reason: str
    message: str
    queue_position: int          # 1-based within the pool; 0 = not waiting in the queue


@dataclass(frozen=True, slots=True)
class Preemption:
    task: str                    # a running task to requeue to make room
    node: str
    reason: str


@dataclass(slots=True)
class Plan:
    bindings: list[Binding]
    pending: dict[str, Pending]
    preemptions: list[Preemption]
    reserved: dict[str, tuple[str, ...]]   # task -> nodes held for it (gangs, job managers awaiting preemption)


def plan(snapshot: Snapshot) -> Plan:
    """One scheduling pass: bindings, pending reasons, preemptions and held nodes."""
    result = Plan(bindings=[], pending={}, preemptions=[], reserved={})
    pools = snapshot.pools
    jobs = snapshot.jobs

    tasks_by_pool: dict[str, list[TaskView]] = {}
    for task in snapshot.tasks:
        job = jobs.get(task.job)
        if job is None:
            result.pending[task.key] = Pending(JOB_NOT_FOUND, f"job {task.job} does not exist", 0)
        elif job.pool not in pools:
            result.pending[task.key] = Pending(
                POOL_NOT_FOUND, f"pool {job.pool} of job {job.key} does not exist", 0)
        else:
            tasks_by_pool.setdefault(job.pool, []).append(task)

    nodes_by_pool: dict[str, list[NodeView]] = {}
    for node in snapshot.nodes:
        nodes_by_pool.setdefault(node.pool, []).append(node)

    for pool_key in sorted(tasks_by_pool):
        _PoolPass(pools[pool_key], nodes_by_pool.get(pool_key, []), jobs, result).run(
            tasks_by_pool[pool_key])
    return result


class _PoolPass:
    """The state of one pool during one pass: free slots per node, bucketed."""

    __slots__ = (
        "pool", "jobs", "result", "spread", "all_nodes", "names", "free",
        "slots_total", "slots_used", "running", "held", "touched", "buckets", "live", "mask",
        "total_free", "max_slots", "position", "waiting_priority", "gang_holding",
        "eligible_cache", "messages", "busy_message", "res", "cap", "res_failed", "dedicated",
        "index",
    )

    def __init__(self, pool: PoolView, nodes: list[NodeView], jobs: Mapping[str, JobView],
                 result: Plan) -> None:
        self.pool = pool
        self.jobs = jobs
        self.result = result
        self.spread = pool.fill_type != "pack"
        self.max_slots = max((n.slots_total for n in nodes), default=pool.slots_per_node)
        ready = sorted((n for n in nodes if n.schedulable), key=lambda n: (n.order, n.name))
        self.all_nodes = ready
        # A node's index is its rank in (order, name): the heaps order by it directly.
        self.names = [n.name for n in ready]
        self.slots_total = [n.slots_total for n in ready]
        self.slots_used = [n.slots_used for n in ready]
        self.running = [n.running_job_priorities for n in ready]
        self.free = [max(0, n.slots_total - n.slots_used) for n in ready]
        self.res = [dict(n.free_resources) if n.free_resources is not None else None for n in ready]
        self.cap = [n.allocatable for n in ready]
        self.dedicated = [n.dedicated for n in ready]
        self.res_failed: set[tuple] = set()    # (job or "", slots, requests) that found no node this pass
        self.held = bytearray(len(ready))      # withdrawn from the buckets (held or exclusive)
        self.touched = bytearray(len(ready))   # got a binding in this pass
        top = max(self.free, default=0)
        self.buckets: list[list[int]] = [[] for _ in range(top + 1)]
        self.live = [0] * (top + 1)
        for i, f in enumerate(self.free):
            self.buckets[f].append(i)           # indices ascend: already a heap
            self.live[f] += 1
        self.mask = 0
        for f, count in enumerate(self.live):
            if count:
                self.mask |= 1 << f
        self.total_free = sum(self.free)
        self.position = 0                       # last queue position handed out
        self.waiting_priority: int | None = None  # highest job priority waiting for capacity
        self.gang_holding: str | None = None
        self.eligible_cache: dict[tuple[str, int], int] = {}   # (job, need) -> nodes a gang may use
        self.messages: dict[tuple[int, int], str] = {}          # shared pending messages
        self.busy_message = f"all task slots of pool {pool.key} are busy"
        self.index: dict[str, int] | None = None   # node name -> index, built for the first affinity

    # -- node buckets -------------------------------------------------------------

    def _put(self, i: int) -> None:
        f = self.free[i]
        heapq.heappush(self.buckets[f], i)
        self.live[f] += 1
        self.mask |= 1 << f
        self.total_free += f

    def _withdraw(self, i: int) -> None:
        """Take a node out of the buckets for the rest of the pass (its heap entry goes stale)."""
        f = self.free[i]
        self.held[i] = 1
        self.live[f] -= 1
        if not self.live[f]:
            self.mask &= ~(1 << f)
        self.total_free -= f

    def _fits(self, i: int, requests: tuple[tuple[str, int], ...]) -> bool:
        free = self.res[i]
        return free is None or all(free.get(name, 0) >= amount for name, amount in requests)

    def _could_fit(self, i: int, requests: tuple[tuple[str, int], ...]) -> bool:
        """Whether the node could ever hold the requests (its allocatable, not what is left)."""
        cap = self.cap[i]
        return cap is None or all(cap.get(name, 0) >= amount for name, amount in requests)

    def _take(self, i: int, requests: tuple[tuple[str, int], ...]) -> None:
        free = self.res[i]
        if free is not None:
            for name, amount in requests:
                free[name] = free.get(name, 0) - amount

    def _pop_best(self, need: int, blocked: frozenset[str] | None, requests: tuple[tuple[str, int], ...] = (),
                  dedicated_only: bool = False) -> int:
        """Remove and return the preferred node with `need` free slots (and room for
        `requests`), or -1."""
        mask = self.mask
        if self.spread:
            f = mask.bit_length() - 1
            if f < need:
                return -1
        else:
            m = mask >> need
            if not m:
                return -1
            f = need + (m & -m).bit_length() - 1
        buckets, held, names = self.buckets, self.held, self.names
        while True:
            heap = buckets[f]
            aside = []
            found = -1
            while heap:
                i = heapq.heappop(heap)
                if held[i] or self.free[i] != f:
                    continue                    # stale entry of a withdrawn or already taken node
                if (blocked is not None and names[i] in blocked) or (requests and not self._fits(i, requests)) \
                        or (dedicated_only and not self.dedicated[i]):
                    aside.append(i)
                    continue
                found = i
                break
            for i in aside:
                heapq.heappush(heap, i)
            if found >= 0:
                self.live[f] -= 1
                if not self.live[f]:
                    self.mask &= ~(1 << f)
                self.total_free -= f
                return found
            if self.spread:
                f = (mask & ((1 << f) - 1)).bit_length() - 1
                if f < need:
                    return -1
            else:
                m = mask >> (f + 1)
                if not m:
                    return -1
                f = f + 1 + (m & -m).bit_length() - 1

    def _take_preferred(self, name: str, need: int, blocked: frozenset[str] | None,
                        requests: tuple[tuple[str, int], ...] = ()) -> int:
        """Take the node a task has an affinity to out of the buckets when it has room,
        like _pop_best (its heap entry goes stale once its free slots change), or -1."""
        if self.index is None:
            self.index = {n: i for i, n in enumerate(self.names)}
        i = self.index.get(name, -1)
        if i < 0 or self.held[i] or self.free[i] < need or (blocked is not None and name in blocked) \
                or (requests and not self._fits(i, requests)):
            return -1
        f = self.free[i]
        self.live[f] -= 1
        if not self.live[f]:
            self.mask &= ~(1 << f)
        self.total_free -= f
        return i

    @staticmethod
    def _blocked(job: JobView) -> frozenset[str] | None:
        return job.prep_blocked_nodes or None

    # -- pending ------------------------------------------------------------------

    def _queue(self, task: TaskView, reason: str, message: str) -> None:
        self.position += 1
        self.result.pending[task.key] = Pending(reason, message, self.position)

    def _wait_for_capacity(self, task: TaskView, job: JobView, message: str | None = None,
                           reason: str = ALL_SLOTS_BUSY) -> None:
        waiting = self.waiting_priority
        if waiting is not None and waiting > job.priority:
            key = (waiting, job.priority)
            ahead = self.messages.get(key)
            if ahead is None:
                ahead = self.messages[key] = (
                    f"tasks of a job with priority {waiting} wait ahead (this job has priority {job.priority})")
            self._queue(task, HIGHER_PRIORITY_JOB_AHEAD, ahead)
            return
        if waiting is None or job.priority > waiting:
            self.waiting_priority = job.priority
        self._queue(task, reason, message or self.busy_message)

    def _no_node_message(self) -> str:
        return f"no node of pool {self.pool.key} is ready (idle or running, scheduling enabled, start task done)"

    # -- the pass -----------------------------------------------------------------

    def run(self, tasks: list[TaskView]) -> None:
        pending = self.result.pending
        jobs = self.jobs
        managers: list[TaskView] = []
        by_job: dict[str, list[TaskView]] = {}
        prep_failed = {
            key for key in {t.job for t in tasks}
            if self.all_nodes and jobs[key].prep_blocked_nodes
            and all(name in jobs[key].prep_blocked_nodes for name in self.names)
        }
        for task in tasks:
            job = jobs[task.job]
            if not job.enabled:
                pending[task.key] = Pending(JOB_DISABLED, f"job {job.key} is disabled", 0)
            elif max(task.required_slots, 1) > self.max_slots and self.max_slots > 0:
                pending[task.key] = Pending(
                    REQUIRED_SLOTS_EXCEED_NODE,
                    f"requires {task.required_slots} slots but nodes of pool {self.pool.key} "
                    f"have {self.max_slots} (taskSlotsPerNode)", 0)
            elif task.requests and self.all_nodes and not any(self._could_fit(i, task.requests) for i in range(len(self.names))):
                pending[task.key] = Pending(
                    RESOURCES_EXCEED_NODE,
                    f"requests {_show(task.requests)} per instance but no ready node of pool {self.pool.key} has that much "
                    f"allocatable (largest: {self._largest(task.requests)}); lower spec.resources or use a pool of larger nodes", 0)
            elif job.key in prep_failed:
                pending[task.key] = Pending(
                    JOB_PREPARATION_FAILED,
                    f"the preparation task of job {job.key} failed on every ready node of pool {self.pool.key}", 0)
            elif task.is_job_manager:
                managers.append(task)
            else:
                by_job.setdefault(task.job, []).append(task)

        bound = {key: 0 for key in by_job}
        managers.sort(key=lambda t: (-jobs[t.job].priority, -t.priority, t.seq, t.key))
        for task in managers:
            self._place_job_manager(task, jobs[task.job], bound)

        levels: dict[int, list[str]] = {}
        for key, job_tasks in by_job.items():
            job_tasks.sort(key=lambda t: (-t.priority, t.seq, t.key))
            levels.setdefault(jobs[key].priority, []).append(key)
        for priority in sorted(levels, reverse=True):
            self._place_level(levels[priority], by_job, bound)

    def _place_job_manager(self, task: TaskView, job: JobView, bound: dict[str, int]) -> None:
        bound.setdefault(job.key, 0)
        if not self.all_nodes:
            self._queue(task, NO_NODE_READY, self._no_node_message())
            return
        limit = job.max_parallel_tasks
        if 0 <= limit <= job.running_tasks + bound[job.key]:
            self._queue(task, MAX_PARALLEL_TASKS_REACHED,
                        f"job {job.key} already runs its maxParallelTasks ({limit})")
            return
        need = max(task.required_slots, 1)
        blocked = self._blocked(job)
        if task.run_exclusive:
            node = self._find_empty_node(need, blocked, task.requests, task.dedicated_only)
            if node >= 0:
                self._withdraw(node)
                self.free[node] = 0
                self.touched[node] = 1
                self._take(node, task.requests)
                self._bind(task, (node,), job, bound)
                return
        else:
            node = self._pop_best(need, blocked, task.requests, task.dedicated_only)
            if node >= 0:
                self.free[node] -= need
                self.touched[node] = 1
                self._take(node, task.requests)
                self._put(node)
                self._bind(task, (node,), job, bound)
                return
        self._preempt_for(task, job, need, blocked)

    def _find_empty_node(self, need: int, blocked: frozenset[str] | None, requests: tuple = (),
                         dedicated_only: bool = False) -> int:
        best, best_key = -1, None
        for i in range(len(self.names)):
            if self.held[i] or self.touched[i] or self.slots_used[i] or self.slots_total[i] < need:
                continue
            if (requests and not self._fits(i, requests)) or (dedicated_only and not self.dedicated[i]):
                continue
            if blocked is not None and self.names[i] in blocked:
                continue
            key = (-self.slots_total[i] if self.spread else self.slots_total[i], i)
            if best_key is None or key < best_key:
                best, best_key = i, key
        return best

    def _preempt_for(self, task: TaskView, job: JobView, need: int,
                     blocked: frozenset[str] | None) -> None:
        """Choose running tasks of strictly lower-priority jobs that allow preemption to
        requeue for a job manager."""
        best: tuple[tuple[int, int, int], int, list[tuple[str, int, int, bool]]] | None = None
        for i in range(len(self.names)):
            if self.held[i] or self.touched[i] or self.slots_total[i] < need:
                continue
            if (blocked is not None and self.names[i] in blocked) or (task.dedicated_only and not self.dedicated[i]) \
                    or not self._could_fit(i, task.requests):
                continue
            running = self.running[i]
            if not running or any(prio >= job.priority for _, prio, _, _ in running):
                continue
            victims = [r for r in running if r[3]]   # tasks of jobs with allowTaskPreemption
            if not victims or (task.run_exclusive and len(victims) < len(running)):
                continue
            # Room needed: `need` free slots, or (runExclusive) every used slot.
            missing = (self.slots_used[i] if task.run_exclusive else need - self.free[i])
            chosen: list[tuple[str, int, int, bool]] = []
            for entry in sorted(victims, key=lambda r: (-r[2], r[1], r[0])):
                if missing <= 0:
                    break
                chosen.append(entry)
                missing -= entry[2]
            if missing > 0 or not chosen:
                continue
            rank = (len(chosen), max(prio for _, prio, _, _ in chosen), i)
            if best is None or rank < best[0]:
                best = (rank, i, chosen)
        if best is None:
            self._wait_for_capacity(
                task, job,
                f"no slot of pool {self.pool.key} fits, and no node can make room by requeueing tasks of jobs "
                f"with a priority lower than {job.priority} that set allowTaskPreemption")
            return
        _, node, chosen = best
        name = self.names[node]
        self._withdraw(node)
        for task_key, _, _, _ in chosen:
            self.result.preemptions.append(Preemption(task_key, name, PREEMPTED_FOR_JOB_MANAGER))
        self.result.reserved[task.key] = (name,)
        if self.waiting_priority is None or job.priority > self.waiting_priority:
            self.waiting_priority = job.priority
        self._queue(task, WAITING_FOR_PREEMPTION,
                    f"requeueing {len(chosen)} task(s) of lower-priority jobs on node {name}")

    def _bind(self, task: TaskView, nodes: tuple[int, ...], job: JobView, bound: dict[str, int]) -> None:
        names = self.names
        self.result.bindings.append(Binding(task.key, tuple(names[i] for i in nodes)))
        bound[job.key] += 1

    def _place_level(self, job_keys: list[str], by_job: dict[str, list[TaskView]],
                     bound: dict[str, int]) -> None:
        """Fair share among the jobs of one priority level (see the module docstring)."""
        jobs = self.jobs
        cursor = {key: 0 for key in job_keys}
        # (tasks running or bound, the job's oldest ready task, key): the fewest goes next.
        turns = [(jobs[key].running_tasks + bound[key], jobs[key].last_bound, min(t.seq for t in by_job[key]), key)
                 for key in job_keys]
        heapq.heapify(turns)
        no_nodes = not self.all_nodes
        gang_failed: dict[tuple[str, int], int] = {}   # (job, need) -> fewest instances that failed
        # Free slots only shrink during a pass, so a failure stays a failure: cache it.
        single_failed: dict[str, int] = {}             # job -> smallest need that failed (blocked jobs)
        while turns:
            count, last, first_seq, key = turns[0]
            job = jobs[key]
            job_tasks = by_job[key]
            at = cursor[key]
            limit = job.max_parallel_tasks
            placed = False
            while at < len(job_tasks):
                task = job_tasks[at]
                at += 1
                if 0 <= limit <= job.running_tasks + bound[key]:
                    self._queue(task, MAX_PARALLEL_TASKS_REACHED,
                                f"job {key} already runs its maxParallelTasks ({limit})")
                    placed = True                # counts as its turn: keeps the queue order fair
                    break
                if no_nodes:
                    self._queue(task, NO_NODE_READY, self._no_node_message())
                    placed = True
                    break
                need = task.required_slots if task.required_slots > 1 else 1
                if task.instances > 1:
                    if self._place_gang(task, job, need, bound, gang_failed):
                        placed = True
                        break
                    if self.total_free == 0:
                        placed = True            # the queue is now only ranked: one per turn
                        break
                    continue
                if self.total_free == 0:
                    self._wait_for_capacity(task, job)
                    placed = True
                    break
                blocked = job.prep_blocked_nodes or None
                requests = task.requests
                fail_key = (key if blocked is not None else "", need, requests)
                node = -1 if task.affinity is None else self._take_preferred(task.affinity, need, blocked, requests)
                if node >= 0:
                    pass                         # its preferred node had room (rule 7)
                elif requests:
                    node = -1 if fail_key in self.res_failed else self._pop_best(need, blocked, requests)
                    if node < 0:
                        self.res_failed.add(fail_key)
                elif blocked is None:
                    node = self._pop_best(need, None)
                elif single_failed.get(key, need + 1) <= need:
                    node = -1
                else:
                    node = self._pop_best(need, blocked)
                    if node < 0:
                        single_failed[key] = need
                if node >= 0:
                    self.free[node] -= need
                    self.touched[node] = 1
                    self._take(node, requests)
                    self._put(node)
                    self.result.bindings.append(Binding(task.key, (self.names[node],)))
                    bound[key] += 1
                    placed = True
                    break
                if requests:
                    self._wait_for_capacity(
                        task, job, f"needs {need} free slot(s) and {_show(requests)} left on one node; no node of pool "
                                   f"{self.pool.key} has that much left now (most: {self._most_left(requests)})",
                        reason=WAITING_FOR_RESOURCES)
                    placed = True
                    break
                self._wait_for_capacity(
                    task, job,
                    f"needs {need} free slots on one node; none of pool {self.pool.key} has them now")
            cursor[key] = at
            if at < len(job_tasks):
                # a job just served goes behind the jobs it ties with
                heapq.heapreplace(turns, (count + 1, 1 << 62, first_seq, key) if placed else (count, last, first_seq, key))
            else:
                heapq.heappop(turns)

    def _place_gang(self, task: TaskView, job: JobView, need: int, bound: dict[str, int],
                    gang_failed: dict[tuple[str, int], int]) -> bool:
        """Place a gang whole on distinct nodes; if it cannot be, queue it (and maybe hold nodes)."""
        instances = task.instances
        blocked = job.prep_blocked_nodes or None
        eligible = self.eligible_cache.get((job.key, need))
        if eligible is None:
            eligible = self.eligible_cache[(job.key, need)] = sum(
                1 for i in range(len(self.names))
                if self.slots_total[i] >= need and not (blocked is not None and self.names[i] in blocked)
                and self._could_fit(i, task.requests))
        if eligible < instances:
            self._queue(task, NOT_ENOUGH_NODES,
                        f"needs {instances} distinct nodes with {need} slots; pool {self.pool.key} "
                        f"has {eligible} ready")
            return False
        if self.total_free and gang_failed.get((job.key, need), instances + 1) > instances:
            chosen: list[int] = []
            if task.affinity is not None:
                first = self._take_preferred(task.affinity, need, blocked, task.requests)
                if first >= 0:
                    self.held[first] = 1        # so that _pop_best does not choose it again
                    chosen.append(first)
            while len(chosen) < instances:
                node = self._pop_best(need, blocked, task.requests)
                if node < 0:
                    break
                chosen.append(node)
            if chosen:
                self.held[chosen[0]] = 0
            if len(chosen) == instances:
                for node in chosen:
                    self.free[node] -= need
                    self.touched[node] = 1
                    self._take(node, task.requests)
                    self._put(node)
                self._bind(task, tuple(chosen), job, bound)
                return True
            for node in chosen:
                self._put(node)
            gang_failed[(job.key, need)] = instances
        if self.waiting_priority is None or job.priority > self.waiting_priority:
            self.waiting_priority = job.priority
        if self.gang_holding is None:
            held = self._hold_for_gang(instances, need, blocked, task.requests)
            self.gang_holding = task.key
            self.result.reserved[task.key] = held
            self._queue(task, WAITING_FOR_GANG_NODES,
                        f"needs {instances} distinct nodes with {need} free slots each; "
                        f"holding {', '.join(held)} as they free up")
        else:
            self._queue(task, WAITING_FOR_GANG_NODES,
                        f"needs {instances} distinct nodes with {need} free slots each; "
                        f"gang {self.gang_holding} ahead of it holds nodes first")
        return False

    def _hold_for_gang(self, instances: int, need: int, blocked: frozenset[str] | None,
                       requests: tuple = ()) -> tuple[str, ...]:
        candidates = [
            (-self.free[i], i) for i in range(len(self.names))
            if not self.held[i] and self.slots_total[i] >= need and self._could_fit(i, requests)
            and not (blocked is not None and self.names[i] in blocked)
        ]
        held = [i for _, i in heapq.nsmallest(instances, candidates)]
        for i in held:
            self._withdraw(i)
        return tuple(self.names[i] for i in held)

    def _largest(self, requests: tuple[tuple[str, int], ...]) -> str:
        """The most allocatable of each requested resource on one ready node of the pool."""
        return _show(tuple((name, max(((self.cap[i] or {}).get(name, 0) for i in range(len(self.names))), default=0))
                           for name, _ in requests))

    def _most_left(self, requests: tuple[tuple[str, int], ...]) -> str:
        return _show(tuple((name, max(((self.res[i] or {}).get(name, 0) for i in range(len(self.names))
                                       if not self.held[i]), default=0)) for name, _ in requests))


def _show(requests: tuple[tuple[str, int], ...]) -> str:
    return show_amounts(dict(requests))
