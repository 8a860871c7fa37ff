"""The Batch state of a compute node, derived from what Kubernetes shows. Pure."""
from __future__ import annotations

from dataclasses import dataclass

SCHEDULABLE_STATES = {"idle", "running"}


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


def node_state(f: NodeFacts) -> str:
    if f.leaving:
        return "leavingpool"
    if not f.exists:
        return "creating"
    if f.ready != "True":
        return "unusable" if f.ever_ready else "creating"
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
