"""clusterapi: scale a Cluster API MachineDeployment or MachinePool through its scale
subresource and adopt the Nodes of its Machines.

Replicas are set to a level, never stepped: to the pool's target when it grows, and to
the Machines still wanted when it shrinks, so a call repeated after a crash or a 409
changes nothing more. When shrinking, the Machine of the node podbatch picked (idle ones
first) is annotated `cluster.x-k8s.io/delete-machine` before replicas drop, so the
MachineSet deletes that Machine and not another. Machines and Nodes are read from the
one API server the operator talks to: the cluster must manage its own Machines.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from podbatch.core import naming
from podbatch.core.nodes import with_pool_taint, without_pool_taint

DELETE_MACHINE = "cluster.x-k8s.io/delete-machine"
# The label Cluster API puts on the Machines of a target, when its scale reports no selector.
MACHINE_LABELS = {"MachineDeployment": "cluster.x-k8s.io/deployment-name", "MachinePool": "cluster.x-k8s.io/pool-name"}


@dataclass(frozen=True)
class Target:
    api_version: str
    kind: str
    name: str
    namespace: str

    @property
    def group_version(self) -> tuple[str, str]:
        group, _, version = self.api_version.partition("/")
        return group, version

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name} ({self.api_version})"


def target_of(pool: dict) -> Target:
    ref = ((pool["spec"].get("nodeGroup") or {}).get("clusterapi") or {}).get("scaleTargetRef") or {}
    return Target(api_version=ref.get("apiVersion") or "cluster.x-k8s.io/v1beta1", kind=ref.get("kind") or "MachineDeployment",
                  name=ref.get("name", ""), namespace=pool["metadata"]["namespace"])


def node_of(machine: dict) -> str | None:
    return (((machine.get("status") or {}).get("nodeRef")) or {}).get("name")


def wanted(machine: dict) -> bool:
    """A Machine neither being deleted nor marked for deletion."""
    meta = machine["metadata"]
    return not meta.get("deletionTimestamp") and DELETE_MACHINE not in (meta.get("annotations") or {})


def adoptable(machines: list[dict], all_nodes: dict[str, dict]) -> list[tuple[dict, dict]]:
    """(Node, Machine) of the target that belong to no pool and are not going away: those of
    wanted Machines first, then those marked for deletion but not deleted yet (taken back
    when the pool grows again before the MachineSet deleted them), each by node name."""
    out = []
    for m in machines:
        node = all_nodes.get(node_of(m) or "")
        if (node and not m["metadata"].get("deletionTimestamp") and not node["metadata"].get("deletionTimestamp")
                and naming.LABEL_POOL not in (node["metadata"].get("labels") or {})):
            out.append((node, m))
    return sorted(out, key=lambda p: (not wanted(p[1]), p[0]["metadata"]["name"]))


def replicas_after_release(current: int, machines: list[dict]) -> int:
    """Replicas once the marked Machines go: never above what was asked, never above the
    Machines still wanted (a repeated release lowers nothing twice)."""
    return max(0, min(current, sum(1 for m in machines if wanted(m))))


class ClusterApiProvider:
    def __init__(self, kube) -> None:
        self.kube = kube   # the executor

    async def _read(self, pool: dict, target: Target) -> tuple[str | None, dict | None, str | None]:
        """(plural, scale, error): the target's scale subresource, or why it cannot be used."""
        group, version = target.group_version
        plural = await self.kube.resource_plural(target.api_version, target.kind)
        scale = await self.kube.get_scale(group, version, plural, target.namespace, target.name) if plural else None
        if scale is None:
            why = ("does not exist" if plural else
                   f"cannot be scaled: the API server serves no kind {target.kind} with a scale subresource in {target.api_version}")
            msg = (f"the scale target {target} of nodeGroup.clusterapi.scaleTargetRef {why}; "
                   "create it (or fix scaleTargetRef): the pool gets no nodes until then")
            self.kube.event(pool, "Warning", "ScaleTargetNotFound", msg)
            return plural, None, msg
        return plural, scale, None

    async def _machines(self, target: Target, scale: dict) -> list[dict]:
        selector = (scale.get("status") or {}).get("selector")
        if not selector and target.kind in MACHINE_LABELS:
            selector = f"{MACHINE_LABELS[target.kind]}={target.name}"
        return await self.kube.list_machines(target.namespace, selector) if selector else []

    async def grow(self, pool, members, count, all_nodes, low_priority) -> list[str]:
        target = target_of(pool)
        plural, scale, error = await self._read(pool, target)
        if error:
            return [error]
        want = len(members) + count
        if int((scale.get("spec") or {}).get("replicas") or 0) != want:
            # replicas first: a marked Machine taken back below is then never one too many
            group, version = target.group_version
            await self.kube.patch_scale(group, version, plural, target.namespace, target.name, want,
                                        resource_version=scale["metadata"].get("resourceVersion"))
        value = naming.pool_node_label(pool["metadata"]["namespace"], pool["metadata"]["name"])
        for node, machine in adoptable(await self._machines(target, scale), all_nodes)[:count]:
            if not wanted(machine):
                await self.kube.patch_machine(machine["metadata"]["namespace"], machine["metadata"]["name"],
                                              {"metadata": {"annotations": {DELETE_MACHINE: None}}})
            taints = with_pool_taint(node, value)
            await self.kube.patch_node(node["metadata"]["name"], {
                "metadata": {"labels": {naming.LABEL_POOL: value}}, "spec": {"taints": taints}})
        return []

    async def release(self, pool, node) -> None:
        target = target_of(pool)
        name = node["metadata"]["name"]
        plural, scale, _ = await self._read(pool, target)
        machines = await self._machines(target, scale) if scale else []
        mine = [m for m in machines if node_of(m) == name]
        for m in mine:
            if wanted(m):
                stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                await self.kube.patch_machine(m["metadata"]["namespace"], m["metadata"]["name"],
                                              {"metadata": {"annotations": {DELETE_MACHINE: stamp}}})
                m["metadata"].setdefault("annotations", {})[DELETE_MACHINE] = stamp
        if scale is not None and mine:
            current = int((scale.get("spec") or {}).get("replicas") or 0)
            replicas = replicas_after_release(current, machines)
            if replicas != current:
                group, version = target.group_version
                # no precondition: a Conflict here would leave the Machine marked and the node
                # in the pool, and the next pass might pick another node to release
                await self.kube.patch_scale(group, version, plural, target.namespace, target.name, replicas)
        # The node leaves the pool now; one whose Machine goes keeps the pool's taint until
        # Cluster API drains and deletes it, so nothing else lands there meanwhile.
        patch: dict = {"metadata": {"labels": {naming.LABEL_POOL: None, naming.LABEL_LOW_PRIORITY: None}}}
        if not mine:
            patch["spec"] = {"taints": without_pool_taint(node) or None}
        await self.kube.patch_node(name, patch)
