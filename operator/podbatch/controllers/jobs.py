"""Jobs: exact task counts from the store, the job state machine (core/jobs.py), auto
pools, and the job's status. Step 5 of a pass."""
from __future__ import annotations

from podbatch import API_VERSION, metrics
from podbatch.controllers import actions as A
from podbatch.controllers import clock
from podbatch.controllers.status import changed_keys, merged_conditions, now_iso, parse_time
from podbatch.controllers.store import key
from podbatch.core import conditions
from podbatch.core import jobs as jobcore
from podbatch.core import naming, pods
from podbatch.core.durations import seconds


GAUGE_EVERY = 5.0


# what a job's status write may change and still be a report (A.WriteStatus.report): its
# counts; never its state, times or special tasks, which later decisions read back
REPORTED_JOB_KEYS = {"taskCounts", "taskSlotCounts"}

class Jobs:
    def _jobs_with_timers(self) -> set[str]:
        """Jobs a pass must look at although nothing changed: a wall-clock limit running, or a
        completed job waiting for its ttlSecondsAfterFinished."""
        out = set()
        for k, j in self.store.jobs.items():
            done = (j.get("status") or {}).get("state") == "completed"
            if (not done and (j["spec"].get("constraints") or {}).get("maxWallClockTime")) or \
                    (done and j["spec"].get("ttlSecondsAfterFinished") is not None and not j["metadata"].get("deletionTimestamp")):
                out.add(k)
        return out

    @staticmethod
    def expire_finished_job(job: dict) -> list:
        """ttlSecondsAfterFinished: the plan deleting a completed job (its Tasks and pods go
        with it, by their owner references) once the time has passed."""
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        end = parse_time(((job.get("status") or {}).get("executionInfo") or {}).get("endTime"))
        if ttl is None or end is None or job["metadata"].get("deletionTimestamp") or clock.time() < end + int(ttl):
            return []
        return [A.DeleteObject("jobs", job["metadata"]["namespace"], job["metadata"]["name"]),
                A.Event(job, "Normal", "JobExpired", f"deleted {ttl}s after it completed (ttlSecondsAfterFinished)")]

    def ensure_auto_pool(self, job: dict, auto: tuple[str, dict]) -> list:
        """Create the job's auto pool (autoPoolSpecification) unless it exists. It is owned by
        the job, or with poolLifetimeOption jobschedule by the JobSchedule, so deleting the
        owner deletes it (and its nodes, through the pool's finalizer)."""
        name, spec = auto
        ns = job["metadata"]["namespace"]
        if key(ns, name) in self.store.pools:
            return []
        owner, kind = job, "Job"
        schedule = (job["metadata"].get("labels") or {}).get(naming.LABEL_SCHEDULE)
        if spec.get("poolLifetimeOption") == "jobschedule" and schedule and key(ns, schedule) in self.store.jobschedules:
            owner, kind = self.store.jobschedules[key(ns, schedule)], "JobSchedule"
        body = {"apiVersion": API_VERSION, "kind": "Pool",
                "metadata": {"name": name, "namespace": ns,
                             "labels": {naming.LABEL_AUTO_POOL_OF: naming.label_value(f"{kind.lower()}.{owner['metadata']['name']}")},
                             "ownerReferences": [pods.owner_reference({**owner, "kind": kind})]},
                "spec": spec.get("pool") or {}}
        plan: list = [A.CreateObject("pools", ns, body)]   # 409 (made by an earlier pass) is fine
        if name not in self._auto_pools_announced:
            plan += [A.Then("announce once", lambda: self._auto_pools_announced.add(name)),
                     A.Event(job, "Normal", "AutoPoolCreated", f"created pool {name} from spec.poolInfo.autoPoolSpecification")]
        return plan

    def end_auto_pool(self, job: dict, auto: tuple[str, dict]) -> list:
        """poolLifetimeOption job: the pool goes when the job completes, unless keepAlive."""
        name, spec = auto
        ns = job["metadata"]["namespace"]
        pool = self.store.pools.get(key(ns, name))
        if not jobcore.auto_pool_goes_with(spec, "job") or not pool or pool["metadata"].get("deletionTimestamp"):
            return []
        return [A.DeleteObject("pools", ns, name),
                A.Event(job, "Normal", "AutoPoolDeleted", f"the job completed: deleting its pool {name} (keepAlive is false)")]

    async def reconcile_job(self, job: dict) -> None:
        """Decide the job's next step and apply it. New counts alone are a report, written
        in the background; a step to another state is applied in the pass, so the next pass
        plans against it (no task starts on a job it just began terminating)."""
        jk = key(job["metadata"]["namespace"], job["metadata"]["name"])
        await self._apply_soon(f"job:{jk}", lambda: self.decide_job(self.store.jobs.get(jk, job)))

    async def decide_job(self, job: dict) -> list:
        """Exact counts from the store, the next step of the job's state machine
        (core/jobs.py), and the plan carrying it out: special tasks, auto pool, stopping
        tasks, status."""
        s = self.store
        meta, spec = job["metadata"], job["spec"]
        ns = meta["namespace"]
        jk = key(ns, meta["name"])
        status = job.get("status") or {}
        if meta.get("deletionTimestamp"):
            return []   # going: its tasks stop and go with it (tasks.py, _orphaned)
        expire = self.expire_finished_job(job)
        if expire:
            return expire
        plan: list = []
        invalid = self._validate(job)
        if not invalid and status.get("state") not in ("completed", "terminating"):
            plan += self.ensure_job_manager(job)
        counts, slots = s.counts_of(jk, meta.get("uid"))   # kept by the store as tasks change: O(1) per pass
        running = {tk for tk in s.inflight_by_job.get(jk, ()) if (t := s.task(tk)) is not None and jobcore.belongs_to(t, job)}
        pool_id = jobcore.pool_id_of(job)
        info = dict(status.get("executionInfo") or {})
        info.setdefault("startTime", meta.get("creationTimestamp"))
        info["poolId"] = pool_id
        sched_err = None
        auto = jobcore.auto_pool(job)
        if auto:   # the pool is podbatch's to make: its absence is not the user's error
            if not invalid and status.get("state") != "completed":
                plan += self.ensure_auto_pool(job, auto)
        elif pool_id and key(ns, pool_id) not in s.pools:
            sched_err = {"category": "usererror", "code": "PoolNotFound",
                         "message": f"pool {pool_id!r} does not exist in namespace {ns}; create it or fix spec.poolInfo.poolId"}
        elif not pool_id:
            sched_err = {"category": "usererror", "code": "NoPool",
                         "message": "spec.poolInfo has neither poolId nor autoPoolSpecification; name the Pool this job runs on"}
        info["schedulingError"] = sched_err
        wall = seconds((spec.get("constraints") or {}).get("maxWallClockTime"))
        started = parse_time(info.get("startTime"))
        expired = bool(wall and started and clock.time() - started > wall)
        step = jobcore.job_step(jobcore.JobFacts(
            state=status.get("state", ""), desired=spec.get("desiredState", "active"),
            disable_tasks=spec.get("disableTasks", "requeue"), on_all_complete=spec.get("onAllTasksComplete", "noaction"),
            counts=counts, wall_clock_expired=expired, task_requested_terminate=jk in self._terminate_requests,
            job_manager_completed=self.job_manager_ended(job), terminate_reason=spec.get("terminateReason") or ""))
        if step.state == "completed":
            released, release_plan = await self.run_release(job)
            plan += release_plan
            if not released:
                step = jobcore.JobStep("terminating", step.terminate_reason)   # completed once every release task ended
        if step.stop_running and running:
            plan += self._stop_tasks(running, step.stop_running,
                                     f"job {meta['name']} is {step.state} ({step.terminate_reason or spec.get('disableTasks', '')})")
        if step.terminate_reason and not info.get("terminateReason"):
            info["terminateReason"] = step.terminate_reason
        if auto and step.state == "completed":
            plan += self.end_auto_pool(job, auto)
        events: list = []
        if step.state == "completed" and not info.get("endTime"):
            info["endTime"] = now_iso()
            events += [A.Then("forget the terminate request", lambda: self._terminate_requests.discard(jk)),
                       A.Event(job, "Normal", "JobCompleted", f"{counts['succeeded']} succeeded, {counts['failed']} failed"
                               + (f"; {info.get('terminateReason')}" if info.get("terminateReason") else ""))]
        if sched_err and status.get("executionInfo", {}).get("schedulingError") != sched_err:
            events.append(A.Event(job, "Warning", sched_err["code"], sched_err["message"]))
        cycle = (self._cycles.get(jk) or (0, None))[1]
        conds = merged_conditions(status.get("conditions"), conditions.job_conditions(
            invalid=f"{invalid}. Fix the Job and apply it again." if invalid else None, state=step.state,
            scheduling_error=sched_err, cycle=cycle, auto_pool_missing=bool(auto) and key(ns, pool_id) not in s.pools,
            terminate_reason=info.get("terminateReason"), counts=counts), meta.get("generation"))
        new = {"state": step.state, "executionInfo": info, "taskCounts": counts, "taskSlotCounts": slots,
               "observedGeneration": meta.get("generation"), **self.special_status(job)}
        if step.state != status.get("state"):
            new["previousState"] = status.get("state")
            new["stateTransitionTime"] = now_iso()
        changed = changed_keys(status, new, ignore=("previousState", "stateTransitionTime"))
        if changed or not conditions.same(status.get("conditions"), conds):
            new["conditions"] = conds
            plan.append(A.WriteStatus("jobs", job, new, report=set(changed) <= REPORTED_JOB_KEYS))
        return plan + events

    def _gauge_tasks(self) -> None:
        """Tasks by namespace, pool and state, from the store's per-job counts (every few seconds)."""
        now = clock.monotonic()
        if now - getattr(self, "_gauged_at", 0.0) < GAUGE_EVERY:
            return
        self._gauged_at = now
        totals: dict[tuple[str, str, str], int] = {}
        for jk, counts in self.store.job_state_counts.items():
            job = self.store.jobs.get(jk)
            pool = jobcore.pool_id_of(job) if job else ""
            ns = jk.split("/", 1)[0]
            for st in ("active", "preparing", "running", "completed"):
                totals[(ns, pool, st)] = totals.get((ns, pool, st), 0) + counts.get(st, 0)
        for cs in self.store.collections.values():   # a collection's tasks not in memory now
            job = self.store.jobs.get(cs.job)
            labels = (cs.job.split("/", 1)[0], jobcore.pool_id_of(job) if job else "")
            for st, n in (("active", cs.size - cs.done - len(cs.materialized)), ("completed", cs.done)):
                totals[(*labels, st)] = totals.get((*labels, st), 0) + n
        metrics.TASKS.clear()
        for labels, n in totals.items():
            if n:
                metrics.TASKS.labels(*labels).set(n)
