"""The binding recorded by the pod. A single-instance task is bound by creating its
attempt's pod, whose name is fixed per attempt (naming.task_pod_name), with the binding
(node, pool, task directory, when) in an annotation: no Task status write comes before it.
While the Task's status still says `active` for that attempt, the pod is the record; the
task's first status write (`running`, or its completion) writes the binding's fields too.

Two binders of one attempt cannot both succeed: the second pod create is refused (409),
so an attempt never runs twice at once, exactly as the status write's precondition did.
Pure functions, so the store, the engine and the CLI read the binding alike."""
from __future__ import annotations

import json

ACTIVE, PREPARING = "active", "preparing"
MARK = "podbatch.io/bound-by-pod"   # on an effective body's metadata: the fields its first status write carries


def annotation(node_info: dict, bound_at: str) -> str:
    return json.dumps({"nodeInfo": node_info, "boundAt": bound_at}, separators=(",", ":"), sort_keys=True)


def parse(value: str | None) -> dict | None:
    """The binding a pod's annotation records, or None (no annotation, or not one of ours)."""
    if not value:
        return None
    try:
        b = json.loads(value)
    except ValueError:
        return None
    if not isinstance(b, dict) or not isinstance(b.get("nodeInfo"), dict) or not b["nodeInfo"].get("nodeId"):
        return None
    return b


def awaits_pod(status: dict | None) -> int | None:
    """The attempt whose pod, if it exists, is the task's binding: a task whose status says
    active (or nothing yet), with no pod named and no old pods still stopping. None otherwise."""
    st = status or {}
    if (st.get("state") or ACTIVE) != ACTIVE or st.get("podName") or st.get("stoppingPods") or st.get("nodeInfo"):
        return None
    return int(st.get("attempt") or 1)


def bound_status(status: dict | None, pod_name: str, binding: dict) -> tuple[dict, dict]:
    """(the task's status as its pod records it, the fields its next status write must carry).
    The state is `preparing` (the pod exists; whether it runs is the pod's to say)."""
    st = dict(status or {})
    attempt = int(st.get("attempt") or 1)
    info = dict(st.get("executionInfo") or {})
    info.setdefault("retryCount", 0)
    info.setdefault("requeueCount", 0)
    fields = {"attempt": attempt, "podName": pod_name, "nodeInfo": binding["nodeInfo"], "pendingReason": None}
    effective = {**st, **fields, "state": PREPARING, "previousState": st.get("state") or ACTIVE,
                 "stateTransitionTime": binding.get("boundAt") or st.get("stateTransitionTime"), "executionInfo": info}
    if not st.get("state"):   # a new task: its first write also carries what initial_status would have
        fields.update({"stateTransitionTime": effective["stateTransitionTime"], "executionInfo": info})
    return effective, fields


def with_binding(patch: dict, fields: dict | None) -> dict:
    """A status patch of a task bound by its pod: the binding's fields, under the patch's own
    (a requeue's podName: None wins over the pod's name)."""
    if not fields:
        return patch
    out = {**fields, **patch}
    if "executionInfo" in fields and "executionInfo" in patch and isinstance(patch["executionInfo"], dict):
        out["executionInfo"] = {**fields["executionInfo"], **patch["executionInfo"]}
    return out
