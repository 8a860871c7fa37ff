"""autoscaler: grow a pool through the cluster's own autoscaler (cluster-autoscaler,
Karpenter, GKE node auto-provisioning, EKS Auto Mode), with no cloud credentials.

For each node the pool still lacks, a pending *placeholder* pod asks for one node of the
pool's shape (`nodeGroup.autoscaler.nodeSelector`, tolerations, optional requests; a
required anti-affinity keeps two placeholders of a pool off one node). The autoscaler
sees unschedulable pods and adds nodes; when a placeholder is bound to a new Node,
podbatch adopts that Node for the pool (label, taint, "do not scale down" annotations) and
deletes the placeholder. All missing nodes are asked for at once, so a gang's nodes come
together. Releasing a node takes podbatch's label, taint and annotations off: it is then
an empty node the autoscaler removes on its own (scale-down-unneeded-time,
consolidation). Placeholders are owned by the Pool and go with it.
"""
from __future__ import annotations

from podbatch.core import naming
from podbatch.core.nodes import with_pool_taint, without_pool_taint
from podbatch.core.durations import seconds
from podbatch.controllers import clock
from podbatch.nodegroups import provreq

ROLE = "placeholder"
KIND_LABEL = f"{naming.GROUP}/placeholder-for"       # dedicated | lowpriority
# the autoscalers' own "leave this node alone" marks, set while a node belongs to a pool
KEEP_ANNOTATIONS = {"cluster-autoscaler.kubernetes.io/scale-down-disabled": "true", "karpenter.sh/do-not-disrupt": "true"}
PENDING_REPORT_AFTER = 60.0


def _config(pool: dict) -> dict:
    return (pool["spec"].get("nodeGroup") or {}).get("autoscaler") or {}


def placeholder_name(pool: str, kind: str, index: int) -> str:
    return naming.label_value(f"{pool}-{'spot' if kind == 'lowpriority' else 'node'}-wanted-{index}")


def placeholder_pod(pool: dict, kind: str, index: int, image: str, priority_class: str | None) -> dict:
    """A pod that asks the cluster's autoscaler for one node of the pool's shape."""
    cfg = _config(pool)
    ns, name = pool["metadata"]["namespace"], pool["metadata"]["name"]
    selector = cfg.get("lowPriorityNodeSelector") if kind == "lowpriority" else cfg.get("nodeSelector")
    labels = {naming.LABEL_ROLE: ROLE, naming.LABEL_POOL: naming.label_value(name), KIND_LABEL: kind}
    container = {"name": "placeholder", "image": image, "imagePullPolicy": "IfNotPresent",
                 "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 65535}}
    if cfg.get("resources"):
        container["resources"] = {k: {rk: str(rv) for rk, rv in v.items()} for k, v in cfg["resources"].items() if v}
    spec = {"nodeSelector": dict(selector or {}), "tolerations": list(cfg.get("tolerations") or []),
            "containers": [container], "restartPolicy": "Always", "automountServiceAccountToken": False,
            "enableServiceLinks": False, "terminationGracePeriodSeconds": 0,
            "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {naming.LABEL_ROLE: ROLE, naming.LABEL_POOL: naming.label_value(name)}},
                "topologyKey": "kubernetes.io/hostname"}]}}}
    if priority_class:
        spec["priorityClassName"] = priority_class
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": placeholder_name(name, kind, index), "namespace": ns, "labels": labels,
                         # not evicted by a scale-down while it waits to be adopted
                         "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
                                         "karpenter.sh/do-not-disrupt": "true"},
                         "ownerReferences": [{"apiVersion": pool.get("apiVersion", "podbatch.io/v1alpha1"), "kind": "Pool",
                                              "name": name, "uid": pool["metadata"]["uid"], "controller": True}]},
            "spec": spec}


