#!/usr/bin/env python3
"""A fake Cluster API for tests: MachineDeployments -> Machines -> simulated Nodes.

With the trimmed CRDs of hack/fakecapi-crds/ installed, it plays the MachineDeployment,
MachineSet and Machine controllers just enough for podbatch's clusterapi provider:

* each MachineDeployment keeps `spec.replicas` Machines (labelled
  `cluster.x-k8s.io/deployment-name`, owned by it, with a finalizer of ours);
* each Machine gets a Node the node simulator runs (`kwok.x-k8s.io/node: fake`, labelled
  `cluster.x-k8s.io/deployment-name`, annotated `cluster.x-k8s.io/machine` as Cluster API
  does), `--provision-delay` seconds after the Machine was created, and then
  `status.nodeRef` and `status.phase: Running`;
* when replicas drop, Machines annotated `cluster.x-k8s.io/delete-machine` are deleted
  first (as the real MachineSet does), then the newest others;
* a Machine being deleted has its Node deleted, then its finalizer removed; a Node whose
  Machine is gone is deleted;
* the MachineDeployment's status: `replicas`, `readyReplicas` (Machines with a node),
  `selector` (what its scale subresource reports).

It polls (every `--interval` seconds) rather than watches: a few objects, kept simple.
Run it alone (below) or inside the node simulator (`hack/nodesim.py --fake-cluster-api`).

Usage: python hack/fakecapi.py [--kubeconfig PATH] [--namespace-prefix PFX] [--interval 0.5]
       [--provision-delay 0]    (see docs/nodesim.md)
"""
from __future__ import annotations

import argparse
import asyncio
import calendar
import logging
import os
import sys
import time
import uuid
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nodesim import MERGE, ApiError, Kube, fake_main, poll, run_standalone  # noqa: E402

log = logging.getLogger("fakecapi")

API = "/apis/cluster.x-k8s.io/v1beta1"
DEPLOYMENT_LABEL = "cluster.x-k8s.io/deployment-name"
DELETE_MACHINE = "cluster.x-k8s.io/delete-machine"
MACHINE_ANNOTATION = "cluster.x-k8s.io/machine"
NAMESPACE_ANNOTATION = "cluster.x-k8s.io/cluster-namespace"
FINALIZER = "sim.podbatch.io/fakecapi-node"


