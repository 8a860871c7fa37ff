"""`kubectl podbatch import`: Azure Batch pool, job, task and job-schedule JSON (as the REST
API takes it, `az batch … --json-file` reads it and `az batch … show` prints it, and Batch
Explorer / `az batch` templates wrap it) turned into podbatch objects.

Why a walk over tables (batchfields.py): every field of the input is looked up, so each
leaf is either converted (recorded with where it went) or dropped (recorded with why).
Fields no table knows are dropped too, saying so; nothing is lost silently. Every object
made is then validated with the kind's model; a field podbatch refuses is dropped with the
model's message, so the output always applies. Pure: no Kubernetes client here.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from podbatch import API_VERSION
from podbatch.api import KINDS, validate_object
from podbatch.cli.batchfields import (
    JOB, NODE_GROUP, POOL, POOL_HINTS, READ_ONLY, READ_ONLY_FIELDS, SAME, SCHEDULE_KIND, TASK, UNKNOWN, Drop, sanitize,
)
from podbatch.cli.manifests import ManifestError

__all__ = ["NODE_GROUP", "READ_ONLY", "UNKNOWN", "ImportProblem", "Result", "import_data", "parse_node_group",
           "read_json", "report", "to_json", "to_yaml"]


class ImportProblem(ManifestError):
    """Input that cannot be imported at all (not JSON, not a Batch object, a task without its job)."""


PLACEHOLDER_LABEL = "podbatch.io/imported-pool"


@dataclass
class Result:
    """The podbatch objects made, and the fate of every input leaf (paths as `a.b[0].c`)."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    # input path -> "Kind/name:spec.path"; "" when it leaves a field unset (null, Batch's "unlimited")
    # or was used up making the output (template parameters, a sweep's parameter sets)
    converted: dict[str, str] = field(default_factory=dict)
    same: set[str] = field(default_factory=set)               # input paths copied with their value unchanged
    dropped: dict[str, str] = field(default_factory=dict)     # input path -> why
    dropped_roots: dict[str, str] = field(default_factory=dict)  # the same, by the subtrees dropped whole (for people)
    notes: list[str] = field(default_factory=list)
    placeholders: dict[str, str] = field(default_factory=dict)  # "Kind/name" whose (auto) pool has a placeholder nodeGroup -> its label value


