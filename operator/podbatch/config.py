"""The operator's configuration: one settings class, `PODBATCH_` environment variables,
validated at start-up and mirrored by the Helm chart's values."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PODBATCH_")

    namespaces: str = Field("", description="comma-separated namespaces to serve; empty = all")
    node_root: str = Field("/var/lib/podbatch", description="root of the node directories on each node")
    require_grants: bool = Field(False, description=(
        "a Pool takes nodes only when a cluster-scoped PoolGrant grants them to its namespace: true for a "
        "cluster shared by tenants (an `edit` user can otherwise take any free Node and write under any "
        "host directory); false keeps a single-tenant install working without grants, where only the "
        "namespaces some PoolGrant names are restricted"))
    tools_image: str = Field("busybox", description="image of the node-preparation init container")
    autoscale_sample_seconds: float = Field(30.0, ge=0.5, le=300, description=(
        "how often a pool's task metrics ($ActiveTasks, …) are sampled for its autoscale formula "
        "(Batch: every 30 s)"))
    placeholder_image: str = Field("registry.k8s.io/pause:3.9", description=(
        "image of the placeholder pods of `autoscaler` pools (they never run a process of their own)"))
    placeholder_priority_class: str = Field("", description=(
        "PriorityClass of the placeholder pods of `autoscaler` pools: at or above the autoscaler's "
        "expendable-pods cut-off (cluster-autoscaler: -10) or they ask for nothing, and low enough that "
        "real workloads may preempt them; empty = none (priority 0). The chart creates podbatch-placeholder"))
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus metrics port; 0 = off")
    log_level: str = Field("INFO")
    log_format: Literal["text", "json"] = Field("text", description=(
        "text: one readable line per record; json: one JSON object per line (time, level, logger, message, "
        "and the exception when there is one), for log collectors"))
    debounce_seconds: float = Field(0.2, ge=0, le=10, description="how long changes gather before a reconcile pass")
    tick_seconds: float = Field(2.0, gt=0, le=60, description="a pass runs at least this often (timers, deadlines)")
    api_concurrency: int = Field(48, ge=1, le=1000, description="concurrent API writes")
    pending_reason_limit: int = Field(100, ge=0, description=(
        "a waiting task's pendingReason is written only within the first N places of its pool's queue "
        "(0 = no limit): a deep queue then costs no write per task; reasons a user must fix are always written"))
    node_lost_grace_seconds: float = Field(300.0, ge=0, le=86400, description=(
        "how long a NotReady node's tasks wait before they are requeued (Kubernetes' eviction default): "
        "a shorter grace requeues sooner after a real loss but risks giving up on tasks whose node only "
        "lost touch for a while; the new attempt still starts only once the old pod cannot be running"))
    resync_seconds: float = Field(600.0, ge=10, description=(
        "every watched kind is listed again this often, so nothing deleted during a watch gap is kept"))
    stuck_seconds: float = Field(120.0, ge=5, description=(
        "the liveness probe fails when the engine has not finished a pass for this long"))
    cleanup_timeout_seconds: float = Field(300.0, ge=10, description=(
        "a directory cleanup pod that has not ended after this long is given up: a node is then released "
        "anyway (a Warning Event CleanupStuck on the Pool and the ComputeNode says what was left), a task's "
        "retention ends with its condition Retained saying the same"))
    leader_election: bool = Field(True, description=(
        "hold a coordination.k8s.io Lease so that one operator acts at a time; off only when a single "
        "operator is certain"))
    leader_identity: str = Field("", description=(
        "who holds the Lease; empty = host name, process id and a random suffix. A stable identity "
        "(the chart sets the pod name) lets a restarted operator take its own Lease back at once "
        "instead of waiting for it to expire; never give two running operators the same one"))
    lease_name: str = Field("podbatch-operator", min_length=1, description="name of the leader-election Lease")
    lease_namespace: str = Field("", description=(
        "namespace of the Lease; empty = the operator's own namespace in a cluster, else default"))
    lease_duration_seconds: int = Field(15, ge=1, le=3600, description=(
        "a standby takes over when the Lease has not been renewed for this long"))
    renew_deadline_seconds: float = Field(10.0, gt=0, description=(
        "a leader that could not renew for this long stops leading; less than the lease duration"))
    retry_period_seconds: float = Field(2.0, gt=0, description=(
        "how often the leader renews and a standby tries to take over; less than the renew deadline"))

    @model_validator(mode="after")
    def _lease_timing(self) -> "Settings":
        # The leader must stop before a standby may start, and get several tries at renewing.
        if not self.renew_deadline_seconds < self.lease_duration_seconds:
            raise ValueError("renew_deadline_seconds must be less than lease_duration_seconds")
        if not self.retry_period_seconds < self.renew_deadline_seconds:
            raise ValueError("retry_period_seconds must be less than renew_deadline_seconds")
        return self

    @property
    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]