def created_at(obj: dict) -> float:
    try:
        return calendar.timegm(time.strptime(obj["metadata"]["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
    except (KeyError, ValueError):
        return 0.0


def deletion_order(machines: list[dict]) -> list[dict]:
    """Which Machines go first when replicas drop: marked ones, then the newest."""
    return sorted(machines, key=lambda m: (DELETE_MACHINE not in (m["metadata"].get("annotations") or {}),
                                           -created_at(m), m["metadata"]["name"]))


def node_name(machine: dict) -> str:
    return f"{machine['metadata']['namespace']}-{machine['metadata']['name']}"[:253]


def node_for(machine: dict, md_name: str) -> dict:
    ns, name = machine["metadata"]["namespace"], node_name(machine)
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                         "labels": {DEPLOYMENT_LABEL: md_name, "kubernetes.io/hostname": name, "type": "fakecapi"},
                         "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0",
                                         MACHINE_ANNOTATION: machine["metadata"]["name"], NAMESPACE_ANNOTATION: ns}},
            "spec": {"taints": [{"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}]}}


class FakeClusterApi:
    def __init__(self, kube: Kube, namespace_prefix: str = "", interval: float = 0.5, provision_delay: float = 0.0):
        self.kube, self.prefix, self.interval, self.delay = kube, namespace_prefix, interval, provision_delay

    def _mine(self, obj: dict) -> bool:
        return obj["metadata"].get("namespace", "").startswith(self.prefix)

    async def _list(self, path: str, **query: str) -> list[dict]:
        try:
            res = await self.kube.request("GET", path, list(query.items()))
        except ApiError as e:
            if e.status == 404:   # the CRDs are not installed: nothing to do
                return []
            raise
        return [o for o in res.get("items") or [] if "namespace" not in o["metadata"] or self._mine(o)]

    async def _ok(self, method: str, path: str, body=None, ok=(404, 409)) -> None:
        try:
            await self.kube.request(method, path, body=body, content_type=MERGE if method == "PATCH" else "application/json")
        except ApiError as e:
            if e.status not in ok:
                raise

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("fake Cluster API running (namespaces %s*, every %.1fs)", self.prefix, self.interval)
        await poll("fake Cluster API", self.reconcile, self.interval, stopping)

    async def reconcile(self) -> None:
        mds = await self._list(f"{API}/machinedeployments")
        machines = await self._list(f"{API}/machines")
        nodes = {n["metadata"]["name"]: n for n in await self._list("/api/v1/nodes", labelSelector=DEPLOYMENT_LABEL)}
        # 1. Machines being deleted: their Node first, then the finalizer
        for m in machines:
            if m["metadata"].get("deletionTimestamp"):
                await self._ok("DELETE", f"/api/v1/nodes/{node_name(m)}")
                rest = [f for f in m["metadata"].get("finalizers") or [] if f != FINALIZER]
                await self._ok("PATCH", self._machine_path(m), {"metadata": {"finalizers": rest or None}})
        # 2. Nodes whose Machine is gone (a Machine deleted while we were not running)
        known = {(m["metadata"]["namespace"], m["metadata"]["name"]) for m in machines}
        for name, n in nodes.items():
            ann = n["metadata"].get("annotations") or {}
            ns = ann.get(NAMESPACE_ANNOTATION, "")
            if ns.startswith(self.prefix) and (ns, ann.get(MACHINE_ANNOTATION)) not in known and not n["metadata"].get("deletionTimestamp"):
                log.info("node %s: its Machine is gone, deleting it", name)
                await self._ok("DELETE", f"/api/v1/nodes/{name}")
        # 3. each MachineDeployment
        for md in mds:
            if not md["metadata"].get("deletionTimestamp"):
                await self.reconcile_deployment(md, [m for m in machines if m["metadata"]["namespace"] == md["metadata"]["namespace"]
                                                     and (m["metadata"].get("labels") or {}).get(DEPLOYMENT_LABEL) == md["metadata"]["name"]],
                                                nodes)

    @staticmethod
    def _machine_path(m: dict) -> str:
        return f"{API}/namespaces/{m['metadata']['namespace']}/machines/{m['metadata']['name']}"

    async def reconcile_deployment(self, md: dict, own: list[dict], nodes: dict[str, dict]) -> None:
        ns, name = md["metadata"]["namespace"], md["metadata"]["name"]
        replicas = int((md.get("spec") or {}).get("replicas", 1))
        alive = [m for m in own if not m["metadata"].get("deletionTimestamp")]
        if len(alive) > replicas:
            for m in deletion_order(alive)[:len(alive) - replicas]:
                log.info("MachineDeployment %s/%s: deleting Machine %s (%s)", ns, name, m["metadata"]["name"],
                         "marked" if DELETE_MACHINE in (m["metadata"].get("annotations") or {}) else "newest")
                await self._ok("DELETE", self._machine_path(m))
                alive.remove(m)
        for _ in range(replicas - len(alive)):
            body = {"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
                    "metadata": {"name": f"{name}-{uuid.uuid4().hex[:5]}", "namespace": ns, "labels": {DEPLOYMENT_LABEL: name},
                                 "finalizers": [FINALIZER],
                                 "ownerReferences": [{"apiVersion": md["apiVersion"], "kind": md["kind"], "name": name,
                                                      "uid": md["metadata"]["uid"], "controller": True}]},
                    "spec": {"clusterName": (md.get("spec") or {}).get("clusterName", "")}}
            alive.append(await self.kube.request("POST", f"{API}/namespaces/{ns}/machines", body=body))
            log.info("MachineDeployment %s/%s: created Machine %s", ns, name, body["metadata"]["name"])
        ready = 0
        for m in alive:
            if time.time() - created_at(m) < self.delay:
                continue
            nname = node_name(m)
            if nname not in nodes:
                await self._ok("POST", "/api/v1/nodes", node_for(m, name))
            status = m.get("status") or {}
            if (status.get("nodeRef") or {}).get("name") != nname:
                await self._ok("PATCH", self._machine_path(m) + "/status", {"status": {
                    "phase": "Running", "nodeRef": {"apiVersion": "v1", "kind": "Node", "name": nname}}})
            ready += 1
        want = {"replicas": len(alive), "readyReplicas": ready, "selector": f"{DEPLOYMENT_LABEL}={name}"}
        if any((md.get("status") or {}).get(k) != v for k, v in want.items()):
            await self._ok("PATCH", f"{API}/namespaces/{ns}/machinedeployments/{name}/status", {"status": want})


async def amain(args: argparse.Namespace) -> int:
    return await run_standalone(lambda kube: FakeClusterApi(kube, args.namespace_prefix, args.interval,
                                                            args.provision_delay), args.kubeconfig)


def _args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--namespace-prefix", default="", help="serve only namespaces whose name starts with this")
    ap.add_argument("--provision-delay", type=float, default=0.0, help="seconds from a Machine's creation to its Node")


def main(argv: Optional[list] = None) -> int:
    return fake_main("fake Cluster API: MachineDeployments -> Machines -> simulated Nodes", _args, amain, argv)


if __name__ == "__main__":
    sys.exit(main())
