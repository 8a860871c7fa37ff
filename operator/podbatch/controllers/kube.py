"""The only module that talks to the API server for the reconcile engine.

Every write is safe to repeat: 409 on create and 404 on delete count as success.
Writes are bounded by a semaphore so a burst of bindings cannot flood the server,
and every call is awaited on kopf's event loop (kubernetes_asyncio, never blocking).
Every call has a deadline (REQUEST_TIMEOUT): a hung API server costs a retry later,
never a stuck engine. A write may carry the resourceVersion it was decided on
(`resource_version=`): the server then refuses it with 409 when the object changed
since, so a stale or second writer cannot overwrite a newer decision.
"""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
import os
import logging
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from podbatch import GROUP, VERSION
from podbatch.controllers import fastjson
from podbatch.metrics import API_ERRORS

log = logging.getLogger("podbatch.kube")
MERGE = "application/merge-patch+json"
# Short against the leader's safety margin (lease duration minus renew deadline): a write
# sent by a leader about to be deposed cannot hang on and land long after.
REQUEST_TIMEOUT = 15.0
WATCH_SECONDS = 300   # a watch is closed by the server after this long and resumed from where it was
# what list_kind lists: the podbatch kinds, podbatch's pods, and Nodes
CORE_KINDS = ("pods", "nodes", "namespaces")
# Cluster API Machines (the clusterapi node-group provider marks and reads them)
CAPI_GROUP, CAPI_VERSION = "cluster.x-k8s.io", "v1beta1"


_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


