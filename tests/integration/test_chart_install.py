"""The chart installed for real: `helm install`, the operator runs in the cluster from its
image, does a job, is upgraded, and `helm uninstall` takes it all away again.

Helm's own Go library (helm-python-sdk) installs the chart into a fresh namespace of
the cluster under test, with the operator image built by hack/build-image.sh (`make
image`: cached under ~/.cache/podbatch/images, imported into the local cluster's
containerd on both real nodes; pull policy Never, so a missing image fails at once). The
operator pod runs under the chart's restricted security context (read-only root
filesystem, non-root, no privilege escalation, no capabilities, RuntimeDefault seccomp),
logs in with its ServiceAccount, and serves only the release's namespace, whose name
matches no test session's pattern (`pb<session>-*`): the session's own operator and this
one never act on the same objects. RBAC is on in the local cluster, so a rule the chart
lacks fails here rather than in a user's operator log; SubjectAccessReviews check the
rules the operator needs beyond what the job exercises.

Helm 4 applies a release (and its CRDs) server-side by default. A Kubernetes 1.20 API
server cannot apply our CRDs server-side: its schema of CustomResourceDefinition
predates `x-kubernetes-validations` (CEL rules, 1.25+), so the apply is refused with
"field not declared in schema", while a plain create keeps the CRD and drops the CEL
rules, as 1.20 does for every client. So the release is installed the way a 1.20 user
runs `helm install --server-side=false`; `Config.install` of helm-python-sdk 0.2 has no
keyword for that option, so `install_client_side` passes it to the same native call
(an upgrade keeps the release's way of applying).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import helm_python as helm  # helm-python-sdk, in the test extra
import pytest

from kit import Objects, job, kwok_pool, sim, task, wait_for
from podbatch.core import pods


pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podbatch"
RELEASE = "podbatch"  # fullname is then just "podbatch"
VERSION = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
IMAGE = f"docker.io/podbatch/operator:{VERSION}"   # what the chart's podbatch/operator:<appVersion> means
CRDS = ["pools.podbatch.io", "computenodes.podbatch.io", "jobs.podbatch.io", "tasks.podbatch.io",
        "jobschedules.podbatch.io"]
REAL_NODE_LABEL = "local.podbatch.io/real-node"
LOCAL_KUBECONFIG = Path(os.environ.get("PODBATCH_CACHE", Path.home() / ".cache/podbatch")) / "cluster/kubeconfig"
TASKS = 6


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
        namespace: str | None = None, name: str | None = None) -> bool:
    from kubernetes import client
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=user,
        groups=["system:serviceaccounts", "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(
            verb=verb, group=group, resource=resource, subresource=subresource or None, namespace=namespace,
            name=name),
    ))
    return bool(authz.create_subject_access_review(review).status.allowed)


def node_has_image(core, image: str) -> bool:
    return any(image in (img.names or []) for node in core.list_node().items for img in (node.status.images or []))


@pytest.fixture(scope="session")
def operator_image(kubeconfig, core_v1) -> str:
    """The operator image on the cluster's nodes. On the local cluster hack/build-image.sh
    builds it (once; later runs find it in the cache and on the nodes in seconds) and
    imports it into both real nodes' containerd. Another cluster's nodes must have been
    given the image already (~/.cache/podbatch/images/podbatch-operator.tar)."""
    local = Path(kubeconfig).resolve() == LOCAL_KUBECONFIG.resolve()
    if not local and node_has_image(core_v1, IMAGE):
        return IMAGE
    if os.geteuid() != 0:
        pytest.skip(f"{IMAGE} is not on the cluster's nodes, and building it (hack/build-image.sh) needs root")
    started = time.monotonic()
    build = subprocess.run([str(ROOT / "hack" / "build-image.sh"), *([] if local else ["--no-import"])],
                           capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, f"hack/build-image.sh failed:\n{build.stderr[-3000:]}"
    print(f"operator image ready in {time.monotonic() - started:.0f}s:\n{build.stderr}")
    if not local and not node_has_image(core_v1, IMAGE):
        pytest.skip(f"{IMAGE} is built (~/.cache/podbatch/images/podbatch-operator.tar) but this cluster's "
                    "nodes do not have it: import it into their containerd (ctr -n k8s.io images import <tar>)")
    return IMAGE


@pytest.fixture()
def chart_namespace(core_v1):
    """A namespace of its own, outside every test session's `pb<session>-*`."""
    from kubernetes import client
    name = f"podbatch-helm-{uuid.uuid4().hex[:8]}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"podbatch.io/test": "1"})))
    yield name
    gone(lambda: core_v1.delete_namespace(name))


