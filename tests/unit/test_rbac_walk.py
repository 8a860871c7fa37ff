"""Least privilege, proven: the chart's RBAC holds exactly what the operator calls.

The operator's API calls are derived from the code, not listed by hand:

- the engine's: every method of `controllers.kube.Kube` is mapped to the (group,
  resource, verb) it calls in `KUBE_CALLS` below; a method without an entry fails the
  test. Methods that take a podbatch kind (`create_object("tasks", …)`) are expanded by
  walking their call sites in the operator's source, so a new call on a new kind needs a
  new rule. No other module of the operator may build an API client of its own;
- the leader elector's: every method of `controllers.leader.KubeLeases`, held by the
  namespaced Role of templates/leader-election.yaml (not the ClusterRole);
- kopf's: the kinds its handlers serve (read from kopf's registry after importing
  controllers.handlers) are listed and watched; kinds with change handlers are patched
  (finalizers, progress annotations); kopf posts core Events; its observers list and
  watch namespaces (for config.namespaces patterns) and CRDs;
- escalation: the operator creates the job manager's Role (controllers/special.py
  JM_ROLE_RULES), which the API server allows only to whoever holds every rule of it;
  changing an object's ownerReferences needs `delete` on it, and owner references with
  blockOwnerDeletion need `update` on the owner's finalizers (where the
  OwnerReferencesPermissionEnforcement admission plugin is on).

Then the rendered ClusterRole must hold every needed permission and nothing else.
"""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import helm_python as helm  # helm-python-sdk, in the test extra
import pytest
import yaml

from podbatch import GROUP
from podbatch.controllers import kube as kube_module
from podbatch.controllers import leader, special, sync
from podbatch.core import pods as core_pods


ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "podbatch"
SOURCE = ROOT / "operator" / "podbatch"
RELEASE, NAMESPACE = "pb", "batch-ops"
CLUSTER_ROLE = f"{NAMESPACE}-{RELEASE}-podbatch"
CORE_KINDS = set(kube_module.CORE_KINDS)   # the core/v1 kinds Kube.list_kind and list_pages list

Need = tuple[str, str, str]      # (apiGroup, resource[/subresource], verb)

# The podbatch-kind methods of Kube: (subresource, verb). Their kinds come from the call
# sites (see plural_call_sites).
PER_KIND = {
    "list_kind": ("", "list"),
    "list_pages": ("", "list"),
    "get_object": ("", "get"),
    "create_object": ("", "create"),
    "patch_object": ("", "patch"),
    "delete_object": ("", "delete"),
    "patch_status": ("status", "patch"),
}
# Every other method of Kube and what it calls.
KUBE_CALLS: dict[str, set[Need]] = {
    "connect": set(),
    "close": set(),
    # the engine's own watches (controllers/reflector.py): podbatch's pods and Tasks
    "watch": {("", "pods", "watch"), ("podbatch.io", "tasks", "watch")},
    "create_pod": {("", "pods", "create")},
    "create_configmap": {("", "configmaps", "create")},
    "delete_pod": {("", "pods", "delete")},
    "patch_pod": {("", "pods", "patch")},
    "pod_log_tail": {("", "pods/log", "get")},
    "create_node": {("", "nodes", "create")},
    "delete_node": {("", "nodes", "delete")},
    "patch_node": {("", "nodes", "patch")},
    "node_names": {("", "nodes", "list")},
    "node_metrics": {("metrics.k8s.io", "nodes", "list")},
    "list_provisioning_requests": {("autoscaling.x-k8s.io", "provisioningrequests", "list")},
    "create_provisioning_request": {("autoscaling.x-k8s.io", "provisioningrequests", "create")},
    "create_pod_template": {("", "podtemplates", "create")},
    "post_event": {("", "events", "create")},
    # the clusterapi provider: discovery (granted to every authenticated user by the
    # default system:discovery role), the Cluster API targets' scale, their Machines
    "resource_plural": set(),
    "get_scale": {("cluster.x-k8s.io", "machinedeployments/scale", "get"), ("cluster.x-k8s.io", "machinepools/scale", "get")},
    "patch_scale": {("cluster.x-k8s.io", "machinedeployments/scale", "patch"),
                    ("cluster.x-k8s.io", "machinepools/scale", "patch")},
    "list_machines": {("cluster.x-k8s.io", "machines", "list")},
    "patch_machine": {("cluster.x-k8s.io", "machines", "patch")},
    # plus, by escalation, every rule of the Role it creates (see escalation_needs)
    "ensure_task_writer_account": {("", "serviceaccounts", "create"),
                                   ("rbac.authorization.k8s.io", "roles", "create"),
                                   ("rbac.authorization.k8s.io", "rolebindings", "create")},
}
# KubeLeases' methods and the verbs they send.
LEASE_CALLS = {"get": "get", "create": "create", "replace": "update"}
# The modules that may talk to the API server: everything else goes through them (or kopf).
API_MODULES = {"controllers/kube.py", "controllers/leader.py"}
# Forwarders that pass a kind through unchanged (their own callers name it).
FORWARDERS = {"controllers/kube.py", "controllers/executor.py"}
# Reconcilers return typed actions (controllers/actions.py) that the executor applies with
# these methods of Kube: `A.WriteStatus("tasks", …)` is a call of patch_status on tasks.
ACTIONS = {"WriteStatus": "patch_status", "PatchObject": "patch_object", "CreateObject": "create_object",
           "DeleteObject": "delete_object"}



