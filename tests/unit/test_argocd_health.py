"""The Argo CD health checks (deploy/argocd/health/*.lua) run in a real Lua (lupa) against
status samples of each kind, as Argo CD runs them: `obj` global, the script returns a table."""
from __future__ import annotations

import pathlib
import textwrap

import pytest

pytestmark = pytest.mark.unit

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEALTH = ROOT / "deploy" / "argocd" / "health"
KINDS = ("Pool", "ComputeNode", "Job", "Task", "JobSchedule")


def health(kind: str, obj: dict) -> tuple[str, str]:
    """(status, message) of the kind's health script for `obj`."""
    lupa = pytest.importorskip("lupa")
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute((HEALTH / f"podbatch.io_{kind}.lua").read_text())
    return hs["status"], hs["message"]


def cond(t: str, s: bool, reason: str = "R", message: str = "m") -> dict:
    return {"type": t, "status": "True" if s else "False", "reason": reason, "message": message}


def kst(which: str, reason: str = "R", message: str = "m") -> list[dict]:
    return [cond(t, t == which, reason, message) for t in ("Ready", "Reconciling", "Stalled")]


def obj(kind: str, status: dict | None, generation: int = 2) -> dict:
    o = {"apiVersion": "podbatch.io/v1alpha1", "kind": kind, "metadata": {"name": "x", "generation": generation}}
    if status is not None:
        o["status"] = {"observedGeneration": generation, **status}
    return o


@pytest.mark.parametrize("status,want", [
    (None, "Progressing"),
    ({"observedGeneration": 1, "conditions": kst("Ready")}, "Progressing"),    # spec not observed yet
    ({"allocationState": "resizing", "conditions": kst("Reconciling", "Resizing")}, "Progressing"),
    ({"allocationState": "steady", "conditions": kst("Ready", "Steady", "at its target")}, "Healthy"),
    ({"allocationState": "steady", "conditions": kst("Stalled", "InsufficientNodes", "no node matches")}, "Degraded"),
    ({"allocationState": "steady"}, "Progressing"),
])
def test_pool_health(status, want):
    assert health("Pool", obj("Pool", status))[0] == want


def test_degraded_message_is_the_stalled_condition_message():
    assert health("Pool", obj("Pool", {"conditions": kst("Stalled", "StartTaskFailed", "fix spec.startTask")})) == \
        ("Degraded", "fix spec.startTask")


@pytest.mark.parametrize("status,want", [
    ({"state": "idle", "conditions": kst("Ready", "Idle")}, "Healthy"),
    ({"state": "starting", "conditions": kst("Reconciling", "Starting")}, "Progressing"),
    ({"state": "starttaskfailed", "conditions": kst("Stalled", "StartTaskFailed")}, "Degraded"),
    ({"state": "offline", "schedulingState": "disabled", "conditions": kst("Ready", "Offline")}, "Suspended"),
])
def test_compute_node_health(status, want):
    assert health("ComputeNode", obj("ComputeNode", status))[0] == want


COUNTS_RUNNING = {"active": 2, "running": 1, "completed": 3, "succeeded": 3, "failed": 0}
COUNTS_DONE = {"active": 0, "running": 0, "completed": 6, "succeeded": 6, "failed": 0}


@pytest.mark.parametrize("status,want", [
    ({"state": "active", "taskCounts": COUNTS_RUNNING, "conditions": kst("Ready", "Active")}, "Progressing"),
    ({"state": "active", "taskCounts": COUNTS_DONE, "conditions": kst("Ready", "Active")}, "Healthy"),
    ({"state": "active", "taskCounts": COUNTS_RUNNING, "conditions": kst("Stalled", "PoolNotFound", "pool 'p' does not exist")},
     "Degraded"),
    ({"state": "disabled", "taskCounts": COUNTS_RUNNING, "conditions": kst("Ready", "Disabled")}, "Suspended"),
    ({"state": "terminating", "taskCounts": COUNTS_RUNNING, "conditions": kst("Reconciling", "Terminating")}, "Progressing"),
    ({"state": "completed", "taskCounts": COUNTS_DONE, "executionInfo": {"terminateReason": "AllTasksComplete"},
      "conditions": kst("Ready", "Completed")}, "Healthy"),
    ({"state": "completed", "taskCounts": {**COUNTS_DONE, "succeeded": 5, "failed": 1},
      "executionInfo": {"terminateReason": "TaskFailed"}, "conditions": kst("Ready", "Completed")}, "Degraded"),
])
def test_job_health(status, want):
    assert health("Job", obj("Job", status))[0] == want


@pytest.mark.parametrize("status,want", [
    (None, "Progressing"),
    ({"state": "active", "pendingReason": {"reason": "NoFreeSlots"}}, "Progressing"),
    ({"state": "running", "conditions": kst("Ready", "Running")}, "Progressing"),
    ({"state": "active", "conditions": kst("Stalled", "RequiredSlotsExceedNode")}, "Degraded"),
    ({"state": "completed", "executionInfo": {"result": "success"}, "conditions": kst("Ready", "Succeeded")}, "Healthy"),
    ({"state": "completed", "executionInfo": {"result": "failure"}, "conditions": kst("Stalled", "FailureExitCode")}, "Degraded"),
])
def test_task_health(status, want):
    # a task's observedGeneration is written only with its state: its health ignores it
    assert health("Task", obj("Task", status, generation=5) if status is None else
                  {**obj("Task", None), "status": status})[0] == want


@pytest.mark.parametrize("status,want", [
    ({"state": "active", "conditions": kst("Ready", "Active")}, "Healthy"),
    ({"state": "disabled", "conditions": kst("Ready", "Disabled")}, "Suspended"),
    ({"state": "active", "conditions": kst("Stalled", "InvalidSchedule")}, "Degraded"),
    ({"state": "terminating", "conditions": kst("Reconciling", "Terminating")}, "Progressing"),
])
def test_job_schedule_health(status, want):
    assert health("JobSchedule", obj("JobSchedule", status))[0] == want


def test_docs_carry_every_script_for_argocd_cm():
    docs = (ROOT / "docs" / "gitops.md").read_text()
    for kind in KINDS:
        assert f"resource.customizations.health.podbatch.io_{kind}: |" in docs
        script = (HEALTH / f"podbatch.io_{kind}.lua").read_text()
        assert textwrap.indent(script, "    ") in docs, f"docs/gitops.md has an outdated copy of the {kind} script"
