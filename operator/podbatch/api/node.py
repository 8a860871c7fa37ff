"""The ComputeNode kind: the Batch view of one Kubernetes Node of a pool, and the
place where node operations (reboot, reimage, remove, disable scheduling) are asked for.

Operations are requests carrying a `requestId`; podbatch records the ids it handled in
`status.handledRequests`, so a request is acted on once even across operator restarts,
and asking again means writing a new id.
"""
from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional

from pydantic import Field

from podbatch import API_VERSION
from podbatch.api.common import (
    Condition,
    ErrorInfo,
    FailureInfo,
    KindModel,
    NodeDeallocationOption,
    SpecModel,
    StatusModel,
    TaskExecutionResult,
    conditions_field,
)

ComputeNodeState = Literal[
    "creating", "starting", "waitingforstarttask", "starttaskfailed", "idle", "running",
    "offline", "rebooting", "reimaging", "leavingpool", "unusable", "unknown", "preempted",
]


class RebootRequest(SpecModel):
    """Reboot the node: podbatch does not restart the Kubernetes Node; it starts a new boot,
    whose node-preparation pod runs the pool's start task again (the node directories are
    kept)."""

    request_id: str
    """Any new value asks for a reboot; a value already in status.handledRequests.reboot
    is not acted on again."""
    node_reboot_option: NodeDeallocationOption = "requeue"
    """What happens to running tasks: requeue: running tasks are stopped and go back to the queue (no retry used);
    terminate: they complete with failure (TaskEnded); taskcompletion: no new tasks, the
    operation waits until the running ones end; retaineddata: as taskcompletion (podbatch
    does not wait for task retention)."""


class ReimageRequest(SpecModel):
    """Reimage the node: a new boot whose node preparation first wipes the pool's node
    directories on it, then runs the start task again."""

    request_id: str
    """Any new value asks for a reimage; a value already in status.handledRequests.reimage
    is not acted on again."""
    node_reimage_option: NodeDeallocationOption = "requeue"
    """What happens to running tasks: requeue: running tasks are stopped and go back to the queue (no retry used);
    terminate: they complete with failure (TaskEnded); taskcompletion: no new tasks, the
    operation waits until the running ones end; retaineddata: as taskcompletion (podbatch
    does not wait for task retention)."""


class RemoveRequest(SpecModel):
    """Remove the node from its pool: the pool's target is lowered by one (unless it
    autoscales) and the Node is given back (kwok: deleted; static: podbatch's label and
    taint removed), on real nodes once the pool's directories on it are wiped."""

    request_id: str
    """Any new value asks for the removal; recorded in status.handledRequests.remove."""
    node_deallocation_option: NodeDeallocationOption = "requeue"
    """What happens to running tasks: requeue: running tasks are stopped and go back to the queue (no retry used);
    terminate: they complete with failure (TaskEnded); taskcompletion: no new tasks, the
    operation waits until the running ones end; retaineddata: as taskcompletion (podbatch
    does not wait for task retention)."""


class ComputeNodeSpec(SpecModel):
    """Made by podbatch for each Node of a pool; users write only the scheduling and
    operation fields."""

    pool_name: str
    """The Pool this node belongs to (set by podbatch)."""
    node_name: str
    """The Kubernetes Node this compute node is."""
    is_dedicated: bool = True
    """False for a low-priority node (its Node carries podbatch.io/low-priority); set by
    podbatch, seen by tasks as AZ_BATCH_NODE_IS_DEDICATED."""
    scheduling_state: Literal["enabled", "disabled"] = "enabled"
    """Set to disabled to stop new tasks landing on the node."""
    node_disable_scheduling_option: Literal["requeue", "terminate", "taskcompletion"] = "requeue"
    """What happens to running tasks when scheduling is disabled: requeue or terminate
    them, or taskcompletion (let them finish)."""
    reboot: Optional[RebootRequest] = None
    """A reboot request (`kubectl podbatch node reboot`)."""
    reimage: Optional[ReimageRequest] = None
    """A reimage request (`kubectl podbatch node reimage`)."""
    remove: Optional[RemoveRequest] = None
    """A removal request (`kubectl podbatch node remove`)."""


