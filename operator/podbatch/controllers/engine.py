"""The reconcile engine: one loop, a thin orchestrator over per-kind reconcilers.

Handlers only record changes in the store; this loop gathers them (debounced), then in
one pass, in this order:
 1. pools (pools.py): grow or shrink node groups, one ComputeNode per member Node;
 2. compute nodes (nodes.py): Batch node states, start tasks, node operations;
 3. tasks (tasks.py): validate new ones, advance each in flight from its pod;
 4. scheduling (scheduling.py): per pool, snapshot → core.scheduler.plan → bindings, each
    the attempt's pod, which records it (core/binding.py);
 5. jobs (jobs.py, special.py) and job schedules (schedules.py).
Each reconciler decides on the store's snapshot and returns a plan of typed actions
(actions.py); the executor (executor.py) applies it in order, stopping at the first
failure, with the leader gate, resourceVersion preconditions, the store updated at once
(assume) and per-object backoff. Per-pass cost
follows what changed and what is queued, not the total ever seen.
"""
from __future__ import annotations

import asyncio
import inspect
import logging

from podbatch import metrics
from podbatch.api import InvalidObject, validate_object
from podbatch.config import Settings
from podbatch.controllers import actions as A
from podbatch.controllers import clock, reflector, sync
from podbatch.controllers.autoscaling import Autoscaling
from podbatch.controllers.collections import Collections
from podbatch.controllers.executor import Conflict, Executor, NotLeader
from podbatch.controllers.jobs import Jobs
from podbatch.controllers.nodes import Nodes
from podbatch.controllers.pools import Pools
from podbatch.controllers.reflector import Reflector
from podbatch.controllers.schedules import JobSchedules
from podbatch.controllers.scheduling import Scheduling
from podbatch.controllers.special import SpecialTasks
from podbatch.controllers.store import Store, key
from podbatch.controllers.tasks import Tasks
from podbatch.core import autoscale

log = logging.getLogger("podbatch.engine")


