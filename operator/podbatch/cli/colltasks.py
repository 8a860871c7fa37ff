"""The tasks of TaskCollections in `kubectl podbatch`: listed, resolved and operated on as
Tasks are, though they are no objects of the API (core/collections.py).

A collection task is shown as a Task body built here (`row`), from its collection's status
(succeededIndexes, failedIndexes, failedTasks, attempts) and the pod of its current or last
attempt (labels podbatch.io/collection and podbatch.io/collection-index; the binding
annotation gives its node). One list of pods per namespace serves a whole listing, so a
collection of N tasks costs O(N) and two requests. `terminate` and `reactivate` patch the
collection's spec.terminateIndexes and spec.reactivate. The first part is pure.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterable

from podbatch import API_VERSION
from podbatch.core import binding, naming
from podbatch.core import collections as coll
from podbatch.core.tasks import pod_view

KIND = "TaskCollection"
PENDING, SUCCEEDED, FAILED = 0, 1, 2
QUEUED = "QueuedInCollection"   # pendingReason of a queued collection task (the operator records none)


# --- pure: rows -----------------------------------------------------------------------

def collection_of(task: dict[str, Any]) -> tuple[str, int] | None:
    """(collection, index) of a row built here; None for a Task of the API (which has a uid)."""
    meta = task.get("metadata") or {}
    labels = meta.get("labels") or {}
    name, index = labels.get(coll.LABEL_COLLECTION), labels.get(coll.LABEL_INDEX) or ""
    if meta.get("uid") or not name or not index.isdigit():
        return None
    if not any(r.get("kind") == KIND for r in meta.get("ownerReferences") or []):
        return None
    return name, int(index)


def attempt_of(pod: dict[str, Any]) -> int:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    value = labels.get(naming.LABEL_ATTEMPT, "")
    if value.isdigit():
        return int(value)
    tail = pod["metadata"]["name"].rpartition("-")[2]
    return int(tail) if tail.isdigit() else 0


def last_pods(pods: Iterable[dict[str, Any]], collection: str) -> dict[int, dict[str, Any]]:
    """index -> the pod of its highest attempt, among the collection's task pods."""
    out: dict[int, dict[str, Any]] = {}
    for p in pods:
        labels = (p.get("metadata") or {}).get("labels") or {}
        index = labels.get(coll.LABEL_INDEX, "")
        if labels.get(coll.LABEL_COLLECTION) != collection or not index.isdigit():
            continue
        i = int(index)
        if i not in out or attempt_of(p) > attempt_of(out[i]):
            out[i] = p
    return out


def index_states(status: dict[str, Any], size: int) -> bytearray:
    """Each index's end as the collection's status records it (PENDING, SUCCEEDED, FAILED)."""
    states = bytearray(size)
    for text, value in ((status.get("succeededIndexes"), SUCCEEDED), (status.get("failedIndexes"), FAILED)):
        for i in coll.parse_ranges(text):
            if 0 <= i < size and states[i] == PENDING:
                states[i] = value
    return states


