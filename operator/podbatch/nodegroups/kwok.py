"""kwok: podbatch creates and deletes fake Node objects; kwok (or hack/nodesim.py) runs them."""
from __future__ import annotations

from podbatch.core import naming
from podbatch.core.nodes import pool_taint


def kwok_node(pool: dict, index: int, low_priority: bool) -> dict:
    ns, name = pool["metadata"]["namespace"], pool["metadata"]["name"]
    spec = pool["spec"]
    kw = (spec.get("nodeGroup") or {}).get("kwok") or {}
    capacity = {k: str(v) for k, v in (kw.get("capacity") or {"cpu": "32", "memory": "256Gi", "pods": "110"}).items()}
    node_name = naming.kwok_node_name(ns, name, index)
    labels = {**(kw.get("labels") or {}), naming.LABEL_POOL: naming.pool_node_label(ns, name),
              "kubernetes.io/hostname": node_name, "type": "kwok"}
    if kw.get("instanceType") or spec.get("vmSize"):
        labels["node.kubernetes.io/instance-type"] = kw.get("instanceType") or spec.get("vmSize")
    if low_priority:
        labels[naming.LABEL_LOW_PRIORITY] = "true"
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": node_name, "labels": labels,
                     "annotations": {naming.ANNOTATION_FAKE_NODE: "fake", "node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"taints": [
            pool_taint(naming.pool_node_label(ns, name)),
            {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


class KwokProvider:
    def __init__(self, kube) -> None:
        self.kube = kube

    async def grow(self, pool, members, count, all_nodes, low_priority) -> list[str]:
        ns, name = pool["metadata"]["namespace"], pool["metadata"]["name"]
        taken = {m["metadata"]["name"] for m in members}
        dedicated_now = sum(1 for m in members if naming.LABEL_LOW_PRIORITY not in m["metadata"].get("labels", {}))
        want_dedicated = max(0, int(pool["spec"].get("targetDedicatedNodes", 0)) - dedicated_now)
        index, made = 0, 0
        while made < count:
            if naming.kwok_node_name(ns, name, index) not in taken:
                await self.kube.create_node(kwok_node(pool, index, low_priority=made >= want_dedicated))
                made += 1
            index += 1
        return []

    async def release(self, pool, node) -> None:
        await self.kube.delete_node(node["metadata"]["name"])
