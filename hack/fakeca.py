#!/usr/bin/env python3
"""A fake cluster-autoscaler for tests: unschedulable pods -> simulated Nodes, and back.

It plays cluster-autoscaler's part just enough for podbatch's `autoscaler` provider, on
node groups given on the command line (`--node-group NAME:LABEL=VALUE[,LABEL=VALUE…]:MAX`):

* scale-up: a pod that kube-scheduler marked Unschedulable, whose nodeSelector a group's
  labels satisfy and which tolerates the simulated nodes' taint (`kwok.x-k8s.io/node`),
  gets a new Node of that group `--provision-delay` seconds later (the node simulator
  runs it: `kwok.x-k8s.io/node: fake`); at most one Node per pod (placeholders keep one
  per node with anti-affinity), and never more than the group's MAX. Events as the real
  one posts: TriggeredScaleUp, or NotTriggerScaleUp with the reason, on the pod;
* scale-down: a Node of a group with no running pod on it and without the annotation
  `cluster-autoscaler.kubernetes.io/scale-down-disabled: "true"` for `--unneeded`
  seconds is deleted (Event ScaleDown); a Node younger than `--unneeded` is never empty
  yet (the pod it was made for may still be on its way, as the real one's
  scale-down-delay-after-add);
* ProvisioningRequests (autoscaling.x-k8s.io/v1beta1, class best-effort-atomic-scale-up; the
  trimmed CRD of hack/fakeca-crds/): all of a request's nodes at once, or none (condition
  Failed) when the group's MAX would be exceeded; then condition Provisioned. Pods that consume
  a request are not scaled up for one by one;
* `--fail-group NAME` makes a group's scale-ups fail (Event FailedToScaleUpGroup), as a
  cloud out of capacity would.

It polls every `--interval` seconds. Usage:
  python hack/fakeca.py [--kubeconfig PATH] --node-group spot:pool=gpu,capacity=spot:4 \
      [--provision-delay 1] [--unneeded 5] [--fail-group NAME]   (see docs/nodesim.md)
"""
from __future__ import annotations

import argparse
import asyncio
import calendar
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nodesim import MERGE, ApiError, Kube, fake_main, poll, run_standalone  # noqa: E402

log = logging.getLogger("fakeca")
GROUP_LABEL = "sim.podbatch.io/node-group"
SIM_TAINT = "kwok.x-k8s.io/node"
KEEP = "cluster-autoscaler.kubernetes.io/scale-down-disabled"
CONSUME = "autoscaling.x-k8s.io/consume-provisioning-request"
PR_API = "/apis/autoscaling.x-k8s.io/v1beta1"


