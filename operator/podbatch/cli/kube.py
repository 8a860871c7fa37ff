"""The cluster side of `kubectl podbatch` and `make demo`: a sync Kubernetes client and the
few calls they need (CRD install, server-side apply, reads, spec patches, task logs)."""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from podbatch import GROUP, VERSION
from podbatch.api import KINDS
from podbatch.core import binding, naming

FIELD_MANAGER = "kubectl-podbatch"
REPO = Path(__file__).resolve().parents[3]
CRD_DIR = REPO / "crds"


class CliError(Exception):
    """An error to print as one line, without a traceback."""


def quiet_tls_warnings() -> None:
    """kubectl does not warn about insecure-skip-tls-verify kubeconfigs; neither do we."""
    try:
        import urllib3
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    except Exception:  # noqa: BLE001
        pass


def new_client(kubeconfig: str | None = None, context: str | None = None):
    """(ApiClient, default namespace) from --kubeconfig, $KUBECONFIG or ~/.kube/config, else in-cluster."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    quiet_tls_warnings()
    path = kubeconfig or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube/config")
    path = path.split(os.pathsep)[0]
    namespace = "default"
    if Path(path).exists():
        try:
            api = config.new_client_from_config(config_file=path, context=context)
            _, active = config.list_kube_config_contexts(config_file=path)
            if context:
                contexts, _ = config.list_kube_config_contexts(config_file=path)
                active = next((c for c in contexts if c["name"] == context), active)
            namespace = (active or {}).get("context", {}).get("namespace") or "default"
            return api, namespace
        except ConfigException as e:
            raise CliError(f"kubeconfig {path}: {e}") from None
    try:
        from kubernetes import client
        config.load_incluster_config()
        ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        if ns_file.exists():
            namespace = ns_file.read_text().strip()
        return client.ApiClient(), namespace
    except ConfigException:
        raise CliError(f"no kubeconfig: {path} does not exist; pass --kubeconfig or set KUBECONFIG") from None


def api_error(e: Exception) -> str:
    """A one-line message from an ApiException (its Status message), else str(e)."""
    body = getattr(e, "body", None)
    if body:
        try:
            st = json.loads(body)
            return f"{st.get('reason') or getattr(e, 'status', '')}: {st.get('message', body)}"
        except (ValueError, TypeError):
            pass
    status, reason = getattr(e, "status", None), getattr(e, "reason", None)
    if status:
        return f"{status} {reason}"
    return str(e)


def plural(kind: str) -> str:
    info = KINDS.get(kind)
    if info is None:
        raise CliError(f"unknown podbatch kind {kind!r}")
    return info.plural


# --- CRDs -------------------------------------------------------------------------

def install_crds(api_client, crd_dir: Path = CRD_DIR, timeout: float = 60.0, log: Callable[[str], None] | None = None) -> list[str]:
    """Create or replace every CRD of crd_dir and wait until each is Established."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ext = client.ApiextensionsV1Api(api_client)
    names = []
    for path in sorted(Path(crd_dir).glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        name = body["metadata"]["name"]
        names.append(name)
        try:
            ext.create_custom_resource_definition(body, _preload_content=False)
            if log:
                log(f"created CRD {name}")
        except ApiException as e:
            if e.status != 409:
                raise CliError(f"creating CRD {name}: {api_error(e)}") from None
            current = json.loads(ext.read_custom_resource_definition(name, _preload_content=False).data)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            ext.replace_custom_resource_definition(name, body, _preload_content=False)
            if log:
                log(f"replaced CRD {name}")
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            crd = json.loads(ext.read_custom_resource_definition(name, _preload_content=False).data)
            conditions = {c["type"]: c["status"] for c in crd.get("status", {}).get("conditions", [])}
            if conditions.get("Established") == "True":
                break
            if time.monotonic() > deadline:
                raise CliError(f"CRD {name} not Established after {timeout:.0f}s: {conditions}")
            time.sleep(0.3)
    return names


# --- objects ----------------------------------------------------------------------

class Cluster:
    """Thin sync access to podbatch objects in one namespace (dicts in, dicts out)."""

    def __init__(self, api_client, namespace: str):
        from kubernetes import client
        self.api = api_client
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    # reads
    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        from kubernetes.client.rest import ApiException
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace or self.namespace, plural(kind), name)
        except ApiException as e:
            if e.status == 404:
                raise CliError(f"{kind} {name!r} not found in namespace {namespace or self.namespace}") from None
            raise CliError(f"reading {kind} {name}: {api_error(e)}") from None

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, name)
        except CliError:
            return None

    def list(self, kind: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        from kubernetes.client.rest import ApiException
        try:
            kw = {"label_selector": label_selector} if label_selector else {}
            items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, plural(kind), **kw).get("items", [])
            return self.with_pod_bindings(items) if kind == "Task" else items
        except ApiException as e:
            if e.status == 404:
                raise CliError(f"the {plural(kind)}.{GROUP} CRD is not installed: kubectl apply --validate=false -f crds/") from None
            raise CliError(f"listing {plural(kind)}: {api_error(e)}") from None

    def with_pod_bindings(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Tasks as the operator sees them: one whose pod records its binding before its
        status does (core/binding.py) shows that pod's node and `preparing` (`running` once
        the pod runs), not `active`. One list of the namespace's task pods, only when needed."""
        waiting = [t for t in tasks if binding.awaits_pod(t.get("status")) is not None]
        if not waiting:
            return tasks
        sel = f"{naming.LABEL_ROLE}=task"
        pods = {p.metadata.name: p for p in self.core.list_namespaced_pod(self.namespace, label_selector=sel).items}
        out = []
        for t in tasks:
            attempt = binding.awaits_pod(t.get("status"))
            name = naming.task_pod_name(t["metadata"]["name"], attempt) if attempt else ""
            pod = pods.get(name)
            b = pod and binding.parse((pod.metadata.annotations or {}).get(naming.ANNOTATION_BINDING))
            if not b or (pod.metadata.labels or {}).get(naming.LABEL_TASK_UID) != t["metadata"].get("uid"):
                out.append(t)
                continue
            st, _ = binding.bound_status(t.get("status"), name, b)
            if (pod.status.phase or "") in ("Running", "Succeeded", "Failed"):
                st["state"] = "running"
            out.append({**t, "status": st})
        return out

    def tasks_of(self, job: str) -> list[dict[str, Any]]:
        return [t for t in self.list("Task") if (t.get("spec") or {}).get("jobName") == job]

    def nodes_of(self, pool: str) -> list[dict[str, Any]]:
        return [n for n in self.list("ComputeNode") if (n.get("spec") or {}).get("poolName") == pool]

    # writes
    def patch_spec(self, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client.rest import ApiException
        self.get(kind, name)  # a clear not-found first
        try:
            return self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural(kind), name, {"spec": spec},
                field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json")
        except ApiException as e:
            raise CliError(f"patching {kind} {name}: {api_error(e)}") from None

    def apply(self, body: dict[str, Any], namespace: str | None = None, dry_run: bool = False,
              force_conflicts: bool = False) -> tuple[str, dict[str, Any]]:
        """Server-side apply of one object (create or patch); returns (created|configured|unchanged, object)."""
        return apply_object(self.api, body, namespace or self.namespace, dry_run=dry_run, force_conflicts=force_conflicts)

    def delete(self, kind: str, name: str) -> bool:
        from kubernetes.client.rest import ApiException
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, plural(kind), name)
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise CliError(f"deleting {kind} {name}: {api_error(e)}") from None

    # pods of tasks
    def task_pods(self, task_name: str) -> list[dict[str, Any]]:
        sel = f"{naming.LABEL_TASK}={naming.label_value(task_name)}"
        pods = self.api.sanitize_for_serialization(self.core.list_namespaced_pod(self.namespace, label_selector=sel).items)
        return sorted(pods, key=lambda p: attempt_of(p))

    def current_pod(self, task: dict[str, Any]) -> dict[str, Any] | None:
        name = (task.get("status") or {}).get("podName")
        pods = self.task_pods(task["metadata"]["name"])
        if name:
            for p in pods:
                if p["metadata"]["name"] == name:
                    return p
        return pods[-1] if pods else None


