"""The chart installed for real: `helm install`, look, `helm uninstall`, look again.

Helm's own Go library (helm-python-sdk) installs the chart into a fresh namespace of
the cluster under test, and the API server says whether the chart's ServiceAccount may
do what the operator does (SubjectAccessReview): RBAC is on in the local cluster, so a
missing rule fails here rather than in a user's operator log. The operator image is not
in the local cluster, so the release runs with replicaCount 0: the Deployment exists,
no pod is started.

Helm 4 applies a release (and its CRDs) server-side by default. A Kubernetes 1.20 API
server cannot apply our CRDs server-side: its schema of CustomResourceDefinition
predates `x-kubernetes-validations` (CEL rules, 1.25+), so the apply is refused with
"field not declared in schema", while a plain create keeps the CRD and drops the CEL
rules, as 1.20 does for every client. So the release is installed the way a 1.20 user
runs `helm install --server-side=false`; `Config.install` of helm-python-sdk 0.2 has no
keyword for that option, so `install_client_side` passes it to the same native call.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import helm_python as helm  # helm-python-sdk, in the test extra
import pytest


pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "charts" / "podbatch"
RELEASE = "podbatch"  # fullname is then just "podbatch"
CRDS = ["pools.podbatch.io", "computenodes.podbatch.io", "jobs.podbatch.io", "tasks.podbatch.io",
        "jobschedules.podbatch.io"]


def install_client_side(cfg, name: str, values: dict, *, namespace: str) -> dict:
    """`helm install --server-side=false CHART` (see the module docstring)."""
    from helm_python import _native
    payload = _native.call_string(
        "helm_install", cfg._raw(), _native.HANDLE(0), _native.HANDLE(0), str(CHART), name,
        json.dumps(values),
        json.dumps({"namespace": namespace, "server_side_apply": False, "timeout_seconds": 120}),
    )
    return json.loads(payload)


def wait_until(check, *, timeout: float = 30.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def gone(read) -> bool:
    from kubernetes.client.exceptions import ApiException
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def may(authz, user: str, *, verb: str, resource: str, group: str = "", subresource: str = "",
        namespace: str | None = None) -> bool:
    from kubernetes import client
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=user,
        groups=["system:serviceaccounts", "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(
            verb=verb, group=group, resource=resource, subresource=subresource or None, namespace=namespace),
    ))
    return bool(authz.create_subject_access_review(review).status.allowed)


@pytest.fixture()
def release(kubeconfig, namespace, api_client):
    """Install the chart as RELEASE in a fresh namespace; uninstall and clean up after."""
    from kubernetes import client
    cluster_roles = [f"{namespace}-{RELEASE}", f"{namespace}-{RELEASE}-edit", f"{namespace}-{RELEASE}-view"]
    with helm.Config(kubeconfig_path=kubeconfig, namespace=namespace) as cfg:
        installed = install_client_side(cfg, RELEASE, {"replicaCount": 0}, namespace=namespace)
        try:
            yield cfg, installed
        finally:
            cfg.uninstall(RELEASE, ignore_not_found=True, timeout=60)
            # Cluster-scoped objects outlive the namespace: make sure none is left behind
            # even when the test failed before its own uninstall. The CRDs stay (Helm never
            # deletes them, and other tests use them).
            rbac = client.RbacAuthorizationV1Api(api_client)
            for name in cluster_roles:
                for delete in (rbac.delete_cluster_role, rbac.delete_cluster_role_binding):
                    gone(lambda: delete(name))


def test_install_list_uninstall(release, namespace, api_client):
    from kubernetes import client
    cfg, installed = release
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    ext = client.ApiextensionsV1Api(api_client)
    authz = client.AuthorizationV1Api(api_client)

    assert installed["status"] == "deployed"
    assert installed["revision"] == 1

    # 1. The CRDs are there (installed by this chart or already present: Helm skips those).
    served = {crd.metadata.name for crd in ext.list_custom_resource_definition().items}
    assert set(CRDS) <= served

    # 2. The release's objects exist, labelled and bound as the chart says.
    account = core.read_namespaced_service_account(RELEASE, namespace)
    assert account.metadata.labels["app.kubernetes.io/instance"] == RELEASE
    deployment = apps.read_namespaced_deployment(RELEASE, namespace)
    assert deployment.spec.replicas == 0
    assert deployment.spec.template.spec.service_account_name == RELEASE
    assert deployment.spec.template.spec.containers[0].image == "podbatch/operator:0.1.0"
    assert core.read_namespaced_service(f"{RELEASE}-metrics", namespace).spec.ports[0].port == 8080
    role = rbac.read_cluster_role(f"{namespace}-{RELEASE}")
    assert any("nodes" in (r.resources or []) for r in role.rules)
    binding = rbac.read_cluster_role_binding(f"{namespace}-{RELEASE}")
    assert binding.role_ref.name == role.metadata.name
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [("ServiceAccount", RELEASE, namespace)]

    # 3. The API server lets the operator's account do what the operator does, anywhere.
    user = f"system:serviceaccount:{namespace}:{RELEASE}"
    assert may(authz, user, verb="create", resource="pods", namespace="default")
    assert may(authz, user, verb="create", resource="pods", namespace=namespace)
    assert may(authz, user, verb="patch", resource="nodes", subresource="status")
    assert may(authz, user, verb="create", resource="nodes")
    assert may(authz, user, verb="patch", group="podbatch.io", resource="tasks", subresource="status",
               namespace="default")
    assert may(authz, user, verb="watch", group="apiextensions.k8s.io", resource="customresourcedefinitions")
    assert may(authz, user, verb="create", group="events.k8s.io", resource="events", namespace="default")
    # ... and no more than that.
    assert not may(authz, user, verb="list", resource="secrets", namespace="default")
    assert not may(authz, user, verb="delete", resource="namespaces")

    # 4. Helm lists the release.
    listed = cfg.list()
    assert [(r["name"], r["status"], r["chart_version"], r["app_version"]) for r in listed] == [
        (RELEASE, "deployed", "0.1.0", "0.1.0")]

    # 5. Uninstall removes the release's objects, namespaced and cluster-scoped.
    cfg.uninstall(RELEASE, timeout=60)
    assert cfg.list(all_states=True) == []
    assert wait_until(lambda: gone(lambda: apps.read_namespaced_deployment(RELEASE, namespace)))
    assert wait_until(lambda: gone(lambda: core.read_namespaced_service(f"{RELEASE}-metrics", namespace)))
    assert wait_until(lambda: gone(lambda: core.read_namespaced_service_account(RELEASE, namespace)))
    assert wait_until(lambda: gone(lambda: rbac.read_cluster_role(f"{namespace}-{RELEASE}")))
    assert wait_until(lambda: gone(lambda: rbac.read_cluster_role_binding(f"{namespace}-{RELEASE}")))
    # The CRDs stay: deleting them would delete every user's Pools, Jobs and Tasks.
    assert set(CRDS) <= {crd.metadata.name for crd in ext.list_custom_resource_definition().items}


def test_edit_role_users_may_run_jobs(release, namespace, api_client):
    """The aggregated roles make the built-in `edit` role cover the podbatch kinds."""
    from kubernetes import client
    rbac = client.RbacAuthorizationV1Api(api_client)
    authz = client.AuthorizationV1Api(api_client)
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="alice-edit"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="edit"),
        subjects=[client.RbacV1Subject(kind="User", name="alice", api_group="rbac.authorization.k8s.io")],
    ))

    def alice_may(verb: str, resource: str) -> bool:
        review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user="alice", resource_attributes=client.V1ResourceAttributes(
                verb=verb, group="podbatch.io", resource=resource, namespace=namespace)))
        return bool(authz.create_subject_access_review(review).status.allowed)

    # The cluster's aggregation controller folds the chart's role into `edit` shortly.
    assert wait_until(lambda: alice_may("create", "jobs"), timeout=60)
    assert alice_may("delete", "tasks") and alice_may("list", "pools")
    # Only inside her namespace.
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user="alice", resource_attributes=client.V1ResourceAttributes(
            verb="create", group="podbatch.io", resource="jobs", namespace="default")))
    assert not authz.create_subject_access_review(review).status.allowed
