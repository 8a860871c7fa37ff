"""The operator's configuration: one settings class, `PODBATCH_` environment variables,
validated at start-up and mirrored by the Helm chart's values."""
from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PODBATCH_")

    namespaces: str = Field("", description="comma-separated namespaces to serve; empty = all")
    node_root: str = Field("/var/lib/podbatch", description="root of the node directories on each node")
    tools_image: str = Field("busybox", description="image of the node-preparation init container")
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus metrics port; 0 = off")
    log_level: str = Field("INFO")
    debounce_seconds: float = Field(0.2, ge=0, le=10, description="how long changes gather before a reconcile pass")
    tick_seconds: float = Field(2.0, gt=0, le=60, description="a pass runs at least this often (timers, deadlines)")
    api_concurrency: int = Field(48, ge=1, le=1000, description="concurrent API writes")
    pending_reason_limit: int = Field(1000, ge=0, description=(
        "a waiting task's pendingReason is written only within the first N places of its pool's queue "
        "(0 = no limit): a deep queue then costs no write per task; reasons a user must fix are always written"))

    @property
    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]
