"""static: adopt existing Nodes that match the pool's selector, and give them back."""
from __future__ import annotations

from podbatch.core import naming
from podbatch.core.nodes import with_pool_taint, without_pool_taint


def matches(node: dict, selector: dict[str, str]) -> bool:
    labels = node["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


class StaticProvider:
    def __init__(self, kube) -> None:
        self.kube = kube

    async def grow(self, pool, members, count, all_nodes, low_priority) -> list[str]:
        ns, name = pool["metadata"]["namespace"], pool["metadata"]["name"]
        selector = ((pool["spec"].get("nodeGroup") or {}).get("static") or {}).get("nodeSelector") or {}
        value = naming.pool_node_label(ns, name)
        free = [n for n in sorted(all_nodes.values(), key=lambda n: n["metadata"]["name"])
                if matches(n, selector) and naming.LABEL_POOL not in (n["metadata"].get("labels") or {})
                and not n["metadata"].get("deletionTimestamp")]
        for node in free[:count]:
            taints = with_pool_taint(node, value)
            await self.kube.patch_node(node["metadata"]["name"], {
                "metadata": {"labels": {naming.LABEL_POOL: value}}, "spec": {"taints": taints}})
        if len(free) < count:
            return [f"only {len(free)} of the {count} more nodes asked for match nodeGroup.static.nodeSelector "
                    f"{selector or '{}'} and belong to no other pool; label more nodes or lower the target"]
        return []

    async def release(self, pool, node) -> None:
        await self.kube.patch_node(node["metadata"]["name"], {
            "metadata": {"labels": {naming.LABEL_POOL: None, naming.LABEL_LOW_PRIORITY: None}},
            "spec": {"taints": without_pool_taint(node) or None}})
