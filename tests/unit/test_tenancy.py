"""core/tenancy.py: whether a Pool stays within the PoolGrants of its namespace (table tests)."""
from __future__ import annotations

import pytest

from podbatch import API_VERSION
from podbatch.api import InvalidObject, validate_object
from podbatch.core.tenancy import check_pool, decide, grants_for, selector_matches

pytestmark = pytest.mark.unit


def grant(name="research", **spec) -> dict:
    body = {"namespaces": ["team-a"], "providers": ["kwok"], "maxNodes": 50, **spec}
    return {"apiVersion": API_VERSION, "kind": "PoolGrant", "metadata": {"name": name}, "spec": body}


def pool(name="p", ns="team-a", created="2024-01-01T00:00:00Z", status=None, **spec) -> dict:
    body = {"nodeGroup": {"provider": "kwok"}, "targetDedicatedNodes": 2, **spec}
    return {"apiVersion": API_VERSION, "kind": "Pool", "status": status or {},
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": created}, "spec": body}


def static(selector: dict) -> dict:
    return {"provider": "static", "static": {"nodeSelector": selector}}


RESEARCH_STATIC = grant(providers=["static"], static={"nodeSelector": {"tier": "research"}})

# (why, pool, grants, namespace labels, refusal fragment or None)
CASES = [
    ("within the grant", pool(), [grant()], {}, None),
    ("no grant, required", pool(), [], {}, "no PoolGrant grants nodes to namespace team-a"),
    ("grant for another namespace", pool(), [grant(namespaces=["team-b"])], {}, "no PoolGrant grants nodes"),
    ("too many nodes", pool(targetDedicatedNodes=100000), [grant()], {},
     "spec.targetDedicatedNodes 100000 exceeds the 50 nodes granted to namespace team-a by PoolGrant research"),
    ("dedicated + low priority count together", pool(targetDedicatedNodes=30, targetLowPriorityNodes=21), [grant()], {},
     "spec.targetDedicatedNodes + spec.targetLowPriorityNodes 51 exceeds the 50 nodes"),
    ("exactly the limit", pool(targetDedicatedNodes=50), [grant()], {}, None),
    ("provider not granted", pool(nodeGroup=static({"tier": "research"})), [grant()], {},
     "spec.nodeGroup.provider static is not among the providers (kwok) granted to namespace team-a"),
    ("static within the granted nodes", pool(nodeGroup=static({"tier": "research", "zone": "a"})), [RESEARCH_STATIC], {}, None),
    ("static with an empty selector", pool(nodeGroup=static({})), [RESEARCH_STATIC], {},
     "spec.nodeGroup.static.nodeSelector {} is outside the Nodes granted to namespace team-a by PoolGrant research: "
     "it must include tier=research"),
    ("static with another value", pool(nodeGroup=static({"tier": "prod"})), [RESEARCH_STATIC], {}, "it must include tier=research"),
    ("static granted without nodes", pool(nodeGroup=static({"tier": "x"})), [grant(providers=["static"])], {},
     "needs Nodes named by spec.static.nodeSelector of PoolGrant research"),
    ("kwok labels not granted", pool(nodeGroup={"provider": "kwok", "kwok": {"labels": {"node-role.kubernetes.io/master": ""}}}),
     [grant()], {}, "spec.nodeGroup.kwok.labels node-role.kubernetes.io/master not among the labels (none)"),
    ("kwok labels by prefix and exact key",
     pool(nodeGroup={"provider": "kwok", "kwok": {"labels": {"lab.example.com/gpu": "a100", "team": "a"}}}),
     [grant(kwok={"allowedLabels": ["lab.example.com/", "team"]})], {}, None),
    ("a prefix is not a key", pool(nodeGroup={"provider": "kwok", "kwok": {"labels": {"teams": "a"}}}),
     [grant(kwok={"allowedLabels": ["team"]})], {}, "spec.nodeGroup.kwok.labels teams"),
    ("too many slots", pool(taskSlotsPerNode=64), [grant(maxTaskSlotsPerNode=8)], {},
     "spec.taskSlotsPerNode 64 exceeds the 8 slots per node granted"),
    ("default slots fit the default limit", pool(taskSlotsPerNode=256), [grant()], {}, None),
    ("node root outside", pool(nodeRootDir="/etc"), [grant()], {},
     "spec.nodeRootDir /etc is outside the node directory /var/lib/podbatch granted to namespace team-a"),
    ("node root climbing out", pool(nodeRootDir="/var/lib/podbatch/../../../etc"), [grant()], {}, "is outside"),
    ("node root sibling prefix", pool(nodeRootDir="/var/lib/podbatchx"), [grant()], {}, "is outside"),
    ("node root below the granted one", pool(nodeRootDir="/var/lib/podbatch/fast"), [grant()], {}, None),
    ("node root the admin fixed", pool(nodeRootDir="/scratch/batch"), [grant(nodeRootDir="/scratch")], {}, None),
    ("default node root outside a custom grant", pool(), [grant(nodeRootDir="/scratch")], {},
     "spec.nodeRootDir /var/lib/podbatch is outside the node directory /scratch"),
    ("by namespace label", pool(), [grant(namespaces=None, namespaceSelector={"matchLabels": {"tenant": "research"}})],
     {"tenant": "research"}, None),
    ("label selector that does not match", pool(), [grant(namespaces=None, namespaceSelector={"matchLabels": {"tenant": "x"}})],
     {"tenant": "research"}, "no PoolGrant grants nodes"),
    ("a second grant admits what the first refuses", pool(targetDedicatedNodes=80),
     [grant("a-small"), grant("b-large", maxNodes=100)], {}, None),
    ("all refuse: the first one's reason", pool(targetDedicatedNodes=800),
     [grant("a-small"), grant("b-large", maxNodes=100)], {},
     "exceeds the 50 nodes granted to namespace team-a by PoolGrant a-small (and 1 other PoolGrants refuse it too)"),
]


@pytest.mark.parametrize("why, body, grants, labels, expected", CASES, ids=[c[0] for c in CASES])
def test_check_pool(why, body, grants, labels, expected):
    refusal = check_pool(body, grants, labels)
    if expected is None:
        assert refusal is None, refusal
    else:
        assert refusal is not None and expected in refusal, refusal


def test_without_required_grants_a_namespace_no_grant_names_is_free():
    d = decide(pool(targetDedicatedNodes=100000, nodeRootDir="/etc"), [grant(namespaces=["team-b"])], {},
               require_grants=False)
    assert (d.applies, d.refusal) == (False, None)


def test_without_required_grants_a_grant_that_names_the_namespace_still_binds():
    d = decide(pool(targetDedicatedNodes=100000), [grant()], {}, require_grants=False)
    assert d.applies and "exceeds the 50 nodes" in d.refusal


def test_decision_names_the_grant_that_admitted():
    assert decide(pool(), [grant("a"), grant("b")], {}).granted_by == "a"


def test_max_nodes_is_shared_by_the_namespace_oldest_first():
    g = [grant(maxNodes=5)]
    old = pool("old", created="2024-01-01T00:00:00Z", targetDedicatedNodes=3)
    new = pool("new", created="2024-01-02T00:00:00Z", targetDedicatedNodes=3)
    both = [old, new]
    assert check_pool(old, g, {}, namespace_pools=both) is None
    refusal = check_pool(new, g, {}, namespace_pools=both)
    assert "spec.targetDedicatedNodes 3 exceeds the 5 nodes granted" in refusal and "(3 already held by older pools there)" in refusal
    assert check_pool(pool("new", created="2024-01-02T00:00:00Z", targetDedicatedNodes=2), g, {}, namespace_pools=both) is None


def test_refused_and_deleted_older_pools_use_no_budget():
    g = [grant(maxNodes=5)]
    greedy = pool("greedy", created="2024-01-01T00:00:00Z", targetDedicatedNodes=500)
    going = pool("going", created="2024-01-01T00:00:00Z", targetDedicatedNodes=4)
    going["metadata"]["deletionTimestamp"] = "2024-01-03T00:00:00Z"
    new = pool("new", created="2024-01-02T00:00:00Z", targetDedicatedNodes=5)
    assert check_pool(new, g, {}, namespace_pools=[greedy, going, new]) is None


def test_older_pool_holding_more_than_its_target_counts_what_it_holds():
    g = [grant(maxNodes=5)]
    shrinking = pool("s", created="2024-01-01T00:00:00Z", targetDedicatedNodes=1, status={"currentDedicatedNodes": 4})
    new = pool("new", created="2024-01-02T00:00:00Z", targetDedicatedNodes=2)
    assert "(4 already held" in check_pool(new, g, {}, namespace_pools=[shrinking])


def test_other_namespaces_do_not_share_the_budget():
    g = [grant(namespaces=["team-a", "team-b"], maxNodes=5)]
    other = pool("o", ns="team-b", created="2023-01-01T00:00:00Z", targetDedicatedNodes=5)
    assert check_pool(pool(targetDedicatedNodes=5), g, {}, namespace_pools=[other]) is None


@pytest.mark.parametrize("selector, labels, ok", [
    ({}, {}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"}, True),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
    ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "1"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, {"a": "2"}, False),
])
def test_selector_matches(selector, labels, ok):
    assert selector_matches(selector, labels) is ok


def test_grants_for_by_name_and_sorted():
    gs = [grant("z"), grant("a", namespaces=None, namespaceSelector={}), grant("m", namespaces=["other"])]
    assert [g["metadata"]["name"] for g in grants_for("team-a", {}, gs)] == ["a", "z"]


def test_grant_model_validates():
    validate_object(grant(static={"nodeSelector": {"tier": "research"}}, kwok={"allowedLabels": ["x/"]}))
    for bad in ({"providers": []}, {"static": {"nodeSelector": {}}}, {"nodeRootDir": "relative"},
                {"maxNodes": -1}, {"providers": ["nope"]}, {"maxNodez": 3}):
        with pytest.raises(InvalidObject):
            validate_object(grant(**bad))
