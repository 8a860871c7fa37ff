"""ProvisioningRequests: cluster-autoscaler's API for an atomic scale-up (all N nodes or
none), used by the `autoscaler` provider where the cluster serves
autoscaling.x-k8s.io/v1beta1 and several nodes are asked for at once (a gang's).

The placeholders of one request carry its name in the consume annotations (so the
autoscaler provisions them through the request, not one by one); the request and its
PodTemplate are owned by those placeholders, so the garbage collector deletes both once
every placeholder is gone (adopted, no longer needed, or given up after a failure).
"""
from __future__ import annotations

import hashlib
from datetime import datetime

from podbatch.controllers import clock
from podbatch.core import naming

GROUP_VERSION = "autoscaling.x-k8s.io/v1beta1"
CLASS = "best-effort-atomic-scale-up.autoscaling.x-k8s.io"
CONSUME = ("autoscaling.x-k8s.io/consume-provisioning-request", "cluster-autoscaler.kubernetes.io/consume-provisioning-request")
LABEL = f"{naming.GROUP}/provisioning-request"
RETRY_FAILED = 60.0     # a failed request's placeholders go after this long; the next pass asks again
API_RECHECK = 300.0     # a cluster without the API is asked again this often

_api: dict[str, float] = {}   # namespace -> until when the API is known to be absent


async def requests_of(kube, ns: str) -> list[dict] | None:
    """The namespace's ProvisioningRequests; None where the API is not served."""
    if clock.monotonic() < _api.get(ns, 0.0):
        return None
    items = await kube.list_provisioning_requests(ns)
    if items is None:
        _api[ns] = clock.monotonic() + API_RECHECK
    return items


def request_name(pods: list[dict]) -> str:
    names = ",".join(p["metadata"]["name"] for p in pods)
    return naming.label_value(f"{pods[0]['metadata']['name']}-{hashlib.sha1(names.encode()).hexdigest()[:6]}")


async def ask(kube, ns: str, pods: list[dict]) -> str:
    """Create the placeholders of one atomic scale-up, then their PodTemplate and
    ProvisioningRequest (owned by them). Returns the request's name."""
    name = request_name(pods)
    owners = []
    for pod in pods:
        pod["metadata"]["annotations"].update(dict.fromkeys(CONSUME, name))
        pod["metadata"]["labels"][LABEL] = name
        made = await kube.create_pod(pod)
        if made and made["metadata"].get("uid"):
            owners.append({"apiVersion": "v1", "kind": "Pod", "name": made["metadata"]["name"], "uid": made["metadata"]["uid"]})
    template = {k: v for k, v in pods[0]["spec"].items()}
    meta = {"name": name, "namespace": ns, "labels": {naming.LABEL_ROLE: "placeholder"}, "ownerReferences": owners}
    await kube.create_pod_template(ns, {"apiVersion": "v1", "kind": "PodTemplate", "metadata": meta,
                                        "template": {"metadata": {"labels": dict(pods[0]["metadata"]["labels"])},
                                                     "spec": template}})
    await kube.create_provisioning_request(ns, {
        "apiVersion": GROUP_VERSION, "kind": "ProvisioningRequest", "metadata": meta,
        "spec": {"provisioningClassName": CLASS, "podSets": [{"podTemplateRef": {"name": name}, "count": len(pods)}]}})
    return name


def failure(request: dict | None) -> tuple[str, float] | None:
    """(message, seconds since) of a request the autoscaler gave up on, else None."""
    for c in ((request or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            try:
                since = datetime.fromisoformat(str(c.get("lastTransitionTime")).replace("Z", "+00:00")).timestamp()
            except ValueError:
                since = clock.time()
            return c.get("message") or c.get("reason") or "failed", max(0.0, clock.time() - since)
    return None
