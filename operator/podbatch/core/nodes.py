"""The Batch state of a compute node, derived from what Kubernetes shows. Pure."""
from __future__ import annotations

from dataclasses import dataclass

from podbatch.core import naming

SCHEDULABLE_STATES = {"idle", "running"}
# Taints with which a cloud (or its node-termination handler) says it takes a node back:
# on a low-priority (spot) node they make the compute node `preempted` and its tasks are
# requeued. podbatch.io/preempted is for anything else that knows (and for tests).
PREEMPTION_TAINTS = ("podbatch.io/preempted", "cloud.google.com/impending-node-termination",
                     "aws-node-termination-handler/spot-itn", "karpenter.sh/disrupted")


@dataclass(frozen=True, slots=True)
class NodeFacts:
    exists: bool                 # the Kubernetes Node exists
    ready: str                   # "True" | "False" | "Unknown" | "" (never reported)
    ever_ready: bool             # the ComputeNode has been usable before
    prep_phase: str              # phase of this boot's preparation pod, "" when none yet
    prep_failed_for_good: bool   # start task failed and its retries are used up
    wait_for_success: bool
    scheduling_enabled: bool
    running_tasks: int
    leaving: bool = False        # being removed from the pool
    rebooting: str = ""          # "rebooting" | "reimaging" while a reboot/reimage is under way
    not_ready_seconds: float = 0.0   # how long the Node has not been Ready
    lost_grace: float = 300.0        # how long a NotReady node may be out of touch before it counts as lost
    preempted: bool = False          # a low-priority node its cloud is taking back (PREEMPTION_TAINTS)


def node_state(f: NodeFacts) -> str:
    """The Batch node state. A node that was usable and stopped reporting Ready is `unknown`
    (as Batch shows a node it lost contact with) for `lost_grace` seconds: its tasks stay
    where they are, since their processes may well still run there. Only after the grace
    is it `unusable`, and only then are its tasks requeued (`node_lost`)."""
    if f.leaving:
        return "leavingpool"
    if f.preempted:
        return "preempted"
    if not f.exists:
        return "creating"
    if f.ready != "True":
        if not f.ever_ready:
            return "creating"
        return "unusable" if f.not_ready_seconds >= f.lost_grace else "unknown"
    if f.rebooting:
        return f.rebooting
    if f.prep_failed_for_good:
        return "starttaskfailed" if f.wait_for_success else _work_state(f)
    if f.prep_phase in ("", "Pending"):
        return "starting" if f.wait_for_success or f.prep_phase == "" else _work_state(f)
    if f.prep_phase in ("Running", "Failed") and f.wait_for_success:
        return "waitingforstarttask"
    return _work_state(f)


def _work_state(f: NodeFacts) -> str:
    if f.running_tasks > 0:
        return "running"
    return "idle" if f.scheduling_enabled else "offline"


def is_schedulable(state: str, scheduling_enabled: bool) -> bool:
    return state in SCHEDULABLE_STATES and scheduling_enabled


def node_lost(state: str | None, exists: bool) -> bool:
    """Whether the tasks of a compute node in `state` may be started elsewhere: the node is
    gone, or out of touch past its grace (fenced). `unknown` is not lost: its pods may run."""
    return not exists or state == "unusable"


def nodes_to_release(loads: dict[str, int], count: int) -> list[str]:
    """Which `count` of a shrinking pool's nodes go (`loads`: node name -> tasks running on it):
    idle nodes first, then the least busy, ties by name, as Batch prefers idle nodes when
    the target drops. Returned in name order."""
    chosen = sorted(loads, key=lambda n: (loads[n], n))[:max(0, count)]
    return sorted(chosen)


def being_taken_back(node: dict | None, dedicated: bool) -> bool:
    """Whether a low-priority node carries one of PREEMPTION_TAINTS."""
    if dedicated or not node:
        return False
    return any(t.get("key") in PREEMPTION_TAINTS for t in (node.get("spec") or {}).get("taints") or [])


def pool_taint(value: str) -> dict:
    """The NoSchedule taint that keeps other pods off a pool's node (`value`: the pool's label)."""
    return {"key": naming.TAINT_POOL, "value": value, "effect": "NoSchedule"}


def without_pool_taint(node: dict) -> list[dict]:
    """The node's taints but podbatch's pool taint (whatever its value)."""
    return [t for t in (node.get("spec") or {}).get("taints") or [] if t.get("key") != naming.TAINT_POOL]


def with_pool_taint(node: dict, value: str) -> list[dict]:
    """The node's taints with exactly one pool taint, for the pool labelled `value`."""
    return without_pool_taint(node) + [pool_taint(value)]


def taint_to_restore(node: dict | None, value: str) -> list[dict] | None:
    """The taints to write back on a node labelled for the pool (`value`) that lost its pool
    taint to another writer (e.g. a controller that rewrote the node's taint list from an
    older copy); None when nothing is to be done: the node is not the pool's, is going, or
    carries the taint."""
    if not node or node["metadata"].get("deletionTimestamp"):
        return None
    if (node["metadata"].get("labels") or {}).get(naming.LABEL_POOL) != value:
        return None
    if pool_taint(value) in [{k: t.get(k) for k in ("key", "value", "effect")} for t in (node.get("spec") or {}).get("taints") or []]:
        return None
    return with_pool_taint(node, value)