def _retry_env(pod: dict[str, Any]) -> int | None:
    """AZ_BATCH_TASK_RETRY_COUNT the pod was given: the retries before its attempt."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        for e in c.get("env") or []:
            if e.get("name") == "AZ_BATCH_TASK_RETRY_COUNT" and str(e.get("value", "")).isdigit():
                return int(e["value"])
    return None


def _pod_fields(pod: dict[str, Any] | None) -> dict[str, Any]:
    """podName and nodeInfo as a Task's status carries them, from the pod's binding."""
    if not pod:
        return {}
    b = binding.parse(((pod.get("metadata") or {}).get("annotations") or {}).get(naming.ANNOTATION_BINDING))
    out: dict[str, Any] = {"podName": pod["metadata"]["name"]}
    if b:
        out["nodeInfo"] = b["nodeInfo"]
    elif (pod.get("spec") or {}).get("nodeName"):
        out["nodeInfo"] = {"nodeName": pod["spec"]["nodeName"]}
    return out


class Rows:
    """Builds the rows of one collection; `pods` are (at least) its task pods."""

    def __init__(self, collection: dict[str, Any], pods: Iterable[dict[str, Any]] = ()):
        self.body = collection
        self.meta = collection.get("metadata") or {}
        self.spec = collection.get("spec") or {}
        self.status = collection.get("status") or {}
        self.name = self.meta.get("name", "")
        self.size = coll.body_size(collection)
        self.states = index_states(self.status, self.size)
        self.failures = {int(f["index"]): f for f in self.status.get("failedTasks") or [] if "index" in f}
        self.attempts = {int(a["index"]): a for a in self.status.get("attempts") or [] if "index" in a}
        self.pods = last_pods(pods, self.name)
        self.labels = dict(self.meta.get("labels") or {})
        self.owner = [{"apiVersion": self.body.get("apiVersion", API_VERSION), "kind": KIND, "name": self.name,
                       "uid": self.meta.get("uid", ""), "controller": True}]
        stalled = next((c for c in self.status.get("conditions") or []
                        if c.get("type") == "Stalled" and c.get("status") == "True"), None)
        self.waiting = ({"reason": stalled.get("reason"), "message": stalled.get("message")} if stalled else
                        {"reason": QUEUED, "message": f"queued in collection {self.name} (its queued tasks record no "
                                                      f"reason of their own)"})

    def labels_of(self, index: int) -> dict[str, str]:
        return {**self.labels, coll.LABEL_COLLECTION: self.name, coll.LABEL_INDEX: str(index)}

    def row(self, index: int) -> dict[str, Any]:
        """Task `index` as a Task body (kind Task, no uid; ownerReference: the collection)."""
        spec = {**coll.task_spec(self.spec, index, coll.files_of(self.body)), "jobName": self.spec.get("jobName"),
                "id": coll.task_id(self.spec, self.name, index)}
        body: dict[str, Any] = {
            "apiVersion": API_VERSION, "kind": "Task",
            "metadata": {"name": coll.task_name(self.name, index), "namespace": self.meta.get("namespace"),
                         "labels": self.labels_of(index), "ownerReferences": self.owner},
            "spec": spec}
        status = self._status(index)
        if status is not None:
            body["status"] = status
        return body

    def _status(self, index: int) -> dict[str, Any] | None:
        state = self.states[index]
        pod = self.pods.get(index)
        if state == SUCCEEDED:
            return self._succeeded(pod)
        if state == FAILED:
            return self._failed(index, pod)
        a = self.attempts.get(index) or {}
        attempt = int(a.get("attempt") or 1)
        info = {"retryCount": int(a.get("retryCount") or 0), "requeueCount": int(a.get("requeueCount") or 0)}
        if pod is not None and attempt_of(pod) >= attempt and not pod["metadata"].get("deletionTimestamp"):
            phase = (pod.get("status") or {}).get("phase") or "Pending"
            view = pod_view(pod)
            if view.started_at and phase != "Pending":
                info["startTime"] = view.started_at
            return {"state": "running" if phase in ("Running", "Succeeded", "Failed") else "preparing",
                    "attempt": attempt_of(pod), **_pod_fields(pod), "executionInfo": info}
        if not self.status and pod is None:
            return None   # the operator has not seen the collection yet
        st: dict[str, Any] = {"state": "active", "attempt": attempt, "executionInfo": info,
                              "pendingReason": dict(self.waiting)}
        if a.get("stoppingPods"):
            st["stoppingPods"] = a["stoppingPods"]
        return st

    @staticmethod
    def _succeeded(pod: dict[str, Any] | None) -> dict[str, Any]:
        info: dict[str, Any] = {"result": "success", "exitCode": 0}
        st: dict[str, Any] = {"state": "completed", "executionInfo": info}
        if pod is not None:
            view, attempt, retries = pod_view(pod), attempt_of(pod), _retry_env(pod)
            info.update({k: v for k, v in (("exitCode", view.exit_code), ("startTime", view.started_at),
                                           ("endTime", view.finished_at)) if v is not None})
            st.update({"attempt": attempt, **_pod_fields(pod)})
            if retries is not None:
                info["retryCount"] = retries
                # every attempt past the first is a retry, a requeue or a reactivation: with
                # none but retries there was no requeue; otherwise the count is not recorded
                info["requeueCount"] = 0 if attempt == retries + 1 else None
        return st

    def _failed(self, index: int, pod: dict[str, Any] | None) -> dict[str, Any]:
        f = self.failures.get(index)
        if f is None:   # past the detail the status keeps (the first 1000): what the pod says
            info: dict[str, Any] = {"result": "failure"}
            st: dict[str, Any] = {"state": "completed", "executionInfo": info}
            if pod is not None:
                view = pod_view(pod)
                info.update({"exitCode": view.exit_code, "retryCount": _retry_env(pod), "endTime": view.finished_at})
                st.update({"attempt": attempt_of(pod), **_pod_fields(pod)})
            return st
        info = {"result": "failure", "exitCode": f.get("exitCode"), "failureInfo": f.get("failureInfo"),
                "retryCount": f.get("retryCount", 0), "requeueCount": f.get("requeueCount", 0),
                "endTime": f.get("endTime")}
        st = {"state": "completed", "executionInfo": {k: v for k, v in info.items() if v is not None}}
        if pod is not None and (not f.get("podName") or pod["metadata"]["name"] == f["podName"]):
            st.update({"attempt": attempt_of(pod), **_pod_fields(pod)})
        elif f.get("podName"):
            tail = f["podName"].rpartition("-")[2]
            st.update({"podName": f["podName"], "attempt": int(tail) if tail.isdigit() else None})
        if f.get("nodeId") and "nodeInfo" not in st:
            st["nodeInfo"] = {"nodeId": f["nodeId"]}
        return st

    def rows(self, indexes: Iterable[int] | None = None) -> list[dict[str, Any]]:
        return [self.row(i) for i in (range(self.size) if indexes is None else indexes)]


def find_index(collection: dict[str, Any], key: str) -> int | None:
    """The index of the collection's task named `key` (`<collection>-<i>`) or with Batch id `key`."""
    spec, name = collection.get("spec") or {}, (collection.get("metadata") or {}).get("name", "")
    n = coll.body_size(collection)
    i = coll.index_of(name, key)
    if i is not None and i < n:
        return i
    if spec.get("tasks"):
        return next((j for j in range(n) if coll.task_id(spec, name, j) == key), None)
    prefix = spec.get("taskIdPrefix")
    prefix = f"{name}-" if prefix is None else prefix
    tail = key[len(prefix):] if key.startswith(prefix) else ""
    return int(tail) if tail.isdigit() and str(int(tail)) == tail and int(tail) < n else None


