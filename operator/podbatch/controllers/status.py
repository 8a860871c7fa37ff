"""How the reconcilers read and write status: standard conditions, the comparison of a
desired status with the stored one (as the server keeps it), API times, Node facts.
Shared by every reconciler so none of them imports another's module."""
from __future__ import annotations

from datetime import datetime, timezone

from podbatch.controllers import clock
from podbatch.controllers.store import key
from podbatch.core import conditions
from podbatch.core.tasks import ACTIVE

now_iso = clock.now_iso
CLEANUP_STUCK = "CleanupStuck"   # what a cleanup pod's check says when it did not end in time


def parse_time(s: str | None) -> float | None:
    """An RFC 3339 time of the API (…Z) as epoch seconds. fromisoformat, not strptime: the
    scheduler reads every queued task's creationTimestamp each pass (strptime took ~25% of
    a pass over 10,000 queued tasks)."""
    if not s:
        return None
    return datetime.fromisoformat(s[:19]).replace(tzinfo=timezone.utc).timestamp()


def condition(ctype: str, ok: bool, reason: str, message: str, generation: int | None = None) -> dict:
    return {"type": ctype, "status": "True" if ok else "False", "reason": reason, "message": message,
            "lastTransitionTime": now_iso(), "observedGeneration": generation}


def merged_conditions(old: list | None, desired: list, generation: int | None, keep: tuple[str, ...] = ()) -> list[dict]:
    """The conditions to write: `desired` (core.conditions.Cond tuples) with each one's
    lastTransitionTime kept unless its status changed."""
    return conditions.merge(old, desired, now=now_iso(), generation=generation, keep=keep)


def with_task_conditions(t: dict, new: dict, *, invalid: str | None = None, user_fixable=frozenset()) -> dict:
    """A task status write `new` with the task's conditions and observedGeneration added, when
    it changes the state or the pending reason (no write of its own: tasks are the hot path)."""
    if not invalid and "state" not in new and "pendingReason" not in new:
        return new
    st = t.get("status") or {}
    after = {**st, **new}
    conds = merged_conditions(st.get("conditions"), conditions.task_conditions(after, invalid=invalid, user_fixable=user_fixable),
                              t["metadata"].get("generation"), keep=("Retained",))
    return {**new, "conditions": conds, "observedGeneration": t["metadata"].get("generation")}


def _pruned(v):
    """A status value as the API server keeps it after a merge patch: keys set to None are gone."""
    if isinstance(v, dict):
        return {k: _pruned(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_pruned(x) for x in v]
    return v


def changed_keys(status: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """The keys of a status patch `new` that would change the stored `status`. Compared as
    the server keeps them (None keys pruned): a plain comparison made every pass rewrite a
    job whose executionInfo held a None, and each write woke the job and replanned its pool."""
    return [k for k, v in new.items() if k not in ignore and _pruned(status.get(k)) != _pruned(v)]


def same_conditions(old: list | None, new: list) -> bool:
    strip = lambda cs: [(c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in cs or []]
    return strip(old) == strip(new)


def initial_status(now: str) -> dict:
    return {"state": ACTIVE, "stateTransitionTime": now, "attempt": 1, "executionInfo": {"retryCount": 0, "requeueCount": 0}}


def body_key(body: dict | None) -> str:
    if not body:
        return ""
    return key(body["metadata"].get("namespace", ""), body["metadata"]["name"])


def node_ready(knode: dict | None) -> str:
    """The Node's Ready condition status ("True", "False", "Unknown"), "" when none."""
    return (node_condition(knode, "Ready") or {}).get("status", "")


def node_condition(knode: dict | None, ctype: str) -> dict | None:
    for c in ((knode or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def node_address(knode: dict | None) -> str | None:
    for a in ((knode or {}).get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP":
            return a.get("address")
    return None