def attempt_of(pod: dict[str, Any]) -> int:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    try:
        return int(labels.get(naming.LABEL_ATTEMPT, ""))
    except ValueError:
        tail = pod["metadata"]["name"].rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else 0


def _dynamic_resource(api_client, body: dict[str, Any]):
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError
    dyn = DynamicClient(api_client)
    try:
        return dyn, dyn.resources.get(api_version=body.get("apiVersion", ""), kind=body.get("kind", ""))
    except ResourceNotFoundError:
        raise CliError(f"the server has no kind {body.get('kind')} in {body.get('apiVersion')}") from None


class ApplyConflict(CliError):
    """Server-side apply refused: fields of the manifest are owned by another field manager."""


def apply_conflict(e: Exception, what: str) -> ApplyConflict | None:
    """The error to show for a server-side apply refused with 409 Conflict: which fields,
    which managers own them, and how to go on; None for any other error."""
    if getattr(e, "status", None) != 409:
        return None
    try:
        st = json.loads(getattr(e, "body", None) or "{}")
    except (ValueError, TypeError):
        st = {}
    causes = [c for c in (st.get("details") or {}).get("causes") or [] if c.get("reason") == "FieldManagerConflict"]
    if not causes:
        return None
    lines = [f"  {c.get('field', '?')}: {c.get('message', '')}" for c in causes]
    return ApplyConflict(
        f"{what}: {len(causes)} field(s) are managed by another field manager (not changed):\n" + "\n".join(lines)
        + f"\nThat manager (GitOps, Helm, kubectl, the operator) may set them back. Remove the fields from your manifest, "
        f"or re-run with --force-conflicts to take them over as {FIELD_MANAGER}.")