@pytest.fixture()
def release(kubeconfig, chart_namespace, api_client, custom_api, core_v1):
    """Installs the chart as RELEASE (values from the test) and leaves nothing behind."""
    from kubernetes import client
    namespace = chart_namespace
    cluster_roles = [f"{namespace}-{RELEASE}", f"{namespace}-{RELEASE}-edit", f"{namespace}-{RELEASE}-view"]
    with helm.Config(kubeconfig_path=kubeconfig, namespace=namespace) as cfg:
        try:
            yield lambda values: install_client_side(cfg, RELEASE, values, namespace=namespace), cfg
        finally:
            # Pools first, while the operator (if it still runs) releases their nodes.
            objects = Objects(custom_api, namespace)
            for pool in objects.list("Pool"):
                objects.delete("Pool", pool["metadata"]["name"])
            wait_until(lambda: not objects.list("Pool"), timeout=60)
            cfg.uninstall(RELEASE, ignore_not_found=True, timeout=60)
            # Cluster-scoped objects outlive the namespace: make sure none is left behind
            # even when the test failed before its own uninstall. The CRDs stay (Helm never
            # deletes them, and other tests use them).
            rbac = client.RbacAuthorizationV1Api(api_client)
            for name in cluster_roles:
                for delete in (rbac.delete_cluster_role, rbac.delete_cluster_role_binding):
                    gone(lambda: delete(name))
            # Without an operator nothing removes the finalizers of what a failed test left.
            for kind in ("Task", "Job", "ComputeNode", "Pool"):
                for obj in objects.list(kind):
                    if obj["metadata"].get("finalizers"):
                        objects.patch(kind, obj["metadata"]["name"], {"metadata": {"finalizers": None}})
            for node in core_v1.list_node(label_selector="podbatch.io/pool").items:
                if node.metadata.labels["podbatch.io/pool"].startswith(f"{namespace}."):
                    gone(lambda: core_v1.delete_node(node.metadata.name))


def operator_pods(core, namespace: str) -> list:
    return [p for p in core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={RELEASE}").items
            if not p.metadata.deletion_timestamp]


def describe_pods(core, namespace: str) -> str:
    """What `kubectl describe` and `kubectl logs` would show of the operator's pods."""
    lines = []
    for pod in core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={RELEASE}").items:
        lines.append(f"pod {pod.metadata.name} on {pod.spec.node_name}: {pod.status.phase}")
        for status in pod.status.container_statuses or []:
            lines.append(f"  ready={status.ready} restarts={status.restart_count} state={status.state.to_dict()}")
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod.metadata.name}")
        lines += [f"  event {e.reason}: {e.message}" for e in events.items]
        try:
            lines.append(core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=40))
        except Exception as exc:   # not started yet
            lines.append(f"  (no log: {exc})")
    return "\n".join(lines)


def ready_operator_pod(core, namespace: str, *, other_than: str = "", timeout: float = 180):
    """The one operator pod, once it is Ready (and is not `other_than`)."""
    def check():
        pods = operator_pods(core, namespace)
        if len(pods) == 1 and pods[0].metadata.name != other_than and \
                any(c.type == "Ready" and c.status == "True" for c in pods[0].status.conditions or []):
            return pods[0]
        return None
    pod = wait_until(check, timeout=timeout, interval=1)
    assert pod, f"no Ready operator pod within {timeout}s:\n{describe_pods(core, namespace)}"
    return pod


def refusals(log: str) -> list[str]:
    """Lines of an operator log that say the API server refused it something: a 403 from
    the engine, or kopf running without a watch it was not allowed."""
    return [line for line in log.splitlines()
            if "forbidden" in line.lower() or " 403 " in line or "Not enough permissions" in line]


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in Prometheus' text format."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


