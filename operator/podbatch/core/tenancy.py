"""Tenants kept apart: whether a Pool stays within what a cluster admin granted its namespace.

A Pool is namespaced and every `edit` user may write one, but what it takes is not:
Nodes (kwok Nodes created with the labels the pool asks for, existing Nodes adopted and
tainted by selector) and a host directory that a root init container creates and wipes.
A cluster-scoped PoolGrant (api/grant.py) says which namespaces may use which providers,
which Nodes, how many, how many slots per node and which node directory. This module is
the policy, pure: bodies in, a decision out; the engine asks it before a pool grows.

Which grants apply to a namespace: those naming it in `namespaces` or whose
`namespaceSelector` matches its labels. When none applies, the pool is refused if grants
are required (`require_grants`, PODBATCH_REQUIRE_GRANTS) and unrestricted otherwise (a
single-tenant install needs no grant). A pool is admitted by the first applicable grant
(by name) that allows all of it; grants are not combined field by field.

`maxNodes` is per namespace and grant: the namespace's pools are counted oldest first
(creationTimestamp, then name), each admitted pool using its targets (or the nodes it
holds, when more), so a new pool can never push out an older one.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from podbatch.api.grant import DEFAULT_NODE_ROOT_DIR

REASON_NOT_GRANTED = "NotGranted"
REASON_GRANTED = "Granted"


@dataclass(frozen=True)
class Decision:
    applies: bool                  # grants govern this namespace (required, or one names it)
    granted_by: str | None = None  # the PoolGrant that admitted the pool
    refusal: str | None = None     # why no grant admits it (names the field and the limit)


def check_pool(pool: dict, grants: list[dict], namespace_labels: dict, *,
               require_grants: bool = True, namespace_pools: list[dict] = ()) -> str | None:
    """None when the pool may take nodes; otherwise why not, naming the field and the limit.

    `namespace_pools`: the other Pools of the pool's namespace (for `maxNodes`, counted
    oldest first); the pool itself may be among them."""
    return decide(pool, grants, namespace_labels, require_grants=require_grants,
                  namespace_pools=namespace_pools).refusal


def decide(pool: dict, grants: list[dict], namespace_labels: dict, *,
           require_grants: bool = True, namespace_pools: list[dict] = ()) -> Decision:
    ns = pool["metadata"]["namespace"]
    applicable = grants_for(ns, namespace_labels, grants)
    if not applicable:
        if not require_grants:
            return Decision(applies=False)
        return Decision(applies=True, refusal=(
            f"no PoolGrant grants nodes to namespace {ns}: a cluster admin must create one "
            "(see docs/tenancy.md)"))
    # 1. budgets used by the older pools of the namespace, per grant
    used: dict[str, int] = {}
    me = _order(pool)
    older = (p for p in namespace_pools if p["metadata"].get("namespace") == ns and _order(p) < me
             and not p["metadata"].get("deletionTimestamp"))
    for other in sorted(older, key=_order):
        for g in applicable:
            if _refusal(other, g, ns, used) is None:
                used[_name(g)] = used.get(_name(g), 0) + max(requested_nodes(other), held_nodes(other))
                break
    # 2. the first grant that allows the whole pool admits it
    refusals = []
    for g in applicable:
        why = _refusal(pool, g, ns, used)
        if why is None:
            return Decision(applies=True, granted_by=_name(g))
        refusals.append(why)
    more = f" (and {len(refusals) - 1} other PoolGrants refuse it too)" if len(refusals) > 1 else ""
    return Decision(applies=True, refusal=refusals[0] + more)


def grants_for(ns: str, namespace_labels: dict, grants: list[dict]) -> list[dict]:
    """The grants that apply to a namespace, by name."""
    out = []
    for g in grants:
        spec = g.get("spec") or {}
        if ns in (spec.get("namespaces") or []):
            out.append(g)
        elif spec.get("namespaceSelector") is not None and selector_matches(spec["namespaceSelector"], namespace_labels or {}):
            out.append(g)
    return sorted(out, key=_name)


def selector_matches(selector: dict, labels: dict) -> bool:
    """A Kubernetes LabelSelector (matchLabels, matchExpressions); `{}` matches everything."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for req in selector.get("matchExpressions") or []:
        k, op, values = req.get("key"), req.get("operator"), req.get("values") or []
        if op == "In" and labels.get(k) not in values:
            return False
        if op == "NotIn" and k in labels and labels[k] in values:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False   # an operator we do not know grants nothing
    return True


