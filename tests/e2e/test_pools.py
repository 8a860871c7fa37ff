"""Pools on the local cluster: kwok node groups grow, shrink and go away without orphans.

Every test runs in its own namespace against the session's operator; kwok Nodes are
created by podbatch itself and run by the node simulator (hack/nodesim.py).
"""
from __future__ import annotations

import pytest

from kit import kwok_pool, wait_for

pytestmark = pytest.mark.e2e

POOL_LABEL = "podbatch.io/pool"


def pool_nodes(core_v1, ns: str, pool: str) -> list[str]:
    """Kubernetes Nodes labelled for the pool."""
    return sorted(n.metadata.name for n in core_v1.list_node(label_selector=f"{POOL_LABEL}={ns}.{pool}").items)


def nodes_named_like(core_v1, ns: str, pool: str) -> list[str]:
    """Every Node whose name says it was made for this pool (labelled or not): catches orphans."""
    prefix = f"{ns}-{pool}-"
    return sorted(n.metadata.name for n in core_v1.list_node().items if n.metadata.name.startswith(prefix))


def cnodes(objects, pool: str) -> list[dict]:
    return [c for c in objects.list("ComputeNode") if c["spec"]["poolName"] == pool]


def cnode_states(objects, pool: str) -> dict[str, str]:
    return {c["spec"]["nodeName"]: (c.get("status") or {}).get("state") for c in cnodes(objects, pool)}


def pool_settled(objects, pool: str, count: int):
    """The pool steady at `count` dedicated nodes, every one idle; returns the status then."""
    st = objects.status("Pool", pool)
    counts = st.get("nodeCounts") or {}
    states = cnode_states(objects, pool)
    if (st.get("allocationState") == "steady" and st.get("currentDedicatedNodes") == count
            and counts.get("idle") == count and counts.get("total") == count
            and len(states) == count and set(states.values()) == {"idle"}):
        return st
    return None


def assert_no_orphans(core_v1, objects, ns: str, pool: str, count: int) -> None:
    labelled = pool_nodes(core_v1, ns, pool)
    assert len(labelled) == count, labelled
    assert nodes_named_like(core_v1, ns, pool) == labelled, "a Node made for the pool lost its label"
    cn = cnodes(objects, pool)
    assert sorted(c["spec"]["nodeName"] for c in cn) == labelled, "ComputeNodes and Nodes differ"
    assert not any(c["metadata"].get("deletionTimestamp") for c in cn)


@pytest.fixture()
def pools_cleaned(operator, objects):
    """Delete this test's pools (and wait until they are gone) while the session's operator
    still serves the namespace, so no Node outlives the test."""
    yield
    for p in objects.list("Pool"):
        objects.delete("Pool", p["metadata"]["name"])
    wait_for("the test's pools deleted", lambda: not objects.list("Pool"), timeout=120)


def gone(fn):
    return lambda: not fn()


