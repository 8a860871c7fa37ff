"""The TaskCollection kind: many tasks of one job in one object — a parametric sweep (the
Batch CLI's `parametricSweep` task factory), a task per file of a blob container (its
`taskPerFile` task factory) or an explicit list (Batch's add-task-collection).

Its tasks are not objects of their own: the operator runs each as it runs a Task, records
its binding and attempt on its pod, and writes its end to the collection's status as index
ranges (docs/collections.md).
"""
from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from podbatch import API_VERSION
from podbatch.api.common import Condition, FailureInfo, KindModel, SpecModel, StatusModel, TaskId, cel, conditions_field
from podbatch.api.job import TaskCounts
from podbatch.api.task import TaskSpec
from podbatch.core import collections as collcore

_NOT_IN_COLLECTION = ("multiInstanceSettings", "desiredState", "reactivateRequestId")


class CollectionTaskSpec(TaskSpec):
    """A task of a collection: a Task's spec without jobName (the collection's), and
    without multiInstanceSettings, desiredState and reactivateRequestId (not supported
    for a collection's tasks: use Tasks for gangs; terminate or reactivate a collection's
    task with `kubectl podbatch` is refused with a message)."""

    job_name: Optional[str] = None
    """Not used: a collection's tasks belong to the collection's spec.jobName."""

    @model_validator(mode="after")
    def _collection_fields(self) -> "CollectionTaskSpec":
        if self.job_name:
            raise ValueError("jobName is the collection's (spec.jobName), not each task's")
        if self.multi_instance_settings and self.multi_instance_settings.number_of_instances > 1:
            raise ValueError("a collection's task cannot be multi-instance: create a Task for a gang")
        if self.desired_state != "active" or self.reactivate_request_id:
            raise ValueError("desiredState and reactivateRequestId are not fields of a collection's task")
        return self


class ParameterSet(SpecModel):
    """Integers start, start+step, … up to end (inclusive)."""

    start: int
    """First value."""
    end: int
    """Last value (inclusive; the last one reached by step)."""
    step: Annotated[int, Field(ge=1)] = 1
    """Increment."""

    @model_validator(mode="after")
    def _ordered(self) -> "ParameterSet":
        if self.end < self.start:
            raise ValueError("end must not be below start")
        return self


class ParametricSweep(SpecModel):
    """One task per combination of the parameter sets (the first set the outermost loop).
    In every string of repeatTask, {0} is replaced by the first set's value, {1} by the
    second's …; {0:4} pads it with zeros to 4 digits; {{ and }} are literal braces."""

    parameter_sets: Annotated[list[ParameterSet], Field(min_length=1, max_length=8)]
    """The ranges swept."""
    repeat_task: CollectionTaskSpec
    """The template of every task."""


class FileSource(SpecModel):
    """The files of a task-per-file collection: the blobs of an Azure Storage container
    (or any service with its blob API), listed once by the operator."""

    container_url: Annotated[str, Field(min_length=1, pattern=r"^https?://")]
    """The container's URL with a SAS that allows listing (and reading, for the tasks'
    {url}), as a resource file's storageContainerUrl."""
    prefix: Optional[str] = None
    """Only blobs whose name starts with this."""


class TaskPerFile(SpecModel):
    """One task per blob of the source (in the order the listing returns them, by name). In
    every string of repeatTask, {url} is the blob's URL (with the container URL's SAS),
    {filePath} its name (its path in the container, prefix included), {fileName} the name's
    last segment and {fileNameWithoutExtension} that without its extension; {{ and }} are
    literal braces. The list is recorded in status.files when first made and never changes
    (a new listing takes a new collection); at most 10,000 files."""

    source: FileSource
    """Where the files are."""
    repeat_task: CollectionTaskSpec
    """The template of every task."""


Ranges = Annotated[str, Field(max_length=100_000, pattern=r"^\s*(\d+(-\d+)?)?(\s*,\s*\d+(-\d+)?)*\s*$")]


class CollectionReactivate(SpecModel):
    """Batch's reactivate task, for tasks of the collection."""

    request_id: Annotated[str, Field(min_length=1, max_length=100)]
    """Write a new value to act again: podbatch acts once per value (status.handledReactivateRequestId)."""
    indexes: Ranges
    """Indexes ("3,7-9") of the tasks to run again: those that completed with failure run
    again with their retry count reset; others (succeeded, terminated, not completed) are
    left as they are."""