class RecentTask(StatusModel):
    """Batch's recentTasks entry; podbatch does not write these today."""

    job_id: Optional[str] = None
    """The task's job."""
    task_id: Optional[str] = None
    """The task's Batch id."""
    task_name: Optional[str] = None
    """The Task object's name."""
    pod_name: Optional[str] = None
    """The attempt's pod."""
    state: Optional[str] = None
    """The task's state."""
    exit_code: Optional[int] = None
    """The task's exit code."""


class StartTaskInfo(StatusModel):
    """The pool's start task on this node's current boot."""

    state: Optional[Literal["running", "completed"]] = None
    """running or completed."""
    start_time: Optional[datetime] = None
    """When the start task's pod started."""
    end_time: Optional[datetime] = None
    """When it ended."""
    exit_code: Optional[int] = None
    """The start task's exit code."""
    retry_count: int = 0
    """Retries made so far (a new pod each), up to the start task's maxTaskRetryCount."""
    result: Optional[TaskExecutionResult] = None
    """success or failure."""
    failure_info: Optional[FailureInfo] = None
    """Set when it failed for good (FailureExitCode)."""
    stderr_tail: Optional[str] = None
    """The last 1,000 characters of its output, when it failed for good (beyond Batch)."""


class HandledRequests(StatusModel):
    """The request ids of node operations podbatch has acted on."""

    reboot: Optional[str] = None
    """The last reboot requestId carried out."""
    reimage: Optional[str] = None
    """The last reimage requestId carried out."""
    remove: Optional[str] = None
    """The removal requestId carried out."""


class ComputeNodeStatus(StatusModel):
    """The node's Batch state, written by podbatch."""

    state: Optional[ComputeNodeState] = None
    """creating (no Ready Node yet), starting / waitingforstarttask (node preparation and
    start task), idle, running, offline (scheduling disabled), rebooting, reimaging,
    leavingpool, starttaskfailed (the start task failed for good with waitForSuccess),
    unknown (was Ready, not now; its tasks stay), unusable (not Ready past
    PODBATCH_NODE_LOST_GRACE_SECONDS: its tasks are requeued), preempted (a low-priority
    node carrying a cloud's termination taint, see docs/nodegroups.md: its tasks are
    requeued). A change between idle and running is reported as the task counts are: the
    first at once, then at most every 2 s per node (every nodes/10 s, up to 30 s, where the
    operator has more than 20 compute nodes)."""
    state_transition_time: Optional[datetime] = None
    """When state last changed."""
    scheduling_state: Optional[Literal["enabled", "disabled"]] = None
    """Whether new tasks may land on the node."""
    running_tasks_count: int = 0
    """Tasks preparing or running on the node (a change is reported at once after a quiet
    spell, then at most every 2 s per node; every nodes/10 s, up to 30 s, where the
    operator has more than 20 compute nodes)."""
    running_task_slots_count: int = 0
    """Task slots those tasks take."""
    total_tasks_run: int = 0
    """Batch's count of tasks run on the node; podbatch does not write it today."""
    total_tasks_succeeded: int = 0
    """Batch's count of tasks that succeeded on the node; podbatch does not write it today."""
    recent_tasks: Optional[list[RecentTask]] = None
    """Batch's recent tasks of the node; podbatch does not write it today (the pods of a
    node: `kubectl get pods -l podbatch.io/node=<name>`)."""
    start_task_info: Optional[StartTaskInfo] = None
    """The start task's run on the current boot."""
    ip_address: Optional[str] = None
    """The Node's InternalIP."""
    is_dedicated: Optional[bool] = None
    """False for a low-priority node."""
    last_boot_time: Optional[datetime] = None
    """When the current boot began: the node first became usable, or its last reboot or
    reimage was carried out."""
    errors: Optional[list[ErrorInfo]] = None
    """Batch's node errors; podbatch does not write them today (see conditions and
    startTaskInfo.failureInfo)."""
    handled_requests: Optional[HandledRequests] = None
    """Node operations already carried out, by request id."""
    conditions: Optional[list[Condition]] = conditions_field()
    observed_generation: Optional[int] = None
    """The metadata.generation last acted on."""


class ComputeNode(KindModel):
    """A compute node of a pool (Azure Batch compute node)."""

    api_version: str = API_VERSION
    kind: str = "ComputeNode"
    metadata: dict = Field(default_factory=dict)
    spec: ComputeNodeSpec
    status: Optional[ComputeNodeStatus] = None
