"""Node-group providers: how the Kubernetes Nodes of a pool come and go.

A provider answers two questions for the reconcile engine: grow the group by n nodes,
and let a given node go. Membership itself is always read back from the Nodes'
`podbatch.io/pool` label, so the API server stays the only truth.
"""
from __future__ import annotations

from typing import Protocol

from podbatch.nodegroups.clusterapi import ClusterApiProvider
from podbatch.nodegroups.autoscaler import AutoscalerProvider
from podbatch.nodegroups.kwok import KwokProvider
from podbatch.nodegroups.static import StaticProvider


class NodeGroupProvider(Protocol):
    async def grow(self, pool: dict, members: list[dict], count: int, all_nodes: dict[str, dict], low_priority: int) -> list[str]:
        """Add up to `count` nodes; returns errors (empty when all were added)."""

    async def release(self, pool: dict, node: dict) -> None:
        """Give one node back (delete it, or remove podbatch's labels and taints)."""


class UnknownProvider(ValueError):
    """A provider the CRD's schema would refuse: only an operator older than its CRDs sees one."""


def provider_for(pool: dict, kube, settings=None) -> NodeGroupProvider:
    kind = ((pool["spec"].get("nodeGroup") or {}).get("provider")) or "kwok"
    if kind == "autoscaler":
        return AutoscalerProvider(kube, image=getattr(settings, "placeholder_image", "registry.k8s.io/pause:3.9"),
                                  priority_class=getattr(settings, "placeholder_priority_class", "") or None)
    if kind == "static":
        return StaticProvider(kube)
    if kind == "kwok":
        return KwokProvider(kube)
    if kind == "clusterapi":
        return ClusterApiProvider(kube)
    raise UnknownProvider(f"node-group provider {kind!r} is not one this operator knows (kwok, static, clusterapi, "
                          "autoscaler): the Pool CRD is newer than the operator; upgrade the operator, or fix "
                          "spec.nodeGroup.provider")