class TaskCollectionSpec(SpecModel):
    """Tasks of one job, described once."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("(has(self.parametricSweep) ? 1 : 0) + (has(self.tasks) ? 1 : 0) + (has(self.taskPerFile) ? 1 : 0) == 1",
         "give exactly one of parametricSweep, taskPerFile and tasks"),
    ))

    job_name: str
    """Name of the Job (in the same namespace) the tasks belong to."""
    task_id_prefix: Optional[Annotated[str, Field(max_length=40, pattern=r"^[A-Za-z0-9_-]*$")]] = None
    """Task ids are this prefix and the index (0, 1, …); default `<collection name>-`. With
    an empty prefix the ids are the bare indexes, which other tasks' dependsOn.taskIdRanges
    can name."""
    parametric_sweep: Optional[ParametricSweep] = None
    """A task per combination of parameter values."""
    task_per_file: Optional[TaskPerFile] = None
    """A task per file of a blob container."""
    tasks: Optional[Annotated[list[CollectionTaskSpec], Field(min_length=1, max_length=collcore.MAX_LISTED)]] = None
    """An explicit list of tasks (each may set its own id)."""
    terminate_indexes: Optional[Ranges] = None
    """Batch's terminate task, for tasks of the collection: the tasks at these indexes
    ("3,7-9") that have not completed are ended (completed, failure TaskEnded; a running one
    is stopped first). `kubectl podbatch task terminate <collection>-<index>` adds to it."""
    reactivate: Optional[CollectionReactivate] = None
    """Batch's reactivate task, for failed tasks of the collection
    (`kubectl podbatch task reactivate <collection>-<index>` writes it)."""

    @model_validator(mode="after")
    def _one_source(self) -> "TaskCollectionSpec":
        if sum(x is not None for x in (self.parametric_sweep, self.task_per_file, self.tasks)) != 1:
            raise ValueError("give exactly one of parametricSweep, taskPerFile and tasks")
        if self.parametric_sweep is not None:
            n = collcore.size(self.model_dump(by_alias=True, exclude_none=True))
            if n > collcore.MAX_SIZE:
                raise ValueError(f"the sweep makes {n} tasks; at most {collcore.MAX_SIZE} in one collection")
            used = collcore.placeholders(self.parametric_sweep.repeat_task.model_dump(by_alias=True, exclude_none=True))
            past = sorted(i for i in used if i >= len(self.parametric_sweep.parameter_sets))
            if past:
                raise ValueError(f"repeatTask uses {{{past[0]}}} but there are only "
                                 f"{len(self.parametric_sweep.parameter_sets)} parameterSets (numbered from 0)")
        if self.tasks:
            ids = [t.id for t in self.tasks if t.id]
            dup = next((i for i in ids if ids.count(i) > 1), None)
            if dup:
                raise ValueError(f"task id {dup!r} is given twice")
        return self


class FailedCollectionTask(StatusModel):
    """A task of the collection that completed with failure."""

    index: int
    """Its index in the collection."""
    id: Optional[TaskId] = None
    """Its Batch task id."""
    exit_code: Optional[int] = None
    """The exit code of its last attempt (none: it did not run to an exit)."""
    failure_info: Optional[FailureInfo] = None
    """Why it failed (category, code, message), as a Task's executionInfo.failureInfo."""
    retry_count: int = 0
    """Retries it used."""
    requeue_count: int = 0
    """Times it was requeued (node lost, preempted)."""
    node_id: Optional[str] = None
    """The compute node of its last attempt."""
    pod_name: Optional[str] = None
    """The pod of its last attempt."""
    end_time: Optional[str] = None
    """When it completed."""


class CollectionTaskAttempt(StatusModel):
    """A task of the collection past its first attempt and not completed: what a restart
    must know that its pod does not say."""

    index: int
    """Its index."""
    attempt: int
    """Its current attempt (its pod is `<collection>-<index>-<attempt>`)."""
    retry_count: int = 0
    """Retries used."""
    requeue_count: int = 0
    """Requeues."""
    stopping_pods: Optional[list[str]] = None
    """Pods of its previous attempt that may still run: the next attempt starts once they are gone."""


class TaskCollectionStatus(StatusModel):
    """Where the collection's tasks are, written by podbatch (amortised: one write for many
    tasks' ends)."""

    state: Optional[Literal["active", "completed"]] = None
    """completed once every task completed."""
    size: Optional[int] = None
    """How many tasks the collection describes."""
    files: Optional[Annotated[list[str], Field(max_length=collcore.MAX_LISTED)]] = None
    """A task-per-file collection's files (blob names), as listed once: task i is for files[i]."""
    task_counts: Optional[TaskCounts] = None
    """Its tasks by state, as last written."""
    succeeded_indexes: Optional[str] = None
    """Indexes of the tasks that succeeded, as ranges: "0-99,101"."""
    failed_indexes: Optional[str] = None
    """Indexes of the tasks that completed with failure, as ranges."""
    failed_tasks: Optional[list[FailedCollectionTask]] = None
    """Each failed task's detail (the first 1000)."""
    attempts: Optional[list[CollectionTaskAttempt]] = None
    """Tasks past their first attempt, not completed."""
    handled_reactivate_request_id: Optional[str] = None
    """The last spec.reactivate.requestId podbatch acted on."""
    conditions: Optional[list[Condition]] = conditions_field()
    observed_generation: Optional[int] = None
    """The metadata.generation last acted on."""


class TaskCollection(KindModel):
    """Many tasks of one job (a task factory, or add-task-collection)."""

    api_version: str = API_VERSION
    kind: str = "TaskCollection"
    metadata: dict = Field(default_factory=dict)
    spec: TaskCollectionSpec
    status: Optional[TaskCollectionStatus] = None


__all__ = ["TaskCollection", "TaskCollectionSpec", "TaskCollectionStatus", "Literal"]