class Kube:
    def __init__(self, api: client.ApiClient, concurrency: int) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.sem = asyncio.Semaphore(concurrency)
        self._plurals: dict[tuple[str, str], str] = {}   # (apiVersion, kind) -> plural, from discovery

    @classmethod
    async def connect(cls, concurrency: int) -> "Kube":
        """A client for the engine's own calls (kopf has its own for watching)."""
        try:
            config.load_incluster_config()
            api = client.ApiClient()
        except config.ConfigException:
            api = await config.new_client_from_config(config_file=os.environ.get("KUBECONFIG") or None)
        api.configuration.connection_pool_maxsize = max(concurrency, 16)
        if not any(os.environ.get(v) for v in _PROXY_VARS):
            # kubernetes_asyncio's session trusts the environment, so aiohttp looks for
            # proxies and ~/.netrc on every request (~9% of the operator's CPU); without
            # proxy variables there is nothing to find.
            session = getattr(api.rest_client, "pool_manager", None)
            if session is not None and hasattr(session, "_trust_env"):
                session._trust_env = False
        return cls(api, concurrency)

    async def close(self) -> None:
        await self.api.close()

    async def _call(self, verb: str, kind: str, coro, *, ok: tuple[int, ...] = ()) -> Any:
        async with self.sem:
            try:
                res = await asyncio.wait_for(coro, REQUEST_TIMEOUT)
                if not hasattr(res, "release"):
                    return res
                status, data = res.status, await _read(res)
                if not 200 <= status <= 299:
                    raise _api_error(status, data)
                return fastjson.loads(data) if data else {}
            except ApiException as e:
                if e.status in ok:
                    return None
                API_ERRORS.labels(verb, kind).inc()
                log.warning("%s %s failed: %s %s", verb, kind, e.status, (e.body or e.reason or "")[:300])
                raise
            except asyncio.TimeoutError:
                API_ERRORS.labels(verb, kind).inc()
                log.warning("%s %s timed out after %.0fs", verb, kind, REQUEST_TIMEOUT)
                raise ApiException(status=504, reason=f"{verb} {kind}: no answer within {REQUEST_TIMEOUT:.0f}s") from None

    # --- lists (the store's sync and relists) --------------------------------------
    async def list_kind(self, plural: str) -> tuple[list[dict], str]:
        """Every object of a kind (pods: podbatch's only), cluster-wide, with the list's
        resourceVersion: what the store holds older than it and not listed is gone."""
        items: list[dict] = []
        rv = ""
        async for page, page_rv in self.list_pages(plural):
            items += page
            rv = rv or page_rv
        return items, rv

    async def list_pages(self, plural: str):
        """The same list, page by page (500 objects), each with the list's resourceVersion (every
        page is read at the first one's): a relist of 100,000 Tasks never holds them all at once."""
        cont, rv = None, ""
        while True:
            kw = {"limit": 500, "_preload_content": False, **({"_continue": cont} if cont else {})}
            if plural == "pods":
                call = self.core.list_pod_for_all_namespaces(label_selector="podbatch.io/role", **kw)
            elif plural == "nodes":
                call = self.core.list_node(**kw)
            elif plural == "namespaces":
                call = self.core.list_namespace(**kw)
            else:   # namespaced kinds across namespaces, and the cluster-scoped PoolGrants
                call = self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **kw)
            # no PoolGrant CRD (an operator upgraded before its CRDs): no grants, not a stuck sync
            res = await self._call("list", plural, call, ok=(404,) if plural == "poolgrants" else ()) or {}
            kind = {"pods": "Pod", "nodes": "Node", "namespaces": "Namespace"}.get(plural)
            items = res.get("items") or []
            for it in items:
                (it.get("metadata") or {}).pop("managedFields", None)   # half a body, never read
                if kind:   # list items of core kinds carry no kind; the store's bodies do
                    it.setdefault("kind", kind)
                    it.setdefault("apiVersion", "v1")
            meta = res.get("metadata") or {}
            rv = rv or meta.get("resourceVersion", "")
            cont = meta.get("continue")
            yield items, rv
            if not cont:
                return

    async def watch(self, plural: str, resource_version: str, timeout: int = WATCH_SECONDS):
        """The watch events of a kind (pods: podbatch's only; Tasks), cluster-wide, after
        `resource_version`, decoded one line at a time, bookmarks included. Ends when the
        server closes the watch (after `timeout` s); raises ApiException for an HTTP error
        (410: that version is gone, list again). Holds no semaphore slot: it lasts minutes."""
        kw = {"watch": True, "resource_version": resource_version, "allow_watch_bookmarks": True,
              "timeout_seconds": timeout, "_preload_content": False,
              "_request_timeout": aiohttp.ClientTimeout(total=timeout + 30, sock_connect=REQUEST_TIMEOUT)}
        if plural == "pods":
            call = self.core.list_pod_for_all_namespaces(label_selector="podbatch.io/role", **kw)
        else:
            call = self.custom.list_cluster_custom_object(GROUP, VERSION, plural, **kw)
        try:
            res = await asyncio.wait_for(call, REQUEST_TIMEOUT)
        except asyncio.TimeoutError:
            raise ApiException(status=504, reason=f"watch {plural}: no answer within {REQUEST_TIMEOUT:.0f}s") from None
        try:
            if not 200 <= res.status <= 299:
                raise _api_error(res.status, await res.read())
            rest = b""
            async for chunk in res.content.iter_any():
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    if line.strip():
                        yield fastjson.loads(line)
            if rest.strip():
                yield fastjson.loads(rest)
        finally:
            res.release()

    # --- pods -------------------------------------------------------------------
    async def create_pod(self, pod: dict) -> dict | None:
        ns = pod["metadata"]["namespace"]
        return await self._call("create", "pod", self.core.create_namespaced_pod(ns, pod, _preload_content=False), ok=(409,))

    async def create_configmap(self, body: dict) -> dict | None:
        """Create a ConfigMap (None: it exists, 409): the task wrapper's (core/pods.py)."""
        ns = body["metadata"]["namespace"]
        return await self._call("create", "configmap", self.core.create_namespaced_config_map(ns, body, _preload_content=False),
                                ok=(409,))

    async def delete_pod(self, ns: str, name: str, *, grace: int | None = None) -> dict | None:
        """Returns the pod as the server now has it (terminating) or a Status; None when it was gone."""
        body = client.V1DeleteOptions(grace_period_seconds=grace, propagation_policy="Background")
        res = await self._call("delete", "pod", self.core.delete_namespaced_pod(name, ns, body=body, _preload_content=False), ok=(404,))
        return res if res is not None else None

    async def patch_pod(self, ns: str, name: str, patch: dict) -> dict | None:
        return await self._call("patch", "pod", self.core.patch_namespaced_pod(
            name, ns, patch, _content_type=MERGE, _preload_content=False), ok=(404,))

    # --- nodes ------------------------------------------------------------------
    async def create_node(self, node: dict) -> dict | None:
        return await self._call("create", "node", self.core.create_node(node, _preload_content=False), ok=(409,))

    async def delete_node(self, name: str) -> None:
        await self._call("delete", "node", self.core.delete_node(name, _preload_content=False), ok=(404,))

    async def node_names(self, label_selector: str) -> list[str]:
        """Names of the Nodes with a label, read live (not from the watch cache)."""
        res = await self._call("list", "node", self.core.list_node(label_selector=label_selector, _preload_content=False))
        return [n["metadata"]["name"] for n in (res or {}).get("items", [])]

    async def patch_node(self, name: str, patch: dict) -> dict | None:
        return await self._call("patch", "node", self.core.patch_node(name, patch, _content_type=MERGE, _preload_content=False),
                                ok=(404,))

    # --- podbatch objects -------------------------------------------------------
    async def patch_status(self, plural: str, ns: str, name: str, status: dict, *,
                           resource_version: str | None = None) -> dict | None:
        body = {"status": status, **_precondition(resource_version)}
        return await self._call("patch", plural, self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ns, plural, name, body, _content_type=MERGE, _preload_content=False), ok=(404,))

    async def patch_object(self, plural: str, ns: str, name: str, patch: dict, *,
                           resource_version: str | None = None) -> dict | None:
        if resource_version:
            patch = {**patch, "metadata": {**(patch.get("metadata") or {}), "resourceVersion": resource_version}}
        return await self._call("patch", plural, self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, plural, name, patch, _content_type=MERGE, _preload_content=False), ok=(404,))

    async def get_object(self, plural: str, ns: str, name: str) -> dict | None:
        return await self._call("get", plural, self.custom.get_namespaced_custom_object(
            GROUP, VERSION, ns, plural, name, _preload_content=False), ok=(404,))

    async def create_object(self, plural: str, ns: str, body: dict) -> dict | None:
        return await self._call("create", plural, self.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, plural, body, _preload_content=False), ok=(409,))

    async def delete_object(self, plural: str, ns: str, name: str) -> None:
        await self._call("delete", plural, self.custom.delete_namespaced_custom_object(
            GROUP, VERSION, ns, plural, name, _preload_content=False), ok=(404,))

    async def ensure_task_writer_account(self, ns: str, name: str, owner: dict, rules: list[dict]) -> None:
        """A ServiceAccount that may create the Tasks of its namespace (a job manager's)."""
        from kubernetes_asyncio.client import RbacAuthorizationV1Api
        rbac = RbacAuthorizationV1Api(self.api)
        meta = {"name": name, "namespace": ns, "ownerReferences": [owner]}
        await self._call("create", "serviceaccount", self.core.create_namespaced_service_account(
            ns, {"metadata": meta}, _preload_content=False), ok=(409,))
        await self._call("create", "role", rbac.create_namespaced_role(
            ns, {"metadata": meta, "rules": rules}, _preload_content=False), ok=(409,))
        await self._call("create", "rolebinding", rbac.create_namespaced_role_binding(ns, {
            "metadata": meta, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns}]}, _preload_content=False), ok=(409,))

    async def post_event(self, body: dict, etype: str, reason: str, message: str) -> None:
        meta = body.get("metadata") or {}
        ns = meta.get("namespace") or "default"
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "metadata": {"generateName": f"{meta.get('name', 'podbatch')[:200]}.", "namespace": ns},
            "involvedObject": {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "name": meta.get("name"),
                               "namespace": ns, "uid": meta.get("uid"), "resourceVersion": meta.get("resourceVersion")},
            "reason": reason, "message": message[:1024], "type": etype, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now, "source": {"component": "podbatch"},
            "reportingComponent": "podbatch.io/operator", "reportingInstance": "podbatch",
        }
        try:
            await self._call("create", "event", self.core.create_namespaced_event(ns, event, _preload_content=False))
        except ApiException as e:   # events are best effort; a refusal is said once, not hidden
            if e.status == 403 and not getattr(self, "_events_forbidden", False):
                self._events_forbidden = True
                log.warning("posting Events is forbidden (403): the operator's role needs events create; "
                            "warnings reach users only through status conditions until it has it")
        except Exception:
            pass

    # --- scale targets and Machines (the clusterapi node-group provider) -------------
    async def resource_plural(self, api_version: str, kind: str) -> str | None:
        """The plural of a namespaced kind with a scale subresource, from the server's discovery
        (readable by every authenticated user); None when the server does not serve it."""
        k = (api_version, kind)
        if k not in self._plurals:
            res = await self._call("get", "discovery", self.api.call_api(
                f"/apis/{api_version}", "GET", header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False), ok=(404,)) or {}
            names = {r.get("name") for r in res.get("resources") or []}
            for r in res.get("resources") or []:
                if r.get("kind") == kind and "/" not in r.get("name", "") and f"{r['name']}/scale" in names:
                    self._plurals[k] = r["name"]   # only found ones are kept: a CRD installed later is seen
        return self._plurals.get(k)

    async def get_scale(self, group: str, version: str, plural: str, ns: str, name: str) -> dict | None:
        """The target's scale subresource (autoscaling/v1 Scale); None when the target does not exist."""
        return await self._call("get", f"{plural}/scale", self.custom.get_namespaced_custom_object_scale(
            group, version, ns, plural, name, _preload_content=False), ok=(404,))

    async def patch_scale(self, group: str, version: str, plural: str, ns: str, name: str, replicas: int, *,
                          resource_version: str | None = None) -> dict | None:
        body = {"spec": {"replicas": replicas}, **_precondition(resource_version)}
        return await self._call("patch", f"{plural}/scale", self.custom.patch_namespaced_custom_object_scale(
            group, version, ns, plural, name, body, _content_type=MERGE, _preload_content=False), ok=(404,))

    async def list_machines(self, ns: str, label_selector: str) -> list[dict]:
        """Cluster API Machines of a namespace matching a selector, read live; none without the CRD."""
        res = await self._call("list", "machines", self.custom.list_namespaced_custom_object(
            CAPI_GROUP, CAPI_VERSION, ns, "machines", label_selector=label_selector, _preload_content=False), ok=(404,))
        return (res or {}).get("items") or []

    async def patch_machine(self, ns: str, name: str, patch: dict) -> dict | None:
        return await self._call("patch", "machines", self.custom.patch_namespaced_custom_object(
            CAPI_GROUP, CAPI_VERSION, ns, "machines", name, patch, _content_type=MERGE, _preload_content=False), ok=(404,))

    # --- ProvisioningRequests (cluster-autoscaler's atomic scale-up), where served --------
    async def list_provisioning_requests(self, ns: str) -> list[dict] | None:
        """The namespace's ProvisioningRequests, or None where the cluster does not serve
        autoscaling.x-k8s.io/v1beta1."""
        res = await self._call("list", "provisioningrequest", self.custom.list_namespaced_custom_object(
            "autoscaling.x-k8s.io", "v1beta1", ns, "provisioningrequests", _preload_content=False), ok=(404,))
        return None if res is None else res.get("items", [])

    async def create_provisioning_request(self, ns: str, body: dict) -> dict | None:
        return await self._call("create", "provisioningrequest", self.custom.create_namespaced_custom_object(
            "autoscaling.x-k8s.io", "v1beta1", ns, "provisioningrequests", body, _preload_content=False), ok=(409,))

    async def create_pod_template(self, ns: str, body: dict) -> dict | None:
        return await self._call("create", "podtemplate", self.core.create_namespaced_pod_template(
            ns, body, _preload_content=False), ok=(409,))

    async def node_metrics(self) -> list[dict] | None:
        """metrics-server's NodeMetrics (metrics.k8s.io/v1beta1 nodes), or None where the
        cluster does not serve that API."""
        try:
            res = await self._call("list", "nodemetrics", self.custom.list_cluster_custom_object(
                "metrics.k8s.io", "v1beta1", "nodes", _preload_content=False), ok=(404, 503))
        except ApiException as e:
            if e.status == 403:
                return None
            raise
        return None if res is None else res.get("items", [])

    async def pod_log_tail(self, ns: str, name: str, container: str, lines: int = 20) -> str:
        try:
            async with self.sem:
                return await self.core.read_namespaced_pod_log(name, ns, container=container, tail_lines=lines)
        except ApiException:
            return ""


def _api_error(status: int, data: bytes) -> ApiException:
    err = ApiException(status=status, reason=data[:300].decode(errors="replace"))
    err.body = data.decode(errors="replace")   # the Status, whole: its message is shown to users
    return err


def _precondition(resource_version: str | None) -> dict:
    """A merge patch carrying metadata.resourceVersion is applied only to that version (409 otherwise)."""
    return {"metadata": {"resourceVersion": resource_version}} if resource_version else {}


async def _read(resp) -> bytes:
    try:
        return await resp.read()
    finally:
        resp.release()
