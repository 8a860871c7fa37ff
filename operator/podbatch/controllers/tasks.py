"""Tasks in flight: advance each task's state machine (core/tasks.py) from its pod, stop
tasks (requeue or terminate), create the current attempt's pods, expire retention.
Step 3 of a pass."""
from __future__ import annotations

import asyncio
import heapq
import json
import logging

from kubernetes_asyncio.client.rest import ApiException

from podbatch import metrics
from podbatch.controllers import actions as A
from podbatch.controllers import blobs
from podbatch.controllers import clock
from podbatch.controllers.status import CLEANUP_STUCK, condition, initial_status, now_iso, parse_time, with_task_conditions
from podbatch.controllers.store import key
from podbatch.core import files as rfiles
from podbatch.core import binding, naming, pods, taskids
from podbatch.core import collections as collcore
from podbatch.core.durations import seconds
from podbatch.core.jobs import job_owner_uid
from podbatch.core.nodes import node_lost
from podbatch.core.tasks import ACTIVE, COMPLETED, PREPARING, RUNNING, Outcome, complete, new_attempt, observe_attempt

log = logging.getLogger("podbatch.engine")
# A task's `running` is written once its pod has run this long: a task that ends sooner
# goes from preparing to completed in one write (its previousState still says running).
RUNNING_WRITE_AFTER = 1.0
RETENTION_RETRY = 10.0
ADOPT_PER_PASS = 50
DECIDE_SLICE = 500   # tasks decided between two turns of the loop
PLANS_WAIT = 1.0     # seconds a pass waits for the tasks' writes before it schedules; the rest land in the background
REJECTED_FOR = 30.0   # seconds a node counts as out of a resource after its kubelet turned a pod away for it


