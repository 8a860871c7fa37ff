"""Special tasks of a job, run by the same machinery as its tasks (issue 6):
the job manager (a Task podbatch creates, placed first, may preempt lower-priority
jobs), the job preparation task (a pod per node before the job's first task there) and
the job release task (a pod on every node that ran the preparation, when the job ends).
A mixin of the engine: it shares its store, its executor and its helpers."""
from __future__ import annotations

import logging

from podbatch import API_VERSION
from podbatch.controllers import actions as A
from podbatch.controllers.store import PodRecord, key
from podbatch.core import naming, pods

log = logging.getLogger("podbatch.engine")
JM_ROLE_RULES = [{"apiGroups": ["podbatch.io"], "resources": ["tasks", "jobs"],
                  "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
                 {"apiGroups": ["podbatch.io"], "resources": ["tasks/status", "jobs/status"], "verbs": ["get"]}]


class SpecialTasks:
    def _create_pod_plan(self, pod: dict) -> list:
        """Create `pod`, unless a pod of its name belongs to an earlier object of the same name
        (deleted and applied again; its pods orphaned or still terminating): that one is
        deleted first, and the new pod waits for a later pass (the deletion event brings its
        owner back here)."""
        meta = pod["metadata"]
        rec = self.store.pods.get(key(meta["namespace"], meta["name"]))
        if rec is None or rec.owned_by(meta["labels"].get(naming.LABEL_TASK_UID)):
            return [A.CreatePod(pod)]
        return [] if rec.view.deleting else [A.DeletePod(meta["namespace"], meta["name"], grace=0)]

    # --------------------------------------------------------------- preparation
    def prep_pods_of(self, job_key: str, role: str = "jobprep") -> dict[str, list[tuple[str, PodRecord]]]:
        """Preparation (or release) pods of a job by ComputeNode name; not those of an earlier
        Job of the same name (deleted and applied again while its pods still go away)."""
        out: dict[str, list[tuple[str, PodRecord]]] = {}
        uid = ((self.store.jobs.get(job_key) or {}).get("metadata") or {}).get("uid")
        for pk in self.store.job_pods.get(job_key, ()):
            rec = self.store.pods.get(pk)
            if rec and rec.labels.get(naming.LABEL_ROLE) == role and rec.owned_by(uid):
                out.setdefault(rec.labels.get(naming.LABEL_NODE, ""), []).append((pk.split("/", 1)[1], rec))
        return out

    def _boot_of(self, c: dict) -> str:
        handled = (c.get("status") or {}).get("handledRequests") or {}
        return naming.boot_token(f"{handled.get('reboot', '')}|{handled.get('reimage', '')}".strip("|") or None)

    def _prep_boot(self, c: dict, prep: dict) -> str:
        """The boot a preparation task's run belongs to: every reboot and reimage, or with
        rerunOnNodeRebootAfterSuccess false only reimages (a reimage wipes the node's
        directories, so Batch runs the preparation task again after one in any case)."""
        if prep.get("rerunOnNodeRebootAfterSuccess", True):
            return self._boot_of(c)
        return naming.boot_token(((c.get("status") or {}).get("handledRequests") or {}).get("reimage"))

    def prep_state(self, job: dict, c: dict) -> tuple[str, int, PodRecord | None]:
        """(state, retry, pod) of the job's preparation task on a node: none | pending | succeeded | failed | retry."""
        prep = job["spec"].get("jobPreparationTask")
        if not prep:
            return "none", 0, None
        boot = self._prep_boot(c, prep)
        jk = key(job["metadata"]["namespace"], job["metadata"]["name"])
        mine = [(name, rec) for name, rec in self.prep_pods_of(jk).get(naming.label_value(c["metadata"]["name"]), [])
                if rec.boot == boot]
        if not mine:
            return "missing", 0, None
        retry, rec = max(((int(n.rsplit("-", 1)[1]), r) for n, r in mine), key=lambda x: x[0])
        phase = rec.view.phase
        if phase == "Succeeded":
            return "succeeded", retry, rec
        if phase == "Failed":
            limit = int((prep.get("constraints") or {}).get("maxTaskRetryCount", 0))
            return ("retry" if limit == -1 or retry < limit else "failed"), retry, rec
        return "pending", retry, rec

    async def ensure_prep(self, job: dict, c: dict, pool: dict) -> tuple[str, list]:
        """The state of the job's preparation task on a node, and the plan starting (or
        retrying) it there."""
        state, retry, _ = self.prep_state(job, c)
        if state in ("missing", "retry"):
            prep = job["spec"]["jobPreparationTask"]
            nxt = 0 if state == "missing" else retry + 1
            boot = self._prep_boot(c, prep)
            return "pending", await self._special_pod_plan(
                job, c, pool, "jobprep", prep, naming.jobprep_pod_name(job["metadata"]["name"], c["metadata"]["name"], boot, nxt),
                annotations={"podbatch.io/boot": boot})
        return state, []

    async def _special_pod_plan(self, job: dict, c: dict, pool: dict, role: str, spec: dict, name: str,
                                annotations: dict | None = None) -> list:
        tid = spec.get("id") or role
        body = {"metadata": {"name": name, "uid": job["metadata"]["uid"]}, "spec": {**spec, "id": tid, "jobName": job["metadata"]["name"]}}
        pod = pods.task_pod(task=body, job=job, pool_spec=pool["spec"], placement=self._placement(pool, c), attempt=0,
                            owner=pods.owner_reference(job), role=role, pod_name=name,
                            resource_files=await self._expanded_resource_files(spec.get("resourceFiles")),
                            tools_image=self.settings.tools_image)
        pod["metadata"]["labels"][naming.LABEL_TASK] = naming.label_value(tid)
        pod["metadata"]["annotations"].update(annotations or {})
        return self._create_pod_plan(pod)

    def prep_env(self, job: dict, placement: pods.Placement) -> dict[str, str]:
        prep = job["spec"].get("jobPreparationTask")
        if not prep:
            return {}
        d = f"{pods.node_root_dir(placement)}/workitems/{job['metadata']['name']}/job-1/{prep.get('id') or 'jobpreparation'}"
        return {"AZ_BATCH_JOB_PREP_DIR": d, "AZ_BATCH_JOB_PREP_WORKING_DIR": f"{d}/wd"}

    def prep_blocked(self, job: dict) -> frozenset[str]:
        if not job["spec"].get("jobPreparationTask") or not job["spec"]["jobPreparationTask"].get("waitForSuccess", True):
            return frozenset()
        out = set()
        for ck, c in self.store.cnodes.items():
            if c["metadata"]["namespace"] == job["metadata"]["namespace"] and self.prep_state(job, c)[0] == "failed":
                out.add(ck)
        return frozenset(out)

    # --------------------------------------------------------------- release
    async def run_release(self, job: dict) -> tuple[bool, list]:
        """The release task on every node that ran the preparation task: whether all ended,
        and the plan starting those not started yet."""
        rel = job["spec"].get("jobReleaseTask")
        if not rel or not job["spec"].get("jobPreparationTask"):
            return True, []
        jk = key(job["metadata"]["namespace"], job["metadata"]["name"])
        released = self.prep_pods_of(jk, "jobrelease")
        done, plan = True, []
        for node_label in self.prep_pods_of(jk):
            c = next((c for c in self.store.cnodes.values() if c["metadata"]["namespace"] == job["metadata"]["namespace"]
                      and naming.label_value(c["metadata"]["name"]) == node_label), None)
            recs = released.get(node_label)
            if not recs:
                if c is None:
                    continue   # the node is gone: nothing to release there
                pool = self.store.pools.get(key(c["metadata"]["namespace"], c["spec"]["poolName"]))
                if pool:
                    plan += await self._special_pod_plan(
                        job, c, pool, "jobrelease", {**rel, "constraints": {"maxWallClockTime": rel.get("maxWallClockTime", "PT15M")}},
                        naming.jobrelease_pod_name(job["metadata"]["name"], c["metadata"]["name"]))
                    done = False
            elif recs[0][1].view.phase not in ("Succeeded", "Failed") and c is not None:
                done = False
        return done, plan

    def special_status(self, job: dict) -> dict:
        jk = key(job["metadata"]["namespace"], job["metadata"]["name"])

        def rows(role: str) -> list[dict] | None:
            out = []
            for node_label, recs in sorted(self.prep_pods_of(jk, role).items()):
                name, rec = max(recs, key=lambda x: x[0])
                v = rec.view
                out.append({"nodeName": node_label, "state": {"Succeeded": "completed", "Failed": "completed",
                                                               "Running": "running"}.get(v.phase, "running"),
                            "exitCode": v.exit_code, "startTime": v.started_at, "endTime": v.finished_at,
                            "retryCount": int(name.rsplit("-", 1)[1]) if role == "jobprep" and name.rsplit("-", 1)[1].isdigit() else 0,
                            "result": {"Succeeded": "success", "Failed": "failure"}.get(v.phase)})
            return [{k: v for k, v in r.items() if v is not None} for r in out] or None
        return {"preparationTasks": rows("jobprep"), "releaseTasks": rows("jobrelease")}

    # --------------------------------------------------------------- job manager
    def ensure_job_manager(self, job: dict) -> list:
        """The plan creating the job's job manager Task (and its account), unless it exists."""
        jm = job["spec"].get("jobManagerTask")
        if not jm:
            return []
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        tname = naming.job_manager_task_name(name, jm.get("id") or "jobmanager")
        if key(ns, tname) in self.store.tasks:
            return []
        plan: list = []
        if "job" in ((jm.get("authenticationTokenSettings") or {}).get("access") or []):
            plan.append(A.EnsureAccount(ns, f"{name}-jobmanager", pods.owner_reference(job), JM_ROLE_RULES))
        spec = {k: v for k, v in jm.items() if k in ("id", "displayName", "commandLine", "containerSettings", "resourceFiles",
                                                       "outputFiles", "environmentSettings", "constraints", "requiredSlots", "userIdentity",
                                                       "applicationPackageReferences")}
        return plan + [A.CreateObject("tasks", ns, {
            "apiVersion": API_VERSION, "kind": "Task",
            "metadata": {"name": tname, "namespace": ns, "labels": {naming.LABEL_JOB_MANAGER: "true"},
                         "ownerReferences": [pods.owner_reference(job)]},
            "spec": {**spec, "jobName": name, "id": jm.get("id") or "jobmanager"}})]

    def job_manager_account(self, job: dict, task: dict) -> str | None:
        jm = job["spec"].get("jobManagerTask") or {}
        if (task["metadata"].get("labels") or {}).get(naming.LABEL_JOB_MANAGER) == "true" and \
                "job" in ((jm.get("authenticationTokenSettings") or {}).get("access") or []):
            return f"{job['metadata']['name']}-jobmanager"
        return None

    def job_manager_ended(self, job: dict) -> bool:
        jm = job["spec"].get("jobManagerTask")
        if not jm or not jm.get("killJobOnCompletion", True):
            return False
        ns = job["metadata"]["namespace"]
        t = self.store.tasks.get(key(ns, naming.job_manager_task_name(job["metadata"]["name"], jm.get("id") or "jobmanager")))
        return bool(t and (t.get("status") or {}).get("state") == "completed")