# --- pure: label selectors (kubectl's syntax), for rows that no API server filters ------

_REQ = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9_.-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$")


def parse_selector(selector: str | None) -> list[tuple[str, str, set[str]]]:
    """[(key, op, values)] with op one of = != in notin exists !exists."""
    if not selector or not selector.strip():
        return []
    parts, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for p in parts:
        m = _REQ.match(p)
        if not m or (m.group(1) and (m.group(3) or m.group(5))):
            raise ValueError(f"cannot read the label selector {selector!r} at {p.strip()!r}")
        neg, key, op, value, setop, values = m.groups()
        if op:
            out.append((key, "!=" if op == "!=" else "=", {value}))
        elif setop:
            out.append((key, setop, {v.strip() for v in values.split(",") if v.strip()}))
        else:
            out.append((key, "!exists" if neg else "exists", set()))
    return out


def selects(requirements: list[tuple[str, str, set[str]]], labels: dict[str, str]) -> bool:
    for key, op, values in requirements:
        has, value = key in labels, labels.get(key)
        ok = {"=": has and value in values, "in": has and value in values,
              "!=": not has or value not in values, "notin": not has or value not in values,
              "exists": has, "!exists": not has}[op]
        if not ok:
            return False
    return True


# --- pure: terminate and reactivate -------------------------------------------------