# --- what the code calls -------------------------------------------------------------


def public_methods(cls) -> set[str]:
    return {name for name, value in vars(cls).items()
            if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, (classmethod, staticmethod)))}


def operator_sources() -> dict[str, ast.Module]:
    return {str(p.relative_to(SOURCE)): ast.parse(p.read_text(), str(p))
            for p in sorted(SOURCE.rglob("*.py")) if "cli" not in p.relative_to(SOURCE).parts}


def plural_call_sites() -> dict[str, set[str]]:
    """{Kube method: kinds} from every call `<x>.<method>("<kind>", …)` in the operator;
    `list_kind` also lists sync.KINDS. A call whose kind is not a literal (outside the
    forwarders) cannot be checked, so it fails."""
    found: dict[str, set[str]] = {m: set() for m in PER_KIND}
    unknown = []
    for path, tree in operator_sources().items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and (node.func.attr in PER_KIND or node.func.attr in ACTIONS)):
                continue
            method = ACTIONS.get(node.func.attr, node.func.attr)
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found[method].add(first.value)
                # Changing ownerReferences needs delete on the object (OwnerReferencesPermissionEnforcement).
                if method == "patch_object" and "ownerReferences" in ast.unparse(node):
                    found["delete_object"].add(first.value)
            elif path in FORWARDERS or (path == "controllers/sync.py" and node.func.attr in ("list_kind", "list_pages")):
                continue
            else:
                unknown.append(f"{path}:{node.lineno} {ast.unparse(node)[:80]}")
    assert not unknown, f"calls whose kind the RBAC walk cannot tell (pass the kind as a literal): {unknown}"
    found["list_kind"] |= set(sync.KINDS)
    found["list_pages"] |= set(sync.KINDS)
    # The executor reads an object again after a 409 on any patch of it (Executor._refresh).
    found["get_object"] |= found["patch_object"] | found["patch_status"]
    return found


def engine_needs() -> set[Need]:
    needs: set[Need] = set()
    for method, calls in KUBE_CALLS.items():
        needs |= calls
    for method, kinds in plural_call_sites().items():
        sub, verb = PER_KIND[method]
        for kind in kinds:
            group = "" if kind in CORE_KINDS else GROUP
            needs.add((group, f"{kind}/{sub}" if sub else kind, verb))
    return needs


def rule_needs(rules: list[dict]) -> set[Need]:
    return {(g, r, v) for rule in rules for g in rule.get("apiGroups", [])
            for r in rule.get("resources", []) for v in rule.get("verbs", [])}


def escalation_needs() -> set[Need]:
    """Creating a Role needs every rule of it; binding it, the same (or `bind`, not used)."""
    needs = rule_needs(special.JM_ROLE_RULES)
    # Owner references with blockOwnerDeletion: update on the owner kinds' finalizers.
    if core_pods.owner_reference({"apiVersion": "podbatch.io/v1alpha1", "kind": "Task",
                                  "metadata": {"name": "t", "uid": "u"}}).get("blockOwnerDeletion"):
        needs |= {(GROUP, f"{k}/finalizers", "update") for k in ("pools", "computenodes", "jobs", "tasks", "jobschedules")}
    return needs


def kopf_needs() -> set[Need]:
    import kopf
    from podbatch.controllers import handlers
    registry = kopf.get_default_registry()
    needs: set[Need] = {("", "events", "create")}   # kopf posts core/v1 Events about the objects it handles
    for kind_registry, verbs in ((registry._watching, ("list", "watch")), (registry._indexing, ("list", "watch")),
                                 (registry._changing, ("list", "watch", "patch")),
                                 (registry._spawning, ("list", "watch", "patch"))):
        for handler in kind_registry.get_all_handlers():
            selector = handler.selector
            assert selector.any_name or selector.plural, f"a handler kopf cannot map to one resource: {selector}"
            resource = selector.plural or selector.any_name
            needs |= {(selector.group or "", resource, verb) for verb in verbs}
    # kopf's observers (kopf/_core/reactor/observation.py): namespaces for config.namespaces
    # (patterns, and Terminating namespaces: handlers._serve_terminating_namespaces), CRDs
    # for kinds added after the start; both unless settings.scanning.disabled.
    assert "scanning.disabled" not in inspect.getsource(handlers)
    needs |= {("", "namespaces", "list"), ("", "namespaces", "watch"),
              ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
              ("apiextensions.k8s.io", "customresourcedefinitions", "watch")}
    # No kopf peering (kopf.zalando.org/kopfpeerings): the operator runs standalone; the Lease elects.
    assert "standalone=True" in (SOURCE / "controllers" / "run.py").read_text()
    return needs


