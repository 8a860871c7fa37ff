"""Task collections: one TaskCollection object describes many tasks of a job (a
parametric sweep, or an explicit list as Batch's add-task-collection). Its tasks are
virtual: each is a Task body the operator builds in memory from the collection (`task_body`)
when the scheduler may take it, run by the same machinery as a Task; its pod is the record
of its binding and attempt, and its end is written, compactly, to the collection's status
(index ranges, as an Indexed Job's completedIndexes). Pure: no clock, no I/O.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator

from podbatch import API_VERSION, GROUP
from podbatch.core import naming

LABEL_COLLECTION = f"{GROUP}/collection"   # on a collection task's pods: its TaskCollection
LABEL_INDEX = f"{GROUP}/collection-index"   # ... and its index in it
VIRTUAL = f"{GROUP}/collection-task"   # on a virtual Task body's metadata (never sent): (collection, index)
MAX_LISTED = 10_000   # tasks of an explicit list (the object must stay well below etcd's 1.5 MB)
MAX_SIZE = 1_000_000   # tasks of a sweep
SIM_PREFIX = naming.SIM_PREFIX   # the node simulator's annotations (docs/nodesim.md) go to every task's pods

_FIELD = re.compile(r"\{\{|\}\}|\{(\d+)(?::(\d+))?\}")


def size(spec: dict) -> int:
    """How many tasks the collection describes."""
    if spec.get("tasks"):
        return len(spec["tasks"])
    sweep = spec.get("parametricSweep") or {}
    n = 1
    for p in sweep.get("parameterSets") or []:
        n *= _set_len(p)
    return n if sweep.get("parameterSets") else 0


def _set_len(p: dict) -> int:
    step = int(p.get("step", 1))
    start, end = int(p["start"]), int(p["end"])
    return max(0, (end - start) // step + 1) if step > 0 else 0


def parameters(spec: dict, index: int) -> tuple[int, ...]:
    """The parameter values of task `index` of a sweep: the first parameter set is the
    outermost loop, the last the innermost (the Batch CLI's order)."""
    sets = (spec.get("parametricSweep") or {}).get("parameterSets") or []
    out = []
    for p in reversed(sets):
        n = _set_len(p)
        index, i = divmod(index, n)
        out.append(int(p["start"]) + i * int(p.get("step", 1)))
    return tuple(reversed(out))


def substitute(value, params: tuple[int, ...]):
    """Every string in `value` with {0}, {1} … replaced by the parameters; {0:4} pads with
    zeros to 4 digits; {{ and }} are literal braces. A placeholder past the last parameter
    set is left as it is (the schema check refuses it first)."""
    if isinstance(value, str):
        if "{" not in value and "}" not in value:
            return value

        def one(m: re.Match) -> str:
            if m.group(0) == "{{":
                return "{"
            if m.group(0) == "}}":
                return "}"
            i = int(m.group(1))
            if i >= len(params):
                return m.group(0)
            width = int(m.group(2) or 0)
            return str(params[i]).zfill(width) if width else str(params[i])
        return _FIELD.sub(one, value)
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    return value


def placeholders(value) -> set[int]:
    """The parameter numbers a template uses."""
    out: set[int] = set()
    if isinstance(value, str):
        out.update(int(m.group(1)) for m in _FIELD.finditer(value) if m.group(1) is not None)
    elif isinstance(value, dict):
        for v in value.values():
            out |= placeholders(v)
    elif isinstance(value, list):
        for v in value:
            out |= placeholders(v)
    return out


def task_name(collection: str, index: int) -> str:
    """metadata.name of the collection's task `index` (its pods: `<name>-<attempt>`)."""
    return f"{collection}-{index}"


def task_id(spec: dict, collection: str, index: int) -> str:
    """The Batch task id: an explicit list's own id, or taskIdPrefix (default
    `<collection>-`) and the index."""
    listed = spec.get("tasks")
    if listed and listed[index].get("id"):
        return listed[index]["id"]
    prefix = spec.get("taskIdPrefix")
    return f"{collection}-{index}" if prefix is None else f"{prefix}{index}"


def index_of(collection: str, name: str) -> int | None:
    """The index of a task name of this collection, or None."""
    head, _, tail = name.rpartition("-")
    return int(tail) if head == collection and tail.isdigit() and str(int(tail)) == tail else None


def task_spec(spec: dict, index: int) -> dict:
    """The Task spec of task `index`."""
    if spec.get("tasks"):
        out = copy.deepcopy(spec["tasks"][index])
    else:
        out = substitute((spec.get("parametricSweep") or {}).get("repeatTask") or {}, parameters(spec, index))
    out.pop("id", None)
    return out


def task_body(coll: dict, index: int, owner_refs: list | None) -> dict:
    """The virtual Task of the collection's index `index`, as the engine decides on it.
    Its uid is the collection's (its pods are the collection's, by ownerReference and label);
    its ownerReferences are the collection's Job ones (the job counts it as its own)."""
    meta, spec = coll["metadata"], coll["spec"]
    name = meta["name"]
    tspec = task_spec(spec, index)
    tspec["jobName"] = spec["jobName"]
    tspec["id"] = task_id(spec, name, index)
    return {"apiVersion": API_VERSION, "kind": "Task",
            "metadata": {"name": task_name(name, index), "namespace": meta["namespace"], "uid": meta.get("uid", ""),
                         "creationTimestamp": meta.get("creationTimestamp"), "resourceVersion": "0",
                         "labels": {LABEL_COLLECTION: name, LABEL_INDEX: str(index)},
                         "annotations": {k: substitute(v, parameters(spec, index)) if spec.get("parametricSweep") else v
                                         for k, v in (meta.get("annotations") or {}).items() if k.startswith(SIM_PREFIX)},
                         "ownerReferences": list(owner_refs or []), VIRTUAL: (name, index)},
            "spec": tspec}


def virtual(body: dict | None) -> tuple[str, int] | None:
    """(collection, index) of a virtual Task body, or None for a Task of the API."""
    return (body or {}).get("metadata", {}).get(VIRTUAL)


# --- index sets, written as ranges ("0-3,7,9-12") ------------------------------------
def ranges(indexes: Iterable[int]) -> str:
    """Sorted indexes as Indexed Job's completedIndexes writes them."""
    out: list[str] = []
    start = prev = None
    for i in indexes:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    if start is not None:
        out.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(out)


def parse_ranges(text: str | None) -> Iterator[int]:
    """The indexes of a ranges string (bad parts are skipped)."""
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        a, _, b = part.partition("-")
        try:
            lo, hi = int(a), int(b or a)
        except ValueError:
            continue
        yield from range(lo, hi + 1)


def marked(states: bytearray, value: int) -> Iterator[int]:
    """Indexes whose state byte is `value`."""
    start = 0
    while True:
        i = states.find(value, start)
        if i < 0:
            return
        yield i
        start = i + 1


def mark_pod(pod: dict, task: dict) -> dict:
    """A collection task's pod: labelled with its collection and index, and owned by the
    collection (the garbage collector deletes it with the collection)."""
    name, index = virtual(task)
    meta = pod["metadata"]
    meta["labels"] = {**meta.get("labels", {}), LABEL_COLLECTION: name, LABEL_INDEX: str(index)}
    meta["ownerReferences"] = [{"apiVersion": API_VERSION, "kind": "TaskCollection", "name": name,
                                "uid": task["metadata"].get("uid", ""), "controller": True, "blockOwnerDeletion": False}]
    return pod
