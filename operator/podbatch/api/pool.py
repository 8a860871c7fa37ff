"""The Pool kind: a node group of Kubernetes Nodes dedicated to running tasks."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Optional

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
from podbatch.api.podtemplate import MountConfigurations, PodTemplate

NodeGroupProvider = Literal["kwok", "static", "clusterapi", "autoscaler"]


class KwokCapacity(SpecModel):
    """Capacity and allocatable of each fake Node. Without this block the Nodes get 32
    cpu, 256Gi and 110 pods; with it, the defaults below fill what it leaves out."""

    cpu: IntOrString = "4"
    """CPU of each Node, a Kubernetes quantity."""
    memory: IntOrString = "16Gi"
    """Memory of each Node, a Kubernetes quantity."""
    pods: IntOrString = 110
    """Pods each Node takes."""


class KwokNodeGroup(SpecModel):
    """Template of the fake Nodes podbatch creates itself."""

    capacity: Optional[KwokCapacity] = None
    """What each fake Node reports as its capacity."""
    labels: Optional[dict[str, str]] = None
    """Extra labels on every Node of the group."""
    instance_type: Optional[str] = None
    """Value of node.kubernetes.io/instance-type (defaults to the pool's vmSize)."""


class StaticNodeGroup(SpecModel):
    """Adopt existing Nodes matching a selector, up to the target."""

    node_selector: dict[str, str]
    """Labels (key: value) a Node must carry to be adopted. Nodes that match and belong to
    no other pool are taken in name order, labelled podbatch.io/pool and tainted
    podbatch.io/pool=<namespace>.<pool>:NoSchedule; a released Node loses both. Fewer
    matching Nodes than the target: resize error InsufficientNodes."""


class ScaleTargetRef(SpecModel):
    """An object in the pool's namespace with a scale subresource whose Machines bring the
    pool's Nodes: a Cluster API MachineDeployment (the default) or MachinePool."""

    api_version: Annotated[str, Field(pattern=r"^[a-z0-9.-]+/[a-z0-9]+$")] = "cluster.x-k8s.io/v1beta1"
    """Group and version of the target (`group/version`)."""
    kind: str = "MachineDeployment"
    """Kind of the target, e.g. MachineDeployment or MachinePool."""
    name: Annotated[str, Field(min_length=1)]
    """Name of the target, in the pool's namespace."""


class ClusterApiNodeGroup(SpecModel):
    """Scale a Cluster API MachineDeployment or MachinePool through its scale subresource
    and adopt the Nodes of its Machines (see docs/nodegroups.md)."""

    scale_target_ref: ScaleTargetRef


class AutoscalerNodeGroup(SpecModel):
    """Grow through the cluster's own autoscaler (cluster-autoscaler, Karpenter, GKE node
    auto-provisioning, EKS Auto Mode): one pending placeholder pod per missing node, the
    Node it brings adopted by the pool (see docs/nodegroups.md)."""

    node_selector: dict[str, str]
    """Labels of the nodes the pool wants (e.g. a node group, an instance type, a Karpenter
    NodePool): the placeholder pods' nodeSelector."""
    low_priority_node_selector: Optional[dict[str, str]] = None
    """Labels of spot / low-priority nodes, for targetLowPriorityNodes (e.g.
    karpenter.sh/capacity-type: spot). Without it every node is asked for with nodeSelector."""
    tolerations: Optional[list[dict[str, Any]]] = None
    """Tolerations of the placeholder pods (the node group's own taints)."""
    resources: Optional[dict[str, dict[str, IntOrString]]] = None
    """requests/limits of a placeholder: the shape the autoscaler must find room for (e.g.
    most of a node's CPU, or a GPU). Unset: any node matching the selector will do."""


class NodeGroup(SpecModel):
    """Where the pool's nodes come from; the block matching `provider` configures it."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("self.provider == 'static' ? has(self.static) : !has(self.static)",
         "nodeGroup.static is required for provider static and not allowed otherwise"),
        ("self.provider == 'clusterapi' ? has(self.clusterapi) : !has(self.clusterapi)",
         "nodeGroup.clusterapi is required for provider clusterapi and not allowed otherwise"),
        ("self.provider == 'autoscaler' ? has(self.autoscaler) : !has(self.autoscaler)",
         "nodeGroup.autoscaler is required for provider autoscaler and not allowed otherwise"),
        ("self.provider == 'kwok' || !has(self.kwok)",
         "nodeGroup.kwok is only allowed for provider kwok"),
    ))

    provider: NodeGroupProvider
    """kwok: podbatch creates fake Nodes (run by kwok or hack/nodesim.py); static: it adopts
    existing Nodes matching nodeGroup.static.nodeSelector; clusterapi: see nodeGroup.clusterapi;
    autoscaler: see nodeGroup.autoscaler."""
    kwok: Optional[KwokNodeGroup] = None
    static: Optional[StaticNodeGroup] = None
    clusterapi: Optional[ClusterApiNodeGroup] = None
    autoscaler: Optional[AutoscalerNodeGroup] = None

    @model_validator(mode="after")
    def _block_matches_provider(self) -> "NodeGroup":
        for name in ("static", "clusterapi", "autoscaler"):
            present = getattr(self, name) is not None
            if self.provider == name and not present:
                raise ValueError(f"nodeGroup.{name} is required for provider {name}")
        for name in ("kwok", "static", "clusterapi", "autoscaler"):
            if self.provider != name and getattr(self, name) is not None:
                raise ValueError(f"nodeGroup.{name} is only allowed for provider {name}")
        return self


class TaskSchedulingPolicy(SpecModel):
    """How tasks are spread over the pool's nodes."""

    node_fill_type: Literal["spread", "pack"] = "spread"
    """spread: each task goes to the node with the most free slots; pack: to the fullest
    node it fits on."""


class StartTask(SpecModel):
    """Runs on each node as it joins the pool, and after reboot or reimage, as the main
    container of the node-preparation pod (after a root init container made the node
    directories)."""

    command_line: str
    """The command, split and run without a shell like a task's commandLine, in
    $AZ_BATCH_NODE_STARTUP_DIR/wd; its output goes to stdout.txt and stderr.txt in
    $AZ_BATCH_NODE_STARTUP_DIR."""
    container_settings: Optional[ContainerSettings] = None
    """The image it runs in (default: the pool's image); workingDirectory is not used."""
    resource_files: Optional[ResourceFiles] = None
    """Files downloaded into its working directory before it runs; a failed download
    fails the start task."""
    environment_settings: Optional[EnvironmentSettings] = None
    """Its environment variables (the AZ_BATCH_* ones win)."""
    user_identity: Optional[UserIdentity] = None
    """Who it runs as: autoUser elevationLevel admin is root, anything else uid 1000."""
    max_task_retry_count: Annotated[int, Field(ge=-1, le=100)] = 0
    """Retries (a new pod each) after a non-zero exit; -1 unlimited."""
    wait_for_success: bool = True
    """When true, a node takes no tasks until its start task succeeds, and is
    starttaskfailed once it failed for good. When false, tasks may start at once."""


class PoolSpec(SpecModel):
    """The pool's nodes, their size and count, and how tasks run on them."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("!(has(self.enableAutoScale) && self.enableAutoScale) || has(self.autoScaleFormula)",
         "autoScaleFormula is required when enableAutoScale is true"),
    ))

    node_group: NodeGroup
    """Where the pool's Nodes come from (podbatch's stand-in for Batch's VM configuration)."""
    vm_size: Optional[str] = None
    """Free-form name of the node size, kept for Batch compatibility: kwok Nodes get it as
    label node.kubernetes.io/instance-type (unless nodeGroup.kwok.instanceType); it does
    not pick or size Nodes."""
    image: str = "busybox"
    """Default container image of the pool's tasks, start task and job preparation and
    release tasks (a task's containerSettings.imageName overrides it). It needs /bin/sh."""
    image_pull_policy: ImagePullPolicy = "IfNotPresent"
    """Pull policy of those images."""
    target_dedicated_nodes: Annotated[int, Field(ge=0)] = 0
    """Dedicated nodes the pool should have (ignored while enableAutoScale is true: the
    formula sets the target). `node remove` lowers the effective target without
    changing this field."""
    target_low_priority_nodes: Annotated[int, Field(ge=0)] = 0
    """Low-priority nodes the pool should have: kwok pools make Nodes labelled
    podbatch.io/low-priority=true (isDedicated false); static pools adopt that many more
    Nodes, low-priority only if they carry that label. A low-priority Node tainted as
    taken back by its cloud makes its ComputeNode preempted and its tasks requeued."""
    resize_timeout: Duration = "PT15M"
    """How long a resize may take before the pool reports resize error AllocationTimedOut
    (podbatch keeps trying)."""
    node_deallocation_option: NodeDeallocationOption = "requeue"
    """What happens to running tasks when the pool shrinks (idle nodes go first): requeue,
    terminate (they complete with failure), or taskcompletion / retaineddata (the node
    takes no new task and leaves once its tasks have ended)."""
    enable_auto_scale: bool = False
    """Size the pool with autoScaleFormula instead of the target fields."""
    auto_scale_formula: Optional[str] = None
    """Batch autoscale formula; sets $TargetDedicatedNodes / $TargetLowPriorityNodes
    (docs/autoscale.md). On an error the pool keeps its size and reports it."""
    auto_scale_evaluation_interval: Duration = "PT15M"
    """How often the formula runs, and at once when the spec changes (Batch's minimum is
    5m; podbatch accepts shorter)."""
    task_slots_per_node: Annotated[int, Field(ge=1, le=256)] = 1
    """How many task slots each node has: tasks run side by side up to this, each taking
    its requiredSlots."""
    task_scheduling_policy: Optional[TaskSchedulingPolicy] = None
    """How tasks are spread over nodes (default spread)."""
    enable_inter_node_communication: bool = False
    """Required for multi-instance tasks (without it they wait with
    InterNodeCommunicationDisabled); it changes no network setting, pods reach each other
    on the pod network anyway."""
    start_task: Optional[StartTask] = None
    """Runs on every node before it takes tasks (node preparation)."""
    application_package_references: Optional[ApplicationPackageReferences] = None
    """Application packages for every pod of the pool (start task, tasks, preparation and
    release tasks): unpacked on the node before the pod's command runs, each named by an
    AZ_BATCH_APP_PACKAGE_* variable (see applicationPackageReferences[])."""
    mount_configuration: Optional[MountConfigurations] = None
    """File systems mounted into every pod of the pool at
    $AZ_BATCH_NODE_MOUNTS_DIR/<relativeMountPath>: NFS as an nfs volume, Azure Files and
    Blob through their CSI drivers; CIFS is refused (docs/podtemplates.md)."""
    pod_template: Optional[PodTemplate] = None
    """Beyond Batch: volumes, sidecars, env from Secrets, labels, runtime class, … added to
    every pod of the pool (its start task's too), under the job's and the task's
    templates; its runtimeClassName and securityContext are the pool admin's and cannot be
    changed by them (docs/podtemplates.md)."""
    metadata: Optional[MetadataItems] = None
    """Name-value pairs for people and tools; podbatch keeps them and gives them no meaning."""
    node_root_dir: str = "/var/lib/podbatch"
    """Root of the per-node Batch directories on each node: the pool's are
    <nodeRootDir>/<namespace>/<pool>/{shared,startup,workitems}. Where PoolGrants apply it
    must lie within the grant's nodeRootDir."""

    @model_validator(mode="after")
    def _formula_when_autoscale(self) -> "PoolSpec":
        if self.enable_auto_scale and not self.auto_scale_formula:
            raise ValueError("autoScaleFormula is required when enableAutoScale is true")
        return self


class NodeCounts(StatusModel):
    """The pool's ComputeNodes by state (see ComputeNode status.state)."""

    creating: int = 0
    """Nodes whose Node is not Ready yet."""
    starting: int = 0
    """Nodes whose node preparation has not started running yet."""
    waiting_for_start_task: int = 0
    """Nodes whose start task runs (waitForSuccess)."""
    start_task_failed: int = 0
    """Nodes whose start task failed for good (waitForSuccess)."""
    idle: int = 0
    """Nodes with no task."""
    running: int = 0
    """Nodes running tasks."""
    offline: int = 0
    """Nodes with scheduling disabled and no task."""
    rebooting: int = 0
    """Nodes being rebooted."""
    reimaging: int = 0
    """Nodes being reimaged."""
    leaving_pool: int = 0
    """Nodes being removed."""
    unusable: int = 0
    """Nodes not Ready past PODBATCH_NODE_LOST_GRACE_SECONDS."""
    unknown: int = 0
    """Nodes not Ready, within that grace."""
    preempted: int = 0
    """Low-priority nodes their cloud is taking back (see ComputeNode state preempted)."""
    total: int = 0
    """All Nodes of the pool."""


class AutoScaleRun(StatusModel):
    """The last evaluation of the autoscale formula."""

    timestamp: Optional[datetime] = None
    """When it ran."""
    results: Optional[str] = None
    """The formula's variables after evaluation, `$name=value;…`."""
    error: Optional[ErrorInfo] = None
    """Why it failed (the pool then keeps its size)."""


class AutoScaleEvaluation(AutoScaleRun):
    """The answer to a formula evaluated on request (Batch's evaluateAutoScale, `kubectl
    podbatch pool evaluate`): nothing of it is applied."""

    id: Optional[str] = None
    """The id of the request (annotation podbatch.io/evaluate) this answers."""


class PoolStatus(StatusModel):
    """The pool's size and nodes, written by podbatch."""

    allocation_state: Optional[Literal["steady", "resizing", "stopping"]] = None
    """steady (at the target, or held below it by a resize error), resizing, or stopping
    while the Pool is deleted."""
    allocation_state_transition_time: Optional[datetime] = None
    """When allocationState last changed."""
    current_dedicated_nodes: Optional[int] = None
    """Nodes of the pool without the low-priority label."""
    current_low_priority_nodes: Optional[int] = None
    """Nodes of the pool with the low-priority label."""
    node_counts: Optional[NodeCounts] = None
    """The pool's nodes by state (beyond Batch's pool; Batch has it per account)."""
    resize_errors: Optional[list[ErrorInfo]] = None
    """Why the pool is not at its target: InsufficientNodes, NodeGroupError,
    AllocationTimedOut, NotGranted, ProviderNotImplemented."""
    auto_scale_run: Optional[AutoScaleRun] = None
    """The last autoscale evaluation."""
    auto_scale_evaluation: Optional[AutoScaleEvaluation] = None
    """The last formula evaluated on request, without applying it (annotation
    podbatch.io/evaluate: `{"id": …, "formula": …}`; `kubectl podbatch pool evaluate`)."""
    conditions: Optional[list[Condition]] = conditions_field()
    observed_generation: Optional[int] = None
    """The metadata.generation last acted on."""


class Pool(KindModel):
    """A pool of compute nodes (Azure Batch pool)."""

    api_version: str = API_VERSION
    kind: str = "Pool"
    metadata: dict = Field(default_factory=dict)
    spec: PoolSpec
    status: Optional[PoolStatus] = None