def leaves(value: Any, path: str = ""):
    """(path, value) of every leaf; an empty list or mapping is a leaf itself."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, value


# --------------------------------------------------------------------------- the walk


class Importer:
    """One conversion: the objects and the bookkeeping of every input leaf, in `r`."""

    def __init__(self, node_group: dict[str, Any] | None) -> None:
        self.r = Result()
        self.node_group = node_group
        self.obj = ""      # "Kind/name" of the object being built
        self.factory: tuple[Any, str] | None = None   # a template job's taskFactory and its path

    def node_group_for(self, name: str) -> dict[str, Any]:
        """The --node-group given, or a placeholder that adopts only Nodes labelled for this pool."""
        if self.node_group:
            return json.loads(json.dumps(self.node_group))
        self.r.placeholders[self.obj] = name
        return {"provider": "static", "static": {"nodeSelector": {PLACEHOLDER_LABEL: name}}}

    # bookkeeping
    def conv(self, value: Any, src: str, dst: str, same: bool = True) -> None:
        """Record the leaves of `value` (at input path `src`) as gone to `dst` ("": left unset);
        `same`: copied unchanged, each leaf to the same place below `dst`."""
        for p, _ in leaves(value, src):
            if not dst:
                self.r.converted[p] = ""
                continue
            self.r.converted[p] = f"{self.obj}:{dst}{p[len(src):] if same else ''}"
            if same:
                self.r.same.add(p)

    def drop(self, value: Any, src: str, reason: str) -> None:
        self.r.dropped_roots[src] = reason
        for p, _ in leaves(value, src):
            self.r.converted.pop(p, None)
            self.r.same.discard(p)
            self.r.dropped[p] = reason

    def undo(self, dst: str, reason: str) -> None:
        """Move every input leaf that went to or below `dst` of the current object to dropped."""
        prefix = f"{self.obj}:{dst}"
        for p, d in list(self.r.converted.items()):
            if d == prefix or d.startswith((prefix + ".", prefix + "[")):
                self.drop(None, p, reason)

    def move(self, old: str, new: str) -> None:
        """Re-point what went to `old` (a list item that moved up) at `new`."""
        old, new = f"{self.obj}:{old}", f"{self.obj}:{new}"
        for p, d in list(self.r.converted.items()):
            if d == old or d.startswith((old + ".", old + "[")):
                self.r.converted[p] = new + d[len(old):]

    # the generic mapping
    def map(self, src: dict[str, Any], sp: str, dp: str, table: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(src, dict):
            self.drop(src, sp, f"{sp}: expected a JSON object")
            return {}
        out: dict[str, Any] = {}
        for key, value in src.items():
            p, d = f"{sp}.{key}" if sp else key, f"{dp}.{key}" if dp else key
            rule = table.get(key, Drop(UNKNOWN))
            if value is None:                      # JSON null: unset, nothing to carry
                self.r.converted[p] = ""
            elif key in READ_ONLY_FIELDS and key not in table:
                self.drop(value, p, READ_ONLY)
            elif isinstance(rule, Drop):
                self.drop(value, p, f"{key}: {rule.reason}" if not rule.reason.startswith(key) else rule.reason)
            elif rule is SAME:
                out[key] = value
                self.conv(value, p, d)
            elif isinstance(rule, dict):
                sub = self.map(value, p, d, rule)
                if sub or value == {}:
                    out[key] = sub
                    if value == {}:
                        self.conv(value, p, d)
            else:
                rule(self, value, p, d, out, key, src)
        return out


# --------------------------------------------------------------------------- kinds


def _join(sp: str, key: str) -> str:
    return f"{sp}.{key}" if sp else key


def _batch_id(src: dict, sp: str, what: str) -> str:
    bid = src.get("id")
    if not isinstance(bid, (str, int)) or bid == "":
        raise ImportProblem(f"{sp or 'the file'}: this {what} has no id")
    return str(bid)


def named(im: Importer, kind: str, src: dict, sp: str) -> tuple[str, dict]:
    """The object's name from the Batch id (recorded), and the input without the id."""
    bid = _batch_id(src, sp, kind.lower())
    name = sanitize(bid)
    im.obj = f"{kind}/{name}"
    im.conv(src["id"], _join(sp, "id"), "metadata.name", same=name == src["id"])
    if name != bid:
        im.r.notes.append(f"{kind} id {bid!r} is named {name!r} (Kubernetes names are lower-case DNS names)")
    return name, {k: v for k, v in src.items() if k != "id"}


def pool_object(im: Importer, src: dict, sp: str) -> None:
    name, rest = named(im, "Pool", src, sp)
    spec = im.map(rest, sp, "spec", POOL)
    finish(im, "Pool", name, {"nodeGroup": im.node_group_for(name), **spec})


def job_object(im: Importer, src: dict, sp: str) -> None:
    name, rest = named(im, "Job", src, sp)
    im.factory = None
    spec = im.map(rest, sp, "spec", JOB)
    job_obj = im.obj
    tasks = factory_tasks(im, name, spec) if im.factory else []
    im.obj = job_obj
    finish(im, "Job", name, spec)
    for task in tasks:
        kind = task.get("kind", "Task")
        im.obj = f"{kind}/{task['metadata']['name']}"
        finish(im, kind, task["metadata"]["name"], task["spec"])


def schedule_object(im: Importer, src: dict, sp: str) -> None:
    name, rest = named(im, "JobSchedule", src, sp)
    im.factory = None
    spec = im.map(rest, sp, "spec", SCHEDULE_KIND)
    if im.factory:
        im.drop(im.factory[0], im.factory[1], "taskFactory: the jobs of a schedule get no tasks from a template")
    finish(im, "JobSchedule", name, spec)


