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
    request_id: str
    node_reboot_option: NodeDeallocationOption = "requeue"


class ReimageRequest(SpecModel):
    request_id: str
    node_reimage_option: NodeDeallocationOption = "requeue"


class RemoveRequest(SpecModel):
    request_id: str
    node_deallocation_option: NodeDeallocationOption = "requeue"


class ComputeNodeSpec(SpecModel):
    pool_name: str
    node_name: str
    """The Kubernetes Node this compute node is."""
    is_dedicated: bool = True
    scheduling_state: Literal["enabled", "disabled"] = "enabled"
    """Set to disabled to stop new tasks landing on the node."""
    node_disable_scheduling_option: Literal["requeue", "terminate", "taskcompletion"] = "requeue"
    """What happens to running tasks when scheduling is disabled."""
    reboot: Optional[RebootRequest] = None
    reimage: Optional[ReimageRequest] = None
    remove: Optional[RemoveRequest] = None


class RecentTask(StatusModel):
    job_id: Optional[str] = None
    task_id: Optional[str] = None
    task_name: Optional[str] = None
    pod_name: Optional[str] = None
    state: Optional[str] = None
    exit_code: Optional[int] = None


class StartTaskInfo(StatusModel):
    state: Optional[Literal["running", "completed"]] = None
    start_time: Optional[datetime] = None
    end_time: Optional[datetime] = None
    exit_code: Optional[int] = None
    retry_count: int = 0
    result: Optional[TaskExecutionResult] = None
    failure_info: Optional[FailureInfo] = None
    stderr_tail: Optional[str] = None


class HandledRequests(StatusModel):
    reboot: Optional[str] = None
    reimage: Optional[str] = None
    remove: Optional[str] = None


class ComputeNodeStatus(StatusModel):
    state: Optional[ComputeNodeState] = None
    state_transition_time: Optional[datetime] = None
    scheduling_state: Optional[Literal["enabled", "disabled"]] = None
    running_tasks_count: int = 0
    running_task_slots_count: int = 0
    total_tasks_run: int = 0
    total_tasks_succeeded: int = 0
    recent_tasks: Optional[list[RecentTask]] = None
    start_task_info: Optional[StartTaskInfo] = None
    ip_address: Optional[str] = None
    is_dedicated: Optional[bool] = None
    last_boot_time: Optional[datetime] = None
    errors: Optional[list[ErrorInfo]] = None
    handled_requests: Optional[HandledRequests] = None
    conditions: Optional[list[Condition]] = conditions_field()
    observed_generation: Optional[int] = None


class ComputeNode(KindModel):
    """A compute node of a pool (Azure Batch compute node)."""

    api_version: str = API_VERSION
    kind: str = "ComputeNode"
    metadata: dict = Field(default_factory=dict)
    spec: ComputeNodeSpec
    status: Optional[ComputeNodeStatus] = None
