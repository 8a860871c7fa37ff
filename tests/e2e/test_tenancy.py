"""Tenants kept apart (issue 11): a namespace user with the aggregated `edit` role runs Pools
but cannot grant themselves nodes; an operator with PODBATCH_REQUIRE_GRANTS=true gives a
Pool only what a cluster admin's PoolGrant allows, and says why not on the Pool.

Real identities: the user is impersonated (`kubectl --as`) against the API server's RBAC."""
from __future__ import annotations

import subprocess
import uuid

import pytest
import yaml

from kit import ROOT, Objects, OperatorProcess, kwok_pool, wait_for

pytestmark = pytest.mark.e2e

GROUP, VERSION = "podbatch.io", "v1alpha1"


def kubectl(kubeconfig: str, *args: str, user: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    who = ["--as", user] if user else []
    return subprocess.run(["kubectl", "--kubeconfig", kubeconfig, *who, *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def aggregated_roles(suffix: str) -> list[dict]:
    """The chart's ClusterRoles that add the podbatch kinds to the built-in roles, renamed
    for this test (the chart may not be installed)."""
    import helm_python as helm
    with helm.Chart.load(ROOT / "charts" / "podbatch") as chart:
        manifests = chart.render({}, name="pbtenancy", namespace="default")
    roles = [d for path, text in sorted(manifests.items()) if "clusterrole-aggregated" in path
             for d in yaml.safe_load_all(text) if d]
    for r in roles:
        r["metadata"] = {"name": f"{r['metadata']['name']}-{suffix}", "labels": r["metadata"]["labels"]}
    return roles


def granted(objects: Objects, name: str) -> dict:
    return next((c for c in objects.status("Pool", name).get("conditions") or [] if c["type"] == "Granted"), {})


def test_namespace_users_get_only_the_nodes_a_cluster_admin_granted(kubeconfig, crds, nodesim, api_client, custom_api, core_v1):
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from podbatch.core import naming

    rbac = client.RbacAuthorizationV1Api(api_client)
    suffix = uuid.uuid4().hex[:6]
    ns, user, grant_name = f"pbtenant-{suffix}", f"alice-{suffix}", f"pbtenant-{suffix}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    roles = aggregated_roles(suffix)
    assert any(r["metadata"]["labels"].get("rbac.authorization.k8s.io/aggregate-to-edit") == "true" for r in roles)
    for r in roles:
        rbac.create_cluster_role(r)
    rbac.create_namespaced_role_binding(ns, {
        "metadata": {"name": "alice-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
    objects = Objects(custom_api, ns)
    op = None

    def as_user(*args, stdin=None):
        return kubectl(kubeconfig, *args, user=user, stdin=stdin)

    def apply_as_user(body: dict) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", **body, "metadata": {**body["metadata"], "namespace": ns}}
        res = as_user("create", "--validate=false", "-f", "-", stdin=yaml.safe_dump(body))
        assert res.returncode == 0, res.stderr

    grant = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PoolGrant", "metadata": {"name": grant_name},
             "spec": {"namespaces": [ns], "providers": ["kwok", "static"], "maxNodes": 2,
                      "static": {"nodeSelector": {"local.podbatch.io/real-node": "true"}}}}
    try:
        # 1. the aggregated edit role lets the user run Pools in the namespace ...
        wait_for("edit to aggregate the podbatch kinds", lambda: as_user(
            "auth", "can-i", "create", "pools.podbatch.io", "-n", ns).stdout.strip() == "yes", 60)
        # ... but not grant nodes: PoolGrants are cluster-scoped, and edit is bound in a namespace
        assert as_user("auth", "can-i", "create", "poolgrants.podbatch.io").stdout.strip() == "no"
        res = as_user("create", "--validate=false", "-f", "-", stdin=yaml.safe_dump(grant))
        assert res.returncode != 0 and "forbidden" in res.stderr.lower(), res.stderr
        custom_api.create_cluster_custom_object(GROUP, VERSION, "poolgrants", grant)   # the admin can
        res = as_user("patch", "poolgrant", grant_name, "--type=merge", "-p", '{"spec": {"maxNodes": 1000}}')
        assert res.returncode != 0 and "forbidden" in res.stderr.lower(), res.stderr
        res = as_user("delete", "poolgrant", grant_name)
        assert res.returncode != 0 and "forbidden" in res.stderr.lower(), res.stderr

        op = OperatorProcess(kubeconfig, f"operator-{ns}", env={
            "PODBATCH_NAMESPACES": ns, "PODBATCH_REQUIRE_GRANTS": "true"}).start()

        # 2. over the grant: refused, with the field and the limit, on the Pool and as an Event
        apply_as_user(kwok_pool("big", 5))
        cond = wait_for("big refused", lambda: (lambda c: c if c.get("status") == "False" else None)(granted(objects, "big")), 90)
        assert cond["reason"] == "NotGranted"
        assert f"spec.targetDedicatedNodes 5 exceeds the 2 nodes granted to namespace {ns} by PoolGrant {grant_name}" \
            in cond["message"], cond
        wait_for("a NotGranted event on big", lambda: [
            e for e in core_v1.list_namespaced_event(ns, field_selector="involvedObject.name=big").items
            if e.reason == "NotGranted" and "exceeds the 2 nodes" in e.message], 30)

        # 3. within it: the pool gets its nodes
        apply_as_user(kwok_pool("small", 2))
        wait_for("small to have 2 nodes", lambda: objects.status("Pool", "small").get("currentDedicatedNodes") == 2, 120)
        assert granted(objects, "small")["status"] == "True"
        assert "within PoolGrant" in granted(objects, "small")["message"]

        # 4. a host directory outside the granted one, and a static pool adopting every free Node
        apply_as_user(kwok_pool("etc", 0, nodeRootDir="/etc"))
        apply_as_user({"kind": "Pool", "metadata": {"name": "everything"},
                       "spec": {"nodeGroup": {"provider": "static", "static": {"nodeSelector": {}}}, "targetDedicatedNodes": 1}})
        cond = wait_for("etc refused", lambda: (lambda c: c if c.get("status") == "False" else None)(granted(objects, "etc")), 60)
        assert f"spec.nodeRootDir /etc is outside the node directory /var/lib/podbatch granted to namespace {ns}" in cond["message"]
        cond = wait_for("everything refused", lambda: (lambda c: c if c.get("status") == "False" else None)(
            granted(objects, "everything")), 60)
        assert "spec.nodeGroup.static.nodeSelector {} is outside the Nodes granted" in cond["message"], cond
        assert "must include local.podbatch.io/real-node=true" in cond["message"], cond

        # nothing was taken by the refused pools
        for pool in ("big", "etc", "everything"):
            label = f"{naming.LABEL_POOL}={naming.pool_node_label(ns, pool)}"
            assert core_v1.list_node(label_selector=label).items == [], pool
        assert objects.status("Pool", "big").get("currentDedicatedNodes", 0) == 0
    finally:
        if op is not None:
            for pool in ("big", "small", "etc", "everything"):
                objects.delete("Pool", pool)
            try:
                wait_for("the pools gone", lambda: not objects.list("Pool"), 90)
            finally:
                op.stop()
        try:
            custom_api.delete_cluster_custom_object(GROUP, VERSION, "poolgrants", grant_name)
        except ApiException:
            pass
        for r in roles:
            try:
                rbac.delete_cluster_role(r["metadata"]["name"])
            except ApiException:
                pass
        core_v1.delete_namespace(ns)