@dataclass
class NodeGroup:
    name: str
    labels: dict[str, str]
    max_size: int
    failing: bool = False
    asked: dict[str, float] = field(default_factory=dict)   # pod uid -> when its node was asked for

    @classmethod
    def parse(cls, text: str) -> "NodeGroup":
        name, labels, size = text.split(":")
        return cls(name, dict(kv.split("=", 1) for kv in labels.split(",") if kv), int(size))

    def serves(self, pod: dict) -> bool:
        spec = pod.get("spec") or {}
        if not spec.get("nodeSelector"):
            return False   # (a test cluster's other pods never ask this group for nodes)
        if any(self.labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
            return False
        return any(t.get("operator") == "Exists" and not t.get("key") or t.get("key") == SIM_TAINT
                   for t in spec.get("tolerations") or [])


def _unschedulable(pod: dict) -> bool:
    return any(c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _since(ts: str | None) -> float:
    try:
        return calendar.timegm(time.strptime(ts or "", "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return time.time()


class FakeClusterAutoscaler:
    def __init__(self, kube: Kube, groups: list[NodeGroup], interval: float = 0.5, provision_delay: float = 1.0,
                 unneeded: float = 5.0) -> None:
        self.kube, self.groups, self.interval, self.delay, self.unneeded = kube, groups, interval, provision_delay, unneeded
        self.empty_since: dict[str, float] = {}
        self.serial = int(time.time()) % 100000

    async def _event(self, obj: dict, reason: str, message: str, etype: str = "Normal") -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace") or "default"
        body = {"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": f"{meta['name']}.", "namespace": ns},
                "involvedObject": {"kind": obj.get("kind", "Pod"), "name": meta["name"], "namespace": meta.get("namespace", ""),
                                   "uid": meta.get("uid"), "apiVersion": "v1"},
                "reason": reason, "message": message, "type": etype, "source": {"component": "cluster-autoscaler"},
                "firstTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "lastTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "count": 1}
        try:
            await self.kube.request("POST", f"/api/v1/namespaces/{ns}/events", body=body)
        except ApiError as e:
            log.debug("event not posted: %s", e)

    async def run(self, stopping: asyncio.Event) -> None:
        log.info("fake cluster-autoscaler: groups %s", ", ".join(f"{g.name}{g.labels} max {g.max_size}" for g in self.groups))
        await poll("fake cluster-autoscaler", self.reconcile, self.interval, stopping)

    async def reconcile(self) -> None:
        pods = (await self.kube.request("GET", "/api/v1/pods", [("fieldSelector", "status.phase=Pending")]))["items"]
        nodes = (await self.kube.request("GET", "/api/v1/nodes", [("labelSelector", GROUP_LABEL)]))["items"]
        now = time.time()
        waiting = {p["metadata"]["uid"]: p for p in pods if not (p.get("spec") or {}).get("nodeName") and _unschedulable(p)
                   and CONSUME not in (p["metadata"].get("annotations") or {})}   # those come through their request
        await self._provisioning_requests(nodes, now)
        for group in self.groups:
            mine = [n for n in nodes if (n["metadata"].get("labels") or {}).get(GROUP_LABEL) == group.name]
            # pods that got a node, or went: no longer asking
            for uid in [u for u in group.asked if u not in waiting]:
                del group.asked[uid]
            for uid, pod in waiting.items():
                if uid in group.asked or not group.serves(pod):
                    continue
                if group.failing:
                    await self._event(pod, "NotTriggerScaleUp", f"pod didn't trigger scale-up: 1 {group.name}: "
                                      "failed to increase node group size (out of capacity)", "Warning")
                    continue
                if len(mine) + sum(1 for t in group.asked.values() if t > 0) >= group.max_size:
                    await self._event(pod, "NotTriggerScaleUp", f"pod didn't trigger scale-up: 1 max node group size "
                                      f"reached ({group.name}, max {group.max_size})")
                    group.asked[uid] = 0.0   # not counted: asks again once there is room
                    continue
                group.asked[uid] = now
                await self._event(pod, "TriggeredScaleUp", f"pod triggered scale-up: [{{{group.name} {len(mine)}->"
                                  f"{len(mine) + 1} (max: {group.max_size})}}]")
            for uid, asked in list(group.asked.items()):
                if asked > 0 and now - asked >= self.delay:
                    await self._add_node(group)
                    group.asked[uid] = -1.0   # served; kept until the pod is bound so it is not served twice
                elif asked == 0.0 and len(mine) < group.max_size:
                    del group.asked[uid]
            await self._scale_down(mine, now)

    async def _provisioning_requests(self, nodes: list[dict], now: float) -> None:
        """best-effort-atomic-scale-up: all the request's nodes at once, or none (Failed)."""
        try:
            reqs = (await self.kube.request("GET", f"{PR_API}/provisioningrequests"))["items"]
        except ApiError as e:
            if e.status == 404:
                return   # the API is not served (its CRD is not installed)
            raise
        for pr in reqs:
            conds = {c.get("type") for c in (pr.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}
            if conds & {"Provisioned", "Failed"} or now - _since(pr["metadata"].get("creationTimestamp")) < self.delay:
                continue
            ns, name = pr["metadata"]["namespace"], pr["metadata"]["name"]
            count = sum(int(ps.get("count", 0)) for ps in pr["spec"].get("podSets") or [])
            try:
                template = await self.kube.request("GET", f"/api/v1/namespaces/{ns}/podtemplates/{name}")
            except ApiError:
                continue   # not created yet
            pod = {"metadata": template["metadata"], "spec": (template.get("template") or {}).get("spec") or {}}
            group = next((g for g in self.groups if g.serves(pod)), None)
            if group is None or group.failing:
                await self._settle(pr, "Failed", "NoNodeGroup" if group is None else "OutOfCapacity",
                                   "no node group can hold these pods" if group is None else f"{group.name}: out of capacity")
                continue
            mine = [n for n in nodes if (n["metadata"].get("labels") or {}).get(GROUP_LABEL) == group.name]
            if len(mine) + count > group.max_size:
                await self._settle(pr, "Failed", "MaxSizeReached", f"{count} nodes of {group.name} at once would exceed its max "
                                   f"size {group.max_size} ({len(mine)} now): none added")
                continue
            for _ in range(count):
                await self._add_node(group)
            await self._settle(pr, "Provisioned", "Provisioned", f"{count} nodes of {group.name} added together")

    async def _settle(self, pr: dict, kind: str, reason: str, message: str) -> None:
        ns, name = pr["metadata"]["namespace"], pr["metadata"]["name"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        log.info("ProvisioningRequest %s/%s: %s (%s)", ns, name, kind, message)
        await self.kube.request("PATCH", f"{PR_API}/namespaces/{ns}/provisioningrequests/{name}/status", body={"status": {
            "conditions": [{"type": kind, "status": "True", "reason": reason, "message": message, "lastTransitionTime": stamp}]}},
            content_type=MERGE)

    async def _add_node(self, group: NodeGroup) -> None:
        self.serial += 1
        name = f"fakeca-{group.name}-{self.serial}"
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {**group.labels, GROUP_LABEL: group.name, "kubernetes.io/hostname": name},
                             "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"}},
                "spec": {"taints": [{"key": SIM_TAINT, "value": "fake", "effect": "NoSchedule"}]},
                "status": {"capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
                           "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"}}}
        await self.kube.request("POST", "/api/v1/nodes", body=body)
        log.info("group %s: added node %s", group.name, name)

    async def _scale_down(self, mine: list[dict], now: float) -> None:
        for node in mine:
            name = node["metadata"]["name"]
            if (node["metadata"].get("annotations") or {}).get(KEEP) == "true" or node["metadata"].get("deletionTimestamp"):
                self.empty_since.pop(name, None)
                continue
            if now - _since(node["metadata"].get("creationTimestamp")) < self.unneeded:
                continue   # new: its pod may not be scheduled there yet (cluster-autoscaler's scale-down-delay-after-add)
            running = (await self.kube.request("GET", "/api/v1/pods", [("fieldSelector", f"spec.nodeName={name}")]))["items"]
            if any((p.get("status") or {}).get("phase") in ("Pending", "Running") and not p["metadata"].get("deletionTimestamp")
                   for p in running):
                self.empty_since.pop(name, None)
                continue
            first = self.empty_since.setdefault(name, now)
            if now - first >= self.unneeded:
                log.info("node %s unneeded for %.0fs: removing it", name, now - first)
                await self._event({**node, "kind": "Node"}, "ScaleDown", f"node removed by cluster autoscaler (unneeded "
                                  f"for {now - first:.0f}s)")
                try:
                    await self.kube.request("DELETE", f"/api/v1/nodes/{name}")
                except ApiError as e:
                    if e.status != 404:
                        raise
                self.empty_since.pop(name, None)


async def amain(args: argparse.Namespace) -> int:
    groups = [NodeGroup.parse(g) for g in args.node_group]
    for g in groups:
        g.failing = g.name in (args.fail_group or [])
    return await run_standalone(lambda kube: FakeClusterAutoscaler(kube, groups, args.interval, args.provision_delay,
                                                                   args.unneeded), args.kubeconfig)


def _args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--node-group", action="append", default=[], help="NAME:LABEL=VALUE[,LABEL=VALUE...]:MAX")
    ap.add_argument("--fail-group", action="append", help="a group whose scale-ups fail")
    ap.add_argument("--provision-delay", type=float, default=1.0, help="seconds from a scale-up to its Node")
    ap.add_argument("--unneeded", type=float, default=5.0, help="seconds a node stays empty before it is removed")


def main(argv: Optional[list] = None) -> int:
    return fake_main("fake cluster-autoscaler: unschedulable pods -> simulated Nodes", _args, amain, argv)


if __name__ == "__main__":
    sys.exit(main())
