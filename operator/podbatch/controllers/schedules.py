"""JobSchedules: create a Job from `jobSpecification` at each occurrence (core/schedule.py),
one active job at a time, named by its occurrence so a repeated create is harmless.
A mixin of the engine (its store, executor and helpers)."""
from __future__ import annotations

from datetime import datetime, timezone

from podbatch import API_VERSION
from podbatch.controllers import actions as A
from podbatch.controllers import clock
from podbatch.controllers.status import changed_keys, merged_conditions, now_iso, parse_time
from podbatch.controllers.store import key
from podbatch.core import conditions, naming, pods
from podbatch.core.jobs import auto_pool_goes_with
from podbatch.core.schedule import due

LABEL_SCHEDULE = naming.LABEL_SCHEDULE
ANNOTATION_OCCURRENCE = "podbatch.io/scheduled-time"


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if ts else None


class JobSchedules:
    async def reconcile_schedules(self) -> None:
        for k, js in list(self.store.jobschedules.items()):
            if self.ex.backoff.waiting(f"schedule:{k}"):
                continue
            await self._safely(f"schedule:{k}", self._act(self.decide_schedule(js)))

    def _end_schedule_pool(self, js: dict) -> list:
        """An auto pool with poolLifetimeOption jobschedule goes when its schedule completes
        (unless keepAlive); deleting the schedule deletes it through its owner reference."""
        info = ((js["spec"].get("jobSpecification") or {}).get("poolInfo") or {})
        auto = info.get("autoPoolSpecification")
        if info.get("poolId") or not auto_pool_goes_with(auto, "jobschedule"):
            return []
        ns = js["metadata"]["namespace"]
        name = naming.auto_pool_name(auto.get("autoPoolIdPrefix"), js["metadata"]["name"])
        if key(ns, name) not in self.store.pools:
            return []
        return [A.DeleteObject("pools", ns, name),
                A.Event(js, "Normal", "AutoPoolDeleted", f"the schedule completed: deleting its pool {name} (keepAlive is false)")]

    def decide_schedule(self, js: dict) -> list:
        """The schedule's plan: the job of a due occurrence (named by it, so a repeated create
        is harmless), the terminate of its jobs when it is terminated, its status."""
        meta, spec = js["metadata"], js["spec"]
        ns, name = meta["namespace"], meta["name"]
        status = js.get("status") or {}
        info = dict(status.get("executionInfo") or {})
        if status.get("state") == "completed" or meta.get("deletionTimestamp"):
            return []
        plan: list = []
        invalid = self._validate(js)
        jobs = [j for j in self.store.jobs.values() if j["metadata"]["namespace"] == ns
                and (j["metadata"].get("labels") or {}).get(LABEL_SCHEDULE) == name]
        active = [j for j in jobs if (j.get("status") or {}).get("state") != "completed"]
        occurrences = [float(j["metadata"].get("annotations", {}).get(ANNOTATION_OCCURRENCE, 0) or 0) for j in jobs]
        last_run = max(occurrences) if occurrences else None
        desired = spec.get("desiredState", "active")
        new: dict = {}
        bad: tuple[str, str] | None = None   # (reason, message) of an invalid spec or schedule
        if invalid:
            bad = ("InvalidSpec", f"{invalid}. Fix the JobSchedule and apply it again.")
            state = status.get("state") or "active"
        elif desired == "terminated":
            for j in active:
                if j["spec"].get("desiredState") != "terminated":
                    plan.append(A.PatchObject("jobs", j, {"spec": {"desiredState": "terminated"}}))
            state = "terminating" if active else "completed"
        elif desired == "disabled":
            state, info["nextRunTime"] = "disabled", None
        else:
            try:
                d = due(spec["schedule"], created=parse_time(meta.get("creationTimestamp")) or clock.time(),
                        last_run=last_run, now=clock.time())
            except ValueError as e:
                d = None
                bad = ("InvalidSchedule", f"{e}. Fix spec.schedule.")
            state = "active"
            if d is not None:
                if d.at is not None and not active:
                    job_name = f"{name}-{datetime.fromtimestamp(d.at, timezone.utc).strftime('%Y%m%d%H%M%S')}"
                    plan.append(A.CreateObject("jobs", ns, {
                        "apiVersion": API_VERSION, "kind": "Job",
                        "metadata": {"name": job_name, "namespace": ns, "labels": {LABEL_SCHEDULE: name},
                                     "annotations": {ANNOTATION_OCCURRENCE: str(d.at)},
                                     "ownerReferences": [pods.owner_reference(js)]},
                        "spec": spec["jobSpecification"]}))
                    info["recentJob"] = {"id": job_name, "name": job_name}
                    plan.append(A.Event(js, "Normal", "JobCreated", f"created job {job_name} for the occurrence at {_iso(d.at)}"))
                # an occurrence waiting for the active job is still the next run
                info["nextRunTime"] = _iso(d.at if (d.at is not None and active) else d.next_at)
                if d.at is None and d.next_at is None and not active and last_run is not None:
                    state = "completed"
        if state == "completed":
            plan += self._end_schedule_pool(js)
        if state == "completed" and not info.get("endTime"):
            info["endTime"] = now_iso()
        new.update({"state": state, "executionInfo": info, "observedGeneration": meta.get("generation"),
                    "conditions": merged_conditions(status.get("conditions"), conditions.schedule_conditions(
                        invalid=bad[1] if bad else None, invalid_reason=bad[0] if bad else "", state=state), meta.get("generation"))})
        if state != status.get("state"):
            new["stateTransitionTime"] = now_iso()
        if changed_keys(status, new):
            plan.append(A.WriteStatus("jobschedules", js, new))
        return plan
