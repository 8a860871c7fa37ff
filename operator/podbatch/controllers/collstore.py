"""The store's part for TaskCollections (core/collections.py): per collection, the state of
each index in one byte (pending, succeeded, failed), the failed tasks' detail, the attempts
of tasks past their first, and which indexes have a virtual Task body in `store.tasks` now.

A collection's task is materialized (a virtual Task body put in the store, where the
scheduler and the task reconciler take it like any Task) when the scheduler may reach it
(`fill`) or when a pod of it exists (a restart: the pod is its binding). Its status writes
stay in memory (`write_virtual`); its end is recorded here and its body leaves memory. What
must survive a crash is written to the collection's status (`status_patch`): at once for a
new attempt or a failure (before the plan goes on to delete or create a pod), batched for
successes (the Succeeded pod stays the record until the batch is written).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

from podbatch.core import collections as coll
from podbatch.core import jobs as jobcore

PENDING, SUCCEEDED, FAILED = 0, 1, 2
FAILED_DETAIL_MAX = 1000
_rv = count(1)   # resourceVersions of virtual bodies (the store orders writes by them)


def _key(ns: str, name: str) -> str:
    return f"{ns}/{name}"


@dataclass(slots=True)
class CollState:
    body: dict
    job: str                                    # the job's store key
    size: int
    states: bytearray
    succeeded: int = 0
    failed: int = 0
    materialized: set = field(default_factory=set)   # indexes with a virtual body in store.tasks
    cursor: int = 0                                   # indexes below it are done or materialized
    attempts: dict = field(default_factory=dict)      # index -> {attempt, retryCount, requeueCount, stoppingPods}
    failures: dict = field(default_factory=dict)      # index -> failed task detail
    dirty: bool = False                               # changes not written to its status yet
    urgent: bool = False                              # ... that must be written before the plan goes on
    ids: dict | None = None                           # explicit ids -> index (lists with their own ids)
    handled_reactivate: str | None = None             # the last spec.reactivate.requestId acted on
    terminated_seen: str | None = None                # a spec.terminateIndexes whose every index is done
    stalled: bool = False                             # its spec is invalid: none of its tasks starts

    @property
    def done(self) -> int:
        return self.succeeded + self.failed


class CollectionStore:
    """Mixed into Store (store.py)."""

    def _init_collections(self) -> None:
        self.collections: dict[str, CollState] = {}
        self.colls_by_job: dict[str, set[str]] = {}
        self.coll_pods: dict[str, set[str]] = {}   # collection key -> its task pods' keys

    # --- the collection objects ------------------------------------------------------
    def put_collection(self, body: dict, deleted: bool = False) -> None:
        meta = body["metadata"]
        ck = _key(meta["namespace"], meta["name"])
        jk = _key(meta["namespace"], body["spec"].get("jobName", ""))
        cs = self.collections.get(ck)
        if deleted:
            if cs is not None and (not meta.get("uid") or cs.body["metadata"].get("uid") == meta.get("uid")):
                for i in list(cs.materialized):
                    self.drop_virtual(ck, i)
                del self.collections[ck]
                self.colls_by_job.get(cs.job, set()).discard(ck)
                self.dirty_jobs.add(cs.job)
            self._touch()
            return
        if cs is not None and cs.body["metadata"].get("uid") != meta.get("uid"):
            self.put_collection(cs.body, deleted=True)   # an earlier collection of this name
            cs = None
        if cs is not None:
            if int(meta.get("resourceVersion") or 0) < int(cs.body["metadata"].get("resourceVersion") or 0):
                return
            cs.body = body
            n = coll.body_size(body)
            if n != cs.size:   # its spec changed: tasks not started yet follow it
                cs.states = cs.states[:n] + bytearray(max(0, n - cs.size))
                cs.size = n
                cs.cursor = min(cs.cursor, n)
        else:
            cs = self._read_collection(body, jk)
            self.collections[ck] = cs
            self.colls_by_job.setdefault(jk, set()).add(ck)
            for pk in list(self.coll_pods.get(ck, ())):   # a restart: its pods were listed first
                rec = self.pods.get(pk)
                if rec is not None:
                    self._materialize_for_pod(ck, rec.labels)
        self.dirty_jobs.add(jk)
        self._touch()

    @staticmethod
    def _read_collection(body: dict, jk: str) -> CollState:
        """Its state as its status recorded it (a restart, or a collection seen first)."""
        n = coll.body_size(body)
        st = body.get("status") or {}
        cs = CollState(body=body, job=jk, size=n, states=bytearray(n))
        for text, value in ((st.get("succeededIndexes"), SUCCEEDED), (st.get("failedIndexes"), FAILED)):
            for i in coll.parse_ranges(text):
                if 0 <= i < n and cs.states[i] == PENDING:
                    cs.states[i] = value
                    if value == SUCCEEDED:
                        cs.succeeded += 1
                    else:
                        cs.failed += 1
        cs.handled_reactivate = st.get("handledReactivateRequestId")
        for f in st.get("failedTasks") or []:
            cs.failures[int(f["index"])] = f
        for a in st.get("attempts") or []:
            i = int(a["index"])
            if 0 <= i < n and cs.states[i] == PENDING:
                cs.attempts[i] = {k: a[k] for k in ("attempt", "retryCount", "requeueCount", "stoppingPods") if a.get(k) is not None}
        return cs

    @staticmethod
    def unlisted(cs: CollState) -> bool:
        """A task-per-file collection whose files are not listed yet (its size is unknown)."""
        return bool(cs.body["spec"].get("taskPerFile")) and coll.files_of(cs.body) is None

    def job_uid_of(self, cs: CollState) -> str | None:
        return jobcore.job_owner_uid(cs.body)

    # --- virtual tasks ----------------------------------------------------------------
    def materialize(self, ck: str, index: int) -> str | None:
        """Put the virtual Task of the index in the store (its key), unless it is done."""
        cs = self.collections.get(ck)
        if cs is None or not 0 <= index < cs.size or cs.states[index] != PENDING:
            return None
        name = coll.task_name(cs.body["metadata"]["name"], index)
        tk = _key(cs.body["metadata"]["namespace"], name)
        if index in cs.materialized:
            return tk
        refs = [r for r in cs.body["metadata"].get("ownerReferences") or [] if r.get("kind") == "Job"]
        body = coll.task_body(cs.body, index, refs)
        a = cs.attempts.get(index)
        if a:
            body["status"] = {"state": "active", "attempt": a["attempt"], "stoppingPods": a.get("stoppingPods"),
                              "executionInfo": {"retryCount": a.get("retryCount", 0), "requeueCount": a.get("requeueCount", 0)}}
        body["metadata"]["resourceVersion"] = str(next(_rv))
        cs.materialized.add(index)
        self.put_task(body)
        return tk

    def fill(self, ck: str, want: int) -> int:
        """Materialize the collection's next pending indexes until `want` of its tasks wait
        in the queue (active). Returns how many it added."""
        cs = self.collections.get(ck)
        if cs is None:
            return 0
        ns, name = cs.body["metadata"]["namespace"], cs.body["metadata"]["name"]
        waiting = sum(1 for i in cs.materialized if self.task_state.get(_key(ns, coll.task_name(name, i))) == "active")
        added = 0
        while waiting < want and cs.cursor < cs.size:
            i = cs.cursor
            cs.cursor += 1
            if cs.states[i] == PENDING and i not in cs.materialized:
                self.materialize(ck, i)
                waiting += 1
                added += 1
        return added

    def _materialize_for_pod(self, ck: str, labels: dict) -> None:
        try:
            index = int(labels.get(coll.LABEL_INDEX, ""))
        except ValueError:
            return
        self.materialize(ck, index)

    def collection_pod(self, pk: str, meta: dict, labels: dict, deleted: bool) -> None:
        """A task pod of a collection came or went (store.put_pod, before it reindexes the task)."""
        name = labels.get(coll.LABEL_COLLECTION)
        if not name:
            return
        ck = _key(meta["namespace"], name)
        pods = self.coll_pods.setdefault(ck, set())
        if deleted:
            pods.discard(pk)
            return
        pods.add(pk)
        if ck in self.collections:
            self._materialize_for_pod(ck, labels)

    def write_virtual(self, body: dict, patch: dict) -> tuple[dict, bool]:
        """A status write of a virtual task: applied in memory. Returns (the new body, whether
        the collection's status must be written before the plan goes on)."""
        from podbatch.controllers.actions import merge_patch

        name, index = coll.virtual(body)
        ck = _key(body["metadata"]["namespace"], name)
        cs = self.collections.get(ck)
        new = {**body, "metadata": {k: v for k, v in body["metadata"].items() if k != "podbatch.io/bound-by-pod"},
               "status": merge_patch(body.get("status"), patch)}
        new["metadata"]["resourceVersion"] = str(next(_rv))
        if cs is None:
            return new, False
        st = new["status"]
        info = st.get("executionInfo") or {}
        if st.get("state") == "completed":
            self._record_end(ck, cs, index, new)
            return new, cs.urgent
        durable = {"attempt": int(st.get("attempt") or 1), "retryCount": info.get("retryCount", 0),
                   "requeueCount": info.get("requeueCount", 0), "stoppingPods": st.get("stoppingPods") or None}
        known = cs.attempts.get(index) or {"attempt": 1, "retryCount": 0, "requeueCount": 0, "stoppingPods": None}
        if {k: known.get(k) for k in durable} != durable:
            cs.attempts[index] = durable
            cs.dirty = cs.urgent = True
        self.put_task(new)
        return new, cs.urgent

    def _record_end(self, ck: str, cs: CollState, index: int, body: dict) -> None:
        st = body["status"]
        info = st.get("executionInfo") or {}
        ok = info.get("result") == "success"
        if cs.states[index] == PENDING:
            cs.states[index] = SUCCEEDED if ok else FAILED
            if ok:
                cs.succeeded += 1
            else:
                cs.failed += 1
                cs.urgent = True
                if len(cs.failures) < FAILED_DETAIL_MAX:
                    cs.failures[index] = {
                        "index": index, "id": body["spec"].get("id"), "exitCode": info.get("exitCode"),
                        "failureInfo": info.get("failureInfo"), "retryCount": info.get("retryCount", 0),
                        "requeueCount": info.get("requeueCount", 0), "nodeId": (st.get("nodeInfo") or {}).get("nodeId"),
                        "podName": st.get("podName"), "endTime": info.get("endTime")}
        if cs.attempts.pop(index, None) is not None:
            cs.urgent = True
        cs.dirty = True
        self.drop_virtual(ck, index)
        self.dirty_jobs.add(cs.job)

    def end_unbound(self, ck: str, index: int, failure: dict, now: str) -> None:
        """A task that is not bound (queued, or not in memory) completes with `failure`
        (a terminate): recorded as any failure, written before the plan goes on."""
        cs = self.collections[ck]
        spec = cs.body["spec"]
        a = cs.attempts.get(index) or {}
        body = {"spec": {"id": coll.task_id(spec, cs.body["metadata"]["name"], index)},
                "status": {"state": "completed", "executionInfo": {
                    "result": "failure", "failureInfo": failure, "endTime": now, "retryCount": a.get("retryCount", 0),
                    "requeueCount": a.get("requeueCount", 0)}}}
        self._record_end(ck, cs, index, body)
        cs.urgent = True

    def reactivate(self, ck: str, request_id: str, indexes) -> int:
        """Batch's reactivate for the failed tasks among `indexes` (not those a terminate
        ended): pending again, at their next attempt, retry count reset. Returns how many."""
        cs = self.collections[ck]
        terminated = set(coll.parse_ranges(cs.body["spec"].get("terminateIndexes")))
        n = 0
        for i in indexes:
            if not 0 <= i < cs.size or cs.states[i] != FAILED or i in terminated:
                continue
            f = cs.failures.pop(i, None) or {}
            cs.states[i] = PENDING
            cs.failed -= 1
            cs.attempts[i] = {"attempt": self._last_attempt(ck, i, f) + 1, "retryCount": 0,
                              "requeueCount": f.get("requeueCount", 0), "stoppingPods": None}
            cs.cursor = min(cs.cursor, i)
            n += 1
        cs.handled_reactivate = request_id
        cs.dirty = cs.urgent = True
        self.dirty_jobs.add(cs.job)
        return n

    def _last_attempt(self, ck: str, index: int, failure: dict) -> int:
        """The attempt of the index's last pod (its failure record, or its pods)."""
        tail = (failure.get("podName") or "").rpartition("-")[2]
        best = int(tail) if tail.isdigit() else 0
        for pk in self.coll_pods.get(ck, ()):
            rec = self.pods.get(pk)
            if rec is not None and rec.labels.get(coll.LABEL_INDEX) == str(index):
                try:
                    best = max(best, int(rec.labels.get("podbatch.io/attempt", "0")))
                except ValueError:
                    pass
        return max(best, 1)

    def drop_virtual(self, ck: str, index: int) -> None:
        cs = self.collections.get(ck)
        if cs is None or index not in cs.materialized:
            return
        cs.materialized.discard(index)
        ns = cs.body["metadata"]["namespace"]
        name = coll.task_name(cs.body["metadata"]["name"], index)
        tk = _key(ns, name)
        t = self.tasks.get(tk)
        if t is not None and coll.virtual(t):
            self.put_task({**t, "metadata": {**t["metadata"], "resourceVersion": "0"}}, deleted=True)
        if cs.states[index] == PENDING:
            cs.cursor = min(cs.cursor, index)   # a task dropped before its end is taken again

    def held(self, t: dict) -> bool:
        """Whether `t` is a collection's task that may not be bound now: its collection is
        stalled (an invalid spec), or holds changes a crash must not lose that are not written
        yet (a new attempt, after a failed write: no pod of an attempt its status does not have)."""
        v = coll.virtual(t)
        cs = v and self.collections.get(_key(t["metadata"]["namespace"], v[0]))
        return bool(cs and (cs.urgent or cs.stalled))

    # --- what the engine reads -----------------------------------------------------
    def status_patch(self, ck: str) -> dict:
        """The collection's status as the store knows it now (written when dirty)."""
        cs = self.collections[ck]
        ns, name = cs.body["metadata"]["namespace"], cs.body["metadata"]["name"]
        counts = jobcore.empty_counts()
        for i in cs.materialized:
            state = self.task_state.get(_key(ns, coll.task_name(name, i))) or "active"
            for k in jobcore.count_keys(state, None):
                if k != "failed":
                    counts[k] += 1
        counts["active"] += cs.size - cs.done - len(cs.materialized)
        counts["completed"], counts["succeeded"], counts["failed"] = cs.done, cs.succeeded, cs.failed
        done = cs.done == cs.size and not self.unlisted(cs)
        return {"state": "completed" if done else "active", "size": cs.size, "taskCounts": counts,
                "succeededIndexes": coll.ranges(coll.marked(cs.states, SUCCEEDED)) or None,
                "failedIndexes": coll.ranges(coll.marked(cs.states, FAILED)) or None,
                "failedTasks": [cs.failures[i] for i in sorted(cs.failures)] or None,
                "attempts": [{"index": i, **{k: v for k, v in a.items() if v is not None}} for i, a in sorted(cs.attempts.items())] or None,
                "handledReactivateRequestId": cs.handled_reactivate,
                "observedGeneration": cs.body["metadata"].get("generation")}

    def collection_counts(self, jk: str, uid: str | None, counts: dict, slots: dict) -> None:
        """Add to a job's counts its collections' tasks that have no body in the store."""
        for ck in self.colls_by_job.get(jk, ()):
            cs = self.collections[ck]
            owner = self.job_uid_of(cs)
            if owner and uid and owner != uid:
                continue
            factory = cs.body["spec"].get("parametricSweep") or cs.body["spec"].get("taskPerFile")
            req = int(factory["repeatTask"].get("requiredSlots", 1)) if factory else 1
            # until its files are listed, a task-per-file collection is one active task of
            # its job: the job does not complete before them
            active = cs.size - cs.done - len(cs.materialized) + self.unlisted(cs)
            for k, n in (("active", active), ("completed", cs.done), ("succeeded", cs.succeeded), ("failed", cs.failed)):
                counts[k] += n
                slots[k] += n * req

    def collection_task(self, jk: str, tid: str) -> dict | None:
        """A completed (or pending) task of one of the job's collections by its Batch id, as
        much of a Task body as a dependency check reads; None if no collection has the id.
        (A materialized one is found by id in the store first.)"""
        for ck in self.colls_by_job.get(jk, ()):
            cs = self.collections[ck]
            index = self._index_of_id(cs, tid)
            if index is None:
                continue
            state = cs.states[index]
            if state == PENDING:
                return {"spec": {"id": tid}, "status": {"state": "active"}}
            f = cs.failures.get(index) or {}
            return {"spec": coll.task_spec(cs.body["spec"], index) | {"id": tid},
                    "status": {"state": "completed", "executionInfo": {
                        "result": "success" if state == SUCCEEDED else "failure", "exitCode": 0 if state == SUCCEEDED else f.get("exitCode"),
                        "failureInfo": f.get("failureInfo")}}}
        return None

    @staticmethod
    def _index_of_id(cs: CollState, tid: str) -> int | None:
        spec = cs.body["spec"]
        if spec.get("tasks"):
            if cs.ids is None:
                name = cs.body["metadata"]["name"]
                cs.ids = {coll.task_id(spec, name, i): i for i in range(cs.size)}
            return cs.ids.get(tid)
        prefix = spec.get("taskIdPrefix")
        prefix = f"{cs.body['metadata']['name']}-" if prefix is None else prefix
        tail = tid[len(prefix):] if tid.startswith(prefix) else ""
        if tail.isdigit() and str(int(tail)) == tail and int(tail) < cs.size:
            return int(tail)
        return None
