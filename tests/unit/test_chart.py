"""The Helm chart, rendered and linted offline with Helm's own Go library.

helm-python-sdk carries Helm's SDK (no helm binary), so these tests see exactly what
`helm template` and `helm lint` would: the values schema, the helpers and every
template. They assert what a cluster admin would check before installing: names and
labels, the image and settings the operator gets, what its ClusterRole lets it do, and
that the switches (`rbac.create`, `serviceAccount.create`, the ServiceMonitor) work.
"""
from __future__ import annotations

import re
from pathlib import Path

import helm_python as helm  # helm-python-sdk, in the test extra
import pytest
import yaml


ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podbatch"
RELEASE = "pb"
NAMESPACE = "batch-ops"
FULLNAME = "pb-podbatch"
CLUSTER_ROLE = f"{NAMESPACE}-{FULLNAME}"
# apiVersions served by Kubernetes 1.20 and by current versions alike.
STABLE_APIS = {"v1", "apps/v1", "rbac.authorization.k8s.io/v1", "coordination.k8s.io/v1", "monitoring.coreos.com/v1",
               "scheduling.k8s.io/v1"}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values=None, *, name=RELEASE, namespace=NAMESPACE) -> list[dict]:
    """Render the chart and return its objects (NOTES.txt left out)."""
    manifests = chart.render(values or {}, name=name, namespace=namespace)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def only(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def kinds(objects: list[dict]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def allows(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", [])
        for r in rules
    )


def operator_container(objects: list[dict]) -> dict:
    deployment = only(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def env_of(container: dict) -> dict[str, str]:
    """The container's environment; a variable from the downward API reads `fieldRef:<path>`."""
    return {e["name"]: e["value"] if "value" in e else f"fieldRef:{e['valueFrom']['fieldRef']['fieldPath']}"
            for e in container["env"]}


def package_version() -> str:
    """The version in pyproject.toml (a regex: tomllib is not in Python 3.10)."""
    return re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


# What the operator gets besides the `config` values: the Lease it holds and a writable HOME.
LEADER_ENV = {
    "PODBATCH_LEADER_ELECTION": "true",
    "PODBATCH_LEASE_NAME": FULLNAME,
    "PODBATCH_LEASE_NAMESPACE": NAMESPACE,
    "PODBATCH_LEADER_IDENTITY": "fieldRef:metadata.name",
    "HOME": "/tmp",
}


# --- the chart as a whole -----------------------------------------------------------


def test_chart_metadata(chart):
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert (meta["name"], meta["version"], meta["appVersion"]) == ("podbatch", "0.1.0", "0.1.0")


def test_app_version_is_the_package_version(chart):
    """make image tags the operator image with pyproject's version; the chart's default image
    tag is its appVersion: they must be the same, or an install pulls an image nobody built."""
    assert chart.metadata["appVersion"] == package_version()
    assert operator_container(render(chart))["image"] == f"podbatch/operator:{package_version()}"
    # ... which is the image hack/build-image.sh builds (docker.io/ is what the short name means).
    assert 'NAME="docker.io/podbatch/operator:$VERSION"' in (ROOT / "hack" / "build-image.sh").read_text()


@pytest.mark.parametrize("values", [None, {"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "sa"},
                                           "metrics": {"serviceMonitor": {"enabled": True}}}])
def test_lint_is_clean_for_kubernetes_1_20(values):
    report = helm.lint(CHART, values, strict=True, kube_version="v1.20.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_lint_reports_values_that_break_the_schema():
    report = helm.lint(CHART, {"replicaCount": "x"})
    assert any(m["severity"] == 3 and "replicaCount" in m["error"] for m in report["messages"]), report


def test_chart_ships_the_crds(chart):
    names = sorted(Path(c["filename"]).name for c in chart.crds)
    assert names == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))   # make crds copies them
    assert {f"podbatch.io_{p}.yaml" for p in ("computenodes", "jobs", "jobschedules", "pools", "tasks")} <= set(names)


def test_default_render_has_the_operator_objects(chart):
    objects = render(chart)
    assert kinds(objects) == ["ClusterRole", "ClusterRole", "ClusterRole", "ClusterRoleBinding",
                              "Deployment", "Lease", "PriorityClass", "Role", "RoleBinding", "Service", "ServiceAccount"]
    for obj in objects:
        assert obj["apiVersion"] in STABLE_APIS, obj["apiVersion"]


def test_every_object_carries_the_standard_labels(chart):
    for obj in render(chart):
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "podbatch"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "0.1.0"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/part-of"] == "podbatch"
        assert labels["helm.sh/chart"] == "podbatch-0.1.0"
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "PriorityClass"):
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_fullname_follows_helm_create(chart):
    assert only(render(chart), "Deployment")["metadata"]["name"] == FULLNAME
    # A release name that already holds the chart name is not repeated.
    assert only(render(chart, name="podbatch"), "Deployment")["metadata"]["name"] == "podbatch"
    assert only(render(chart, {"fullnameOverride": "batch"}), "Deployment")["metadata"]["name"] == "batch"


# --- the Deployment -------------------------------------------------------------------


def test_deployment_rolls_over_to_a_standby(chart):
    deployment = only(render(chart), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    # The Lease lets only one pod act: the new pod comes up (standby) before the old goes.
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector == {"app.kubernetes.io/name": "podbatch", "app.kubernetes.io/instance": RELEASE}
    assert selector.items() <= pod_labels.items()


def test_without_leader_election_one_pod_goes_before_the_next_starts(chart):
    deployment = only(render(chart, {"leaderElection": {"enabled": False}}), "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


# --- high availability ------------------------------------------------------------------


def test_two_replicas_get_a_disruption_budget(chart):
    objects = render(chart, {"replicaCount": 2})
    assert only(objects, "Deployment")["spec"]["replicas"] == 2
    budget = only(objects, "PodDisruptionBudget")
    assert budget["apiVersion"] in ("policy/v1", "policy/v1beta1")   # v1beta1 before Kubernetes 1.21
    assert budget["metadata"]["namespace"] == NAMESPACE
    assert budget["spec"]["minAvailable"] == 1 and "maxUnavailable" not in budget["spec"]
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("values", [{}, {"replicaCount": 1}, {"replicaCount": 0},
                                    {"replicaCount": 2, "podDisruptionBudget": {"enabled": False}}])
def test_no_disruption_budget_that_would_block_drains(chart, values):
    """With one replica, minAvailable 1 would keep its node from ever being drained."""
    assert "PodDisruptionBudget" not in kinds(render(chart, values))


def test_operator_pods_prefer_distinct_nodes(chart):
    pod = only(render(chart, {"replicaCount": 2}), "Deployment")["spec"]["template"]["spec"]
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "podbatch", "app.kubernetes.io/instance": RELEASE}
    # A preference, never a requirement: a one-node cluster still runs both.
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"]["podAntiAffinity"]


def test_given_affinity_replaces_the_default(chart):
    mine = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "role", "operator": "In", "values": ["ops"]}]}]}}}
    pod = only(render(chart, {"affinity": mine}), "Deployment")["spec"]["template"]["spec"]
    assert pod["affinity"] == mine


