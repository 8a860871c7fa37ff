"""The clusterapi provider's pure decisions, and the fake Cluster API's deletion order."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from podbatch.api.pool import PoolSpec
from podbatch.nodegroups import UnknownProvider, provider_for
from podbatch.nodegroups.clusterapi import DELETE_MACHINE, ClusterApiProvider, adoptable, replicas_after_release, target_of

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "hack"))
import fakecapi  # noqa: E402


def machine(name: str, node: str | None = None, *, marked: bool = False, deleting: bool = False, created: str = "") -> dict:
    meta: dict = {"name": name, "namespace": "ns", "annotations": {DELETE_MACHINE: "now"} if marked else {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    if created:
        meta["creationTimestamp"] = created
    return {"metadata": meta, "status": {"nodeRef": {"name": node}} if node else {}}


def node(name: str, pool: str | None = None) -> dict:
    return {"metadata": {"name": name, "labels": {"podbatch.io/pool": pool} if pool else {}}}


def pool(ref: dict) -> dict:
    return {"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeGroup": {"provider": "clusterapi", "clusterapi": {"scaleTargetRef": ref}}}}


def test_provider_and_target_with_the_defaults():
    p = pool({"name": "md"})
    assert isinstance(provider_for(p, kube=None), ClusterApiProvider)
    t = target_of(p)
    assert (t.group_version, t.kind, t.name, t.namespace) == (("cluster.x-k8s.io", "v1beta1"), "MachineDeployment", "md", "ns")
    assert str(target_of(pool({"apiVersion": "x.io/v2", "kind": "MachinePool", "name": "mp"}))) == "MachinePool ns/mp (x.io/v2)"


def test_free_nodes_of_machines_not_going_away_are_adopted_marked_ones_last():
    nodes = {n["metadata"]["name"]: n for n in (node("b"), node("a"), node("taken", "ns.other"), node("marked"), node("gone"))}
    machines = [machine("m4", "marked", marked=True), machine("m1", "b"), machine("m2", "a"), machine("m3", "taken"),
                machine("m5", "gone", deleting=True), machine("m6"), machine("m7", "not-yet-a-node")]
    assert [(n["metadata"]["name"], m["metadata"]["name"]) for n, m in adoptable(machines, nodes)] == [
        ("a", "m2"), ("b", "m1"), ("marked", "m4")]


@pytest.mark.parametrize("current, machines, expected", [
    (3, [machine("a"), machine("b"), machine("c", marked=True)], 2),              # one marked: one fewer
    (2, [machine("a"), machine("b"), machine("c", marked=True)], 2),              # repeated: not lowered twice
    (3, [machine("a"), machine("b", deleting=True), machine("c", marked=True)], 1),
    (4, [machine("a"), machine("b", marked=True)], 1),                            # unborn Machines are not wanted either
    (0, [machine("a", marked=True)], 0),
])
def test_replicas_after_a_release(current, machines, expected):
    assert replicas_after_release(current, machines) == expected


def test_scale_target_ref_is_checked():
    spec = {"nodeGroup": {"provider": "clusterapi", "clusterapi": {"scaleTargetRef": {"name": "md"}}}}
    PoolSpec.model_validate(spec)
    with pytest.raises(ValidationError, match="apiVersion"):
        PoolSpec.model_validate({"nodeGroup": {"provider": "clusterapi", "clusterapi": {"scaleTargetRef": {"name": "md", "apiVersion": "v1beta1"}}}})
    with pytest.raises(ValidationError, match="machineDeploymentName"):
        PoolSpec.model_validate({"nodeGroup": {"provider": "clusterapi", "clusterapi": {"machineDeploymentName": "md"}}})


def test_fake_machine_set_deletes_marked_machines_first_then_the_newest():
    ms = [machine("old", created="2026-01-01T00:00:00Z"), machine("new", created="2026-01-01T00:05:00Z"),
          machine("picked", created="2026-01-01T00:00:00Z", marked=True)]
    assert [m["metadata"]["name"] for m in fakecapi.deletion_order(ms)] == ["picked", "new", "old"]


def test_a_provider_the_schema_refuses_is_a_clear_resize_error():
    with pytest.raises(UnknownProvider, match="upgrade the operator"):
        provider_for({"spec": {"nodeGroup": {"provider": "gcp-magic"}}}, kube=None)