def task_body(im: Importer, src: dict, sp: str, job: str, id_path: bool = True) -> dict:
    """A Task named <job>-<id> keeping the Batch id in spec.id (not validated yet)."""
    bid = _batch_id(src, sp, "task")
    name = sanitize(f"{job}-{bid}")
    im.obj = f"Task/{name}"
    if id_path:
        im.conv(src["id"], _join(sp, "id"), "spec.id", same=bid == src["id"])
    spec = {"jobName": job, "id": bid, **im.map({k: v for k, v in src.items() if k != "id"}, sp, "spec", TASK)}
    if (spec.get("multiInstanceSettings") or {}).get("numberOfInstances", 1) > 1 and spec.get("requiredSlots", 1) != 1:
        im.undo("spec.requiredSlots", "requiredSlots: a multi-instance task takes one slot on each of its nodes "
                                      "(Batch requires 1 as well)")
        del spec["requiredSlots"]
    return {"metadata": {"name": name}, "spec": spec}


def task_object(im: Importer, src: dict, sp: str, job: str) -> None:
    body = task_body(im, src, sp, job)
    finish(im, "Task", body["metadata"]["name"], body["spec"])


_PLACE = re.compile(r"\{\{|\}\}|\{(\d+)(?::(\d+))?\}")


def _sweep(value: Any, combo: tuple[int, ...]) -> Any:
    """A parametric sweep's repeatTask with {0}, {1:4} (zero-padded) replaced; {{ and }} are braces."""
    if isinstance(value, dict):
        return {k: _sweep(v, combo) for k, v in value.items()}
    if isinstance(value, list):
        return [_sweep(v, combo) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m.group(1) is None:
            return m.group(0)[0]
        i = int(m.group(1))
        if i >= len(combo):
            raise ImportProblem(f"{{{i}}} in repeatTask but the sweep has {len(combo)} parameter set(s)")
        return str(combo[i]).zfill(int(m.group(2) or 0))
    return _PLACE.sub(one, value)


def _as_collection(factory: dict, ranges: list[range], count: int) -> bool:
    """Whether a parametric sweep becomes one TaskCollection: ascending steps, at least one
    task, at most collcore.MAX_SIZE, and no field a collection's task cannot have (a gang);
    otherwise it becomes a Task per combination."""
    from podbatch.api.taskcollection import _NOT_IN_COLLECTION
    from podbatch.core import collections as collcore
    repeat = factory["repeatTask"]
    return (0 < count <= collcore.MAX_SIZE and len(ranges) <= 8 and all(r.step > 0 for r in ranges)
            and not any(repeat.get(k) is not None for k in (*_NOT_IN_COLLECTION, "id")))


def sweep_collection(im: Importer, job: str, factory: dict, fp: str) -> dict:
    """The TaskCollection of a parametric sweep: one object for all its tasks, ids `0`, `1`, …
    as the Batch CLI gives them (taskIdPrefix ""), placeholders left for the operator."""
    name = sanitize(job)
    im.obj = f"TaskCollection/{name}"
    sets = [{k: v for k, v in s.items() if k in ("start", "end", "step")} for s in factory["parameterSets"]]
    im.conv(factory["parameterSets"], f"{fp}.parameterSets", "spec.parametricSweep.parameterSets")
    repeat = im.map(factory["repeatTask"], f"{fp}.repeatTask", "spec.parametricSweep.repeatTask", TASK)
    return {"kind": "TaskCollection", "metadata": {"name": name},
            "spec": {"jobName": job, "taskIdPrefix": "", "parametricSweep": {"parameterSets": sets, "repeatTask": repeat}}}


def factory_tasks(im: Importer, job: str, job_spec: dict) -> list[dict]:
    """The tasks of a Batch Explorer / `az batch` template's taskFactory (taskCollection, parametricSweep)."""
    import itertools
    factory, fp = im.factory
    im.factory = None
    kind = factory.get("type") if isinstance(factory, dict) else None
    tasks = []
    if kind == "taskCollection" and isinstance(factory.get("tasks"), list):
        tasks = [task_body(im, t, f"{fp}.tasks[{i}]", job) for i, t in enumerate(factory["tasks"])]
        rest = {k: v for k, v in factory.items() if k not in ("type", "tasks")}
    elif kind == "parametricSweep" and isinstance(factory.get("parameterSets"), list) and isinstance(factory.get("repeatTask"), dict):
        try:
            ranges = [range(s["start"], s["end"] + (1 if s.get("step", 1) > 0 else -1), s.get("step", 1))
                      for s in factory["parameterSets"]]
        except (KeyError, TypeError, ValueError) as e:
            raise ImportProblem(f"{fp}.parameterSets: each needs integer start, end and step ({e})") from None
        count = 1
        for r in ranges:
            count *= len(r)
        if _as_collection(factory, ranges, count):
            tasks.append(sweep_collection(im, job, factory, fp))
        else:
            for i, combo in enumerate(itertools.product(*ranges)):
                t = task_body(im, {**_sweep(factory["repeatTask"], combo), "id": str(i)}, f"{fp}.repeatTask", job, id_path=False)
                tasks.append(t)
            for p in [p for p in im.r.same if p.startswith(f"{fp}.repeatTask.")]:
                im.r.same.discard(p)            # made into many tasks, with placeholders replaced
            im.conv(factory["parameterSets"], f"{fp}.parameterSets", "")   # used up making the tasks
        merge = factory.get("mergeTask")
        if isinstance(merge, dict) and count:
            t = task_body(im, {"id": "merge", **merge}, f"{fp}.mergeTask", job, id_path="id" in merge)
            t["spec"]["dependsOn"] = {"taskIdRanges": [{"start": 0, "end": count - 1}]}
            job_spec["usesTaskDependencies"] = True
            tasks.append(t)
        rest = {k: v for k, v in factory.items() if k not in ("type", "parameterSets", "repeatTask", "mergeTask")}
    else:
        im.drop(factory, fp, f"taskFactory type {kind!r}: not supported (taskCollection and parametricSweep are; "
                             "for taskPerFile write a TaskCollection with spec.taskPerFile: the operator lists the files)")
        return []
    im.r.converted[f"{fp}.type"] = ""
    for k, v in rest.items():
        im.drop(v, f"{fp}.{k}", f"taskFactory.{k}: {UNKNOWN}")
    return tasks


def _error_path(loc: tuple) -> list:
    return [x for x in loc if not str(x).startswith(("function-after", "constrained"))]


def _dotted(loc: list) -> str:
    out = ""
    for x in loc:
        out += f"[{x}]" if isinstance(x, int) else (f".{x}" if out else str(x))
    return out


def finish(im: Importer, kind: str, name: str, spec: dict) -> None:
    """Validate; a field the model refuses is dropped with its message (so the output applies)."""
    body = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}
    for _ in range(100):
        try:
            KINDS[kind].model.model_validate(body)
            break
        except ValidationError as e:
            errors = [(_error_path(err["loc"]), err["msg"]) for err in e.errors()]
        loc, msg = next(((loc, msg) for loc, msg in errors if _removable(im, body, loc)), (None, None))
        if loc is None:
            lines = "\n  ".join(f"{_dotted(loc)}: {msg}" for loc, msg in errors)
            raise ImportProblem(f"the {kind} {name!r} made from the input is not valid:\n  {lines}")
        parent = body
        for x in loc[:-1]:
            parent = parent[x]
        del parent[loc[-1]]
        dst = _dotted(loc)
        im.undo(dst, f"{dst.removeprefix('spec.')}: podbatch refuses it: {msg}")
        if isinstance(loc[-1], int):       # later items of the list moved up
            for j in range(loc[-1] + 1, len(parent) + 1):
                im.move(_dotted(loc[:-1] + [j]), _dotted(loc[:-1] + [j - 1]))
    validate_object(body)
    im.r.objects.append(body)


