"""Shared building blocks of the podbatch API: base models, durations, conditions, and
the Azure Batch pieces that several kinds embed (resource files, output files, user
identity, container settings, exit conditions, constraints).

The models here are the single source of the CRD schemas (see crdgen.py), so every
constraint a user should hit at `kubectl apply` time is declared here: enums as
`Literal`, ranges as `Field(ge=, le=)`, patterns, and cross-field checks as CEL rules
(`x-kubernetes-validations`) mirrored by pydantic validators for servers older than
1.25, which ignore CEL.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, field_validator,
                      model_validator)
from pydantic.alias_generators import to_camel

# --------------------------------------------------------------------------- bases


def cel(*rules: tuple[str, str]) -> dict[str, Any]:
    """A json_schema_extra carrying CEL rules: each (rule, message)."""
    return {"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]}


class SpecModel(BaseModel):
    """Base of everything a user writes: unknown fields are an error, not a surprise."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )

    def to_dict(self) -> dict[str, Any]:
        """The API form: camelCase keys, unset optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(BaseModel):
    """Base of everything podbatch writes into `.status`: tolerant of fields it does not know."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class KindModel(BaseModel):
    """Base of a top-level kind: `Pool.model_validate(body)` works on what the API server returns."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_attribute_docstrings=True,
    )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- durations

_NUM = r"[0-9]+"
_SEC = r"[0-9]+(\.[0-9]+)?S"
# ISO 8601 without lookaheads (Go's RE2 has none): a non-empty date part and/or a
# non-empty time part, so "P" and "PT" and "P1DT" are rejected.
_ISO_DATE = rf"({_NUM}W({_NUM}D)?|{_NUM}D)"
_ISO_TIME = rf"T({_NUM}H({_NUM}M)?({_SEC})?|{_NUM}M({_SEC})?|{_SEC})"
_ISO = rf"P({_ISO_DATE}({_ISO_TIME})?|{_ISO_TIME})"
# Kubernetes / Go style: 30m, 1h30m, 10s, 500ms, 1.5h.
_GO = r"([0-9]+(\.[0-9]+)?(ms|h|m|s))+"
DURATION_PATTERN = rf"^({_ISO}|{_GO})$"

_ISO_PARTS = re.compile(
    r"^P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_GO_UNITS = {"ms": timedelta(milliseconds=1), "h": timedelta(hours=1), "m": timedelta(minutes=1), "s": timedelta(seconds=1)}


def parse_duration(text: str) -> timedelta:
    """Parse an ISO 8601 (`PT30M`, `P1DT2H`, `PT0.5S`) or Kubernetes-style (`1h30m`, `500ms`) duration."""
    if not isinstance(text, str) or not re.fullmatch(DURATION_PATTERN[1:-1], text):
        raise ValueError(f"invalid duration {text!r}: use ISO 8601 like PT30M or P1DT2H, or 30m, 1h30m, 10s, 500ms")
    if text.startswith("P"):
        m = _ISO_PARTS.match(text)
        assert m is not None  # guaranteed by DURATION_PATTERN
        g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
        return timedelta(weeks=g["w"], days=g["d"], hours=g["h"], minutes=g["m"], seconds=g["s"])
    total = timedelta()
    for number, unit in _GO_PART.findall(text):
        total += float(number) * _GO_UNITS[unit]
    return total


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN), AfterValidator(_check_duration)]
"""A duration string, ISO 8601 (`PT30M`) or Kubernetes-style (`30m`); see `parse_duration`."""

IntOrString = Annotated[Union[int, str], WithJsonSchema({"x-kubernetes-int-or-string": True})]
"""A Kubernetes quantity or count: `2`, `"500m"`, `"4Gi"`."""

TaskId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$", max_length=64)]
"""A Batch task id; maxLength also bounds the cost of CEL rules that compare ids."""

Priority = Annotated[int, Field(ge=-1000, le=1000)]

RetryCount = Annotated[int, Field(ge=-1)]

# Enum types shared by several kinds.
NodeDeallocationOption = Literal["requeue", "terminate", "taskcompletion", "retaineddata"]
ImagePullPolicy = Literal["Always", "IfNotPresent", "Never"]
TaskExecutionResult = Literal["success", "failure"]


# --------------------------------------------------------------------------- small pieces


class NameValuePair(StatusModel):
    """A name and a value, as in Batch's failure details."""

    name: str
    """The detail's name (e.g. ResourceFileUrl, HttpStatusCode)."""
    value: Optional[str] = None
    """The detail's value."""


