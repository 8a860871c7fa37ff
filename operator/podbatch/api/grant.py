"""The PoolGrant kind: which nodes a namespace's pools may take, granted by a cluster admin.

A Pool is namespaced, so whoever may edit a namespace may write one; but the Nodes it
takes (kwok Nodes it creates, existing Nodes it labels and taints, the host directory
its root init container writes) are cluster resources. A PoolGrant is cluster-scoped so
that only a cluster admin can write one: namespace users bound to `edit` through a
RoleBinding get no right on cluster-scoped kinds. The policy that reads it is the pure
`podbatch.core.tenancy`.
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import Field

from podbatch import API_VERSION
from podbatch.api.common import KindModel, SpecModel, StatusModel
from podbatch.api.pool import NodeGroupProvider

DEFAULT_NODE_ROOT_DIR = "/var/lib/podbatch"


class LabelSelectorRequirement(SpecModel):
    """One requirement of a label selector, as in Kubernetes' LabelSelector."""

    key: str
    """The label key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the key's value is compared with `values`."""
    values: Optional[list[str]] = None
    """The values for In and NotIn; empty for Exists and DoesNotExist."""


class LabelSelector(SpecModel):
    """A Kubernetes label selector; all of its requirements must hold. An empty selector
    (`{}`) matches every namespace."""

    match_labels: Optional[dict[str, str]] = None
    """Labels the namespace must carry, with these values."""
    match_expressions: Optional[list[LabelSelectorRequirement]] = None
    """Further requirements on the namespace's labels."""


class StaticGrant(SpecModel):
    """Which existing Nodes static pools may adopt."""

    node_selector: Annotated[dict[str, str], Field(min_length=1)]
    """Labels every adopted Node carries: a static pool's `nodeGroup.static.nodeSelector`
    must contain each of these key=value pairs (it may add more). At least one, so that no
    grant hands out every Node of the cluster by accident."""


class KwokGrant(SpecModel):
    """What the fake Nodes of kwok pools may carry."""

    allowed_labels: Optional[list[str]] = None
    """Label keys a pool may put on its Nodes through `nodeGroup.kwok.labels`: an entry
    ending in `/` allows every key with that prefix (`research.example.com/`), any other
    entry one exact key. Empty: no extra labels."""


class PoolGrantSpec(SpecModel):
    """The namespaces granted, and what their pools may use."""

    namespaces: Optional[list[str]] = None
    """Names of the namespaces this grant applies to."""
    namespace_selector: Optional[LabelSelector] = None
    """Namespaces this grant applies to, by their labels (in addition to `namespaces`)."""
    providers: Annotated[list[NodeGroupProvider], Field(min_length=1)]
    """Node-group providers the namespaces' pools may use. `static` also needs
    `static.nodeSelector`."""
    max_nodes: Annotated[int, Field(ge=0)]
    """Most nodes (dedicated plus low-priority) the pools of each namespace may hold
    together under this grant; older pools are counted first."""
    max_task_slots_per_node: Annotated[int, Field(ge=1, le=256)] = 256
    """Largest `taskSlotsPerNode` a pool may ask for."""
    node_root_dir: Annotated[str, Field(pattern=r"^/")] = DEFAULT_NODE_ROOT_DIR
    """Host directory under which pools keep their node directories (a root init
    container creates and wipes them): a pool's `nodeRootDir` must be this directory or
    one below it."""
    static: Optional[StaticGrant] = None
    """The Nodes static pools may adopt; required for provider `static`."""
    kwok: Optional[KwokGrant] = None
    """The labels kwok pools may put on their Nodes."""


class PoolGrantStatus(StatusModel):
    """podbatch writes nothing here: each Pool's `Granted` condition names the grant that
    admitted it or says why none did."""


class PoolGrant(KindModel):
    """Cluster-scoped: which node-group providers, Nodes, sizes and node directory the
    pools of some namespaces may use, granted by a cluster admin."""

    api_version: str = API_VERSION
    kind: str = "PoolGrant"
    metadata: dict = Field(default_factory=dict)
    spec: PoolGrantSpec
    status: Optional[PoolGrantStatus] = None