def test_operator_runs_from_the_chart(operator_image, release, chart_namespace, api_client, custom_api, crds, nodesim):
    from kubernetes import client
    namespace = chart_namespace
    install, cfg = release
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    ext = client.ApiextensionsV1Api(api_client)
    authz = client.AuthorizationV1Api(api_client)
    coordination = client.CoordinationV1Api(api_client)

    values = {"replicaCount": 1, "image": {"pullPolicy": "Never"}, "config": {"namespaces": [namespace]}}
    if core.list_node(label_selector=f"{REAL_NODE_LABEL}=true").items:
        # The local cluster: the image is on its real nodes only.
        values["nodeSelector"] = {REAL_NODE_LABEL: "true"}
    started = time.monotonic()

    def step(what: str) -> None:   # where the time goes, shown with the test's output
        print(f"{time.monotonic() - started:6.1f}s {what}")

    installed = install(values)
    assert (installed["status"], installed["revision"]) == ("deployed", 1)
    step("installed")

    # 1. The CRDs are there (installed by this chart or already present: Helm skips those).
    assert set(CRDS) <= {crd.metadata.name for crd in ext.list_custom_resource_definition().items}

    # 2. The release's objects exist, labelled and bound as the chart says.
    account = core.read_namespaced_service_account(RELEASE, namespace)
    assert account.metadata.labels["app.kubernetes.io/instance"] == RELEASE
    deployment = apps.read_namespaced_deployment(RELEASE, namespace)
    assert deployment.spec.replicas == 1
    assert deployment.spec.template.spec.service_account_name == RELEASE
    assert deployment.spec.template.spec.containers[0].image == f"podbatch/operator:{VERSION}"
    assert core.read_namespaced_service(f"{RELEASE}-metrics", namespace).spec.ports[0].port == 8080
    role = rbac.read_cluster_role(f"{namespace}-{RELEASE}")
    binding = rbac.read_cluster_role_binding(f"{namespace}-{RELEASE}")
    assert binding.role_ref.name == role.metadata.name
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects] == [("ServiceAccount", RELEASE, namespace)]
    assert coordination.read_namespaced_lease(RELEASE, namespace).metadata.labels["app.kubernetes.io/instance"] == RELEASE

    # 3. The API server lets the operator's account do what the operator does, and no more.
    user = f"system:serviceaccount:{namespace}:{RELEASE}"
    assert may(authz, user, verb="create", resource="pods", namespace="default")
    assert may(authz, user, verb="patch", resource="nodes")
    assert may(authz, user, verb="create", resource="nodes")
    assert may(authz, user, verb="patch", group="podbatch.io", resource="tasks", subresource="status",
               namespace="default")
    assert may(authz, user, verb="watch", group="apiextensions.k8s.io", resource="customresourcedefinitions")
    assert may(authz, user, verb="create", resource="events", namespace="default")
    # The job manager's Role: the API server lets the operator create it only because the
    # operator holds every rule of it (escalation check) — exercised for real here.
    assert may(authz, user, verb="create", group="rbac.authorization.k8s.io", resource="roles", namespace="default")
    assert may(authz, user, verb="update", group="podbatch.io", resource="tasks", namespace="default")
    assert may(authz, user, verb="create", group="coordination.k8s.io", resource="leases", namespace=namespace)
    for verb in ("get", "update"):   # the release's own Lease, no other
        assert may(authz, user, verb=verb, group="coordination.k8s.io", resource="leases", namespace=namespace,
                   name=RELEASE), verb
        assert not may(authz, user, verb=verb, group="coordination.k8s.io", resource="leases", namespace=namespace,
                       name="another-operator"), verb
    assert not may(authz, user, verb="update", group="coordination.k8s.io", resource="leases",
                   namespace="kube-node-lease")
    # Least privilege (tests/unit/test_rbac_walk.py derives the whole role from the code).
    for verb in ("get", "list"):
        for resource in ("secrets", "configmaps"):
            assert not may(authz, user, verb=verb, resource=resource, namespace="default"), (verb, resource)
    assert not may(authz, user, verb="delete", resource="namespaces")
    assert not may(authz, user, verb="update", resource="nodes")
    assert not may(authz, user, verb="deletecollection", group="podbatch.io", resource="tasks", namespace="default")

    # 4. The operator pod becomes Ready under the restricted security context, from the
    # image on the node, and takes the Lease.
    pod = ready_operator_pod(core, namespace)
    step(f"operator pod {pod.metadata.name} Ready on {pod.spec.node_name}")
    security = pod.spec.containers[0].security_context
    assert security.read_only_root_filesystem and security.run_as_non_root
    assert security.allow_privilege_escalation is False and security.capabilities.drop == ["ALL"]
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"
    assert pod.spec.security_context.run_as_user == 65532
    assert pod.spec.containers[0].image_pull_policy == "Never"
    assert wait_until(lambda: coordination.read_namespaced_lease(RELEASE, namespace).spec.holder_identity
                      == pod.metadata.name, timeout=60), describe_pods(core, namespace)
    step("Lease held")

    # 5. A quickstart-style job (kwok pool of 2 nodes with 2 slots) completes through it.
    objects = Objects(custom_api, namespace)
    objects.create(kwok_pool("quickstart", 2, slots=2))
    objects.create(job("quickstart", "quickstart", onAllTasksComplete="terminatejob"))
    for i in range(1, TASKS + 1):
        objects.create(task(f"quickstart-{i}", "quickstart", "/bin/sh -c 'echo hello from $AZ_BATCH_TASK_ID'",
                            annotations=sim(duration=1)))
    try:
        objects.wait_job_done("quickstart", timeout=180)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe_pods(core, namespace)}") from None
    step("job completed")
    tasks = [t for t in objects.list("Task") if t["spec"]["jobName"] == "quickstart"]
    assert len(tasks) == TASKS
    assert all(t["status"]["state"] == "completed" and t["status"]["executionInfo"]["exitCode"] == 0 for t in tasks), \
        [t.get("status") for t in tasks]
    # their pods read the task wrapper from the ConfigMap the operator created under the ClusterRole
    assert core.read_namespaced_config_map(pods.WRAPPER_CONFIGMAP, namespace).immutable

    # The operator posted its Events (Kube.post_event takes a 403 silently: look for them).
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=quickstart").items
    assert "JobCompleted" in {e.reason for e in events}, [(e.reason, e.message) for e in events]

    # A job manager with a token (authenticationTokenSettings.access [job]): the operator
    # creates its ServiceAccount, Role and RoleBinding, which the API server allows only
    # if the operator itself holds every rule of that Role (RBAC escalation check).
    # It has preparation and release tasks too: every kind of special task, in-cluster.
    objects.create(job("jm", "quickstart", jobManagerTask={
        "commandLine": "/bin/true", "authenticationTokenSettings": {"access": ["job"]}},
        jobPreparationTask={"commandLine": "/bin/true"}, jobReleaseTask={"commandLine": "/bin/true"}))
    try:
        st = objects.wait_job_done("jm", timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{describe_pods(core, namespace)}") from None
    assert [r["result"] for r in st.get("preparationTasks") or []] == ["success"], st
    assert [r["result"] for r in st.get("releaseTasks") or []] == ["success"], st
    role = rbac.read_namespaced_role("jm-jobmanager", namespace)
    assert {r for rule in role.rules for r in rule.resources} >= {"tasks", "jobs"}
    assert rbac.read_namespaced_role_binding("jm-jobmanager", namespace).subjects[0].name == "jm-jobmanager"
    assert core.read_namespaced_service_account("jm-jobmanager", namespace)
    step("job manager's account created; preparation and release tasks ran")

    # 6. Its metrics, scraped through the chart's Service (the API server's service proxy).
    scraped = core.connect_get_namespaced_service_proxy_with_path(f"{RELEASE}-metrics:metrics", namespace, "metrics")
    assert metric(scraped, "podbatch_bindings_total") >= TASKS, scraped[:2000]
    assert metric(scraped, "podbatch_reconcile_pass_seconds_count") > 0

    # Nothing the operator did was refused: the chart's roles cover what it calls.
    log = core.read_namespaced_pod_log(pod.metadata.name, namespace)
    assert not refusals(log), log[-3000:]

    # 7. `helm upgrade` with a changed value rolls the pod; the new one takes the Lease over.
    upgraded = cfg.upgrade(str(CHART), RELEASE, {"config": {"logLevel": "debug"}}, namespace=namespace,
                           reuse_values=True, timeout=120)
    assert (upgraded["status"], upgraded["revision"]) == ("deployed", 2)
    new_pod = ready_operator_pod(core, namespace, other_than=pod.metadata.name)
    step(f"upgraded: operator pod {new_pod.metadata.name} Ready")
    env = {e.name: e.value for e in new_pod.spec.containers[0].env}
    assert env["PODBATCH_LOG_LEVEL"] == "debug" and env["PODBATCH_NAMESPACES"] == namespace
    assert wait_until(lambda: gone(lambda: core.read_namespaced_pod(pod.metadata.name, namespace)), timeout=60)
    assert wait_until(lambda: coordination.read_namespaced_lease(RELEASE, namespace).spec.holder_identity
                      == new_pod.metadata.name, timeout=60), describe_pods(core, namespace)
    step("Lease taken over")

    # 8. The user's work goes while the operator runs (the pool's nodes are released, the
    # tasks' pods collected), then the release.
    assert not refusals(core.read_namespaced_pod_log(new_pod.metadata.name, namespace)), \
        core.read_namespaced_pod_log(new_pod.metadata.name, namespace)[-3000:]
    objects.delete("Job", "quickstart")
    objects.delete("Job", "jm")
    objects.delete("Pool", "quickstart")
    wait_for("the job, its tasks and the pool deleted",
             lambda: not any(objects.list(kind) for kind in ("Job", "Task", "Pool", "ComputeNode")), 120)
    step("job and pool deleted")
    cfg.uninstall(RELEASE, timeout=60)
    assert cfg.list(all_states=True) == []
    checks = {
        "deployment": lambda: apps.read_namespaced_deployment(RELEASE, namespace),
        "service": lambda: core.read_namespaced_service(f"{RELEASE}-metrics", namespace),
        "service account": lambda: core.read_namespaced_service_account(RELEASE, namespace),
        "lease": lambda: coordination.read_namespaced_lease(RELEASE, namespace),
        "role": lambda: rbac.read_namespaced_role(f"{RELEASE}-leader-election", namespace),
        "role binding": lambda: rbac.read_namespaced_role_binding(f"{RELEASE}-leader-election", namespace),
        "cluster role": lambda: rbac.read_cluster_role(f"{namespace}-{RELEASE}"),
        "edit role": lambda: rbac.read_cluster_role(f"{namespace}-{RELEASE}-edit"),
        "cluster role binding": lambda: rbac.read_cluster_role_binding(f"{namespace}-{RELEASE}"),
    }
    for what, read in checks.items():
        assert wait_until(lambda: gone(read)), f"{what} left after helm uninstall"
    assert wait_until(lambda: not core.list_namespaced_pod(namespace).items, timeout=90), \
        [p.metadata.name for p in core.list_namespaced_pod(namespace).items]
    step("uninstalled")
    assert not [n.metadata.name for n in core.list_node(label_selector="podbatch.io/pool").items
                if n.metadata.labels["podbatch.io/pool"].startswith(f"{namespace}.")]
    # The CRDs stay: deleting them would delete every user's Pools, Jobs and Tasks.
    assert set(CRDS) <= {crd.metadata.name for crd in ext.list_custom_resource_definition().items}


def test_edit_role_users_may_run_jobs(release, chart_namespace, api_client):
    """The aggregated roles make the built-in `edit` role cover the podbatch kinds (no
    operator needed for that: replicaCount 0)."""
    from kubernetes import client
    namespace = chart_namespace
    install, cfg = release
    installed = install({"replicaCount": 0})
    assert installed["status"] == "deployed"
    assert [(r["name"], r["status"], r["chart_version"], r["app_version"]) for r in cfg.list()] == [
        (RELEASE, "deployed", "0.1.0", VERSION)]
    rbac = client.RbacAuthorizationV1Api(api_client)
    authz = client.AuthorizationV1Api(api_client)
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="alice-edit"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="edit"),
        subjects=[client.RbacV1Subject(kind="User", name="alice", api_group="rbac.authorization.k8s.io")],
    ))

    def alice_may(verb: str, resource: str, ns: str = namespace) -> bool:
        review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
            user="alice", resource_attributes=client.V1ResourceAttributes(
                verb=verb, group="podbatch.io", resource=resource, namespace=ns)))
        return bool(authz.create_subject_access_review(review).status.allowed)

    # The cluster's aggregation controller folds the chart's role into `edit` shortly.
    assert wait_until(lambda: alice_may("create", "jobs"), timeout=60)
    assert alice_may("delete", "tasks") and alice_may("list", "pools")
    # Only inside her namespace.
    assert not alice_may("create", "jobs", "default")