class EnvironmentSetting(SpecModel):
    """An environment variable of a task."""

    name: Annotated[str, StringConstraints(min_length=1)]
    """The variable's name. The AZ_BATCH_* variables podbatch sets win over one of the same name."""
    value: Optional[str] = None
    """The variable's value (empty when unset)."""


class MetadataItem(SpecModel):
    """A name-value pair attached to a pool, job or job schedule (Batch metadata)."""

    name: Annotated[str, StringConstraints(min_length=1)]
    """The metadata item's name."""
    value: str
    """The metadata item's value."""


class ApplicationPackageReference(SpecModel):
    """An application package, unpacked on the node under
    $AZ_BATCH_NODE_ROOT_DIR/applications/<applicationId>_<version> (once per node and
    version) before the pod's command runs, and named by AZ_BATCH_APP_PACKAGE_<applicationId>_<version>
    (Batch's Linux naming: `.`, `-` and `#` become `_`), or AZ_BATCH_APP_PACKAGE_<applicationId>
    without a version. The package comes from a ConfigMap of the namespace (default) or an
    image (docs/podtemplates.md). A package that cannot be found fails the task with a
    preprocessing error (ApplicationPackageNotFound), as Batch does."""

    application_id: Annotated[str, StringConstraints(pattern=r"^(/.*/applications/)?[A-Za-z0-9_-]{1,64}$")]
    """The application's id. A fully qualified Batch id (/subscriptions/…/applications/<name>)
    is accepted: its last segment is the id."""
    version: Optional[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")]] = None
    """The package's version. Unset: the application's default version, which is the
    ConfigMap podbatch-app-<applicationId> (lower-cased, `_` as `-`)."""
    config_map_name: Optional[str] = None
    """Beyond Batch: the ConfigMap holding the package (default
    podbatch-app-<applicationId>.<version>, lower-cased, `_` as `-`). Each key is a file of
    the package; a key ending in .zip is unzipped (Batch packages are zip files)."""
    image: Optional[str] = None
    """Beyond Batch: an image holding the package instead of a ConfigMap; the directory
    imagePath of it is copied (it needs no shell or tools of its own)."""
    image_path: Optional[Annotated[str, StringConstraints(pattern=r"^/")]] = None
    """With image: the directory of the image that is the package (required with image)."""

    @model_validator(mode="after")
    def _one_source(self) -> "ApplicationPackageReference":
        if self.image and self.config_map_name:
            raise ValueError("an application package comes from configMapName or image, not both")
        if (self.image is None) != (self.image_path is None):
            raise ValueError("image and imagePath go together: the image and the directory of it that is the package")
        return self


class ErrorInfo(StatusModel):
    """A code and a message, as in Batch's resizeErrors and node errors."""

    code: str
    """A short identifier, e.g. InsufficientNodes, AllocationTimedOut, NotGranted, FormulaError."""
    message: Optional[str] = None
    """What went wrong, for a person."""


class FailureInfo(StatusModel):
    """Why a task (or start task) failed, as in Batch's TaskFailureInformation."""

    category: Optional[Literal["usererror", "servererror"]] = None
    """usererror: the task's own command, files or spec (FailureExitCode, Blob*,
    FileUploadError, ApplicationPackage*, PodTemplateConflict), and TaskEnded for a task terminated through its own desiredState;
    servererror: TaskEnded when podbatch stopped it (its job ended or was disabled with
    terminate, a node operation or pool shrink with terminate, maxWallClockTime)."""
    code: Optional[str] = None
    """A short identifier: FailureExitCode, TaskEnded, BlobNotFound, BlobAccessDenied,
    BlobDownloadTimedOut, BlobDownloadMiscError, FileUploadError, ApplicationPackageNotFound,
    ApplicationPackageError, PodTemplateConflict, PodSetupError (docs/podtemplates.md); on
    a Job's schedulingError PoolNotFound or NoPool."""
    message: Optional[str] = None
    """What went wrong, for a person."""
    details: Optional[list[NameValuePair]] = None
    """Further facts, e.g. the URL and HTTP status of a failed resource-file download."""


class Condition(StatusModel):
    """A standard Kubernetes condition."""

    type: str
    """The condition's type: Ready, Reconciling and Stalled on every kind (kstatus), plus
    kind-specific ones (docs/gitops.md)."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: Optional[str] = None
    """A CamelCase reason, e.g. Steady, NotGranted, PoolNotFound, AllSlotsBusy."""
    message: Optional[str] = None
    """What holds or what to fix, for a person."""
    last_transition_time: Optional[datetime] = None
    """When status last changed."""
    observed_generation: Optional[int] = None
    """The metadata.generation the condition was computed from."""


def conditions_field() -> Any:
    """The `conditions` list of every status: a map keyed by `type`."""
    return Field(
        default=None,
        description="Standard conditions, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


# --------------------------------------------------------------------------- task pieces


class KeyRef(SpecModel):
    """A key of a ConfigMap or Secret in the object's namespace."""

    name: str
    """Name of the ConfigMap or Secret (in the task's namespace). A missing one fails the
    download (BlobDownloadMiscError) instead of leaving the pod waiting."""
    key: str
    """The key whose value becomes the file."""


class ResourceFile(SpecModel):
    """A file downloaded into the task's working directory before it runs.

    Exactly one source: `httpUrl`, `storageContainerUrl` (with an optional
    `blobPrefix`), `configMapKeyRef` or `secretKeyRef`.
    """

    model_config = ConfigDict(json_schema_extra=cel(
        ("[has(self.httpUrl), has(self.storageContainerUrl), has(self.configMapKeyRef), has(self.secretKeyRef)]"
         ".filter(x, x).size() == 1",
         "a resource file needs exactly one of httpUrl, storageContainerUrl, configMapKeyRef, secretKeyRef"),
        ("!has(self.blobPrefix) || has(self.storageContainerUrl)",
         "blobPrefix is only valid with storageContainerUrl"),
    ))

    http_url: Optional[str] = None
    """An http(s) URL fetched with busybox wget by the pod's `resource-files` init container
    (https without certificate checks). A 404 fails the task with BlobNotFound, 401/403
    with BlobAccessDenied, anything else with BlobDownloadMiscError, without retry (the
    job follows exitConditions.preProcessingError)."""
    storage_container_url: Optional[str] = None
    """An Azure blob container URL with a SAS (read and list): the operator lists it and
    every blob is downloaded to filePath/<blob name>. The operator must reach the storage
    account to list it; the pods to download."""
    blob_prefix: Optional[str] = None
    """With storageContainerUrl: only blobs whose names start with this prefix."""
    config_map_key_ref: Optional[KeyRef] = None
    """A key of a ConfigMap of the namespace, copied into the file (beyond Batch)."""
    secret_key_ref: Optional[KeyRef] = None
    """A key of a Secret of the namespace, copied into the file (beyond Batch)."""
    file_path: Optional[str] = None
    """Where the file lands, relative to the task's working directory; no absolute path
    and no `..`. httpUrl: defaults to the URL's last path segment; storageContainerUrl: a
    directory (default: the working directory itself); required for key refs."""
    file_mode: Optional[Annotated[str, StringConstraints(pattern=r"^0?[0-7]{3}$")]] = None
    """Octal mode, e.g. 0755 (default 0770, Batch's Linux default)."""

    @model_validator(mode="after")
    def _one_source(self) -> "ResourceFile":
        sources = [self.http_url, self.storage_container_url, self.config_map_key_ref, self.secret_key_ref]
        if sum(s is not None for s in sources) != 1:
            raise ValueError("a resource file needs exactly one of httpUrl, storageContainerUrl, configMapKeyRef, secretKeyRef")
        if self.blob_prefix is not None and self.storage_container_url is None:
            raise ValueError("blobPrefix is only valid with storageContainerUrl")
        return self


class OutputFileBlobContainerDestination(SpecModel):
    """An Azure blob container (or any server taking HTTP PUT) the files are uploaded to."""

    container_url: str
    """The container's URL with a SAS that allows writing; each file is PUT as a block
    blob with the SAS kept. https needs curl in the task image (http works without)."""
    path: Optional[str] = None
    """For a pattern with wildcards: the virtual directory the matched files go under,
    keeping their path below the pattern's base. For one file: its full blob name
    (default: the file's name)."""


class OutputFilePvcDestination(SpecModel):
    """A PersistentVolumeClaim in the task's namespace (an extension beyond Batch)."""

    claim_name: str
    """The claim, mounted into the task's container at /podbatch-outputs/<claimName>. It
    must exist, be bound and be writable by the task's user; the pod waits until it is."""
    path: Optional[str] = None
    """Directory in the volume for a pattern with wildcards, or the file's path for one
    file (default: the file's name)."""


class OutputFileDestination(SpecModel):
    """Where output files go: exactly one of container, persistentVolumeClaim, httpUrl."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("[has(self.container), has(self.persistentVolumeClaim), has(self.httpUrl)].filter(x, x).size() == 1",
         "an output file destination needs exactly one of container, persistentVolumeClaim, httpUrl"),
    ))

    container: Optional[OutputFileBlobContainerDestination] = None
    """An Azure blob container by SAS URL."""
    persistent_volume_claim: Optional[OutputFilePvcDestination] = None
    """A PersistentVolumeClaim of the namespace (beyond Batch)."""
    http_url: Optional[str] = None
    """A URL each file is PUT to; for a pattern with wildcards each file's path below the
    pattern's base is appended. https needs curl in the task image."""

    @model_validator(mode="after")
    def _one_destination(self) -> "OutputFileDestination":
        if sum(d is not None for d in (self.container, self.persistent_volume_claim, self.http_url)) != 1:
            raise ValueError("an output file destination needs exactly one of container, persistentVolumeClaim, httpUrl")
        return self


class OutputFileUploadOptions(SpecModel):
    """When the files are uploaded."""

    upload_condition: Literal["taskSuccess", "taskFailure", "taskCompletion"] = "taskCompletion"
    """taskSuccess: only after exit code 0; taskFailure: only after a non-zero exit;
    taskCompletion: always."""


class OutputFile(SpecModel):
    """Files uploaded after the task ends."""

    file_pattern: str
    """A glob relative to the task's working directory: `*` and `?` within a path
    segment, `[abc]`, `**` for any number of directories (`../stdout.txt` is the task's
    stdout). Without a wildcard it names one file, and a missing file is an upload error;
    a wildcard that matches nothing uploads nothing."""
    destination: OutputFileDestination
    """Where the files go."""
    upload_options: Optional[OutputFileUploadOptions] = None
    """When to upload (default: taskCompletion). A failed upload fails a task that exited
    0 with FileUploadError, without retry."""


USER_NAME_REFUSED = ("userIdentity.userName is not supported: podbatch pools have no named user accounts; "
                     "remove it and use autoUser (elevationLevel nonadmin runs as uid 1000, admin as root)")
CONTAINER_RUN_OPTIONS_REFUSED = (
    "containerSettings.containerRunOptions is not supported: podbatch runs pods, not docker create; remove it "
    "and set requests and limits with the Task's resources, the rest with the pod template (spec.podTemplate)")


class AutoUserSpecification(SpecModel):
    """The auto user the task runs as."""

    scope: Literal["task", "pool"] = "task"
    """Batch: pool runs the task as the auto user shared by every task of the node; task
    as a user made for this task alone, so that tasks cannot touch each other's files
    (Batch's default is pool). podbatch runs both as the same user (uid 1000 nonadmin, 0
    admin): every task has its own container (files, processes), but all of them mount
    the node's directories, so what a task writes under them can be read and changed by
    the node's other tasks of the same elevation, as with Batch's pool scope. Use
    separate pools for tasks that must not see each other's files."""
    elevation_level: Literal["nonadmin", "admin"] = "nonadmin"
    """admin runs the task as root (uid 0); nonadmin as uid and gid 1000 under the
    `restricted` Pod Security profile (no privilege escalation, all capabilities dropped)."""


class UserIdentity(SpecModel):
    """Who the task runs as: a named user or an auto user, not both. Unset: the nonadmin
    auto user (uid 1000)."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("!has(self.userName)", USER_NAME_REFUSED),
    ))

    user_name: Optional[str] = None
    """Batch: a named user account of the pool's userAccounts. Refused: podbatch pools have
    no user accounts; use autoUser (elevationLevel nonadmin: uid 1000, admin: root)."""
    auto_user: Optional[AutoUserSpecification] = None
    """Run as an auto user; elevationLevel decides root or uid 1000."""

    @field_validator("user_name")
    @classmethod
    def _no_user_name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None:
            raise ValueError(USER_NAME_REFUSED)
        return value


class ContainerSettings(SpecModel):
    """The container image a task runs in (default: the pool's `image`)."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("!has(self.containerRunOptions) || self.containerRunOptions.matches('^\\\\s*$')", CONTAINER_RUN_OPTIONS_REFUSED),
    ))

    image_name: str
    """The image the task's container runs (it needs /bin/sh for podbatch's wrapper),
    pulled with the pool's imagePullPolicy."""
    container_run_options: Optional[str] = None
    """Batch: extra `docker create` options. Refused unless empty: podbatch runs pods, not
    docker; a Task's `resources` sets requests and limits, and the pod template the rest."""
    working_directory: Literal["taskWorkingDirectory", "containerImageDefault"] = "taskWorkingDirectory"
    """taskWorkingDirectory: the command starts in $AZ_BATCH_TASK_WORKING_DIR;
    containerImageDefault: in the image's own working directory. A pool's start task
    always starts in its working directory (startup/wd)."""

    @field_validator("container_run_options")
    @classmethod
    def _no_run_options(cls, value: Optional[str]) -> Optional[str]:
        if value and value.strip():
            raise ValueError(CONTAINER_RUN_OPTIONS_REFUSED)
        return value