def terminate_patch(collection: dict[str, Any], index: int) -> dict[str, Any]:
    """The spec patch that terminates task `index`: added to spec.terminateIndexes."""
    have = set(coll.parse_ranges((collection.get("spec") or {}).get("terminateIndexes")))
    return {"terminateIndexes": coll.ranges(sorted(have | {index}))}


def reactivate_patch(collection: dict[str, Any], index: int, request_id: str) -> dict[str, Any]:
    """The spec patch that reactivates task `index`: a new spec.reactivate, whose indexes
    keep those of a request the operator has not handled yet (two quick reactivations lose
    neither). The index leaves spec.terminateIndexes, which would end it again at once."""
    spec, status = collection.get("spec") or {}, collection.get("status") or {}
    indexes = {index}
    prev = spec.get("reactivate") or {}
    if prev.get("requestId") and prev["requestId"] != status.get("handledReactivateRequestId"):
        indexes |= set(coll.parse_ranges(prev.get("indexes")))
    patch: dict[str, Any] = {"reactivate": {"requestId": request_id, "indexes": coll.ranges(sorted(indexes))}}
    terminated = set(coll.parse_ranges(spec.get("terminateIndexes")))
    if index in terminated:
        patch["terminateIndexes"] = coll.ranges(sorted(terminated - {index})) or None
    return patch


def operation_problem(row: dict[str, Any], action: str) -> tuple[bool, str] | None:
    """(is an error, message) when `action` has nothing to do on this task, else None."""
    st = row.get("status") or {}
    name = row["metadata"]["name"]
    result = (st.get("executionInfo") or {}).get("result")
    if action == "reactivate" and not (st.get("state") == "completed" and result == "failure"):
        state = st.get("state") or "active"
        return True, (f"task {name} has not failed (state {state}{', ' + result if result else ''}): only a task "
                      f"that completed with failure can be reactivated")
    if action == "terminate" and st.get("state") == "completed":
        return False, f"task {name} has already completed ({result}): nothing to terminate"
    return None


# --- the cluster side ---------------------------------------------------------------

def collections(cluster, job: str | None = None) -> list[dict[str, Any]]:
    """The namespace's TaskCollections (of one job); none where the CRD is not installed."""
    from podbatch.cli.kube import CliError
    try:
        items = cluster.list(KIND)
    except CliError as e:
        if "not installed" in str(e):
            return []
        raise
    return [c for c in items if job is None or (c.get("spec") or {}).get("jobName") == job]


def collection_pods(cluster, names: Iterable[str], index: int | None = None) -> list[dict[str, Any]]:
    """The task pods of these collections (of one index): one list request, read as JSON."""
    names = sorted(set(names))
    if not names:
        return []
    sel = f"{coll.LABEL_COLLECTION} in ({','.join(naming.label_value(n) for n in names)})"
    if index is not None:
        sel += f",{coll.LABEL_INDEX}={index}"
    resp = cluster.core.list_namespaced_pod(cluster.namespace, label_selector=sel, _preload_content=False)
    return json.loads(resp.data).get("items") or []


