"""The Pool kind: a node group of Kubernetes Nodes dedicated to running tasks."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from podbatch import API_VERSION

from podbatch.api.common import (
    ApplicationPackageReferences,
    Condition,
    ContainerSettings,
    Duration,
    EnvironmentSettings,
    ErrorInfo,
    ImagePullPolicy,
    IntOrString,
    KindModel,
    MetadataItems,
    NodeDeallocationOption,
    ResourceFiles,
    SpecModel,
    StatusModel,
    UserIdentity,
    cel,
    conditions_field,
)

NodeGroupProvider = Literal["kwok", "static", "clusterapi"]


class KwokCapacity(SpecModel):
    cpu: IntOrString = "4"
    memory: IntOrString = "16Gi"
    pods: IntOrString = 110


class KwokNodeGroup(SpecModel):
    """Template of the fake Nodes podbatch creates itself."""

    capacity: Optional[KwokCapacity] = None
    labels: Optional[dict[str, str]] = None
    """Extra labels on every Node of the group."""
    instance_type: Optional[str] = None
    """Value of node.kubernetes.io/instance-type (defaults to the pool's vmSize)."""


class StaticNodeGroup(SpecModel):
    """Adopt existing Nodes matching a selector, up to the target."""

    node_selector: dict[str, str]


class ClusterApiNodeGroup(SpecModel):
    """Scale a Cluster API MachineDeployment and adopt the Nodes it brings."""

    machine_deployment_name: str
    namespace: Optional[str] = None
    """Namespace of the MachineDeployment (default: the pool's namespace)."""


class NodeGroup(SpecModel):
    """Where the pool's nodes come from; the block matching `provider` configures it."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("self.provider == 'static' ? has(self.static) : !has(self.static)",
         "nodeGroup.static is required for provider static and not allowed otherwise"),
        ("self.provider == 'clusterapi' ? has(self.clusterapi) : !has(self.clusterapi)",
         "nodeGroup.clusterapi is required for provider clusterapi and not allowed otherwise"),
        ("self.provider == 'kwok' || !has(self.kwok)",
         "nodeGroup.kwok is only allowed for provider kwok"),
    ))

    provider: NodeGroupProvider
    kwok: Optional[KwokNodeGroup] = None
    static: Optional[StaticNodeGroup] = None
    clusterapi: Optional[ClusterApiNodeGroup] = None

    @model_validator(mode="after")
    def _block_matches_provider(self) -> "NodeGroup":
        for name in ("static", "clusterapi"):
            present = getattr(self, name) is not None
            if self.provider == name and not present:
                raise ValueError(f"nodeGroup.{name} is required for provider {name}")
        for name in ("kwok", "static", "clusterapi"):
            if self.provider != name and getattr(self, name) is not None:
                raise ValueError(f"nodeGroup.{name} is only allowed for provider {name}")
        return self


class TaskSchedulingPolicy(SpecModel):
    node_fill_type: Literal["spread", "pack"] = "spread"


class StartTask(SpecModel):
    """Runs on each node as it joins the pool, and after reboot or reimage."""

    command_line: str
    container_settings: Optional[ContainerSettings] = None
    resource_files: Optional[ResourceFiles] = None
    environment_settings: Optional[EnvironmentSettings] = None
    user_identity: Optional[UserIdentity] = None
    max_task_retry_count: Annotated[int, Field(ge=-1, le=100)] = 0
    wait_for_success: bool = True
    """When true, a node takes no tasks until its start task succeeds."""


class PoolSpec(SpecModel):
    model_config = ConfigDict(json_schema_extra=cel(
        ("!(has(self.enableAutoScale) && self.enableAutoScale) || has(self.autoScaleFormula)",
         "autoScaleFormula is required when enableAutoScale is true"),
    ))

    node_group: NodeGroup
    vm_size: Optional[str] = None
    """Free-form label of the node size (kept for Batch compatibility)."""
    image: str = "busybox"
    """Default container image of the pool's tasks."""
    image_pull_policy: ImagePullPolicy = "IfNotPresent"
    target_dedicated_nodes: Annotated[int, Field(ge=0)] = 0
    target_low_priority_nodes: Annotated[int, Field(ge=0)] = 0
    resize_timeout: Duration = "PT15M"
    node_deallocation_option: NodeDeallocationOption = "requeue"
    """What happens to running tasks when the pool shrinks."""
    enable_auto_scale: bool = False
    auto_scale_formula: Optional[str] = None
    """Batch autoscale formula; sets $TargetDedicatedNodes / $TargetLowPriorityNodes."""
    auto_scale_evaluation_interval: Duration = "PT15M"
    """How often the formula runs (Batch's minimum is 5m)."""
    task_slots_per_node: Annotated[int, Field(ge=1, le=256)] = 1
    task_scheduling_policy: Optional[TaskSchedulingPolicy] = None
    enable_inter_node_communication: bool = False
    start_task: Optional[StartTask] = None
    application_package_references: Optional[ApplicationPackageReferences] = None
    metadata: Optional[MetadataItems] = None
    node_root_dir: str = "/var/lib/podbatch"
    """Root of the per-node Batch directories on each node."""

    @model_validator(mode="after")
    def _formula_when_autoscale(self) -> "PoolSpec":
        if self.enable_auto_scale and not self.auto_scale_formula:
            raise ValueError("autoScaleFormula is required when enableAutoScale is true")
        return self


class NodeCounts(StatusModel):
    creating: int = 0
    starting: int = 0
    waiting_for_start_task: int = 0
    start_task_failed: int = 0
    idle: int = 0
    running: int = 0
    offline: int = 0
    rebooting: int = 0
    reimaging: int = 0
    leaving_pool: int = 0
    unusable: int = 0
    unknown: int = 0
    total: int = 0


class AutoScaleRun(StatusModel):
    timestamp: Optional[datetime] = None
    results: Optional[str] = None
    """The formula's variables after evaluation, `$name=value;…`."""
    error: Optional[ErrorInfo] = None


class PoolStatus(StatusModel):
    allocation_state: Optional[Literal["steady", "resizing", "stopping"]] = None
    allocation_state_transition_time: Optional[datetime] = None
    current_dedicated_nodes: Optional[int] = None
    current_low_priority_nodes: Optional[int] = None
    node_counts: Optional[NodeCounts] = None
    resize_errors: Optional[list[ErrorInfo]] = None
    auto_scale_run: Optional[AutoScaleRun] = None
    conditions: Optional[list[Condition]] = conditions_field()
    observed_generation: Optional[int] = None


class Pool(KindModel):
    """A pool of compute nodes (Azure Batch pool)."""

    api_version: str = API_VERSION
    kind: str = "Pool"
    metadata: dict = Field(default_factory=dict)
    spec: PoolSpec
    status: Optional[PoolStatus] = None