class AutoscalerProvider:
    """The executor is `kube`; its store holds the placeholders (podbatch's pods are watched)."""

    def __init__(self, kube, image: str = "registry.k8s.io/pause:3.9", priority_class: str | None = None) -> None:
        self.kube, self.image, self.priority_class = kube, image, priority_class

    settles = True   # called every pass, also when no node is missing: surplus placeholders go

    def _placeholders(self, pool: dict) -> dict[str, list]:
        ns, name = pool["metadata"]["namespace"], naming.label_value(pool["metadata"]["name"])
        out: dict[str, list] = {"dedicated": [], "lowpriority": []}
        for k in self.kube.store.placeholders.get(f"{ns}/{name}", ()):
            rec = self.kube.store.pods.get(k)
            if rec is not None and not rec.view.deleting:
                out.setdefault(rec.labels.get(KIND_LABEL, "dedicated"), []).append((k.split("/", 1)[1], rec))
        return out

    async def grow(self, pool, members, count, all_nodes, low_priority) -> list[str]:
        """Adopt the nodes placeholders were bound to, then keep exactly one placeholder per
        node still missing (count may be 0: surplus placeholders go)."""
        ns, name = pool["metadata"]["namespace"], pool["metadata"]["name"]
        value = naming.pool_node_label(ns, name)
        dedicated_now = sum(1 for m in members if naming.LABEL_LOW_PRIORITY not in (m["metadata"].get("labels") or {}))
        want_d = max(0, int(pool["spec"].get("targetDedicatedNodes", 0)) - dedicated_now)
        want = {"dedicated": min(count, want_d), "lowpriority": max(0, count - min(count, want_d))}
        if not _config(pool).get("lowPriorityNodeSelector"):
            want = {"dedicated": count, "lowpriority": 0}
        errors, waiting = [], []
        for kind, holders in self._placeholders(pool).items():
            pending = []
            for pod_name, rec in sorted(holders):
                node = all_nodes.get(rec.view.node_name) if rec.view.node_name else None
                if node is not None and want[kind] > 0 and naming.LABEL_POOL not in (node["metadata"].get("labels") or {}):
                    labels = {naming.LABEL_POOL: value, naming.LABEL_LOW_PRIORITY: "true" if kind == "lowpriority" else None}
                    await self.kube.patch_node(node["metadata"]["name"], {
                        "metadata": {"labels": labels, "annotations": dict(KEEP_ANNOTATIONS)},
                        "spec": {"taints": with_pool_taint(node, value)}})
                    want[kind] -= 1
                    await self.kube.delete_pod(ns, pod_name, grace=0)
                elif rec.view.node_name:
                    await self.kube.delete_pod(ns, pod_name, grace=0)   # bound to a node another pool took
                else:
                    pending.append((pod_name, rec))
            for pod_name, _ in pending[want[kind]:]:
                await self.kube.delete_pod(ns, pod_name, grace=0)      # no longer needed
            pending = pending[:want[kind]]
            pending, given_up = await self._failed_requests(ns, pending, errors)
            taken = {p for p, _ in pending + given_up}
            index, new = 0, []
            for _ in range(want[kind] - len(pending) - len(given_up)):
                while placeholder_name(name, kind, index) in taken:
                    index += 1
                taken.add(placeholder_name(name, kind, index))
                new.append(placeholder_pod(pool, kind, index, self.image, self.priority_class))
            if len(new) > 1 and await provreq.requests_of(self.kube, ns) is not None:
                await provreq.ask(self.kube, ns, new)   # all of them or none: a gang is never half-provisioned
            else:
                for pod in new:
                    await self.kube.create_pod(pod)
            waiting += [rec for _, rec in pending]
        stuck = [r for r in waiting if r.view.unschedulable_since and clock.time() - r.view.unschedulable_since > PENDING_REPORT_AFTER]
        if stuck:
            limit = seconds(pool["spec"].get("resizeTimeout")) or 900
            errors.append(f"{len(stuck)} node(s) asked of the cluster's autoscaler not there yet (placeholder pods unschedulable "
                          f"for up to {max(clock.time() - r.view.unschedulable_since for r in stuck):.0f}s of resizeTimeout "
                          f"{limit:.0f}s): {stuck[0].view.unschedulable[:300]}")
        return errors

    async def _failed_requests(self, ns: str, pending: list, errors: list[str]) -> tuple[list, list]:
        """Placeholders whose ProvisioningRequest the autoscaler gave up on: the failure is a
        resize error; after RETRY_FAILED they are deleted (the request goes with them) and a
        later pass asks again. Returns (still pending, just given up)."""
        names = {rec.labels.get(provreq.LABEL) for _, rec in pending} - {None}
        if not names:
            return pending, []
        by_name = {r["metadata"]["name"]: r for r in await provreq.requests_of(self.kube, ns) or []}
        keep, gone = [], []
        for pod_name, rec in pending:
            failed = provreq.failure(by_name.get(rec.labels.get(provreq.LABEL, "")))
            if failed is None:
                keep.append((pod_name, rec))
                continue
            message, since = failed
            if since > provreq.RETRY_FAILED:
                await self.kube.delete_pod(ns, pod_name, grace=0)
                gone.append((pod_name, rec))
            else:
                keep.append((pod_name, rec))
            said = (f"the cluster's autoscaler could not provision the nodes asked for together "
                    f"(ProvisioningRequest {rec.labels.get(provreq.LABEL)}): {message[:300]}")
            if said not in errors:
                errors.append(said)
        return keep, gone

    async def release(self, pool, node) -> None:
        """Hand the node back to the autoscaler: an empty node it will remove."""
        await self.kube.patch_node(node["metadata"]["name"], {
            "metadata": {"labels": {naming.LABEL_POOL: None, naming.LABEL_LOW_PRIORITY: None},
                         "annotations": dict.fromkeys(KEEP_ANNOTATIONS)},
            "spec": {"taints": without_pool_taint(node) or None}})