def listing(cluster, job: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
    """Every task of the namespace's (the job's) collections matching the selector, as rows."""
    from podbatch.cli.kube import CliError
    try:
        reqs = parse_selector(selector)
    except ValueError as e:
        raise CliError(str(e)) from None
    chosen: list[tuple[dict[str, Any], list[int]]] = []
    for c in collections(cluster, job):
        r = Rows(c)
        indexes = list(range(r.size)) if not reqs else [i for i in range(r.size) if selects(reqs, r.labels_of(i))]
        if indexes:
            chosen.append((c, indexes))
    if not chosen:
        return []
    pods = collection_pods(cluster, [c["metadata"]["name"] for c, _ in chosen])
    out: list[dict[str, Any]] = []
    for c, indexes in chosen:
        out += Rows(c, pods).rows(indexes)
    return out


def find(cluster, key: str, job: str | None = None) -> dict[str, Any] | None:
    """The row of a collection task named `key` (`<collection>-<i>`), or, with `job`, with
    that name or Batch id among the job's collections; None if there is none."""
    if job is None:
        head = key.rpartition("-")[0]
        c = cluster.find(KIND, head) if head else None
        cands = [c] if c is not None else []
    else:
        cands = collections(cluster, job)
    for c in cands:
        i = find_index(c, key)
        if i is not None and (job is not None or coll.index_of(c["metadata"]["name"], key) is not None):
            return Rows(c, collection_pods(cluster, [c["metadata"]["name"]], i)).row(i)
    return None


def resolve(cluster, name: str, job: str | None) -> dict[str, Any]:
    """A Task (by name, or by Batch id or name within `job`), else a collection's task."""
    from podbatch.cli import format as fmt
    from podbatch.cli.kube import CliError
    if job:
        for t in cluster.tasks_of(job):
            if fmt.task_id(t) == name or t["metadata"]["name"] == name:
                return t
        row = find(cluster, name, job)
        if row is None:
            raise CliError(f"job {job} has no task with id or name {name!r}")
        return row
    try:
        return cluster.get("Task", name)
    except CliError:
        row = find(cluster, name)
        if row is None:
            raise
        return row


def task_pods(cluster, task: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods of a Task or of a collection's task, by attempt."""
    ci = collection_of(task)
    if ci is None:
        return cluster.task_pods(task["metadata"]["name"])
    return sorted(collection_pods(cluster, [ci[0]], ci[1]), key=attempt_of)


def operate(cluster, row: dict[str, Any], action: str, new_id: Callable[[], str], out=None) -> int:
    """terminate or reactivate a collection's task: patch its collection's spec, guarded by
    the resourceVersion read (a conflict is read again and retried)."""
    import sys
    from kubernetes.client.rest import ApiException
    from podbatch import GROUP, VERSION
    from podbatch.cli.kube import FIELD_MANAGER, CliError, api_error, plural
    from podbatch.cli.output import EXIT_ERROR, EXIT_OK
    name, index = collection_of(row)
    task = row["metadata"]["name"]
    for _ in range(5):
        c = cluster.get(KIND, name)
        fresh = Rows(c, collection_pods(cluster, [name], index)).row(index)
        problem = operation_problem(fresh, action)
        if problem:
            error, message = problem
            print(f"{'error: ' if error else ''}{message}", file=sys.stderr)
            return EXIT_ERROR if error else EXIT_OK
        patch = terminate_patch(c, index) if action == "terminate" else reactivate_patch(c, index, new_id())
        body = {"metadata": {"resourceVersion": c["metadata"]["resourceVersion"]}, "spec": patch}
        try:
            cluster.custom.patch_namespaced_custom_object(
                GROUP, VERSION, cluster.namespace, plural(KIND), name, body,
                field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json")
        except ApiException as e:
            if e.status == 409:
                continue
            raise CliError(f"patching {KIND} {name}: {api_error(e)}") from None
        what = ", ".join(f"{k}={json.dumps(v, sort_keys=True) if isinstance(v, dict) else v}" for k, v in patch.items())
        print(f"taskcollection.podbatch.io/{name} patched ({action} task {task}): {what}", file=out)
        return EXIT_OK
    raise CliError(f"{KIND} {name} kept changing under the patch; try again")
