"""TaskCollections (core/collections.py, collstore.py): validate each, give it its Job's
ownerReference, put as many of its tasks in its job's queue as a pass can reach, and write
its status — counts, index ranges, failures, attempts — at most every FLUSH_EVERY seconds
(at once when a crash must not lose it: the executor writes those itself). Runs each pass,
before scheduling; collections are few, so this is O(collections + the tasks it adds)."""
from __future__ import annotations

import asyncio

from podbatch.controllers import actions as A
from podbatch.controllers import blobs, clock
from podbatch.controllers.collstore import PENDING
from podbatch.controllers.status import merged_conditions, now_iso
from podbatch.controllers.store import key
from podbatch.core import collections as collcore
from podbatch.core import conditions
from podbatch.core import jobs as jobcore
from podbatch.core import pods

FLUSH_EVERY = 0.5      # seconds between two status writes of a collection (successes are batched)
WINDOW = 1000          # tasks of a collection queued in memory when its pool's depth is not limited
LIST_RETRY = 30.0      # seconds before a failed listing of a task-per-file collection's files is tried again


class Collections:
    async def reconcile_collections(self, node_view: dict) -> None:
        s = self.store
        depth: dict[str, int | None] = {}
        now = clock.monotonic()
        for ck in [ck for ck in self._listings if ck not in s.collections]:
            self._listings.pop(ck, None)
        for ck, cs in list(s.collections.items()):
            body = cs.body
            if body["metadata"].get("deletionTimestamp"):
                continue
            listing = None
            job = s.jobs.get(cs.job)
            invalid = self._validate(body)
            if not invalid and (invalid := self._job_changed(cs)):
                self.ex.event(body, "Warning", "InvalidSpec", invalid)   # (the same warning is posted once in 10 minutes)
            cs.stalled = bool(invalid)
            owner = jobcore.job_owner_uid(body)
            if not invalid and job is not None and not owner:
                await self._safely(f"collection:{ck}", self._act([A.PatchObject(
                    "taskcollections", body, {"metadata": {"ownerReferences": [
                        *[r for r in body["metadata"].get("ownerReferences") or [] if r.get("kind") != "Job"],
                        pods.owner_reference(job, controller=True)]}}, precondition=True)]))
                continue   # its tasks are queued once it is adopted (they carry their job's uid)
            if not invalid and job is not None and owner == job["metadata"]["uid"] \
                    and (job.get("status") or {}).get("state") not in ("completed", "terminating") \
                    and not job["metadata"].get("deletionTimestamp"):
                if s.unlisted(cs):
                    listing = await self._list_files(ck, now)
                await self._collection_requests(ck)
                pk = key(job["metadata"]["namespace"], jobcore.pool_id_of(job))
                if pk not in depth:
                    depth[pk] = self._queue_depth(pk, node_view) if pk in s.pools else 0
                if s.fill(ck, WINDOW if depth[pk] is None else depth[pk]):
                    s.dirty_jobs.add(cs.job)   # its pool plans over them this pass
            missing = None if job is not None else (f"job {body['spec'].get('jobName')!r} does not exist in namespace "
                                                    f"{body['metadata']['namespace']}; create it or fix spec.jobName")
            await self._write_collection_status(ck, invalid, missing, now, listing)

    async def _list_files(self, ck: str, now: float) -> tuple[bool, str] | None:
        """A task-per-file collection's files: listed in the background (a pass never waits
        for storage), then recorded once in its status. (failed, message) until then."""
        cs = self.store.collections[ck]
        src = cs.body["spec"]["taskPerFile"]["source"]
        where = f"the container {src['containerUrl'].split('?')[0]}" + (f" under prefix {src['prefix']!r}" if src.get("prefix") else "")
        got = self._listings.get(ck)
        if got is None or (got[0] == "failed" and now >= got[2]):
            self._listings[ck] = ("listing",)
            asyncio.get_running_loop().create_task(self._listing(ck, src["containerUrl"], src.get("prefix"), where))
            return False, f"listing the files of {where}"
        if got[0] == "listed":
            await self._safely(f"collection:{ck}", self.ex.write_collection(ck, {"files": got[1]}))
            if not self.store.unlisted(cs):
                self._listings.pop(ck, None)
                self.ex.event(cs.body, "Normal", "FilesListed", f"{len(got[1])} file(s) of {where}: a task each")
                return None
        if got[0] == "failed":
            return True, got[1]
        return False, f"listing the files of {where}"

    async def _listing(self, ck: str, url: str, prefix: str | None, where: str) -> None:
        try:
            names = await blobs.blob_names(url, prefix, limit=collcore.MAX_LISTED + 1)
        except blobs.ListingFailed as e:
            self._listings[ck] = ("failed", f"{e} ({where}); tried again every {LIST_RETRY:.0f} s: fix the SAS "
                                            f"URL or the container", clock.monotonic() + LIST_RETRY)
        else:
            if len(names) > collcore.MAX_LISTED:
                self._listings[ck] = ("failed", f"{where} has more than {collcore.MAX_LISTED} files and a collection "
                                                f"takes at most {collcore.MAX_LISTED}: narrow taskPerFile.source.prefix, "
                                                f"or split the files among several collections",
                                      clock.monotonic() + 10 * LIST_RETRY)
            else:
                self._listings[ck] = ("listed", names)
        self.store._touch()   # the next pass records it

    @staticmethod
    def _job_changed(cs) -> str | None:
        """A collection's tasks stay with the job they were created for (cs.job)."""
        now = cs.body["spec"].get("jobName", "")
        was = cs.job.split("/", 1)[1]
        if now == was:
            return None
        return f"spec.jobName cannot change (it was {was!r}); set it back, or create another collection for job {now!r}"

    async def _collection_requests(self, ck: str) -> None:
        """spec.reactivate and spec.terminateIndexes: Batch's reactivate and terminate task."""
        s = self.store
        cs = s.collections[ck]
        spec, meta = cs.body["spec"], cs.body["metadata"]
        req = spec.get("reactivate") or {}
        if req.get("requestId") and req["requestId"] != cs.handled_reactivate:
            n = s.reactivate(ck, req["requestId"], collcore.parse_ranges(req.get("indexes")))
            self.ex.event(cs.body, "Normal", "TasksReactivated", f"{n} failed task(s) of indexes {req.get('indexes')} run again")
        term = spec.get("terminateIndexes")
        if term and term != cs.terminated_seen:
            plan: list = []
            stopping = False
            failure = {"category": "usererror", "code": "TaskEnded", "message": "The task was terminated (spec.terminateIndexes)"}
            for i in collcore.parse_ranges(term):
                if not 0 <= i < cs.size or cs.states[i] != PENDING:
                    continue
                t = s.task(key(meta["namespace"], collcore.task_name(meta["name"], i))) if i in cs.materialized else None
                st = (t or {}).get("status") or {}
                if st.get("state") in ("preparing", "running"):
                    plan += self._stop_one(t, "terminate", "spec.terminateIndexes")
                    stopping = True
                    continue
                plan += [A.DeletePod(meta["namespace"], p) for p in st.get("stoppingPods") or []]
                s.drop_virtual(ck, i)
                s.end_unbound(ck, i, failure, now_iso())
            if not stopping:
                cs.terminated_seen = term
            if plan:
                await self._safely(f"collection:{ck}", self._act(plan))
        if cs.urgent:
            await self._safely(f"collection:{ck}", self.ex.write_collection(ck))

    async def _write_collection_status(self, ck: str, invalid: str | None, missing: str | None, now: float,
                                       listing: tuple[bool, str] | None = None) -> None:
        s = self.store
        cs = s.collections[ck]
        st = cs.body.get("status") or {}
        patch = s.status_patch(ck)
        conds = merged_conditions(st.get("conditions"), conditions.collection_conditions(
            invalid=f"{invalid}. Fix the collection and apply it again." if invalid else None, job_missing=missing,
            counts=patch["taskCounts"], size=cs.size, listing=listing), cs.body["metadata"].get("generation"))
        if not conditions.same(st.get("conditions"), conds):
            cs.dirty = True   # (an invalid spec's Event: _validate posts it)
        elif st.get("size") != cs.size or st.get("state") != patch["state"]:
            cs.dirty = True
        if not cs.dirty or (now - self._flushed.get(ck, 0.0) < FLUSH_EVERY and patch["state"] != "completed" and not cs.urgent):
            return
        self._flushed[ck] = now
        await self._safely(f"collection:{ck}", self.ex.write_collection(ck, {"conditions": conds}))
