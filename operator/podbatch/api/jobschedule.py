"""The JobSchedule kind: creates Jobs from `jobSpecification` on a recurrence."""
from __future__ import annotations

from datetime import datetime
from typing import Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from podbatch import API_VERSION
from podbatch.api.common import (
    Condition,
    Duration,
    KindModel,
    MetadataItems,
    SpecModel,
    StatusModel,
    cel,
    conditions_field,
    parse_duration,
)
from podbatch.api.job import JobSpec


class Schedule(SpecModel):
    """When jobs are created: at most one active job at a time, as in Batch."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("!has(self.doNotRunUntil) || !has(self.doNotRunAfter) || self.doNotRunAfter > self.doNotRunUntil",
         "doNotRunAfter must be after doNotRunUntil"),
        ("!(has(self.recurrenceInterval) && has(self.cron))",
         "schedule takes recurrenceInterval or cron, not both"),
        ("!has(self.timeZone) || has(self.cron)", "timeZone is only used with cron"),
    ))

    do_not_run_until: Optional[datetime] = None
    do_not_run_after: Optional[datetime] = None
    start_window: Optional[Duration] = None
    """A job not created within this long of its due time is skipped."""
    recurrence_interval: Optional[Duration] = None
    """Time between job creations (Batch's minimum is 1 minute); unset means once."""
    cron: Optional[str] = None
    """A cron expression, as an alternative to recurrenceInterval (beyond Batch)."""
    time_zone: Optional[str] = None
    """IANA time zone of cron (default UTC)."""

    @model_validator(mode="after")
    def _checks(self) -> "Schedule":
        if self.do_not_run_until and self.do_not_run_after and self.do_not_run_after <= self.do_not_run_until:
            raise ValueError("doNotRunAfter must be after doNotRunUntil")
        if self.recurrence_interval is not None and self.cron is not None:
            raise ValueError("schedule takes recurrenceInterval or cron, not both")
        if self.time_zone is not None and self.cron is None:
            raise ValueError("timeZone is only used with cron")
        if self.recurrence_interval is not None and parse_duration(self.recurrence_interval).total_seconds() < 60:
            raise ValueError("recurrenceInterval must be at least 1 minute")
        return self


class JobScheduleSpec(SpecModel):
    schedule: Schedule
    job_specification: JobSpec
    desired_state: Literal["active", "disabled", "terminated"] = "active"
    metadata: Optional[MetadataItems] = None


class RecentJob(StatusModel):
    id: Optional[str] = None
    name: Optional[str] = None


class JobScheduleExecutionInfo(StatusModel):
    next_run_time: Optional[datetime] = None
    recent_job: Optional[RecentJob] = None
    end_time: Optional[datetime] = None


class JobScheduleStatus(StatusModel):
    state: Optional[Literal["active", "completed", "disabled", "terminating", "deleting"]] = None
    state_transition_time: Optional[datetime] = None
    execution_info: Optional[JobScheduleExecutionInfo] = None
    conditions: Optional[list[Condition]] = conditions_field()
    observed_generation: Optional[int] = None


class JobSchedule(KindModel):
    """A job schedule (Azure Batch job schedule)."""

    api_version: str = API_VERSION
    kind: str = "JobSchedule"
    metadata: dict = Field(default_factory=dict)
    spec: JobScheduleSpec
    status: Optional[JobScheduleStatus] = None
