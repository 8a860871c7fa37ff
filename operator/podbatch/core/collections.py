"""Task collections: one TaskCollection object describes many tasks of a job (a
parametric sweep, a task per file of a blob container, or an explicit list as Batch's
add-task-collection). A task-per-file collection's files are listed once by the operator
and recorded in its status (`status.files`): its size and its tasks follow that list. Its tasks are
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
FILE_FIELDS = ("url", "filePath", "fileName", "fileNameWithoutExtension")
_FILE_FIELD = re.compile(r"\{\{|\}\}|\{(" + "|".join(FILE_FIELDS) + r")\}")


def files_of(body: dict) -> list[str] | None:
    """The files a task-per-file collection's status records (None: not listed yet)."""
    return (body.get("status") or {}).get("files")


def body_size(body: dict) -> int:
    """How many tasks the collection object describes (its status's file list included)."""
    return size(body.get("spec") or {}, files_of(body))


def size(spec: dict, files: list[str] | None = None) -> int:
    """How many tasks the collection describes; a task-per-file one: one per listed file
    (0 until they are listed)."""
    if spec.get("tasks"):
        return len(spec["tasks"])
    if spec.get("taskPerFile"):
        return len(files or [])
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


def file_params(spec: dict, name: str) -> dict[str, str]:
    """The placeholders of a task-per-file collection's task for blob `name`: {url} (the
    blob's URL with the container URL's query, its SAS), {filePath} (the blob's name, its
    path in the container), {fileName} (its last segment) and {fileNameWithoutExtension}."""
    from urllib.parse import quote, urlsplit, urlunsplit
    url = (spec.get("taskPerFile") or {}).get("source", {}).get("containerUrl", "")
    parts = urlsplit(url)
    blob = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/" + quote(name), parts.query, ""))
    base = name.rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    return {"url": blob, "filePath": name, "fileName": base, "fileNameWithoutExtension": stem}


def substitute_file(value, params: dict[str, str]):
    """Every string in `value` with {url}, {filePath}, {fileName} and
    {fileNameWithoutExtension} replaced; {{ and }} are literal braces."""
    if isinstance(value, str):
        if "{" not in value and "}" not in value:
            return value
        return _FILE_FIELD.sub(lambda m: {"{{": "{", "}}": "}"}.get(m.group(0)) or params[m.group(1)], value)
    if isinstance(value, dict):
        return {k: substitute_file(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_file(v, params) for v in value]
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


def task_spec(spec: dict, index: int, files: list[str] | None = None) -> dict:
    """The Task spec of task `index` (`files`: a task-per-file collection's listed files)."""
    if spec.get("tasks"):
        out = copy.deepcopy(spec["tasks"][index])
    elif spec.get("taskPerFile"):
        out = substitute_file(spec["taskPerFile"].get("repeatTask") or {}, file_params(spec, (files or [])[index]))
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
    files = files_of(coll)
    tspec = task_spec(spec, index, files)
    tspec["jobName"] = spec["jobName"]
    tspec["id"] = task_id(spec, name, index)
    return {"apiVersion": API_VERSION, "kind": "Task",
            "metadata": {"name": task_name(name, index), "namespace": meta["namespace"], "uid": meta.get("uid", ""),
                         "creationTimestamp": meta.get("creationTimestamp"), "resourceVersion": "0",
                         "labels": {LABEL_COLLECTION: name, LABEL_INDEX: str(index)},
                         "annotations": {k: _substituted(spec, files, index, v)
                                         for k, v in (meta.get("annotations") or {}).items() if k.startswith(SIM_PREFIX)},
                         "ownerReferences": list(owner_refs or []), VIRTUAL: (name, index)},
            "spec": tspec}


def _substituted(spec: dict, files: list[str] | None, index: int, value: str) -> str:
    if spec.get("parametricSweep"):
        return substitute(value, parameters(spec, index))
    if spec.get("taskPerFile"):
        return substitute_file(value, file_params(spec, (files or [])[index]))
    return value


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
