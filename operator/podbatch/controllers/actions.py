"""What a reconciler decides: typed actions, applied by the executor (executor.apply).

A reconciler reads the store (one consistent snapshot of what the watches said) and
returns a plan: a list of these, in the order they must happen. The convention every
reconciler keeps, and the reason plans are ordered lists rather than sets:

  record, then stop, then start, then record that it is done.

A requeue first writes the task's next attempt together with the pods that may still run
(`WriteStatus`), then deletes them (`DeletePod`); the next attempt's pod is created
(`CreatePod`) only by a later plan, once they are seen gone. A retention cleanup deletes
the pod first and records `Retained=False` last. The executor applies a plan in order and
stops at the first failure, so a plan cut short (a 409, an API error, a crash) never has
done a later step without the earlier ones; the rest is decided again from what the API
then says.

Plans hold no coroutines and do no IO: a test can read what a reconciler decided
without an API server.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union


@dataclass(frozen=True)
class WriteStatus:
    """Merge-patch `.status` of a podbatch object, on the resourceVersion `body` was read at.
    `report`: the write only reports what the store already says (counts, a node's idle or
    running) and no decision reads it back, so a plan of nothing else may be applied in the
    background (Engine._apply_soon) while the next pass runs."""
    plural: str
    body: dict = field(repr=False)
    status: dict
    precondition: bool = True
    report: bool = False


@dataclass(frozen=True)
class PatchObject:
    """Merge-patch an object's spec or metadata (preconditioned on `body`'s version if asked)."""
    plural: str
    body: dict = field(repr=False)
    patch: dict
    precondition: bool = False


@dataclass(frozen=True)
class CreateObject:
    plural: str
    namespace: str
    body: dict = field(repr=False)


@dataclass(frozen=True)
class DeleteObject:
    plural: str
    namespace: str
    name: str


@dataclass(frozen=True)
class CreatePod:
    pod: dict = field(repr=False)

    @property
    def name(self) -> str:
        return self.pod["metadata"]["name"]


@dataclass(frozen=True)
class DeletePod:
    """Delete a pod: gracefully (SIGTERM, then its grace period) unless grace is given."""
    namespace: str
    name: str
    grace: int | None = None


@dataclass(frozen=True)
class PatchPod:
    namespace: str
    name: str
    patch: dict


@dataclass(frozen=True)
class PatchNode:
    """Merge-patch a Node, refused (409: decided again) if it changed since `resource_version`."""
    name: str
    patch: dict
    resource_version: str | None = None


@dataclass(frozen=True)
class EnsureAccount:
    """The job manager's ServiceAccount, Role and RoleBinding (owned by its Job)."""
    namespace: str
    name: str
    owner: dict = field(repr=False)
    rules: list = field(repr=False)


@dataclass(frozen=True)
class GrowNodes:
    """Ask the pool's node-group provider for `count` more nodes; the result is its errors."""
    provider: Any = field(repr=False)
    pool: dict = field(repr=False)
    members: list = field(repr=False)
    count: int = 0
    low_priority: int = 0


@dataclass(frozen=True)
class ReleaseNode:
    """Give a Node back to its provider (delete it, or un-label an adopted one)."""
    provider: Any = field(repr=False)
    pool: dict = field(repr=False)
    node: dict = field(repr=False)

    @property
    def name(self) -> str:
        return self.node["metadata"]["name"]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about an object (posted in the background, best effort)."""
    body: dict = field(repr=False)
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Then:
    """Bookkeeping of the operator's own (a metric, a memo) that holds only once every
    earlier action of the plan was applied."""
    what: str
    fn: Callable[[], None] = field(repr=False)


Action = Union[WriteStatus, PatchObject, CreateObject, DeleteObject, CreatePod, DeletePod, PatchPod,
               EnsureAccount, GrowNodes, ReleaseNode, Event, Then]
Plan = list  # list[Action]


def merge_patch(base: dict | None, patch: dict) -> dict:
    """RFC 7386 merge patch, as the API server applies a status patch: what a plan's later
    decisions see of a write an earlier step of the same plan makes."""
    out = dict(base or {})
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_patch(out[k], v)
        else:
            out[k] = v
    return out


def with_status(body: dict, patch: dict) -> dict:
    """`body` as it will be once `patch` is written to its status."""
    return {**body, "status": merge_patch(body.get("status"), patch)}
