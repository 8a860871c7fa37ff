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

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema, model_validator
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
    name: str
    value: Optional[str] = None


class EnvironmentSetting(SpecModel):
    """An environment variable of a task."""

    name: Annotated[str, StringConstraints(min_length=1)]
    value: Optional[str] = None


class MetadataItem(SpecModel):
    """A name-value pair attached to a pool, job or job schedule (Batch metadata)."""

    name: Annotated[str, StringConstraints(min_length=1)]
    value: str


class ApplicationPackageReference(SpecModel):
    application_id: str
    version: Optional[str] = None


class ErrorInfo(StatusModel):
    """A code and a message, as in Batch's resizeErrors and node errors."""

    code: str
    message: Optional[str] = None


class FailureInfo(StatusModel):
    """Why a task (or start task) failed, as in Batch's TaskFailureInformation."""

    category: Optional[Literal["usererror", "servererror"]] = None
    code: Optional[str] = None
    message: Optional[str] = None
    details: Optional[list[NameValuePair]] = None


class Condition(StatusModel):
    """A standard Kubernetes condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: Optional[str] = None
    message: Optional[str] = None
    last_transition_time: Optional[datetime] = None
    observed_generation: Optional[int] = None


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
    key: str


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
    storage_container_url: Optional[str] = None
    blob_prefix: Optional[str] = None
    config_map_key_ref: Optional[KeyRef] = None
    secret_key_ref: Optional[KeyRef] = None
    file_path: Optional[str] = None
    """Path relative to the task working directory (required for httpUrl and key refs)."""
    file_mode: Optional[Annotated[str, StringConstraints(pattern=r"^0?[0-7]{3}$")]] = None
    """Octal mode, e.g. 0755."""

    @model_validator(mode="after")
    def _one_source(self) -> "ResourceFile":
        sources = [self.http_url, self.storage_container_url, self.config_map_key_ref, self.secret_key_ref]
        if sum(s is not None for s in sources) != 1:
            raise ValueError("a resource file needs exactly one of httpUrl, storageContainerUrl, configMapKeyRef, secretKeyRef")
        if self.blob_prefix is not None and self.storage_container_url is None:
            raise ValueError("blobPrefix is only valid with storageContainerUrl")
        return self


class OutputFileBlobContainerDestination(SpecModel):
    container_url: str
    path: Optional[str] = None


class OutputFilePvcDestination(SpecModel):
    """A PersistentVolumeClaim in the task's namespace (an extension beyond Batch)."""

    claim_name: str
    path: Optional[str] = None


class OutputFileDestination(SpecModel):
    model_config = ConfigDict(json_schema_extra=cel(
        ("[has(self.container), has(self.persistentVolumeClaim), has(self.httpUrl)].filter(x, x).size() == 1",
         "an output file destination needs exactly one of container, persistentVolumeClaim, httpUrl"),
    ))

    container: Optional[OutputFileBlobContainerDestination] = None
    persistent_volume_claim: Optional[OutputFilePvcDestination] = None
    http_url: Optional[str] = None

    @model_validator(mode="after")
    def _one_destination(self) -> "OutputFileDestination":
        if sum(d is not None for d in (self.container, self.persistent_volume_claim, self.http_url)) != 1:
            raise ValueError("an output file destination needs exactly one of container, persistentVolumeClaim, httpUrl")
        return self


class OutputFileUploadOptions(SpecModel):
    upload_condition: Literal["taskSuccess", "taskFailure", "taskCompletion"] = "taskCompletion"


class OutputFile(SpecModel):
    """Files uploaded after the task ends."""

    file_pattern: str
    destination: OutputFileDestination
    upload_options: Optional[OutputFileUploadOptions] = None


class AutoUserSpecification(SpecModel):
    scope: Literal["task", "pool"] = "task"
    elevation_level: Literal["nonadmin", "admin"] = "nonadmin"
    """admin runs the task as root."""


class UserIdentity(SpecModel):
    """Who the task runs as: a named user or an auto user, not both."""

    model_config = ConfigDict(json_schema_extra=cel(
        ("!(has(self.userName) && has(self.autoUser))", "userIdentity takes userName or autoUser, not both"),
    ))

    user_name: Optional[str] = None
    auto_user: Optional[AutoUserSpecification] = None

    @model_validator(mode="after")
    def _not_both(self) -> "UserIdentity":
        if self.user_name is not None and self.auto_user is not None:
            raise ValueError("userIdentity takes userName or autoUser, not both")
        return self


class ContainerSettings(SpecModel):
    """The container image a task runs in (default: the pool's `image`)."""

    image_name: str
    container_run_options: Optional[str] = None
    """Extra options; podbatch understands a subset (see docs/api.md)."""
    working_directory: Literal["taskWorkingDirectory", "containerImageDefault"] = "taskWorkingDirectory"


class TaskConstraints(SpecModel):
    max_wall_clock_time: Optional[Duration] = None
    """Longest a task may run from its start; unset means unlimited."""
    retention_time: Duration = "P7D"
    """How long the task's working directory is kept after it completes."""
    max_task_retry_count: Optional[RetryCount] = None
    """Retries on non-zero exit; -1 unlimited; unset takes the job's constraint."""


class ExitOptions(SpecModel):
    job_action: Optional[Literal["none", "disable", "terminate"]] = None
    dependency_action: Optional[Literal["satisfy", "block"]] = None


class ExitCodeMapping(SpecModel):
    code: int
    exit_options: ExitOptions


class ExitCodeRangeMapping(SpecModel):
    model_config = ConfigDict(json_schema_extra=cel(("self.start <= self.end", "start must not be greater than end")))

    start: int
    end: int
    exit_options: ExitOptions

    @model_validator(mode="after")
    def _ordered(self) -> "ExitCodeRangeMapping":
        if self.start > self.end:
            raise ValueError("start must not be greater than end")
        return self


class ExitConditions(SpecModel):
    """What a task's exit means for its job and its dependents."""

    exit_codes: Optional[list[ExitCodeMapping]] = Field(default=None, max_length=1000)
    exit_code_ranges: Optional[list[ExitCodeRangeMapping]] = Field(default=None, max_length=1000)
    pre_processing_error: Optional[ExitOptions] = None
    file_upload_error: Optional[ExitOptions] = None
    default: Optional[ExitOptions] = None


ResourceFiles = Annotated[list[ResourceFile], Field(max_length=1000)]
OutputFiles = Annotated[list[OutputFile], Field(max_length=1000)]
EnvironmentSettings = Annotated[list[EnvironmentSetting], Field(max_length=1000)]
MetadataItems = Annotated[list[MetadataItem], Field(max_length=1000)]
ApplicationPackageReferences = Annotated[list[ApplicationPackageReference], Field(max_length=100)]