class Tasks:
    def _stop_tasks(self, tasks: set[str], option: str, why: str, force: bool = False) -> list:
        """The plan to stop tasks in flight. requeue: back to the queue without using a retry;
        terminate: completed, failed. See `_stop_one`."""
        plan: list = []
        for tk in list(tasks):
            t = self.store.task(tk)
            if t:
                plan += self._stop_one(t, option, why, force)
        return plan

    def _stop_one(self, t: dict, option: str, why: str, force: bool = False) -> list:
        """Two phases, so attempts never overlap: the status write records the next attempt
        together with the old attempt's pods that may still run (`stoppingPods`); then they
        are deleted (gracefully: the task gets SIGTERM and its grace period). The next
        attempt is bound only once they are seen gone (`_wait_for_stopping_pods`). A crash
        between the two writes leaves the pods recorded, so the next pass deletes them.
        `force`: the node is fenced (lost past its grace): its pods cannot be running."""
        st = t.get("status") or {}
        if st.get("state") not in (PREPARING, RUNNING):
            return []
        primary = self._own_pod(t, st.get("podName"))
        if primary is not None and primary.view.phase in ("Succeeded", "Failed"):
            self.store.dirty_tasks.add(key(t["metadata"]["namespace"], t["metadata"]["name"]))
            return []   # it ended on its own: its outcome is recorded instead
        live = [] if force else self._live_pods(t, self._attempt_pods(st))
        plan: list = []
        if option == "terminate":
            new = complete(st, now=now_iso(), exit_code=None, result="failure",
                           failure={"category": "servererror", "code": "TaskEnded", "message": f"The task was terminated: {why}"})
            plan.append(A.WriteStatus("tasks", t, with_task_conditions(t, new)))
        else:
            new = new_attempt(st, now=now_iso(), kind="requeue", reason=why, stopping=live)
            labels = _pool_labels(t, st)
            plan += [A.WriteStatus("tasks", t, with_task_conditions(t, new)),
                     A.Then("count the requeue", lambda: metrics.TASK_REQUEUES.labels(*labels).inc())]
        plan += [A.DeletePod(t["metadata"]["namespace"], name, grace=0 if force else None) for name in self._attempt_pods(st)]
        plan.append(A.Event(t, "Warning", "TaskRequeued" if option != "terminate" else "TaskTerminated", why))
        return plan

    async def sweep_stray_pods(self) -> int:
        """Delete every task pod that may run but is neither the current attempt of a live Task
        nor one of its stopping pods (a crash between a decision and its delete, a pod of an
        earlier Task of the same name, a Task deleted during a watch gap). Run after a sync."""
        swept = 0
        for pk, rec in list(self.store.pods.items()):
            if not rec.task or rec.view.deleting or rec.view.phase in ("Succeeded", "Failed"):
                continue
            t = self.store.task(rec.task)
            ns, name = pk.split("/", 1)
            if t is not None and rec.owned_by(t["metadata"].get("uid")):
                st = t.get("status") or {}
                current = st.get("state") != COMPLETED and name in self._attempt_pods(st)
                if current or name in (st.get("stoppingPods") or []):
                    continue
            await self._safely(f"sweep:{pk}", self._act([A.DeletePod(ns, name)]))
            swept += 1
        return swept

    async def adopt_some(self) -> None:
        """Give up to ADOPT_PER_PASS tasks their ownerReference, after the pass's bindings: the
        extra write per task never delays a task's start. A task bound and orphaned before it
        was adopted is still stopped (`_orphaned`, by its job's absence)."""
        batch = []
        while self._to_adopt and len(batch) < ADOPT_PER_PASS:
            batch.append(self._to_adopt.pop())
        jobs = []
        for tk in batch:
            t = self.store.tasks.get(tk)
            job = t and self.store.jobs.get(key(t["metadata"]["namespace"], t["spec"].get("jobName", "")))
            if t and job and not job_owner_uid(t) and not self.ex.backoff.waiting(f"adopt:{tk}"):
                jobs.append(self._safely(f"adopt:{tk}", self._act(self._adopt(t, job))))
            elif t and job and not job_owner_uid(t):
                self._to_adopt.add(tk)   # in backoff: later
        await asyncio.gather(*jobs)
        if self._to_adopt:
            self.store.changed.set()

    @staticmethod
    def _adopt(t: dict, job: dict) -> list:
        """Give the Task an ownerReference to its Job: deleting the Job then deletes its Tasks
        and their pods (the garbage collector), and a later Job of the same name never takes
        over this one (its uid differs)."""
        refs = [r for r in t["metadata"].get("ownerReferences") or [] if r.get("kind") != "Job"]
        return [A.PatchObject("tasks", t, {"metadata": {"ownerReferences": [*refs, pods.owner_reference(job, controller=True)]}},
                              precondition=True)]

    def _orphaned(self, t: dict, st: dict) -> list:
        """A Task of a deleted Job: its pods are stopped (they hold slots), then the Task is
        deleted (the garbage collector would too, later)."""
        plan, _ = self._stop_pods(t, self._attempt_pods(st) + list(st.get("stoppingPods") or []))
        if not t["metadata"].get("deletionTimestamp"):
            plan.append(A.DeleteObject("tasks", t["metadata"]["namespace"], t["metadata"]["name"]))
        return plan

    @staticmethod
    def _attempt_pods(st: dict) -> list[str]:
        """The pods of the task's current attempt: the primary and any gang instances."""
        names = [st.get("podName")] + [x.get("podName") for x in st.get("subtasks") or [] if x.get("id", 0)]
        return [n for n in names if n]

    def _live_pods(self, t: dict, names: list[str]) -> list[str]:
        """Those of `names` that may still run: the pod exists (even terminating), has not
        ended, and its node is not fenced."""
        out = []
        for name in names:
            rec = self._own_pod(t, name)
            if rec is None or rec.view.phase in ("Succeeded", "Failed"):
                continue
            if self._node_fenced(rec.view.node_name):
                continue
            out.append(name)
        return out

    def _node_fenced(self, node_name: str) -> bool:
        """A Node that is gone, or whose compute node is lost past its grace: nothing runs there
        that the API can still stop, and nothing there can still write results."""
        if not node_name:
            return False
        if node_name not in self.store.knodes:
            return True
        state = self._node_state_by_name.get(node_name)
        return state == "unusable"

    def _wait_for_stopping_pods(self, t: dict, st: dict) -> list:
        """Phase two of a stop: delete the old attempt's pods again if needed (a crash may have
        come between the two writes), and clear `stoppingPods` once none of them can run; the
        scheduler binds the next attempt only then."""
        plan, live = self._stop_pods(t, st["stoppingPods"])
        return plan if live else plan + [A.WriteStatus("tasks", t, {"stoppingPods": None})]

    async def advance_tasks(self, dirty: set[str], node_view: dict) -> set[str]:
        """Decide each dirty task and apply its plan, all plans at once. Deciding goes in slices
        with the loop let run between them: a pass over 100,000 tasks (their Job deleted) must
        not hold the loop for seconds (the Lease's renewal, the watches wait on it).

        The pass waits at most PLANS_WAIT for the plans' writes, then goes on to schedule: a
        slow or hung write (up to the call's 15 s deadline) must not keep the freed slots idle
        and every other task unbound. (A shorter wait, 50 ms, did no better in the steady
        bench, and its five times as many passes cost a burst of 2,000 single Tasks a fifth of
        its throughput: docs/bench.md.) A plan still in flight stays
        the task's (`_in_flight`, "task:<key>"): the task is not decided again until its writes
        have landed (`_waiting`), and what they wrote reaches the store, marking the task and its
        job dirty, as any write does."""
        touched_jobs: set[str] = set()
        now = now_iso()
        todo = []
        for tk in dirty:
            if self.ex.backoff.waiting(f"task:{tk}"):
                continue
            if f"task:{tk}" in self._in_flight:
                self._waiting.add(f"task:{tk}")
                continue
            todo.append(tk)
        acting: dict[str, asyncio.Future] = {}
        for i in range(0, len(todo), DECIDE_SLICE):
            if i:
                await asyncio.sleep(0)
            for tk in todo[i:i + DECIDE_SLICE]:
                acting[tk] = asyncio.ensure_future(self._safely(f"task:{tk}", self._act_task(
                    tk, self._decide_task(tk, node_view, now, touched_jobs))))
        if acting:
            await asyncio.wait(acting.values(), timeout=PLANS_WAIT)
        late = [(tk, fut) for tk, fut in acting.items() if not fut.done()]
        for tk, fut in late:
            self._track_in_flight(f"task:{tk}", fut)
            # a decision that ends after the pass touched jobs the pass has reconciled already
            fut.add_done_callback(lambda _: (self.store.dirty_jobs.update(touched_jobs), self.store.changed.set()))
        return touched_jobs

    async def _act_task(self, tk: str, decided) -> bool:
        """Apply a task's plan. A task pod the API server refuses (400/422: an env, volume or
        sidecar of a pod template it does not accept) would be refused again on every try: the
        task completes with failure PodRejected and the server's message, instead of staying
        `preparing` with the reason only in the operator's log."""
        try:
            return await self._act(decided)
        except ApiException as e:
            action = getattr(e, "failed_action", None)
            t = self.store.task(tk)
            if e.status not in (400, 422) or not isinstance(action, A.CreatePod) or t is None \
                    or (action.pod["metadata"].get("labels") or {}).get(naming.LABEL_ROLE) != "task":
                raise
            st = t.get("status") or {}
            refused = binding.parse((action.pod["metadata"].get("annotations") or {}).get(naming.ANNOTATION_BINDING))
            if st.get("state") not in (PREPARING, RUNNING) and refused and binding.awaits_pod(st) is not None:
                # bound by this very pod, which was refused: the failure records the binding it meant
                st, fields = binding.bound_status(st, action.name, refused)
                t = {**t, "metadata": {**t["metadata"], binding.MARK: fields}, "status": st}
            if st.get("state") not in (PREPARING, RUNNING):
                raise
            message = f"the API server refused the task's pod {action.name}: {_api_message(e)}"
            failure = {"category": "usererror", "code": "PodRejected", "message": message[:1000]}
            await self.ex.apply([
                A.WriteStatus("tasks", t, with_task_conditions(t, complete(st, now=now_iso(), exit_code=None, result="failure",
                                                                           failure=failure))),
                *self._stop_pods(t, self._attempt_pods(st))[0],
                A.Event(t, "Warning", "TaskPodRejected", message[:1000])])
            self.store.dirty_jobs.add(key(t["metadata"]["namespace"], t["spec"].get("jobName", "")))
            return True

    async def _decide_task(self, tk: str, node_view: dict, now: str, touched_jobs: set[str]) -> list:
        """Initialise a new task, apply retention to a completed one, or advance one in flight."""
        s = self.store
        t = s.task(tk)
        if not t:
            self._running_since.pop(tk, None)
            return []
        st = t.get("status") or {}
        ns = t["metadata"]["namespace"]
        jk = key(ns, t["spec"].get("jobName", ""))
        job = s.jobs.get(jk)
        state = st.get("state")
        owner = job_owner_uid(t)
        if owner and (job is None or job["metadata"]["uid"] != owner or job["metadata"].get("deletionTimestamp")):
            return self._orphaned(t, st)   # its Job was deleted: the task stops and goes with it
        if job is not None and not owner:
            self._to_adopt.add(tk)   # after this pass's bindings, in bounded batches (adopt_some)
        if not state:
            # A new task is `active` without a write of its own: its first status write is its
            # binding (or its pending reason), which saves one API write per task.
            touched_jobs.add(jk)
            if collcore.virtual(t):
                return []   # its collection was validated (collections.py)
            invalid = self._validate(t)
            if invalid:
                return [A.WriteStatus("tasks", t, with_task_conditions(
                    t, initial_status(now), invalid=f"{invalid}. Fix the Task and apply it again."))]
            taken = taskids.id_conflict(t, job, (s.tasks[k] for k in s.holders(jk, taskids.task_id(t))))
            if taken:   # two Tasks of a job with one id would share a directory: only the first runs
                return [A.WriteStatus("tasks", t, with_task_conditions(t, initial_status(now), invalid=taken)),
                        A.Event(t, "Warning", "InvalidSpec", taken)]
            return []
        if t["spec"].get("desiredState") == "terminated" and state != COMPLETED:
            touched_jobs.add(jk)
            new = complete(st, now=now, exit_code=None, result="failure", failure={
                "category": "usererror", "code": "TaskEnded", "message": "The task was terminated (spec.desiredState: terminated)"})
            return [A.WriteStatus("tasks", t, with_task_conditions(t, new)), *self._stop_pods(t, self._attempt_pods(st))[0]]
        request = t["spec"].get("reactivateRequestId")
        if state == COMPLETED and request and request != st.get("handledReactivateRequestId"):
            touched_jobs.add(jk)
            return self._reactivate(t, st, request, now)
        if state == COMPLETED:
            self._note_retention(tk, t, st)
            return self._stop_pods(t, self._attempt_pods(st))[0]   # a terminate's delete lost to a crash or an error
        if st.get("stoppingPods"):
            return self._wait_for_stopping_pods(t, st)
        if state in (PREPARING, RUNNING) and job is None:
            return self._orphaned(t, st)   # bound, then its Job was deleted before it was adopted
        if state not in (PREPARING, RUNNING):
            return []
        return await self._decide_in_flight(tk, t, st, job, node_view, now, touched_jobs)

    def _reactivate(self, t: dict, st: dict, request: str, now: str) -> list:
        info = st.get("executionInfo") or {}
        if info.get("result") == "failure" and t["spec"].get("desiredState") != "terminated":
            # Batch: a reactivated task runs again with its retry count reset
            return [A.WriteStatus("tasks", t, with_task_conditions(t, {
                "state": ACTIVE, "previousState": st.get("state"), "stateTransitionTime": now, "attempt": int(st.get("attempt", 1)) + 1,
                "podName": None, "nodeInfo": None, "subtasks": None, "handledReactivateRequestId": request,
                "executionInfo": {"retryCount": 0, "requeueCount": info.get("requeueCount", 0), "startTime": None,
                                  "endTime": None, "exitCode": None, "result": None, "failureInfo": None}})),
                    A.Event(t, "Normal", "TaskReactivated", "the failed task was reactivated and will run again")]
        return [A.WriteStatus("tasks", t, {"handledReactivateRequestId": request}),
                A.Event(t, "Warning", "ReactivateIgnored", "only a failed task can be reactivated; this one "
                        + ("succeeded" if info.get("result") == "success" else "was terminated"))]

    async def _decide_in_flight(self, tk: str, t: dict, st: dict, job: dict, node_view: dict, now: str,
                                touched_jobs: set[str]) -> list:
        """A bound task: its state machine (core/tasks.py) over its pod, its nodes and its gang."""
        s = self.store
        ns = t["metadata"]["namespace"]
        pod_rec = self._own_pod(t, st.get("podName"))
        cnode_key = key(ns, (st.get("nodeInfo") or {}).get("nodeId", ""))
        gang_nodes = [cnode_key] + [key(ns, x["nodeName"]) for x in st.get("subtasks") or [] if x.get("id", 0)]
        lost = any(node_lost(node_view.get(n, ("unknown", False, None))[0], n in s.cnodes) for n in gang_nodes)
        view = pod_rec.view if pod_rec else None
        if len(gang_nodes) > 1:   # Batch: an instance that fails fails the task (retried as a whole)
            failed_instance = next((r.view for x in st.get("subtasks") or [] if x.get("id", 0)
                                    for r in [self._own_pod(t, x.get("podName"))]
                                    if r and r.view.phase == "Failed" and not r.view.deleting), None)
            if failed_instance and not (view and view.phase in ("Succeeded", "Failed")):
                view = failed_instance
        out: Outcome = observe_attempt(task_spec=t["spec"], job_spec=job["spec"], status=st,
                                       pod=view, now=now, node_lost=lost,
                                       pod_deleted=pod_rec is None and s.was_deleted(ns, st.get("podName")))
        if view is not None and view.phase == "Failed" and view.reason.startswith("OutOf") and view.node_name:
            # the kubelet turned the pod away (a pod podbatch does not see holds what it asked for):
            # that node counts as out of that resource for a while, so the requeue is not a hot loop
            self._rejected[view.node_name] = (clock.monotonic() + REJECTED_FOR, view.reason[len("OutOf"):])
        if out.status.get("state") == ACTIVE and int(out.status.get("attempt") or 0) > int(st.get("attempt") or 0) \
                and not lost:
            # a new attempt: the old one's pods that may still run are recorded until seen gone
            out.status["stoppingPods"] = self._live_pods(t, self._attempt_pods(st)) or None
        stop_gang = bool(out.status) and len(gang_nodes) > 1 and out.status.get("state") in (ACTIVE, COMPLETED)
        if out.status.get("state") == RUNNING and st.get("state") == PREPARING and len(gang_nodes) == 1 \
                and not (out.create_pod or out.delete_pod or out.event):
            since = self._running_since.setdefault(tk, clock.monotonic())
            if clock.monotonic() - since < RUNNING_WRITE_AFTER:
                self._deferred.add(tk)   # a short task then costs one status write less
                self.store.changed.set()
                return []
        self._running_since.pop(tk, None)
        if out.completed and st.get("state") == PREPARING and view is not None and view.exit_code is not None \
                and not view.preprocessing_failure:
            out.status["previousState"] = RUNNING   # it ran; it ended before `running` was written
        plan: list = []
        if stop_gang:
            final = "completed" if out.status.get("state") == COMPLETED else ACTIVE
            out.status["subtasks"] = [{**x, "state": final} for x in st.get("subtasks") or []] if final == COMPLETED else None
        elif len(gang_nodes) > 1:
            subtasks = st.get("subtasks") or []
            plan, ips = self._host_list(t, st)
            if ips and any(x.get("ipAddress") != ip for x, ip in zip(subtasks, ips)):
                subtasks = [{**x, "ipAddress": ip} for x, ip in zip(subtasks, ips)]
                out.status = {**out.status, "subtasks": subtasks}
            if pod_rec and pod_rec.view.phase == "Running" and subtasks and subtasks[0].get("state") != RUNNING:
                out.status = {**out.status, "subtasks": [{**x, "state": RUNNING} for x in subtasks]}
        plan += await self._outcome_plan(t, st, out, job)
        if stop_gang:   # after the status recorded them (stoppingPods): the whole gang stops
            plan += self._stop_pods(t, self._attempt_pods(st))[0]
        if out.status:
            touched_jobs.add(key(ns, t["spec"]["jobName"]))
        return plan

    async def _outcome_plan(self, t: dict, st: dict, out: Outcome, job: dict) -> list:
        ns = t["metadata"]["namespace"]
        plan: list = []
        if out.status:
            plan += [A.WriteStatus("tasks", t, with_task_conditions(t, out.status)),
                     A.Then("count the transition", lambda: _count_transition(t, st, out))]
        if out.delete_pod:
            plan.append(A.DeletePod(ns, out.delete_pod, grace=0 if out.force_delete else None))
        if out.create_pod:
            plan += await self._create_task_pod(t, st, job)
        if out.event:
            plan.append(A.Event(t, *out.event))
        if out.job_action in ("terminate", "disable") and job["spec"].get("onTaskFailure") == "performexitoptionsjobaction":
            if out.job_action == "terminate":
                jk = key(ns, job["metadata"]["name"])
                plan.append(A.Then("ask the job to terminate", lambda: self._terminate_requests.add(jk)))
            else:
                plan.append(A.PatchObject("jobs", job, {"spec": {"desiredState": "disabled", "disableTasks": "wait"}}))
        return plan

    async def _create_task_pod(self, t: dict, st: dict, job: dict) -> list:
        """The plan creating the current attempt's pod(s), once the job's preparation task
        allows it. `t` and `st` are the task as it will be when the plan's earlier writes land."""
        s = self.store
        ns = t["metadata"]["namespace"]
        ni = st.get("nodeInfo") or {}
        c = s.cnodes.get(key(ns, ni.get("nodeId", "")))
        pool = s.pools.get(key(ns, ni.get("poolId", "")))
        if not c or not pool:
            return []
        prep, plan = await self.ensure_prep(job, c, pool)
        if prep == "failed":
            return plan + self._stop_one(t, "requeue", f"the job preparation task failed on node {c['metadata']['name']}")
        if prep == "pending" and job["spec"]["jobPreparationTask"].get("waitForSuccess", True):
            return plan   # stays `preparing`; the preparation pod's end brings it back here
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
            if collcore.virtual(t):
                collcore.mark_pod(pod, t)
            if idx == 0 and not gang:   # the pod records its binding (core/binding.py)
                pod["metadata"]["annotations"][naming.ANNOTATION_BINDING] = binding.annotation(
                    st.get("nodeInfo") or {}, st.get("stateTransitionTime") or now_iso())
            plan += self._create_pod_plan(pod)
        return plan

    async def _expanded_resource_files(self, resource_files: list[dict] | None) -> list[dict] | None:
        """Resource files with every storageContainerUrl listed (IO here; pods stay pure).
        A listing failure becomes the task's preprocessing error through its init container."""
        listings: dict = {}
        for url, prefix in rfiles.container_listing_wanted(resource_files):
            try:
                listings[(url, prefix)] = await blobs.blob_names(url, prefix)
            except blobs.ListingFailed as e:   # the task's preprocessing error
                listings[(url, prefix)] = str(e)
        return rfiles.expand_resource_files(resource_files, listings) if listings else resource_files

    def _own_pod(self, t: dict, name: str | None):
        """The record of the task's pod `name`, unless that pod belongs to an earlier Task of
        the same name (deleted and applied again while its pods still terminate)."""
        rec = self.store.pods.get(key(t["metadata"]["namespace"], name or ""))
        return rec if rec and rec.owned_by(t["metadata"].get("uid")) else None

    def _host_list(self, t: dict, st: dict) -> tuple[list, list[str] | None]:
        """Once every instance of a gang has a pod IP, write the host list (primary first) on
        each instance's pod; their wrappers wait for it (a downward-API file) before the
        coordination command starts. The annotation is the record: idempotent after a restart.
        Returns the plan and the instances' addresses in subtask order (None while some have none)."""
        ns = t["metadata"]["namespace"]
        names = [x.get("podName") for x in st.get("subtasks") or []]
        recs = [self._own_pod(t, n) for n in names]
        if not recs or any(r is None or not r.view.pod_ip for r in recs):
            return [], None
        ips = [r.view.pod_ip for r in recs]
        hosts = ",".join(ips)
        return [A.PatchPod(ns, name, {"metadata": {"annotations": {naming.ANNOTATION_HOST_LIST: hosts}}})
                for name, r in zip(names, recs) if r.view.host_list != hosts and not r.view.deleting], ips

    def _stop_pods(self, t: dict, names: list[str]) -> tuple[list, list[str]]:
        """The plan deleting (gracefully: SIGTERM, then the grace period) those of `names` that
        may still run and are not being deleted yet, and those that may still run."""
        live = self._live_pods(t, names)
        plan = []
        for name in live:
            rec = self._own_pod(t, name)
            if rec is not None and not rec.view.deleting:
                plan.append(A.DeletePod(t["metadata"]["namespace"], name))
        return plan, live

    def _note_retention(self, tk: str, t: dict, st: dict) -> None:
        """Remember when a completed task's retention ends (a heap: no scan of old tasks)."""
        if tk in self._retention_known or any(c.get("type") == "Retained" and c.get("status") == "False"
                                              for c in st.get("conditions") or []):
            return
        keep = seconds((t["spec"].get("constraints") or {}).get("retentionTime")) or 7 * 86400
        end = parse_time((st.get("executionInfo") or {}).get("endTime")) or clock.time()
        heapq.heappush(self._retention_due, (end + keep, tk))
        self._retention_known.add(tk)

    async def expire_retention(self) -> None:
        """retentionTime: delete the task's pod and, on a real node, its task directory. An
        entry leaves the heap only once its cleanup is done; a failed or unfinished one
        comes back RETENTION_RETRY seconds later (a pod or a directory is never left behind)."""
        now = clock.time()
        again = []
        while self._retention_due and self._retention_due[0][0] <= now:
            _, tk = heapq.heappop(self._retention_due)
            t = self.store.tasks.get(tk)
            if t is None:
                self._retention_known.discard(tk)
                continue
            done, plan = self._expire(t)
            if await self._safely(f"retention:{tk}", self._act(plan)) and done:
                self._retention_known.discard(tk)
            else:
                again.append((now + RETENTION_RETRY, tk))
        for item in again:
            heapq.heappush(self._retention_due, item)

    def _expire(self, t: dict) -> tuple[bool, list]:
        """The next step of a task's retention cleanup, and whether it finishes it: the
        directory's cleanup pod first, then the task's pods, and `Retained=False` last."""
        s = self.store
        st = t.get("status") or {}
        ns = t["metadata"]["namespace"]
        ni = st.get("nodeInfo") or {}
        c = s.cnodes.get(key(ns, ni.get("nodeId", "")))
        pool = s.pools.get(key(ns, ni.get("poolId", "")))
        knode = s.knodes.get(ni.get("nodeName", ""))
        message = "the task's pod and directory were removed after constraints.retentionTime"
        if c and pool and knode and (knode["metadata"].get("annotations") or {}).get(naming.ANNOTATION_FAKE_NODE) != "fake" \
                and ni.get("taskRootDirectory"):
            phase, plan = self._remove_dirs(self._placement(pool, c), [ni["taskRootDirectory"]],
                                            f"task-{t['metadata']['uid']}-{st.get('attempt')}", owner=pods.owner_reference(t))
            if phase == CLEANUP_STUCK:
                message = (f"the task's pod was removed after constraints.retentionTime; its directory "
                           f"{ni['taskRootDirectory']} could not be removed within "
                           f"{self.settings.cleanup_timeout_seconds:.0f}s and is left on node {ni.get('nodeName')}")
            elif phase not in ("Succeeded", "Failed"):
                return False, plan
        plan = [A.DeletePod(ns, sub) for sub in [st.get("podName")] + [x.get("podName") for x in st.get("subtasks") or []] if sub]
        conds = [c2 for c2 in st.get("conditions") or [] if c2.get("type") != "Retained"]
        conds.append(condition("Retained", False, "RetentionTimeExpired", message))
        return True, plan + [A.WriteStatus("tasks", t, {"conditions": conds})]


def _api_message(e: ApiException) -> str:
    try:
        return str(json.loads(e.body).get("message") or e.body)
    except (TypeError, ValueError, AttributeError):
        return str(e.body or e.reason)


def _count_transition(t: dict, st: dict, out: Outcome) -> None:
    metrics.TASK_TRANSITIONS.labels(out.status.get("state", st.get("state"))).inc()
    if out.status.get("state") == ACTIVE and (out.status.get("executionInfo") or {}).get("retryCount", 0) > \
            (st.get("executionInfo") or {}).get("retryCount", 0):
        metrics.TASK_RETRIES.labels(*_pool_labels(t, st)).inc()
    if out.completed:
        info = out.status.get("executionInfo") or {}
        a, b = parse_time(info.get("startTime")), parse_time(info.get("endTime"))
        if a and b:
            metrics.TASK_RUN_SECONDS.observe(max(0.0, b - a))


def _pool_labels(t: dict, st: dict) -> tuple[str, str]:
    return t["metadata"]["namespace"], (st.get("nodeInfo") or {}).get("poolId", "")
