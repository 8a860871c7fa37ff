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
    """The first occurrence is at this time (default: when the schedule was created; with
    cron, the first cron time from then)."""
    do_not_run_after: Optional[datetime] = None
    """No job is created for an occurrence after this time; once the last job has
    completed the schedule completes."""
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
    """When to create jobs, and the job to create."""

    schedule: Schedule
    """When jobs are created."""
    job_specification: JobSpec
    """The spec of each Job created (see Job.spec); the Job is named
    <schedule>-<UTC time of the occurrence, YYYYMMDDhhmmss> and owned by the schedule."""
    desired_state: Literal["active", "disabled", "terminated"] = "active"
    """active: jobs are created on schedule; disabled: none are (a running job goes on);
    terminated: the active job is terminated and the schedule completes."""
    metadata: Optional[MetadataItems] = None
    """Name-value pairs for people and tools; podbatch keeps them and gives them no
    meaning (they are not copied to the jobs)."""


class RecentJob(StatusModel):
    """The last job the schedule created."""

    id: Optional[str] = None
    """The job's id (its name)."""
    name: Optional[str] = None
    """The Job's name."""


class JobScheduleExecutionInfo(StatusModel):
    """The schedule's run."""

    next_run_time: Optional[datetime] = None
    """The next occurrence (or the one waiting for the active job to complete)."""
    recent_job: Optional[RecentJob] = None
    """The last job created."""
    end_time: Optional[datetime] = None
    """When the schedule completed."""


class JobScheduleStatus(StatusModel):
    """The schedule's Batch state, written by podbatch."""

    state: Optional[Literal["active", "completed", "disabled", "terminating", "deleting"]] = None
    """active, disabled, terminating (its active job is being terminated) or completed (no
    more occurrences, or terminated). podbatch does not set deleting."""
    state_transition_time: Optional[datetime] = None
    """When state last changed."""
    execution_info: Optional[JobScheduleExecutionInfo] = None
    """Next run, last job, end."""
    conditions: Optional[list[Condition]] = conditions_field()
    observed_generation: Optional[int] = None
    """The metadata.generation last acted on."""


class JobSchedule(KindModel):
    """A job schedule (Azure Batch job schedule)."""

    api_version: str = API_VERSION
    kind: str = "JobSchedule"
    metadata: dict = Field(default_factory=dict)
    spec: JobScheduleSpec
    status: Optional[JobScheduleStatus] = None