class TaskConstraints(SpecModel):
    """Limits of a task's run."""

    max_wall_clock_time: Optional[Duration] = None
    """Longest one attempt may take, counted from its pod's start (resource-file downloads
    included), as the pod's activeDeadlineSeconds; past it the task completes with failure
    (servererror TaskEnded), without retry. Unset means unlimited."""
    retention_time: Duration = "P7D"
    """How long after the task completes its pod and (on real nodes) its task directory
    are kept; then both are deleted and the condition Retained turns False
    (RetentionTimeExpired)."""
    max_task_retry_count: Optional[RetryCount] = None
    """Retries on a non-zero exit (a new attempt, maybe on another node); -1 unlimited.
    Unset takes the job's constraints.maxTaskRetryCount. Requeues (lost node, evicted pod,
    node operation) use none."""


class ExitOptions(SpecModel):
    """What a way of ending means for the job and for dependent tasks."""

    job_action: Optional[Literal["none", "disable", "terminate"]] = None
    """What happens to the job when the task completes with failure this way, only if the
    job's onTaskFailure is performexitoptionsjobaction: terminate ends the job (reason
    TaskFailed); disable sets the Job's desiredState to disabled with disableTasks wait.
    Unset means none (Batch's default for failures is terminate)."""
    dependency_action: Optional[Literal["satisfy", "block"]] = None
    """Whether tasks that depend on this one may run after it failed this way. Unset:
    block (a success always satisfies)."""