class Engine(Pools, Autoscaling, Nodes, Tasks, Collections, Scheduling, Jobs, SpecialTasks, JobSchedules):
    def __init__(self, store: Store, kube, settings: Settings) -> None:
        self.store, self.kube, self.settings = store, kube, settings
        self.ex = Executor(kube, store)
        self.invalid: dict[str, str] = {}        # object key -> last reported validation message
        self._terminate_requests: set[str] = set()   # jobs a task's exit conditions asked to terminate
        self._inflight: dict[str, set[str]] = {}
        self._last_bound: dict[str, int] = {}        # job -> binding counter value of its latest binding
        self._auto_pools_announced: set[str] = set()   # auto pools whose creation was announced by an event
        self._bindings = 0
        self._pending_since: dict[str, float] = {}   # tasks seen waiting, not yet bound
        self._running_since: dict[str, float] = {}   # tasks whose pod runs, `running` not written yet
        self._deferred: set[str] = set()             # tasks to look at again next pass
        self._in_flight: dict[str, asyncio.Task] = {}  # "bind:task" / "job:job" -> its writes, applied in the background
        self._waiting: set[str] = set()               # objects changed while their write was in flight
        self._samples: dict[str, dict[str, list[autoscale.Sample]]] = {}   # pool -> metric -> samples (24 h)
        self._autoscale: dict[str, dict] = {}         # pool -> last evaluation
        self._cycles: dict[str, tuple[int, list[str] | None]] = {}   # job -> (task count, cycle)
        self._views: dict[str, tuple] = {}            # task -> ((its rv, its job's rv), its scheduler TaskView), last pass's
        self._unplaceable: dict[str, set[str]] = {}   # pool -> tasks the last pass found could never fit it
        self._node_written: dict[str, float] = {}     # compute node -> when its status was last written
        self._last_node_states: dict[str, tuple] = {}
        self._replan: set[str] = set()                # pools to plan again next pass (deferred pending reasons)
        self._cnode_pool: dict[str, str] = {}
        self._node_state_by_name: dict[str, str] = {}   # Node name -> its compute node's state
        self._retention_due: list[tuple[float, str]] = []   # (when, task) heap
        self._retention_known: set[str] = set()
        self.heartbeat = clock.monotonic()            # end of the last pass (the liveness probe reads it)
        self._next_resync = 0.0
        self._sweep_due = True                        # after the first sync
        self._to_adopt: set[str] = set()              # tasks to give an ownerReference to their Job
        self._cleanup_since: dict[str, float] = {}    # cleanup pod -> when first seen not ended
        self._rejected: dict[str, tuple[float, str]] = {}   # Node -> (until, resource) after a kubelet OutOf… rejection
        self._pool_decided: dict[str, tuple] = {}     # pool -> (autoscale run, dedicated, low-priority) of its last plan
        self._flushed: dict[str, float] = {}          # collection -> when its status was last written
        self._listings: dict[str, tuple] = {}          # task-per-file collection -> its listing (controllers/collections.py)

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        await self.sync_until_done()
        # podbatch's pods and Tasks are watched here, from the versions the sync listed them at
        self.reflectors = [Reflector(self.store, self.kube, k, on_relisted=self._relisted_by_watch) for k in reflector.KINDS]
        watches = [asyncio.create_task(r.run(self.store.listed_at.get(r.plural, "")), name=f"podbatch-watch-{r.plural}")
                   for r in self.reflectors]
        try:
            await self._loop()
        finally:
            for w in watches:
                w.cancel()

    def _relisted_by_watch(self) -> None:
        """A watch gap made a reflector list pods or Tasks again: pods whose task went meanwhile
        are swept in the next pass, as after the engine's own relists."""
        self._sweep_due = True
        self.store.changed.set()

    async def _loop(self) -> None:
        while True:
            wait = self.settings.tick_seconds
            for due_in in (self.ex.backoff.next_in(), self.store.assumed_expire_in()):
                if due_in is not None:
                    wait = min(wait, due_in + 0.01)
            try:
                await asyncio.wait_for(self.store.changed.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(self.settings.debounce_seconds)
            self.store.changed.clear()
            self.heartbeat = clock.monotonic()
            if not self.ex.leading:
                continue   # a standby keeps its store fresh and writes nothing
            started = clock.monotonic()
            try:
                await self.resync_if_needed()
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconcile pass failed; retrying")
                await asyncio.sleep(1)
                self.store.changed.set()
            self.heartbeat = clock.monotonic()
            metrics.RECONCILE_PASS_SECONDS.observe(clock.monotonic() - started)

    async def sync_until_done(self) -> None:
        """The first pass waits for a full list of every kind (retried until the API answers)."""
        delay = 1.0
        while True:
            try:
                await sync.full_sync(self.store, self.kube)
                self._next_resync = clock.monotonic() + self.settings.resync_seconds
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("initial list failed, retrying in %.0fs: %s", delay, str(e)[:300])
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    async def resync_if_needed(self) -> None:
        """List again each kind kopf relisted (a watch gap), and every kind every resync_seconds."""
        kinds, self.store.relisted = set(self.store.relisted), set()
        if clock.monotonic() >= self._next_resync:
            kinds.update(sync.KINDS)
            self._next_resync = clock.monotonic() + self.settings.resync_seconds
        for plural in sorted(kinds, key=sync.KINDS.index):
            try:
                await sync.relist(self.store, self.kube, plural)
            except Exception as e:   # the next relist request or resync tries again
                log.warning("relist of %s failed: %s", plural, str(e)[:300])
                self.store.relisted.add(plural)
        if self._sweep_due or kinds & {"pods", "tasks"}:
            self._sweep_due = False
            swept = await self.sweep_stray_pods()
            if swept:
                log.info("deleted %d task pods that were no task's current attempt", swept)

    async def reconcile(self) -> None:
        s = self.store
        changed_pools, s.dirty_pools = s.dirty_pools, set()
        dirty_tasks, s.dirty_tasks = s.dirty_tasks | self._deferred, set()
        self._deferred = set()
        dirty_jobs, s.dirty_jobs = s.dirty_jobs, set()
        landed = {w for w in self._waiting if w not in self._in_flight}   # looked at again now
        self._waiting -= landed
        dirty_jobs |= {w[4:] for w in landed if w.startswith("job:")}
        dirty_tasks |= {w[5:] for w in landed if w.startswith("task:")}
        for k in self.ex.backoff.due():   # objects whose backoff ended are looked at again
            kind, _, name = k.partition(":")
            if kind == "task":
                dirty_tasks.add(name)
            elif kind == "job":
                dirty_jobs.add(name)
            elif kind == "bind" and name in s.tasks:   # its pool plans again
                dirty_jobs.add(key(name.split("/", 1)[0], s.tasks[name]["spec"].get("jobName", "")))
        s.expire_assumed_pods()
        await self._safely("wrappers", self.ex.recheck_wrappers())
        await self.refresh_node_metrics()
        for pk in list(s.pools):   # pools are few: every pass (timers, autoscale, resize)
            if not self.ex.backoff.waiting(f"pool:{pk}"):
                await self._safely(f"pool:{pk}", self.reconcile_pool(s.pools[pk]))
        node_view = await self.reconcile_nodes()
        node_states = {ck: v[:2] for ck, v in node_view.items()}
        if node_states != self._last_node_states:   # a node came, went or changed state: its pool replans
            changed_pools.update(key(v[2]["metadata"]["namespace"], v[2]["spec"]["poolName"]) for ck, v in node_view.items()
                                 if self._last_node_states.get(ck) != v[:2])
            changed_pools.update(self._pools_of_cnodes(set(self._last_node_states) - set(node_states)))
            self._last_node_states = node_states
        dirty_jobs |= await self.advance_tasks(dirty_tasks, node_view)
        await self.reconcile_collections(node_view)
        sched_pools = changed_pools | self._replan | self._rejections_ended() \
            | {self._pool_of_job(jk) for jk in dirty_jobs | s.dirty_jobs}
        self._replan = set()
        dirty_jobs |= await self.schedule(node_view, sched_pools)
        await self.adopt_some()
        await self.expire_retention()
        await self.reconcile_schedules()
        for jk in dirty_jobs | self._jobs_with_timers():
            if jk in s.jobs:
                await self._safely(f"job:{jk}", self.reconcile_job(s.jobs[jk]))
        self._gauge_tasks()

    # ------------------------------------------------------------------ helpers
    async def _act(self, decided) -> bool:
        """Apply a reconciler's plan (or await the decision first: some decisions read beyond
        the store, such as a storage container's listing). True once every step was applied."""
        plan = await decided if inspect.isawaitable(decided) else decided
        if plan:
            await self.ex.apply(plan)
        return True

    async def _apply_soon(self, what: str, decide) -> None:
        """Decide an object's plan (`decide()`, `what` = "kind:key") and apply it. A plan of
        reports only (`A.WriteStatus.report`) is applied in the background, one at a time per
        object: while one is in flight the object's next report waits (`_waiting`) and is
        decided again once it has landed. Any other plan is applied in the pass, after the
        report in flight has landed and decided again from what it wrote (its version)."""
        plan = await decide()
        if plan and all(isinstance(a, A.Then) or (isinstance(a, A.WriteStatus) and a.report) for a in plan):
            if what in self._in_flight:
                self._waiting.add(what)
            else:
                self._in_background(what, self.ex.apply(plan))
            return
        if plan and what in self._in_flight:
            await asyncio.wait([self._in_flight[what]])
            plan = await decide()
        await self.ex.apply(plan)

    def _in_background(self, what: str, coro) -> None:
        """Apply writes whose outcome the rest of the pass does not need (`what` = "kind:key",
        at most one in flight per object) without holding the pass: the pass ends, the next
        one binds what came meanwhile. A failure backs the object off as in the pass (its
        retry wakes the loop); a job that changed while its write was in flight asks for a
        pass once the write has landed."""
        self._track_in_flight(what, asyncio.get_running_loop().create_task(self._safely(what, coro)))

    def _track_in_flight(self, what: str, bg: asyncio.Future) -> None:
        """`what`'s writes run in `bg`: until it ends, the object is not decided again (it
        waits in `_waiting` and is looked at in the first pass after)."""
        self._in_flight[what] = bg

        def done(_):
            if self._in_flight.get(what) is bg:
                del self._in_flight[what]
            if what in self._waiting:
                self.store.changed.set()
        bg.add_done_callback(done)

    async def _safely(self, what: str, coro):
        """One object's failure (an API error, a conflict, a bad spec) never stops the pass for
        the others; the object (`what` = "kind:key") is looked at again after its backoff."""
        try:
            res = await coro
            self.ex.backoff.succeeded(what)
            return res
        except asyncio.CancelledError:
            raise
        except NotLeader:
            return None
        except Conflict as e:
            self.ex.backoff.failed(what)
            log.info("%s: %s; deciding again", what, e)
            return None
        except Exception as e:
            delay = self.ex.backoff.failed(what)
            log.warning("%s failed, retrying in %.1fs: %s", what, delay, str(e)[:500])
            return None

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
        self.ex.event(body, "Warning", "InvalidSpec", msg)
        return msg