def operator_needs() -> set[Need]:
    return engine_needs() | escalation_needs() | kopf_needs()


# --- what the chart grants ------------------------------------------------------------


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values=None) -> list[dict]:
    manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    return [doc for path, text in sorted(manifests.items()) if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def granted(rules: list[dict]) -> set[Need]:
    for rule in rules:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], f"a wildcard: {rule}"
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs"), rule
    return rule_needs(rules)


def cluster_role_rules(objects: list[dict]) -> list[dict]:
    (role,) = [o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == CLUSTER_ROLE]
    return role["rules"]


def show(needs: set[Need]) -> list[str]:
    return sorted(f"{g or 'core'} {r} {v}" for g, r, v in needs)


# --- the tests --------------------------------------------------------------------------


def test_every_kube_method_is_mapped_to_its_api_calls():
    methods = public_methods(kube_module.Kube)
    mapped = set(KUBE_CALLS) | set(PER_KIND)
    assert not methods - mapped, f"Kube methods without an RBAC entry in KUBE_CALLS: {sorted(methods - mapped)}"
    assert not mapped - methods, f"entries for Kube methods that are gone: {sorted(mapped - methods)}"


def test_every_lease_call_is_mapped():
    assert public_methods(leader.KubeLeases) == set(LEASE_CALLS)


def test_only_the_client_modules_build_api_clients():
    """A module that made its own client would make calls this walk does not see."""
    pattern = re.compile(r"\b(CoreV1Api|CustomObjectsApi|CoordinationV1Api|RbacAuthorizationV1Api|ApiextensionsV1Api|"
                         r"[A-Z]\w*V\d\w*Api|ApiClient)\b")
    offenders = [path for path, tree in operator_sources().items()
                 if path not in API_MODULES and pattern.search(ast.unparse(tree))]
    assert not offenders, offenders


def test_plural_calls_name_their_kind():
    sites = plural_call_sites()
    # a sanity check of the walk itself: it sees the calls everyone knows of
    assert "tasks" in sites["create_object"] and "tasks" in sites["patch_status"]
    assert "pools" in sites["patch_object"] and "pods" in sites["list_kind"]


def test_cluster_role_holds_every_permission_the_operator_needs(chart):
    needed = operator_needs()
    have = granted(cluster_role_rules(render(chart)))
    assert not needed - have, f"missing from templates/clusterrole.yaml: {show(needed - have)}"


def test_cluster_role_holds_nothing_the_operator_does_not_use(chart):
    needed = operator_needs()
    have = granted(cluster_role_rules(render(chart)))
    assert not have - needed, f"granted but never used (remove, or map the call that uses it): {show(have - needed)}"


def test_the_cluster_role_does_not_depend_on_values(chart):
    """config.namespaces narrows kopf's watches, not the store's cluster-wide lists."""
    default = granted(cluster_role_rules(render(chart)))
    scoped = granted(cluster_role_rules(render(chart, {"config": {"namespaces": ["team-a"]}, "replicaCount": 2})))
    assert default == scoped


def test_no_secrets_or_configmaps_cluster_wide(chart):
    """Resource files from ConfigMaps and Secrets are mounted by the kubelet: no feature reads
    them. The one ConfigMap the operator writes is the task wrapper's, which it only creates."""
    have = granted(cluster_role_rules(render(chart)))
    assert {(g, r, v) for g, r, v in have if r in ("secrets", "configmaps")} == {("", "configmaps", "create")}


def test_lease_role_holds_exactly_the_electors_calls(chart):
    objects = render(chart)
    (role,) = [o for o in objects if o["kind"] == "Role"]
    assert role["metadata"]["namespace"] == NAMESPACE
    needed = {("coordination.k8s.io", "leases", verb) for verb in LEASE_CALLS.values()}
    assert rule_needs(role["rules"]) == needed
    # get and update only on the release's own Lease (create cannot be limited by name).
    for rule in role["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule
        if rule["verbs"] != ["create"]:
            assert rule["resourceNames"] == [f"{RELEASE}-podbatch"], rule
    # ... and the ClusterRole grants no Lease anywhere (kube-node-lease holds the Nodes' heartbeats).
    assert not {n for n in granted(cluster_role_rules(objects)) if n[1] == "leases"}


def test_job_manager_role_is_within_the_operators_own(chart):
    """The API server refuses a Role that grants more than its creator holds."""
    have = granted(cluster_role_rules(render(chart)))
    assert rule_needs(special.JM_ROLE_RULES) <= have