class ExitCodeMapping(SpecModel):
    """Exit options for one exit code."""

    code: int
    """The exit code of the task's command."""
    exit_options: ExitOptions
    """What that exit code means."""


class ExitCodeRangeMapping(SpecModel):
    """Exit options for a range of exit codes."""

    model_config = ConfigDict(json_schema_extra=cel(("self.start <= self.end", "start must not be greater than end")))

    start: int
    """First exit code of the range."""
    end: int
    """Last exit code of the range (inclusive)."""
    exit_options: ExitOptions
    """What an exit code in the range means (exitCodes are looked up first)."""

    @model_validator(mode="after")
    def _ordered(self) -> "ExitCodeRangeMapping":
        if self.start > self.end:
            raise ValueError("start must not be greater than end")
        return self


class ExitConditions(SpecModel):
    """What a task's exit means for its job and its dependents."""

    exit_codes: Optional[list[ExitCodeMapping]] = Field(default=None, max_length=1000)
    """Exit options per exit code, looked up first."""
    exit_code_ranges: Optional[list[ExitCodeRangeMapping]] = Field(default=None, max_length=1000)
    """Exit options per range of exit codes, looked up when no exitCodes entry matches."""
    pre_processing_error: Optional[ExitOptions] = None
    """When a resource file could not be downloaded (the command never ran)."""
    file_upload_error: Optional[ExitOptions] = None
    """When output files could not be uploaded; an exit code named in exitCodes or
    exitCodeRanges takes precedence, as in Batch."""
    default: Optional[ExitOptions] = None
    """For every failure the entries above do not cover."""


ResourceFiles = Annotated[list[ResourceFile], Field(max_length=1000)]
OutputFiles = Annotated[list[OutputFile], Field(max_length=1000)]
EnvironmentSettings = Annotated[list[EnvironmentSetting], Field(max_length=1000)]
MetadataItems = Annotated[list[MetadataItem], Field(max_length=1000)]
ApplicationPackageReferences = Annotated[list[ApplicationPackageReference], Field(max_length=100)]