def _removable(im: Importer, body: dict, loc: list) -> bool:
    """A location below spec that holds input fields (not podbatch's own, like nodeGroup)."""
    if len(loc) < 2 or loc[0] != "spec":
        return False
    node: Any = body
    for x in loc:
        try:
            node = node[x]
        except (KeyError, IndexError, TypeError):
            return False
    prefix = f"{im.obj}:{_dotted(loc)}"
    return any(d == prefix or d.startswith((prefix + ".", prefix + "[")) for d in im.r.converted.values())


# --------------------------------------------------------------------------- templates

_TEMPLATE_REF = re.compile(r"\[(parameters|variables)\('([^']+)'\)\]")


def _substitute(value: Any, values: dict[str, dict[str, Any]]) -> Any:
    """`[parameters('x')]` / `[variables('x')]`: the whole string takes the value's type; inside text, its text."""
    if isinstance(value, dict):
        return {k: _substitute(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    if not isinstance(value, str):
        return value

    def look(kind: str, name: str) -> Any:
        if name not in values[kind]:
            flag = f"--param {name}=VALUE" if kind == "parameters" else "a variables entry"
            raise ImportProblem(f"the template uses {kind}('{name}'), which has no value: give {flag}")
        return values[kind][name]
    whole = _TEMPLATE_REF.fullmatch(value)
    if whole:
        return look(*whole.groups())
    return _TEMPLATE_REF.sub(lambda m: str(look(*m.groups())), value)


def template(im: Importer, data: dict, params: dict[str, str]) -> None:
    """A Batch Explorer / `az batch … --template` file: parameters, variables, and one pool or job resource."""
    declared = data.get("parameters") or {}
    values: dict[str, dict[str, Any]] = {"parameters": {}, "variables": {}}
    for name, decl in declared.items():
        decl = decl if isinstance(decl, dict) else {}
        if name in params:
            raw = params[name]
            values["parameters"][name] = int(raw) if decl.get("type") == "int" and raw.lstrip("-").isdigit() else raw
        elif "defaultValue" in decl:
            values["parameters"][name] = decl["defaultValue"]
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ImportProblem(f"--param {', '.join(unknown)}: the template declares no such parameter")
    values["variables"] = _substitute(data.get("variables") or {}, values)
    for key in ("parameters", "variables"):
        if key in data:
            im.conv(data[key], key, "", same=False)   # used to fill in the resource below
    kinds = [k for k in ("pool", "job") if isinstance(data.get(k), dict)]
    for key in data:
        if key not in ("parameters", "variables", *kinds):
            im.drop(data[key], key, f"{key}: not part of a Batch template")
    for key in kinds:
        resource = data[key]
        for k, v in resource.items():
            if k in ("type", "apiVersion"):
                im.r.converted[f"{key}.{k}"] = ""
            elif k != "properties":
                im.drop(v, f"{key}.{k}", f"{key}.{k}: {UNKNOWN}")
        properties = resource.get("properties") or {}
        (pool_object if key == "pool" else job_object)(im, _substitute(properties, values), f"{key}.properties")
        _collapse(im, properties, f"{key}.properties")


def _collapse(im: Importer, original: Any, prefix: str) -> None:
    """Template leaves as written: a `[variables('x')]` that became an object is accounted for as the
    leaves it became, and a filled-in text is no longer a copy."""
    for path, value in leaves(original, prefix):
        if isinstance(value, str) and _TEMPLATE_REF.search(value):
            im.r.same.discard(path)                # filled in: not the text of the template
        if path in im.r.converted or path in im.r.dropped:
            continue
        below = [p for p in (*im.r.converted, *im.r.dropped) if p.startswith((path + ".", path + "["))]
        why = next((im.r.dropped[p] for p in below if p in im.r.dropped), None)
        dst = next((im.r.converted[p] for p in below if p in im.r.converted), "")
        for p in below:
            im.r.converted.pop(p, None)
            im.r.dropped.pop(p, None)
            im.r.same.discard(p)
        if why is not None:
            im.r.dropped[path] = why
        else:
            im.r.converted[path] = dst


# --------------------------------------------------------------------------- entry points


def parse_node_group(text: str | None) -> dict[str, Any] | None:
    """--node-group: kwok | static:KEY=VALUE[,KEY=VALUE] | clusterapi:MACHINEDEPLOYMENT."""
    if not text:
        return None
    provider, _, rest = text.partition(":")
    if provider == "kwok" and not rest:
        return {"provider": "kwok"}
    if provider == "static" and rest:
        pairs = [p.partition("=") for p in rest.split(",")]
        if all(k and eq for k, eq, _ in pairs):
            return {"provider": "static", "static": {"nodeSelector": {k: v for k, _, v in pairs}}}
    if provider == "clusterapi" and rest:
        return {"provider": "clusterapi", "clusterapi": {"scaleTargetRef": {"name": rest}}}
    raise ImportProblem(f"--node-group {text!r}: use kwok, static:KEY=VALUE[,KEY=VALUE] or clusterapi:MACHINEDEPLOYMENT")


def import_data(data: Any, *, job: str | None = None, node_group: dict[str, Any] | None = None,
                params: dict[str, str] | None = None) -> Result:
    """Convert one parsed Batch JSON document; see the module docstring."""
    im = Importer(node_group)

    def job_name() -> str:
        if not job:
            raise ImportProblem("tasks need their job: give --job NAME (the podbatch Job they belong to)")
        name = sanitize(job)
        if name != job:
            im.r.notes.append(f"--job {job!r} is the Job named {name!r}")
        return name

    def tasks(items: list, prefix: str) -> None:
        name = job_name()
        for i, t in enumerate(items):
            if not isinstance(t, dict):
                raise ImportProblem(f"{prefix}[{i}]: a task must be a JSON object")
            task_object(im, t, f"{prefix}[{i}]", name)

    if isinstance(data, list):
        tasks(data, "")
    elif not isinstance(data, dict):
        raise ImportProblem("expected a JSON object (a pool, job, task or job schedule) or a list of tasks")
    elif isinstance(data.get("value"), list):      # a task collection, or `az batch task list` output
        tasks(data["value"], "value")
        for k, v in data.items():
            if k != "value":
                im.drop(v, k, READ_ONLY if k in READ_ONLY_FIELDS else f"{k}: {UNKNOWN}")
    elif any(isinstance(data.get(k), dict) and ("properties" in data[k] or "type" in data[k]) for k in ("pool", "job")):
        template(im, data, params or {})
    elif "jobSpecification" in data or "schedule" in data:
        schedule_object(im, data, "")
    elif "poolInfo" in data:
        job_object(im, data, "")
    elif "commandLine" in data:
        task_object(im, data, "", job_name())
    elif any(k in data for k in POOL_HINTS):
        pool_object(im, data, "")
    else:
        raise ImportProblem("not an Azure Batch pool, job, task, task collection, job schedule or template "
                            f"(top-level fields: {', '.join(list(data)[:8]) or 'none'})")
    if params and "parameters" not in (data if isinstance(data, dict) else {}):
        raise ImportProblem("--param is only for templates (files with parameters and a pool or job resource)")
    return im.r


def read_json(path: str) -> Any:
    import sys
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as e:
        raise ImportProblem(f"{path}: {e.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ImportProblem(f"{path}: not valid JSON: line {e.lineno} column {e.colno}: {e.msg}") from None


def report(result: Result, source: str) -> str:
    """What stderr says: what was made, names changed, fields dropped (grouped by why), placeholders."""
    kinds: dict[str, int] = {}
    for o in result.objects:
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
    made = ", ".join(f"{n} {k}{'s' if n > 1 else ''}" for k, n in kinds.items()) or "nothing"
    lines = [f"{source}: imported {made}; {len(result.dropped)} field(s) have no equivalent in podbatch"]
    lines += [f"  note: {n}" for n in result.notes]
    by_reason: dict[str, list[str]] = {}
    for path, why in result.dropped_roots.items():
        if any(p in result.dropped for p, _ in leaves(None, path)) or any(
                p.startswith((path + ".", path + "[")) for p in result.dropped):
            by_reason.setdefault(why, []).append(path)
    for why, paths in by_reason.items():
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        lines.append(f"  dropped {shown}\n      {why}")
    for obj, value in result.placeholders.items():
        lines.append(f"  placeholder: the pool of {obj} adopts only Nodes labelled {PLACEHOLDER_LABEL}={value}; give "
                     "--node-group kwok|static:KEY=VALUE|clusterapi:NAME, or edit its nodeGroup (docs/nodegroups.md)")
    return "\n".join(lines)


def to_yaml(result: Result, source: str) -> str:
    """The objects as a YAML stream, a comment above each placeholder nodeGroup."""
    import yaml
    docs = []
    for o in result.objects:
        text = yaml.safe_dump(o, sort_keys=False, default_flow_style=False, width=120)
        key = f"{o['kind']}/{o['metadata']['name']}"
        if key in result.placeholders:
            text = re.sub(r"^(\s*)nodeGroup:", lambda m: f"{m.group(1)}# placeholder: where this pool's Nodes come from "
                          f"(kwok, static or clusterapi; docs/nodegroups.md)\n{m.group(0)}", text, flags=re.M)
        docs.append(f"# {key}, imported from {source}\n{text}")
    return "---\n".join(docs)


def to_json(result: Result) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": result.objects}, indent=2)