def requested_nodes(pool: dict) -> int:
    spec = pool.get("spec") or {}
    return int(spec.get("targetDedicatedNodes") or 0) + int(spec.get("targetLowPriorityNodes") or 0)


def held_nodes(pool: dict) -> int:
    st = pool.get("status") or {}
    return int(st.get("currentDedicatedNodes") or 0) + int(st.get("currentLowPriorityNodes") or 0)


def _name(g: dict) -> str:
    return g["metadata"]["name"]


def _order(pool: dict) -> tuple[str, str]:
    meta = pool["metadata"]
    return (meta.get("creationTimestamp") or "9999", meta["name"])


def _within(path: str, root: str) -> bool:
    """Whether an absolute path is the root or below it, with no `..` to climb out."""
    if not path.startswith("/") or ".." in path.split("/"):
        return False
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _label_allowed(label: str, allowed: list[str]) -> bool:
    return any(label.startswith(a) if a.endswith("/") else label == a for a in allowed)


def _refusal(pool: dict, grant: dict, ns: str, used: dict[str, int]) -> str | None:
    """Why this grant does not admit this pool (None: it does). Every message names the
    Pool field, its value and the grant's limit."""
    spec, g = pool.get("spec") or {}, grant.get("spec") or {}
    by = f"namespace {ns} by PoolGrant {_name(grant)}"
    group = spec.get("nodeGroup") or {}
    provider = group.get("provider") or "kwok"
    providers = g.get("providers") or []
    if provider not in providers:
        return f"spec.nodeGroup.provider {provider} is not among the providers ({', '.join(providers) or 'none'}) granted to {by}"
    if provider == "static":
        wanted = (g.get("static") or {}).get("nodeSelector") or {}
        if not wanted:
            return f"spec.nodeGroup.provider static needs Nodes named by spec.static.nodeSelector of PoolGrant {_name(grant)}, which has none"
        selector = (group.get("static") or {}).get("nodeSelector") or {}
        missing = {k: v for k, v in wanted.items() if selector.get(k) != v}
        if missing:
            need = ", ".join(f"{k}={v}" for k, v in sorted(missing.items()))
            return (f"spec.nodeGroup.static.nodeSelector {_fmt(selector)} is outside the Nodes granted to {by}: "
                    f"it must include {need}")
    if provider == "kwok":
        allowed = (g.get("kwok") or {}).get("allowedLabels") or []
        bad = sorted(k for k in ((group.get("kwok") or {}).get("labels") or {}) if not _label_allowed(k, allowed))
        if bad:
            return (f"spec.nodeGroup.kwok.labels {', '.join(bad)} not among the labels "
                    f"({', '.join(allowed) or 'none'}) granted to {by}")
    slots = int(spec.get("taskSlotsPerNode") or 1)
    max_slots = int(g.get("maxTaskSlotsPerNode") or 256)
    if slots > max_slots:
        return f"spec.taskSlotsPerNode {slots} exceeds the {max_slots} slots per node granted to {by}"
    root = g.get("nodeRootDir") or DEFAULT_NODE_ROOT_DIR
    path = spec.get("nodeRootDir") or DEFAULT_NODE_ROOT_DIR
    if not _within(path, root):
        return f"spec.nodeRootDir {path} is outside the node directory {root} granted to {by}"
    limit = int(g.get("maxNodes") or 0)
    taken = used.get(_name(grant), 0)
    want = requested_nodes(pool)
    if taken + want > limit:
        what = (f"spec.targetDedicatedNodes {want}" if not int(spec.get("targetLowPriorityNodes") or 0)
                else f"spec.targetDedicatedNodes + spec.targetLowPriorityNodes {want}")
        older = f" ({taken} already held by older pools there)" if taken else ""
        return f"{what} exceeds the {limit} nodes granted to {by}{older}"
    return None


def _fmt(selector: dict) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(selector.items())) + "}"


def refused(pool: dict) -> bool:
    """Whether the pool's status says it is outside its grant (condition Granted False). Such
    a pool runs nothing as root on its nodes: no node preparation, no directory wipe."""
    return any(c.get("type") == "Granted" and c.get("status") == "False"
               for c in (pool.get("status") or {}).get("conditions") or [])