def apply_object(api_client, body: dict[str, Any], namespace: str, dry_run: bool = False,
                 force_conflicts: bool = False) -> tuple[str, dict[str, Any]]:
    """Server-side apply (create or patch, field manager kubectl-podbatch). Fields another
    manager owns are taken over only with `force_conflicts`, as kubectl does; otherwise the
    apply fails with ApplyConflict naming them."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    body = {k: v for k, v in body.items() if k != "status"}
    meta = {k: v for k, v in (body.get("metadata") or {}).items()
            if k not in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "generation")}
    name = meta.get("name")
    if not name:
        raise CliError(f"{body.get('kind')} without metadata.name")
    kind = body.get("kind", "")
    extra = {"dry_run": "All"} if dry_run else {}
    namespaced_ours = str(body.get("apiVersion", "")).startswith(GROUP + "/") and \
        getattr(KINDS.get(kind), "namespaced", True)
    if namespaced_ours:   # (a cluster-scoped PoolGrant goes the dynamic client's way below)
        ns = meta.get("namespace") or namespace
        meta["namespace"] = ns
        body["metadata"] = meta
        custom = client.CustomObjectsApi(api_client)
        group, version = body["apiVersion"].split("/", 1)
        try:
            before = custom.get_namespaced_custom_object(group, version, ns, plural(kind), name)
        except ApiException as e:
            if e.status != 404:
                raise CliError(f"reading {kind} {name}: {api_error(e)}") from None
            before = None
        try:
            after = custom.patch_namespaced_custom_object(
                group, version, ns, plural(kind), name, body, field_manager=FIELD_MANAGER, force=force_conflicts,
                _content_type="application/apply-patch+yaml", **extra)
        except ApiException as e:
            raise apply_conflict(e, f"{kind} {ns}/{name}") or CliError(f"{kind} {ns}/{name}: {api_error(e)}") from None
        if after is None:  # 201 Created: the generated client only decodes 200 for PATCH
            after = before_or_get(custom, group, version, ns, plural(kind), name, body, dry_run)
    else:
        dyn, res = _dynamic_resource(api_client, body)
        ns = (meta.get("namespace") or namespace) if res.namespaced else None
        if ns:
            meta["namespace"] = ns
        body["metadata"] = meta
        try:
            before = dyn.get(res, name=name, namespace=ns).to_dict()
        except ApiException as e:
            if e.status != 404:
                raise CliError(f"reading {kind} {name}: {api_error(e)}") from None
            before = None
        try:
            after = dyn.server_side_apply(res, body=body, name=name, namespace=ns, field_manager=FIELD_MANAGER,
                                          force_conflicts=force_conflicts, **extra).to_dict()
        except ApiException as e:
            raise apply_conflict(e, f"{kind} {name}") or CliError(f"{kind} {name}: {api_error(e)}") from None
    if before is None:
        verb = "created"
    elif before["metadata"].get("resourceVersion") == after["metadata"].get("resourceVersion"):
        verb = "unchanged"
    else:
        verb = "configured"
    return verb, after


def before_or_get(custom, group, version, ns, plural_, name, body, dry_run):
    if dry_run:
        return body
    return custom.get_namespaced_custom_object(group, version, ns, plural_, name)


def delete_object(api_client, body: dict[str, Any], namespace: str) -> bool:
    """Delete one object named by a manifest; False when it was not there."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    meta = body.get("metadata") or {}
    name, kind = meta.get("name"), body.get("kind", "")
    try:
        if str(body.get("apiVersion", "")).startswith(GROUP + "/"):
            group, version = body["apiVersion"].split("/", 1)
            client.CustomObjectsApi(api_client).delete_namespaced_custom_object(
                group, version, meta.get("namespace") or namespace, plural(kind), name)
        else:
            dyn, res = _dynamic_resource(api_client, body)
            dyn.delete(res, name=name, namespace=(meta.get("namespace") or namespace) if res.namespaced else None)
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise CliError(f"deleting {kind} {name}: {api_error(e)}") from None


