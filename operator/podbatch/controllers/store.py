"""What the operator knows, rebuilt from watches after every start: the API server is
the only truth. Handlers put objects here and mark what changed; the engine reads it.

Pods are kept compact (labels + the fields the state machines read), not whole.

Ordering: every kind is resourceVersion-checked, so an event (or a late write response)
older than what the store holds never replaces it, and a deleted object leaves a
tombstone so an older copy arriving late (a list, a slow echo) does not bring it back.
Relists: `replace` takes a full list of a kind and forgets what the list no longer has
(a deletion missed in a watch gap), so slots and counts never stay taken by ghosts.
"""
from __future__ import annotations

import asyncio
import fnmatch
import sys
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from podbatch.controllers import clock
from podbatch.controllers.collstore import CollectionStore
from podbatch.controllers.tasktable import TaskTable
from podbatch.core import binding, naming
from podbatch.core import collections as collcore
from podbatch.core import jobs as jobcore
from podbatch.core.queue import JobQueue
from podbatch.core.queue import sort_key as queue_key
from podbatch.core.tasks import PodView, pod_view


def key(ns: str, name: str) -> str:
    return f"{ns}/{name}"


def body_key(body: dict) -> str:
    return key(body["metadata"].get("namespace", ""), body["metadata"]["name"])


def _rv(body: dict) -> int:
    try:
        return int(body["metadata"].get("resourceVersion") or 0)
    except ValueError:
        return 0


_NO_BODY: dict = {"metadata": {}}
ASSUMED_POD_TTL = 5.0   # s a pod whose create's answer was lost is held without the watch showing it
TOMBSTONES = 50_000   # deleted keys remembered (per kind) against late older copies

# What the engine still reads of a completed Task (dependencies, retention, reactivation,
# ids, its pods): the rest of its body (command line, files, environment, annotations, most
# conditions) leaves memory. A change of the Task (a reactivation) brings the whole body back.
_DONE_META = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "generation", "labels",
              "ownerReferences", "deletionTimestamp")
_DONE_SPEC = ("jobName", "id", "exitConditions", "constraints", "reactivateRequestId", "desiredState", "requiredSlots",
              "priority", "dependsOn")
_DONE_STATUS = ("state", "attempt", "podName", "subtasks", "nodeInfo", "executionInfo", "handledReactivateRequestId",
                "stoppingPods", "conditions")   # (conditions whole: the retention's write rewrites the list)


_SHARED: dict[str, str] = {}   # short string values, shared by every body that has them
_SHARED_MAX = 50_000   # then it starts again: values shared before stay shared, unique ones (uids) do not pile up


def shared_strings(obj):
    """The body with its keys interned and its short string values shared: each watch event
    is parsed on its own, so without this every stored body holds its own copy of every key
    ("metadata", "resourceVersion", "lastTransitionTime" ...) and of every repeated value."""
    if isinstance(obj, dict):
        return {sys.intern(k): shared_strings(v) for k, v in obj.items() if k != "managedFields"}
    if isinstance(obj, list):
        return [shared_strings(v) for v in obj]
    if isinstance(obj, str) and len(obj) <= 64:
        got = _SHARED.get(obj)
        if got is not None:
            return got
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        _SHARED[obj] = obj
    return obj


def compact_completed(body: dict) -> dict:
    """A completed Task as the store keeps it (see _DONE_*)."""
    st = body.get("status") or {}
    meta = body["metadata"]
    status = {k: st[k] for k in _DONE_STATUS if k in st}
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": {k: meta[k] for k in _DONE_META if k in meta},
            "spec": _done_spec(body.get("spec") or {}), "status": status}


def _done_spec(spec: dict) -> dict:
    return {k: spec[k] for k in _DONE_SPEC if k in spec}