@pytest.mark.e2e
def test_kwok_pool_comes_up_resizes_and_leaves_no_orphans(operator, objects, core_v1, pools_cleaned):
    ns = objects.ns
    objects.create(kwok_pool("grow", 5, startTask={"commandLine": "/bin/sh -c 'echo prepared'"}))

    st = wait_for("5 idle nodes in a steady pool", lambda: pool_settled(objects, "grow", 5), timeout=90)
    assert st["currentLowPriorityNodes"] == 0 and not st.get("resizeErrors")
    assert_no_orphans(core_v1, objects, ns, "grow", 5)
    for c in cnodes(objects, "grow"):
        status = c["status"]
        info = status["startTaskInfo"]
        assert info["state"] == "completed" and info["result"] == "success" and info["exitCode"] == 0, info
        assert status["schedulingState"] == "enabled" and status["runningTasksCount"] == 0
        assert status["ipAddress"] and status["lastBootTime"]
        assert c["spec"]["isDedicated"] is True
        # the node's preparation pod (directories + start task) ran on that very node
        preps = core_v1.list_namespaced_pod(ns, label_selector=f"podbatch.io/role=nodeprep,podbatch.io/node={c['metadata']['name']}").items
        assert preps and all(p.spec.node_name == c["spec"]["nodeName"] for p in preps)
        assert any(p.status.phase == "Succeeded" for p in preps)
        node = core_v1.read_node(c["spec"]["nodeName"])
        assert any(t.key == POOL_LABEL and t.effect == "NoSchedule" for t in node.spec.taints or [])

    # another writer drops the pool's taint (as kube-controller-manager 1.20 can, rewriting the
    # taint list from an older copy): the operator puts it back, the node's other taints kept
    victim = cnodes(objects, "grow")[0]["spec"]["nodeName"]
    kwok_taint = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
    core_v1.patch_node(victim, {"spec": {"taints": [kwok_taint]}})
    label = core_v1.read_node(victim).metadata.labels[POOL_LABEL]
    back = wait_for("the pool's taint back on the node", lambda: (lambda ts: ts if any(
        t.key == POOL_LABEL and t.value == label and t.effect == "NoSchedule" for t in ts) else None)(
        core_v1.read_node(victim).spec.taints or []), timeout=30)
    assert any(t.key == "kwok.x-k8s.io/node" for t in back)

    objects.patch("Pool", "grow", {"spec": {"targetDedicatedNodes": 8}})
    wait_for("8 idle nodes", lambda: pool_settled(objects, "grow", 8), timeout=90)
    assert_no_orphans(core_v1, objects, ns, "grow", 8)

    objects.patch("Pool", "grow", {"spec": {"targetDedicatedNodes": 2}})
    st = wait_for("2 idle nodes", lambda: pool_settled(objects, "grow", 2) if len(nodes_named_like(core_v1, ns, "grow")) == 2 else None,
                  timeout=90)
    assert st["nodeCounts"]["total"] == 2
    wait_for("6 ComputeNodes deleted", lambda: len(cnodes(objects, "grow")) == 2, timeout=30)
    assert_no_orphans(core_v1, objects, ns, "grow", 2)


@pytest.mark.e2e
def test_deleting_kwok_pool_deletes_its_nodes_and_compute_nodes(operator, objects, core_v1, pools_cleaned):
    ns = objects.ns
    objects.create(kwok_pool("doomed", 3))
    wait_for("3 idle nodes", lambda: pool_settled(objects, "doomed", 3), timeout=90)
    made = pool_nodes(core_v1, ns, "doomed")
    assert len(made) == 3

    objects.delete("Pool", "doomed")
    wait_for("the pool's Nodes deleted", gone(lambda: nodes_named_like(core_v1, ns, "doomed")), timeout=60)
    wait_for("the pool's ComputeNodes deleted", gone(lambda: cnodes(objects, "doomed")), timeout=60)
    wait_for("the Pool itself gone", gone(lambda: [p for p in objects.list("Pool") if p["metadata"]["name"] == "doomed"]), timeout=30)
    names = {n.metadata.name for n in core_v1.list_node().items}
    assert not names & set(made)


@pytest.mark.e2e
def test_static_pool_without_enough_matching_nodes_reports_a_resize_error(operator, objects, core_v1, pools_cleaned):
    objects.create({"kind": "Pool", "metadata": {"name": "few"},
                    "spec": {"nodeGroup": {"provider": "static", "static": {"nodeSelector": {"podbatch.io/test-no-such-node": "x"}}},
                             "targetDedicatedNodes": 2}})
    st = wait_for("a resize error", lambda: (s := objects.status("Pool", "few")).get("resizeErrors") and s, timeout=60)
    assert st["resizeErrors"][0]["code"] == "InsufficientNodes"
    assert "nodeSelector" in st["resizeErrors"][0]["message"]
    assert st["currentDedicatedNodes"] == 0
    assert st["allocationState"] == "steady"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["ResizeError"]["status"] == "True" and conds["Ready"]["status"] == "False"
    assert not objects.list("ComputeNode")

    objects.patch("Pool", "few", {"spec": {"targetDedicatedNodes": 0}})
    wait_for("the resize error cleared", lambda: not objects.status("Pool", "few").get("resizeErrors"), timeout=30)
    objects.delete("Pool", "few")
    wait_for("the pool deleted", lambda: not objects.list("Pool"), timeout=30)