def server_versions(api_client, timeout: float = 15) -> dict[str, Any]:
    """The Kubernetes version and the versions of podbatch.io the API server serves (its
    CRDs' served versions), from the discovery endpoints every authenticated user may read."""
    from kubernetes import client
    kubernetes = client.VersionApi(api_client).get_code(_request_timeout=timeout).git_version
    groups = client.ApisApi(api_client).get_api_versions(_request_timeout=timeout).groups or []
    group = next((g for g in groups if g.name == GROUP), None)
    return {"kubernetes": kubernetes,
            "podbatchServedVersions": [v.version for v in group.versions] if group else [],
            "podbatchPreferredVersion": group.preferred_version.version if group and group.preferred_version else None}


def new_request_id() -> str:
    return str(uuid.uuid4())


def read_pod_log(cluster: Cluster, pod: dict[str, Any], container: str | None = None, tail: int | None = None) -> str:
    from kubernetes.client.rest import ApiException
    containers = [c["name"] for c in pod["spec"].get("containers", [])]
    if container is None:
        container = "task" if "task" in containers else (containers[0] if containers else None)
    kw: dict[str, Any] = {"container": container}
    if tail:
        kw["tail_lines"] = tail
    try:
        return cluster.core.read_namespaced_pod_log(pod["metadata"]["name"], cluster.namespace, **kw)
    except ApiException as e:
        raise CliError(f"logs of pod {pod['metadata']['name']}: {api_error(e)}") from None


def is_fake_node(cluster: Cluster, node_name: str | None) -> bool:
    from kubernetes.client.rest import ApiException
    if not node_name:
        return False
    try:
        node = cluster.core.read_node(node_name)
    except ApiException:
        return False
    return (node.metadata.annotations or {}).get(naming.ANNOTATION_FAKE_NODE) == "fake"


def iter_sorted(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda o: o["metadata"]["name"])