def test_more_than_one_replica_needs_leader_election(chart):
    with pytest.raises(helm.HelmValuesError, match="/replicaCount"):
        render(chart, {"replicaCount": 2, "leaderElection": {"enabled": False}})
    assert only(render(chart, {"replicaCount": 1, "leaderElection": {"enabled": False}}), "Deployment")


def test_lint_is_clean_with_two_replicas():
    report = helm.lint(CHART, {"replicaCount": 2}, strict=True, kube_version="v1.20.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


# --- the operator container -------------------------------------------------------------


def test_operator_container_defaults(chart):
    container = operator_container(render(chart))
    assert container["image"] == "podbatch/operator:0.1.0"
    assert container["command"] == ["podbatch-operator"]
    assert "--liveness=http://0.0.0.0:8081/healthz" in container["args"]
    assert env_of(container) == {
        "PODBATCH_NAMESPACES": "",
        "PODBATCH_NODE_ROOT": "/var/lib/podbatch",
        "PODBATCH_TOOLS_IMAGE": "busybox",
        "PODBATCH_PLACEHOLDER_IMAGE": "registry.k8s.io/pause:3.9",
        "PODBATCH_PLACEHOLDER_PRIORITY_CLASS": f"{FULLNAME}-placeholder",
        "PODBATCH_METRICS_PORT": "8080",
        "PODBATCH_LOG_LEVEL": "info",
        "PODBATCH_LOG_FORMAT": "text",
        "PODBATCH_REQUIRE_GRANTS": "false",
        **LEADER_ENV,
    }
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for kind in ("livenessProbe", "readinessProbe"):
        probe = container[kind]["httpGet"]
        assert probe["path"] == "/healthz" and ports[probe["port"]] == 8081, kind
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_config_values_become_podbatch_env(chart):
    values = {
        "image": {"repository": "registry.example/podbatch", "tag": "dev", "pullPolicy": "Always"},
        "config": {"namespaces": ["team-a", "team-b"], "nodeRoot": "/data/batch", "toolsImage": "alpine:3",
                   "metricsPort": 9100, "logLevel": "debug", "logFormat": "json", "requireGrants": True,
                   "placeholderImage": "registry.example/pause:1",
                   "placeholderPriorityClass": {"create": False, "name": "batch-low"}},
        "health": {"port": 9000},
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
        "extraArgs": ["--verbose"],
    }
    objects = render(chart, values)
    container = operator_container(objects)
    assert container["image"] == "registry.example/podbatch:dev"
    assert container["imagePullPolicy"] == "Always"
    assert env_of(container) == {
        "PODBATCH_NAMESPACES": "team-a,team-b",
        "PODBATCH_NODE_ROOT": "/data/batch",
        "PODBATCH_TOOLS_IMAGE": "alpine:3",
        "PODBATCH_PLACEHOLDER_IMAGE": "registry.example/pause:1",
        "PODBATCH_PLACEHOLDER_PRIORITY_CLASS": "batch-low",
        "PODBATCH_METRICS_PORT": "9100",
        "PODBATCH_LOG_LEVEL": "debug",
        "PODBATCH_LOG_FORMAT": "json",
        "PODBATCH_REQUIRE_GRANTS": "true",
        **LEADER_ENV,
        "EXTRA": "1",
    }
    assert container["args"] == ["--liveness=http://0.0.0.0:9000/healthz", "--verbose"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9100, "health": 9000}
    service = only(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert not [o for o in objects if o["kind"] == "PriorityClass"]   # create: false


def test_security_context_meets_restricted_pod_security(chart):
    deployment = only(render(chart), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert container["readOnlyRootFilesystem"] is True
    assert not pod.get("hostNetwork") and not pod.get("hostPID")
    assert all("hostPath" not in v for v in pod.get("volumes", []))
    # The one writable place (HOME too) is an emptyDir.
    (tmp,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert {v["name"]: v for v in pod["volumes"]}[tmp["name"]] == {"name": tmp["name"], "emptyDir": {}}


def test_metrics_service_selects_the_operator_pod(chart):
    objects = render(chart)
    service = only(objects, "Service")
    pod_labels = only(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}]


def test_service_monitor_is_optional(chart):
    assert "ServiceMonitor" not in kinds(render(chart))
    objects = render(chart, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor = only(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    service_labels = only(objects, "Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()


def test_service_monitor_without_service_is_refused(chart):
    with pytest.raises(helm.HelmRenderError, match="metrics.service.enabled"):
        render(chart, {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})


# --- RBAC -----------------------------------------------------------------------------


def test_cluster_role_grants_what_the_operator_does(chart):
    """A few permissions a reader looks for first; tests/unit/test_rbac_walk.py derives all
    of them from the code and checks the role holds exactly those."""
    rules = only(render(chart), "ClusterRole", CLUSTER_ROLE)["rules"]
    for kind in ("pools", "computenodes", "jobs", "tasks", "jobschedules"):
        for verb in ("get", "list", "watch"):
            assert allows(rules, "podbatch.io", kind, verb), (kind, verb)
        assert allows(rules, "podbatch.io", f"{kind}/status", "patch"), kind
    for verb in ("list", "watch", "create", "delete", "patch"):
        assert allows(rules, "", "pods", verb), verb
        assert allows(rules, "", "nodes", verb), verb
    assert allows(rules, "", "pods/log", "get")
    assert allows(rules, "", "events", "create")
    assert allows(rules, "rbac.authorization.k8s.io", "roles", "create")
    assert allows(rules, "apiextensions.k8s.io", "customresourcedefinitions", "watch")


def test_cluster_role_is_least_privilege(chart):
    rules = only(render(chart), "ClusterRole", CLUSTER_ROLE)["rules"]
    for rule in rules:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
    assert not allows(rules, "", "secrets", "get") and not allows(rules, "", "configmaps", "get"), \
        "resource files are mounted by the kubelet; the operator reads no Secret or ConfigMap"
    assert not allows(rules, "", "pods", "update"), "pods are patched, never replaced"
    # The leader-election Lease is in the release namespace: a Role grants it there, not
    # this ClusterRole everywhere (kopf peering is not used either).
    assert not allows(rules, "coordination.k8s.io", "leases", "create")
    assert not allows(rules, "rbac.authorization.k8s.io", "clusterroles", "create")


def test_leader_election_lease_and_role(chart):
    objects = render(chart)
    lease = only(objects, "Lease")
    assert lease["apiVersion"] == "coordination.k8s.io/v1"
    assert (lease["metadata"]["name"], lease["metadata"]["namespace"]) == (FULLNAME, NAMESPACE)
    assert "spec" not in lease, "the operator writes the spec; Helm must not reset it on upgrade"
    role = only(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    for verb in ("get", "create", "update"):
        assert allows(role["rules"], "coordination.k8s.io", "leases", verb), verb
    for verb in ("list", "watch", "patch", "delete"):
        assert not allows(role["rules"], "coordination.k8s.io", "leases", verb), verb
    assert {r["resources"][0] for r in role["rules"]} == {"leases"}
    # Only the release's own Lease may be read and renewed (create cannot be limited by name).
    assert [r.get("resourceNames") for r in role["rules"] if "update" in r["verbs"]] == [[FULLNAME]]
    binding = only(objects, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]


def test_leader_election_can_be_renamed_or_turned_off(chart):
    renamed = render(chart, {"leaderElection": {"leaseName": "batch-leader"}})
    assert only(renamed, "Lease")["metadata"]["name"] == "batch-leader"
    assert env_of(operator_container(renamed))["PODBATCH_LEASE_NAME"] == "batch-leader"
    off = render(chart, {"leaderElection": {"enabled": False}})
    assert not {"Lease", "Role", "RoleBinding"} & set(kinds(off))
    env = env_of(operator_container(off))
    assert env["PODBATCH_LEADER_ELECTION"] == "false"
    assert not {"PODBATCH_LEASE_NAME", "PODBATCH_LEASE_NAMESPACE", "PODBATCH_LEADER_IDENTITY"} & set(env)


def test_cluster_role_binding_binds_the_service_account(chart):
    objects = render(chart)
    binding = only(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE}
    account = only(objects, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": NAMESPACE}]
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"] == FULLNAME


def test_user_roles_aggregate_into_edit_and_view(chart):
    objects = render(chart)
    edit = only(objects, "ClusterRole", f"{CLUSTER_ROLE}-edit")
    view = only(objects, "ClusterRole", f"{CLUSTER_ROLE}-view")
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert allows(edit["rules"], "podbatch.io", "jobs", "create")
    assert not allows(view["rules"], "podbatch.io", "jobs", "create")
    without = render(chart, {"rbac": {"aggregateToDefaultRoles": False}})
    assert [o["metadata"]["name"] for o in without if o["kind"] == "ClusterRole"] == [CLUSTER_ROLE]


def test_rbac_create_false_renders_no_cluster_roles(chart):
    objects = render(chart, {"rbac": {"create": False}})
    assert not {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} & set(kinds(objects))
    assert only(objects, "Lease")   # the Lease is not RBAC: still the release's
    # The ServiceAccount is a separate switch.
    assert only(objects, "ServiceAccount")["metadata"]["name"] == FULLNAME


def test_service_account_create_false_uses_the_given_name(chart):
    objects = render(chart, {"serviceAccount": {"create": False, "name": "batch-operator"}})
    assert "ServiceAccount" not in kinds(objects)
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "batch-operator"
    assert only(objects, "ClusterRoleBinding")["subjects"][0]["name"] == "batch-operator"


def test_service_account_create_false_needs_a_name(chart):
    with pytest.raises(helm.HelmRenderError, match="serviceAccount.name is required"):
        render(chart, {"serviceAccount": {"create": False}})


def test_service_account_name_can_be_chosen(chart):
    objects = render(chart, {"serviceAccount": {"name": "podbatch-sa", "annotations": {"a": "b"}}})
    account = only(objects, "ServiceAccount")
    assert account["metadata"]["name"] == "podbatch-sa"
    assert account["metadata"]["annotations"] == {"a": "b"}
    assert only(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "podbatch-sa"


# --- the values schema ----------------------------------------------------------------


def test_default_values_pass_the_schema(chart):
    chart.validate_schema({})
    chart.validate_schema(chart.values)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicaCount": "x"}, "/replicaCount"),
        ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "/replicaCount"),
        ({"replicaCount": -1}, "/replicaCount"),
        ({"replicaCuont": 1}, "replicaCuont"),
        ({"podDisruptionBudget": {"enabled": "yes"}}, "/podDisruptionBudget/enabled"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"config": {"namespaces": "team-a"}}, "/config/namespaces"),
        ({"config": {"nodeRoot": "relative/dir"}}, "/config/nodeRoot"),
        ({"config": {"metricsPort": 70000}}, "/config/metricsPort"),
        ({"config": {"logLevel": "verbose"}}, "/config/logLevel"),
        ({"rbac": {"create": "yes"}}, "/rbac/create"),
        ({"serviceAccount": {"create": "no"}}, "/serviceAccount/create"),
        ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "/metrics/serviceMonitor/interval"),
        ({"leaderElection": {"enabled": "yes"}}, "/leaderElection/enabled"),
        ({"leaderElection": {"leaseName": "Not_A_Name"}}, "/leaderElection/leaseName"),
    ],
)
def test_schema_rejects_bad_values(chart, values, where):
    with pytest.raises(helm.HelmValuesError, match=where):
        chart.validate_schema(values)
    # An install renders through the same schema, so it fails the same way.
    with pytest.raises(helm.HelmValuesError):
        render(chart, values)


def test_replica_count_zero_is_allowed(chart):
    assert only(render(chart, {"replicaCount": 0}), "Deployment")["spec"]["replicas"] == 0


# --- NOTES.txt ------------------------------------------------------------------------


def test_notes_tell_the_user_what_to_do_next(chart):
    notes = chart.render({}, name=RELEASE, namespace=NAMESPACE)["podbatch/templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}" in notes
    assert "examples/quickstart" in notes
    assert "watches every namespace" in notes
    scoped = chart.render({"config": {"namespaces": ["team-a"]}, "rbac": {"create": False}},
                          name=RELEASE, namespace=NAMESPACE)["podbatch/templates/NOTES.txt"]
    assert "only these namespaces: team-a" in scoped
    assert "rbac.create=false" in scoped