@dataclass(slots=True)
class PodRecord:
    namespace: str
    labels: dict
    boot: str
    view: PodView
    rv: int = 0
    task: str = ""        # for a task pod: its Task's key
    binding: dict | None = None   # for a task pod: the binding it records (core/binding.py)

    def owned_by(self, uid: str | None) -> bool:
        """Whether the pod belongs to the object (Task or Job) with this uid, not to an
        earlier one of the same name. A pod without the label (or no uid to compare) does."""
        return not uid or self.labels.get(naming.LABEL_TASK_UID, uid) == uid


class Store(CollectionStore):
    def __init__(self) -> None:
        self._init_collections()
        self._assumed_until: dict[str, float] = {}   # pods of lost creates -> until when they are held
        self.pools: dict[str, dict] = {}
        self.cnodes: dict[str, dict] = {}
        self.knodes: dict[str, dict] = {}
        self.grants: dict[str, dict] = {}        # PoolGrants (cluster-scoped), by name
        self.knamespaces: dict[str, dict] = {}   # Namespaces, by name: PoolGrants select them by label
        self.jobs: dict[str, dict] = {}
        self.jobschedules: dict[str, dict] = {}
        self.tasks = TaskTable()   # Task bodies; those at rest kept as JSON (controllers/tasktable.py)
        self.pods: dict[str, PodRecord] = {}
        self.tasks_by_job: dict[str, set[str]] = defaultdict(set)
        # (job key, Batch task id) -> the task holding it (a set only for duplicates): see holders()
        self.tasks_by_id: dict[tuple[str, str], str | set[str]] = {}
        self._task_id: dict[str, tuple[str, str]] = {}   # task -> its (job key, Batch task id) in tasks_by_id
        self.prep_pods: dict[str, set[str]] = defaultdict(set)   # cnode key -> nodeprep pod keys
        self.job_pods: dict[str, set[str]] = defaultdict(set)    # job key -> its preparation and release pod keys
        self.placeholders: dict[str, set[str]] = defaultdict(set)   # pool key -> its placeholder pod keys (autoscaler)
        self.inflight: dict[str, set[str]] = defaultdict(set)      # cnode key -> tasks preparing/running there
        # Node name -> its live task pods (not ended; terminating ones too; whatever their Task, or
        # none) -> their slots: what holds a node's slots besides the tasks in flight (_index_node_pod)
        self.node_pods: dict[str, dict[str, int]] = {}
        self._pod_node: dict[str, str] = {}   # task pod -> the Node it is counted on in node_pods
        self.task_nodes: dict[str, tuple[str, ...]] = {}            # task -> the cnodes it holds
        self.task_state: dict[str, str] = {}
        self.state_counts: Counter = Counter()
        self.job_state_counts: dict[str, Counter] = defaultdict(Counter)
        self.inflight_by_job: dict[str, set[str]] = defaultdict(set)  # tasks preparing/running per job
        self.queues: dict[str, JobQueue] = defaultdict(JobQueue)      # queued tasks per job, in order (core/queue.py)
        # a job's taskCounts and taskSlotCounts, kept as tasks change (a pass never counts a
        # job's tasks one by one): job -> the adopting Job's uid ("" before adoption) -> counts
        self.job_counts: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        self._counted: dict[str, tuple[str, str, tuple[str, ...], int]] = {}   # task -> (job, owner, keys, slots)
        self.dirty_tasks: set[str] = set()
        self.dirty_jobs: set[str] = set()
        self.dirty_pools: set[str] = set()
        self.changed = asyncio.Event()
        self.synced = False
        self.relisted: set[str] = set()   # kinds kopf listed again (a watch gap): the engine relists them
        self.listed_at: dict[str, str] = {}   # kind -> the resourceVersion of its last list (sync.relist)
        self.namespaces: list[str] = []   # the served namespaces (globs); empty = all
        self._gone: dict[str, OrderedDict] = defaultdict(OrderedDict)   # kind -> key -> rv at deletion

    def serves(self, ns: str) -> bool:
        return not ns or not self.namespaces or any(fnmatch.fnmatchcase(ns, p) for p in self.namespaces)

    def _tombstone(self, kind: str, k: str, rv: int) -> None:
        gone = self._gone[kind]
        gone[k] = max(rv, gone.get(k, 0))
        gone.move_to_end(k)
        while len(gone) > TOMBSTONES:
            gone.popitem(last=False)

    def _buried(self, kind: str, k: str, rv: int) -> bool:
        """A copy at or below the resourceVersion the object was deleted at: stale."""
        return rv <= self._gone[kind].get(k, -1)

    def _touch(self) -> None:
        self.changed.set()

    def _put(self, table: dict, k: str, body: dict, kind: str = "") -> bool:
        old_rv = table.rv(k) if isinstance(table, TaskTable) else _rv(table.get(k) or _NO_BODY)
        if old_rv > _rv(body):
            return False   # an older event than what a write already told us
        if kind and self._buried(kind, k, _rv(body)):
            return False   # a late copy of an object already deleted
        meta = body.get("metadata") or {}
        meta.pop("managedFields", None)   # the largest part of a body, and never read
        (meta.get("annotations") or {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
        table[k] = body
        return True

    def _index_task(self, k: str, job: str, body: dict | None) -> None:
        """Keep the per-node, per-job and per-state indexes of tasks exact, so a pass
        reads what is queued or in flight without scanning every task ever seen."""
        for ck in self.task_nodes.pop(k, ()):
            self.inflight[ck].discard(k)
        old = self.task_state.pop(k, None)
        if old:
            self.state_counts[old] -= 1
            self.job_state_counts[job][old] -= 1
        self.inflight_by_job[job].discard(k)
        counted = self._counted.pop(k, None)
        if counted is not None:
            c = self.job_counts[counted[0]][counted[1]]
            for ck in counted[2]:
                c[ck] -= 1
                c["slots:" + ck] -= counted[3]
        if body is None:
            self.queues[job].discard(k)
            return
        st = body.get("status") or {}
        state = st.get("state") or "active"
        if state == "active":
            meta = body["metadata"]
            v = meta.get(collcore.VIRTUAL)   # a collection's tasks in index order
            self.queues[job].add(k, queue_key(int(body["spec"].get("priority", 0)), sys.intern(meta.get("creationTimestamp") or ""),
                                              f"{v[0]}-{v[1]:010d}" if v else meta["name"]))
        else:
            self.queues[job].discard(k)
        self.task_state[k] = state
        self.state_counts[state] += 1
        self.job_state_counts[job][state] += 1
        counted = (job, sys.intern(jobcore.job_owner_uid(body) or ""), jobcore.count_keys(state, (st.get("executionInfo") or {}).get("result")),
                   int(body["spec"].get("requiredSlots", 1)))
        self._counted[k] = counted
        c = self.job_counts[job][counted[1]]
        for ck in counted[2]:
            c[ck] += 1
            c["slots:" + ck] += counted[3]
        if state in ("preparing", "running"):
            self.inflight_by_job[job].add(k)
        if state in ("preparing", "running") and st.get("nodeInfo"):
            ns = body["metadata"]["namespace"]
            nodes = {key(ns, st["nodeInfo"].get("nodeId", ""))}
            nodes.update(key(ns, x["nodeName"]) for x in st.get("subtasks") or [] if x.get("id", 0) and x.get("nodeName"))
            self.task_nodes[k] = tuple(nodes)
            for ck in nodes:
                self.inflight[ck].add(k)

    def _index_id(self, k: str, job_and_id: tuple[str, str] | None) -> None:
        """Keep tasks_by_id exact: which tasks of a job carry a Batch task id (one, unless a
        duplicate was applied; the engine refuses all but the first)."""
        old = self._task_id.pop(k, None)
        if old is not None and old != job_and_id:
            holders = self.tasks_by_id.get(old)
            if isinstance(holders, set):
                holders.discard(k)
                if len(holders) == 1:
                    self.tasks_by_id[old] = next(iter(holders))
            elif holders == k:
                del self.tasks_by_id[old]
        if job_and_id is not None:
            self._task_id[k] = job_and_id
            holders = self.tasks_by_id.get(job_and_id)
            if holders is None or holders == k:
                self.tasks_by_id[job_and_id] = k
            elif isinstance(holders, set):
                holders.add(k)
            else:
                self.tasks_by_id[job_and_id] = {holders, k}

    def holders(self, job: str, tid: str) -> tuple[str, ...]:
        """The tasks of a job that carry this Batch task id (one, unless a duplicate was applied)."""
        got = self.tasks_by_id.get((job, tid))
        if got is None:
            return ()
        return (got,) if isinstance(got, str) else tuple(got)

    # --- podbatch kinds ---------------------------------------------------------
    def _upsert(self, table: dict, body: dict, deleted: bool, kind: str) -> str:
        k = body_key(body)
        if deleted:
            old = table.get(k)
            if old is None or _rv(old) <= _rv(body) or not _rv(body):
                table.pop(k, None)
                self._tombstone(kind, k, _rv(body))
        else:
            self._put(table, k, body, kind)
        self._touch()
        return k

    def put_pool(self, body: dict, deleted: bool = False) -> None:
        self.dirty_pools.add(self._upsert(self.pools, body, deleted, "pools"))

    def put_cnode(self, body: dict, deleted: bool = False) -> None:
        self._upsert(self.cnodes, body, deleted, "computenodes")
        self.dirty_pools.add(key(body["metadata"]["namespace"], body["spec"].get("poolName", "")))

    def put_job(self, body: dict, deleted: bool = False) -> None:
        # not its tasks: a job's change reaches them through reconcile_job and the scheduler,
        # so a job status write costs nothing per task
        self.dirty_jobs.add(self._upsert(self.jobs, body, deleted, "jobs"))
        if deleted:   # its tasks stop and free their slots: look at each of them
            self.dirty_tasks.update(self.tasks_by_job.get(body_key(body), ()))

    def put_jobschedule(self, body: dict, deleted: bool = False) -> None:
        self._upsert(self.jobschedules, body, deleted, "jobschedules")

    def put_task(self, body: dict, deleted: bool = False) -> None:
        k = body_key(body)
        # one string per job, not one per task (the indexes below keep it per task)
        job = sys.intern(key(body["metadata"]["namespace"], body["spec"].get("jobName", "")))
        old = self.tasks.get(k)
        # A change of status within the same state (a pending reason, a subtask's address,
        # the echo of our own write) changes neither the job's counts nor the queue: the job
        # (and so a replan of its pool over every queued task) is not woken for it.
        done = (body.get("status") or {}).get("state") == "completed" and not deleted
        quiet = (not deleted and old is not None
                 and (old.get("spec") == body.get("spec") or (done and old.get("spec") == _done_spec(body.get("spec") or {})))
                 and (old.get("status") or {}).get("state") == (body.get("status") or {}).get("state")
                 and (old.get("status") or {}).get("stoppingPods") == (body.get("status") or {}).get("stoppingPods")
                 and old["metadata"].get("deletionTimestamp") == body["metadata"].get("deletionTimestamp"))
        if deleted:
            if old is not None and _rv(old) > _rv(body) and _rv(body):
                return   # the delete of an earlier Task of this name; a newer one is here
            self.tasks.pop(k, None)
            self.tasks_by_job[job].discard(k)
            self._index_id(k, None)
            self._index_task(k, job, None)
            self._tombstone("tasks", k, _rv(body))
        else:
            if done:
                body = compact_completed(body)
            # a body about to be frozen is not worth sharing its strings
            at_rest = (body.get("status") or {}).get("state", "active") in ("active", "completed") \
                and not collcore.virtual(body)
            if self._put(self.tasks, k, body if at_rest else shared_strings(body), "tasks"):
                self.tasks_by_job[job].add(k)
                self._index_id(k, (job, body["spec"].get("id") or body["metadata"]["name"]))
                self._index_task(k, job, self.task(k))
                if at_rest:
                    self._rest(k)
        self.dirty_tasks.add(k)
        if not quiet:
            self.dirty_jobs.add(job)
        self._touch()

    # --- Kubernetes kinds -------------------------------------------------------
    def put_knode(self, body: dict, deleted: bool = False) -> None:
        name = body["metadata"]["name"]
        if deleted:
            self.knodes.pop(name, None)
            self._tombstone("nodes", name, _rv(body))
        else:
            self._put(self.knodes, name, body, "nodes")
        self.dirty_pools.update(self.pools)   # few pools; static ones may adopt this node
        self._touch()

    def _put_cluster_scoped(self, table: dict, kind: str, body: dict, deleted: bool) -> None:
        name = body["metadata"]["name"]
        if deleted:
            table.pop(name, None)
            self._tombstone(kind, name, _rv(body))
        else:
            self._put(table, name, body, kind)
        self._touch()   # every pool is reconciled each pass, and sees the grants then

    def put_grant(self, body: dict, deleted: bool = False) -> None:
        self._put_cluster_scoped(self.grants, "poolgrants", body, deleted)

    def put_namespace(self, body: dict, deleted: bool = False) -> None:
        self._put_cluster_scoped(self.knamespaces, "namespaces", body, deleted)

    def namespace_labels(self, ns: str) -> dict:
        return ((self.knamespaces.get(ns) or {}).get("metadata") or {}).get("labels") or {}

    def put_pod(self, body: dict, deleted: bool = False) -> None:
        meta = body["metadata"]
        k = key(meta["namespace"], meta["name"])
        labels = meta.get("labels") or {}
        role = labels.get(naming.LABEL_ROLE)
        rv = _rv(body)
        old = self.pods.get(k)
        if old is not None and rv and old.rv > rv:
            return   # older than what we hold (a late response or echo, or an earlier pod of this name)
        if deleted:
            self.pods.pop(k, None)
            self._tombstone("pods", k, rv)
        elif self._buried("pods", k, rv):
            return
        else:
            annotations = meta.get("annotations") or {}
            self.pods[k] = PodRecord(meta["namespace"], labels, annotations.get("podbatch.io/boot", ""), pod_view(body), rv,
                                     binding=binding.parse(annotations.get(naming.ANNOTATION_BINDING)) if role == "task" else None)
        if role == "task":
            self.collection_pod(k, meta, labels, deleted)
            tkey = self._task_of_pod(meta, labels)
            if k in self.pods:
                self.pods[k].task = tkey
            self._index_node_pod(k, tkey, meta["namespace"], labels)
            self._reindex_bound(tkey)
            self.dirty_tasks.add(tkey)
        elif role in ("jobprep", "jobrelease"):
            jkey = key(meta["namespace"], labels.get(naming.LABEL_JOB, ""))
            if deleted:
                self.job_pods[jkey].discard(k)
            else:
                self.job_pods[jkey].add(k)
            self.dirty_jobs.add(jkey)
            # tasks waiting in `preparing` for this node's preparation task look again
            # (a frozen Task is at rest: its status does not say preparing)
            self.dirty_tasks.update(t for t in self.tasks_by_job.get(jkey, ()) if not self.tasks.is_frozen(t)
                                    and ((self.tasks.get(t) or {}).get("status") or {}).get("state") == "preparing")
        elif role == "placeholder":
            pool = key(meta["namespace"], labels.get(naming.LABEL_POOL, ""))
            if deleted:
                self.placeholders[pool].discard(k)
            else:
                self.placeholders[pool].add(k)
            self.dirty_pools.add(pool)
        elif role == "nodeprep":
            ckey = key(meta["namespace"], labels.get(naming.LABEL_NODE, ""))
            if deleted:
                self.prep_pods[ckey].discard(k)
            else:
                self.prep_pods[ckey].add(k)
            pool = key(meta["namespace"], labels.get(naming.LABEL_POOL, ""))
            self.dirty_pools.add(pool)
        self._touch()

    # --- tasks bound by their pod (core/binding.py) --------------------------------------
    def task(self, k: str) -> dict | None:
        """The Task as the engine decides on it: its body, with the binding its current
        attempt's pod records when its status does not say it yet (`preparing` on that pod's
        node; the fields its next status write must carry under metadata[binding.MARK])."""
        t = self.tasks.get(k)
        if t is None:
            return None
        rec = self._bound_pod(t)
        if rec is None:
            return t
        meta = t["metadata"]
        effective, fields = binding.bound_status(t.get("status"), naming.task_pod_name(meta["name"], int((t.get("status") or {}).get("attempt") or 1)),
                                                 rec.binding)
        return {**t, "metadata": {**meta, binding.MARK: fields}, "status": effective}

    def _bound_pod(self, t: dict) -> PodRecord | None:
        attempt = binding.awaits_pod(t.get("status"))
        if attempt is None:
            return None
        meta = t["metadata"]
        rec = self.pods.get(key(meta["namespace"], naming.task_pod_name(meta["name"], attempt)))
        if rec is None or rec.binding is None or not rec.owned_by(meta.get("uid")) \
                or rec.labels.get(naming.LABEL_ATTEMPT) != str(attempt):
            return None
        return rec

    def _reindex_bound(self, tk: str) -> None:
        """A task pod came, changed or went: its Task's state may be the pod's to say."""
        t = self.tasks.get(tk)
        if t is None or binding.awaits_pod(t.get("status")) is None:
            return
        job = key(t["metadata"]["namespace"], t["spec"].get("jobName", ""))
        before = self.task_state.get(tk)
        self._index_task(tk, job, self.task(tk))
        if self.task_state.get(tk) != before:
            self.dirty_jobs.add(job)   # its counts changed (active -> preparing, or back)
            self._rest(tk)

    def _rest(self, tk: str) -> None:
        """A task whose state is active (queued, no pod yet) or completed is at rest: its body
        is kept frozen; one whose pod says it is in flight again is read every pass: a dict."""
        if self.task_state.get(tk) in ("active", "completed"):
            self.tasks.freeze(tk)
        else:
            self.tasks.thaw(tk)

    # --- task pods per node: what holds a node's slots ----------------------------------
    def _index_node_pod(self, k: str, tk: str, ns: str, labels: dict) -> None:
        """Keep node_pods exact: a task pod counts on its Node from when it is seen there until
        it has ended (Succeeded/Failed) or is gone, terminating or not, whether its Task still
        exists or not. Its slots: its Task's requiredSlots, remembered once the Task is gone
        (pods do not carry it); 1 for a pod whose Task was never seen."""
        rec = self.pods.get(k)
        old = self._pod_node.pop(k, None)
        slots = 1
        if old is not None:
            on = self.node_pods.get(old) or {}
            slots = on.pop(k, 1)
            if not on:
                self.node_pods.pop(old, None)
        if rec is None or not rec.view.node_name or rec.view.phase in ("Succeeded", "Failed"):
            if old is not None:   # its slots are free: its pool plans again
                self.dirty_pools.add(key(ns, labels.get(naming.LABEL_POOL, "")))
            return
        t = self.tasks.get(tk)
        if t is not None and rec.owned_by(t["metadata"].get("uid")):
            slots = int(t["spec"].get("requiredSlots", 1))
        self.node_pods.setdefault(rec.view.node_name, {})[k] = slots
        self._pod_node[k] = rec.view.node_name

    def pod_slots_on(self, node: str, besides: Iterable[str] = ()) -> int:
        """The slots the live task pods on Node `node` hold (node_pods), but for the current
        pods of the tasks `besides` (in flight there: the caller counts those from the tasks).
        O(pods on the node + tasks besides)."""
        pods = self.node_pods.get(node)
        if not pods:
            return 0
        counted: dict[str, str | None] = {}   # pod -> the uid of the task that counts it
        for tk in besides:
            t = self.task(tk)
            if t is None:
                continue
            st = t.get("status") or {}
            ns, uid = t["metadata"]["namespace"], t["metadata"].get("uid")
            for name in (st.get("podName"), *(x.get("podName") for x in st.get("subtasks") or ())):
                if name:
                    counted[key(ns, name)] = uid
        total = 0
        for pk, slots in pods.items():
            rec = self.pods[pk]
            if pk in counted and rec.owned_by(counted[pk]):
                continue
            t = self.tasks.get(rec.task)
            if t is not None and rec.owned_by(t["metadata"].get("uid")):
                slots = pods[pk] = int(t["spec"].get("requiredSlots", 1))   # its Task came after it (a restart's lists)
            total += slots
        return total

    def counts_of(self, jk: str, uid: str | None) -> tuple[dict[str, int], dict[str, int]]:
        """(taskCounts, taskSlotCounts) of the Job `jk` with this uid: its adopted tasks and
        those not adopted yet, not those an earlier Job of the same name adopted."""
        counts, slots = jobcore.empty_counts(), jobcore.empty_counts()
        for owner, c in (self.job_counts.get(jk) or {}).items():
            if owner and owner != uid:
                continue
            for ck in counts:
                counts[ck] += c.get(ck, 0)
                slots[ck] += c.get("slots:" + ck, 0)
        self.collection_counts(jk, uid, counts, slots)
        return counts, slots

    def was_deleted(self, ns: str, name: str | None) -> bool:
        """Whether this pod was seen deleted (since this process started)."""
        return bool(name) and key(ns, name) in self._gone["pods"]

    @staticmethod
    def _task_of_pod(meta: dict, labels: dict) -> str:
        name = (meta.get("annotations") or {}).get("podbatch.io/task-name") or labels.get(naming.LABEL_TASK, "")
        return key(meta["namespace"], name)

    def assume_pod(self, pod: dict) -> bool:
        """A pod the executor is about to create, held in the store at once (as kube-scheduler
        assumes a pod it is binding): a pass that starts before the create returns sees its
        task bound and its node's slot taken. Resource version 0, so the create's response or
        the watch's ADDED event replaces it; `forget_assumed_pod` drops it if the create fails.
        Only where the store holds no pod of that name. True if it was put."""
        meta = pod["metadata"]
        if key(meta["namespace"], meta["name"]) in self.pods:
            return False
        self.put_pod({**pod, "metadata": {**meta, "resourceVersion": "0"}, "status": {"phase": "Pending"}})
        return True

    def forget_assumed_pod(self, ns: str, name: str, *, maybe_created: bool = False) -> None:
        """The create of an assumed pod failed: drop it, unless the watch brought the real one.
        A create whose answer was lost (a timeout, a 504) may have happened: its pod is kept
        (its slot stays taken, no other task is bound there) until the watch brings it or
        ASSUMED_POD_TTL seconds pass without it (`expire_assumed_pods`)."""
        k = key(ns, name)
        rec = self.pods.get(k)
        if rec is None or rec.rv != 0:
            return
        if maybe_created:
            self._assumed_until[k] = clock.monotonic() + ASSUMED_POD_TTL
        else:
            self._drop_pod(ns, name, rec, 0)

    def assumed_expire_in(self) -> float | None:
        """Seconds until the first held pod of a lost create expires (the engine wakes then)."""
        return max(0.0, min(self._assumed_until.values()) - clock.monotonic()) if self._assumed_until else None

    def expire_assumed_pods(self) -> None:
        """Drop the pods of lost creates that the watch has not shown within their TTL: the
        create did not happen, and the task is bound again."""
        now = clock.monotonic()
        for k, until in list(self._assumed_until.items()):
            rec = self.pods.get(k)
            if rec is None or rec.rv != 0:
                del self._assumed_until[k]
            elif until <= now:
                del self._assumed_until[k]
                ns, name = k.split("/", 1)
                self._drop_pod(ns, name, rec, 0)

    def forget_pod(self, ns: str, name: str) -> None:
        """The API server answered 404 for this pod: it is gone, whatever the watch says later."""
        rec = self.pods.get(key(ns, name))
        if rec is not None:
            self._drop_pod(ns, name, rec, rec.rv)

    def _drop_pod(self, ns: str, name: str, rec: PodRecord, rv: int) -> None:
        """Delete a pod record as a DELETED event at `rv` would (indexes and tombstone too)."""
        self.put_pod({"metadata": {"namespace": ns, "name": name, "labels": rec.labels, "resourceVersion": str(rv),
                                   "annotations": {"podbatch.io/boot": rec.boot}}}, deleted=True)

    # --- relists ---------------------------------------------------------------------
    def replace(self, plural: str, items: list[dict], list_rv: str) -> int:
        """A full list of a kind: put every item, and forget every object of the kind that the
        list no longer has although the list is newer (deleted while no watch told us).
        Returns how many were forgotten."""
        return self.forget_unlisted(plural, self.put_listed(plural, items), list_rv)

    def put_listed(self, plural: str, items: list[dict]) -> set[str]:
        """Put a page of a list of a kind; returns the keys it listed (of served namespaces)."""
        put, _ = self._kind_table(plural)
        listed = set()
        for body in items:
            meta = body.get("metadata") or {}
            if not self.serves(meta.get("namespace", "")):
                continue
            listed.add(key(meta["namespace"], meta["name"]) if meta.get("namespace") else meta["name"])
            put(body)
        return listed

    def forget_unlisted(self, plural: str, listed: set[str], list_rv: str) -> int:
        """After a whole list of a kind (at resourceVersion `list_rv`): forget every object the
        list did not have although it is newer. Returns how many were forgotten."""
        put, table = self._kind_table(plural)
        try:
            horizon = int(list_rv or 0)
        except ValueError:
            horizon = 0
        gone = []
        for k in list(table):
            if k in listed:
                continue
            if plural == "tasks":
                if not self.tasks.is_frozen(k) and collcore.virtual(self.tasks.get(k)):
                    continue   # a collection's task is no object of the API: its collection's deletion drops it
                rv = self.tasks.rv(k)
            else:
                obj = table[k]
                rv = obj.rv if isinstance(obj, PodRecord) else _rv(obj)
            if rv <= horizon:
                gone.append(k)
        for k in gone:
            obj = table.get(k)
            if obj is None:
                continue
            if isinstance(obj, PodRecord):
                self._drop_pod(*k.split("/", 1), obj, horizon)
            else:
                put({**obj, "metadata": {**obj["metadata"], "resourceVersion": str(horizon)}}, deleted=True)
        self._touch()
        return len(gone)

    def _kind_table(self, plural: str):
        return {"pools": (self.put_pool, self.pools), "computenodes": (self.put_cnode, self.cnodes),
                "jobs": (self.put_job, self.jobs), "tasks": (self.put_task, self.tasks),
                "jobschedules": (self.put_jobschedule, self.jobschedules), "pods": (self.put_pod, self.pods),
                "nodes": (self.put_knode, self.knodes), "poolgrants": (self.put_grant, self.grants),
                "namespaces": (self.put_namespace, self.knamespaces),
                "taskcollections": (self.put_collection, {k: c.body for k, c in self.collections.items()})}[plural]

    # --- queries ----------------------------------------------------------------
    def pool_members(self, ns: str, pool: str) -> list[dict]:
        value = naming.pool_node_label(ns, pool)
        return [n for n in self.knodes.values() if (n["metadata"].get("labels") or {}).get(naming.LABEL_POOL) == value]

    def cnodes_of(self, pool_key: str) -> list[dict]:
        ns, name = pool_key.split("/", 1)
        return [c for k, c in self.cnodes.items() if c["metadata"]["namespace"] == ns and c["spec"].get("poolName") == name]
