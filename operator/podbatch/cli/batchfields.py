"""The Azure Batch REST fields `kubectl podbatch import` reads, each with its fate: a table per
Batch type maps every field it knows to a rule: SAME (copied under the same name), Drop(why),
a nested table, or a handler for what needs more (renamed fields, enums matched without
case, Batch's "unlimited" durations, the VM configuration). The walk itself is importer.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from podbatch.api import parse_duration

if TYPE_CHECKING:
    from podbatch.cli.importer import Importer

# --------------------------------------------------------------------------- reasons

NODE_GROUP = "a pool's Nodes come from spec.nodeGroup (--node-group), not from a VM image or OS configuration"
READ_ONLY = "state the Batch service reports, not part of a definition"
UNKNOWN = "not an Azure Batch field podbatch knows"
NO_ACCOUNT_FEATURE = "a setting of Azure's own infrastructure, with no equivalent on Kubernetes"
AUTO_STORAGE = "not supported: podbatch has no auto-storage account; give storageContainerUrl with a SAS instead"
IDENTITY = "not supported: podbatch has no managed identities; use a SAS URL"
UNLIMITED_RETENTION = "unlimited retention has no equivalent: podbatch keeps a completed task for retentionTime (default P7D)"
UNLIMITED_DAYS = 36500  # a longer duration is Batch's "unlimited" (TimeSpan.MaxValue, P10675199DT2H48M5.4775807S)
READ_ONLY_FIELDS = ("url", "eTag", "lastModified", "creationTime", "state", "stateTransitionTime", "previousState",
                    "previousStateTransitionTime", "allocationState", "allocationStateTransitionTime",
                    "currentDedicatedNodes", "currentLowPriorityNodes", "resizeErrors", "autoScaleRun", "stats",
                    "executionInfo", "nodeInfo", "currentNodeCommunicationMode", "odata.metadata")


def sanitize(batch_id: str) -> str:
    """A Batch id (letters, digits, `-`, `_`, case-insensitive) as a DNS-1123 name."""
    name = re.sub(r"[^a-z0-9.-]+", "-", str(batch_id).lower()).strip("-.")
    return name[:253] or "batch"


@dataclass(frozen=True)
class Drop:
    reason: str


# --------------------------------------------------------------------------- rules
# A rule is SAME (copied), Drop(reason), a nested table (a mapping mapped the same way), or
# a handler (importer, value, input path, output path, output mapping, key, input mapping).

SAME = object()


def sub_list(table: dict[str, Any], check: Callable[[Importer, dict, str], bool] | None = None):
    """A list of objects, each mapped by `table`; `check` may refuse a mapped item (and undo it)."""
    def handle(im: Importer, value: Any, p: str, d: str, out: dict, key: str, parent: dict) -> None:
        if not isinstance(value, list):
            im.drop(value, p, f"{key}: expected a list")
            return
        kept: list[dict] = []
        for i, item in enumerate(value):
            mapped = im.map(item, f"{p}[{i}]", f"{d}[{i}]", table)
            if check is None or check(im, mapped, f"{d}[{i}]"):
                if len(kept) != i:
                    im.move(f"{d}[{i}]", f"{d}[{len(kept)}]")
                kept.append(mapped)
        if kept or not value:
            out[key] = kept
            if not value:
                im.conv(value, p, d)
    return handle


def enum(*values: str):
    """A Batch enum, matched case-insensitively (templates write `terminateJob`, REST `terminatejob`)."""
    def handle(im: Importer, value: Any, p: str, d: str, out: dict, key: str, parent: dict) -> None:
        match = next((v for v in values if str(value).lower() == v.lower()), None)
        if match is None:
            im.drop(value, p, f"{key}: {value!r} is not one of {', '.join(values)}")
            return
        out[key] = match
        im.conv(value, p, d, same=match == value)
    return handle


_TIMEDELTA = re.compile(r"^(?:(\d+) days?, )?(\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def iso_duration(value: Any) -> Any:
    """`az batch … show` prints durations as Python does (`0:15:00`, `1 day, 2:00:00`): as ISO 8601."""
    m = _TIMEDELTA.match(value) if isinstance(value, str) else None
    if not m:
        return value
    days, hours, minutes, seconds = (m.group(1) or "0"), m.group(2), m.group(3), m.group(4)
    parts = [f"{int(hours)}H" if int(hours) else "", f"{int(minutes)}M" if int(minutes) else "",
             f"{seconds.lstrip('0') or '0'}S" if float(seconds) else ""]
    time = "".join(parts)
    if not int(days) and not time:
        return "PT0S"
    return "P" + (f"{int(days)}D" if int(days) else "") + (f"T{time}" if time else "")


def duration(unlimited: str = "unset"):
    """An ISO 8601 duration (or az's `0:15:00`); Batch's unlimited becomes unset (unlimited here
    too) or is dropped."""
    def handle(im: Importer, given: Any, p: str, d: str, out: dict, key: str, parent: dict) -> None:
        value = iso_duration(given)
        try:
            days = parse_duration(value).days
        except (ValueError, TypeError) as e:
            im.drop(value, p, f"{key}: {e}")
            return
        if days > UNLIMITED_DAYS:
            if unlimited == "unset":
                im.r.converted[p] = ""
            else:
                im.drop(value, p, f"{key}: {UNLIMITED_RETENTION}")
            return
        out[key] = value
        im.conv(value, p, d, same=value == given)
    return handle


def pool_id(im: Importer, value: Any, p: str, d: str, out: dict, key: str, parent: dict) -> None:
    out[key] = sanitize(value)
    im.conv(value, p, d, same=out[key] == value)
    if out[key] != value:
        im.r.notes.append(f"{p} {value!r} refers to the Pool named {out[key]!r}")


def run_elevated(im: Importer, value: Any, p: str, d: str, out: dict, key: str, parent: dict) -> None:
    """Batch's runElevated (before API 2017-01-01): the admin auto user."""
    if "userIdentity" in parent:
        im.drop(value, p, "runElevated: superseded by userIdentity")
        return
    out["userIdentity"] = {"autoUser": {"elevationLevel": "admin" if value else "nonadmin"}}
    im.conv(value, p, d.rsplit(".", 1)[0] + ".userIdentity.autoUser.elevationLevel", same=False)


def renamed(new: str):
    """A field Batch renamed (targetDedicated → targetDedicatedNodes in API 2017-05-01)."""
    def handle(im: Importer, value: Any, p: str, d: str, out: dict, key: str, parent: dict) -> None:
        if new in parent:
            im.drop(value, p, f"{key}: superseded by {new}")
            return
        out[new] = value
        im.conv(value, p, d.rsplit(".", 1)[0] + "." + new)
    return handle


def vm_configuration(im: Importer, value: Any, p: str, d: str, out: dict, key: str, parent: dict) -> None:
    """All of it is the node group's business, except the container image a container pool prefetches."""
    if not isinstance(value, dict):
        im.drop(value, p, f"{key}: {NODE_GROUP}")
        return
    for k, v in value.items():
        if v is None:
            im.conv(v, f"{p}.{k}", "")             # null: unset
            continue
        if k != "containerConfiguration" or not isinstance(v, dict):
            im.drop(v, f"{p}.{k}", f"{key}: {NODE_GROUP}")
            continue
        for ck, cv in v.items():
            cp = f"{p}.{k}.{ck}"
            if cv is None:
                im.conv(cv, cp, "")
            elif ck == "containerImageNames" and isinstance(cv, list) and len(cv) == 1:
                out["image"] = cv[0]
                im.conv(cv[0], f"{cp}[0]", d.rsplit(".", 1)[0] + ".image")
            elif ck == "containerImageNames":
                im.drop(cv, cp, "containerImageNames: podbatch prefetches no images; each task's "
                                "containerSettings.imageName is pulled when it runs (spec.image is the default)")
            elif ck == "containerRegistries":
                im.drop(cv, cp, f"containerRegistries: {REGISTRY}")
            elif ck == "type":
                im.drop(cv, cp, "containerConfiguration.type: the cluster's container runtime runs every task")
            else:
                im.drop(cv, cp, f"{ck}: {UNKNOWN}")


def pool_spec(im: Importer, value: Any, p: str, d: str, out: dict, key: str, parent: dict) -> None:
    """autoPoolSpecification.pool: a PoolSpec, given the node group."""
    spec = im.map(value, p, d, POOL)
    spec["nodeGroup"] = im.node_group_for(im.obj.split("/", 1)[1])
    out[key] = spec


def task_factory(im: Importer, value: Any, p: str, d: str, out: dict, key: str, parent: dict) -> None:
    """A template's taskFactory: its tasks are made after the job (importer.factory_tasks)."""
    im.factory = (value, p)


def has_source(im: Importer, item: dict, d: str) -> bool:
    if "httpUrl" in item or "storageContainerUrl" in item:
        return True
    im.undo(d, "its resource file is dropped: no source podbatch can fetch (httpUrl or storageContainerUrl)")
    return False


def has_destination(im: Importer, item: dict, d: str) -> bool:
    if "filePattern" in item and ((item.get("destination") or {}).get("container") or {}).get("containerUrl"):
        return True
    im.undo(d, "its output file is dropped: no destination podbatch can upload to (destination.container)")
    return False


REGISTRY = "registry credentials are not imported: give the namespace's pods an imagePullSecret"
RESOURCE_FILE = {
    "httpUrl": SAME, "storageContainerUrl": SAME, "blobPrefix": SAME, "filePath": SAME, "fileMode": SAME,
    "autoStorageContainerName": Drop(f"autoStorageContainerName: {AUTO_STORAGE}"),
    "source": Drop(f"source (a template's file group): {AUTO_STORAGE}"),
    "identityReference": Drop(f"identityReference: {IDENTITY}"),
}
RESOURCE_FILES = sub_list(RESOURCE_FILE, has_source)
NAME_VALUE = {"name": SAME, "value": SAME}
CONTAINER_SETTINGS = {
    "imageName": SAME, "containerRunOptions": SAME,
    "workingDirectory": enum("taskWorkingDirectory", "containerImageDefault"),
    "registry": Drop(f"registry: {REGISTRY}"),
    "containerHostBatchBindMounts": Drop("containerHostBatchBindMounts: podbatch mounts the node directories it mounts, always"),
}
USER_IDENTITY = {"userName": SAME, "autoUser": {"scope": enum("task", "pool"), "elevationLevel": enum("nonadmin", "admin")}}
TASK_CONSTRAINTS = {"maxWallClockTime": duration(), "retentionTime": duration("drop"), "maxTaskRetryCount": SAME}
EXIT_OPTIONS = {"jobAction": enum("none", "disable", "terminate"), "dependencyAction": enum("satisfy", "block")}
EXIT_CONDITIONS = {
    "exitCodes": sub_list({"code": SAME, "exitOptions": EXIT_OPTIONS}),
    "exitCodeRanges": sub_list({"start": SAME, "end": SAME, "exitOptions": EXIT_OPTIONS}),
    "preProcessingError": EXIT_OPTIONS, "fileUploadError": EXIT_OPTIONS, "default": EXIT_OPTIONS,
}
OUTPUT_FILE = {
    "filePattern": SAME,
    "destination": {
        "container": {"path": SAME, "containerUrl": SAME, "identityReference": Drop(f"identityReference: {IDENTITY}"),
                      "uploadHeaders": Drop("uploadHeaders: podbatch sends no extra headers with an upload")},
        "autoStorage": Drop(f"autoStorage (a template's file group): {AUTO_STORAGE}"),
    },
    "uploadOptions": {"uploadCondition": enum("taskSuccess", "taskFailure", "taskCompletion")},
}
OUTPUT_FILES = sub_list(OUTPUT_FILE, has_destination)
APP_PACKAGES = sub_list({"applicationId": SAME, "version": SAME})
COMMON_TASK = {
    "commandLine": SAME, "containerSettings": CONTAINER_SETTINGS, "resourceFiles": RESOURCE_FILES,
    "environmentSettings": sub_list(NAME_VALUE), "userIdentity": USER_IDENTITY, "runElevated": run_elevated,
}
TASK = {
    **COMMON_TASK, "displayName": SAME, "outputFiles": OUTPUT_FILES, "constraints": TASK_CONSTRAINTS,
    "requiredSlots": SAME, "affinityInfo": {"affinityId": SAME}, "exitConditions": EXIT_CONDITIONS,
    "dependsOn": {"taskIds": SAME, "taskIdRanges": sub_list({"start": SAME, "end": SAME})},
    "multiInstanceSettings": {"numberOfInstances": SAME, "coordinationCommandLine": SAME,
                              "commonResourceFiles": RESOURCE_FILES},
    "applicationPackageReferences": APP_PACKAGES,
    "authenticationTokenSettings": Drop("authenticationTokenSettings: only a job manager gets API access in podbatch"),
}
START_TASK = {**COMMON_TASK, "maxTaskRetryCount": SAME, "waitForSuccess": SAME}
JOB_MANAGER = {
    **COMMON_TASK, "id": SAME, "displayName": SAME, "outputFiles": OUTPUT_FILES, "constraints": TASK_CONSTRAINTS,
    "requiredSlots": SAME, "killJobOnCompletion": SAME, "runExclusive": SAME, "allowLowPriorityNode": SAME,
    "authenticationTokenSettings": {"access": SAME},
    "applicationPackageReferences": APP_PACKAGES,
}
JOB_PREPARATION = {**COMMON_TASK, "id": SAME, "constraints": TASK_CONSTRAINTS, "waitForSuccess": SAME,
                   "rerunOnNodeRebootAfterSuccess": SAME}
JOB_RELEASE = {**COMMON_TASK, "id": SAME, "maxWallClockTime": duration(), "retentionTime": duration("drop")}
POOL = {
    "vmSize": SAME, "virtualMachineConfiguration": vm_configuration, "resizeTimeout": duration(),
    "targetDedicatedNodes": SAME, "targetLowPriorityNodes": SAME, "enableAutoScale": SAME, "autoScaleFormula": SAME,
    "autoScaleEvaluationInterval": duration(), "enableInterNodeCommunication": SAME, "startTask": START_TASK,
    "applicationPackageReferences": APP_PACKAGES, "taskSlotsPerNode": SAME, "maxTasksPerNode": renamed("taskSlotsPerNode"),
    "targetDedicated": renamed("targetDedicatedNodes"),
    "taskSchedulingPolicy": {"nodeFillType": enum("spread", "pack")}, "metadata": sub_list(NAME_VALUE),
    "displayName": Drop("displayName: a Pool has none in podbatch (its name is metadata.name)"),
    "cloudServiceConfiguration": Drop(f"cloudServiceConfiguration: {NODE_GROUP}"),
    "networkConfiguration": Drop("networkConfiguration: pods use the cluster's pod network"),
    "certificateReferences": Drop("certificateReferences: use Secrets (resourceFiles with secretKeyRef)"),
    "applicationLicenses": Drop(f"applicationLicenses: {NO_ACCOUNT_FEATURE}"),
    "userAccounts": Drop("userAccounts: podbatch pools have no user accounts (tasks run as uid 1000, or root as admin)"),
    "mountConfiguration": Drop("mountConfiguration: not imported (its keys and passwords belong in Secrets); write "
                               "it with secretName as docs/podtemplates.md shows, or mount claims through spec.podTemplate"),
    "targetNodeCommunicationMode": Drop(f"targetNodeCommunicationMode: {NO_ACCOUNT_FEATURE}"),
    "upgradePolicy": Drop("upgradePolicy: the cluster upgrades its Nodes"),
    "resourceTags": Drop(f"resourceTags: {NO_ACCOUNT_FEATURE}"),
    "identity": Drop(f"identity: {IDENTITY}"),
}
JOB = {
    "displayName": SAME, "priority": SAME, "maxParallelTasks": SAME, "allowTaskPreemption": SAME,
    "constraints": {"maxWallClockTime": duration(), "maxTaskRetryCount": SAME},
    "jobManagerTask": JOB_MANAGER, "jobPreparationTask": JOB_PREPARATION, "jobReleaseTask": JOB_RELEASE,
    "commonEnvironmentSettings": sub_list(NAME_VALUE),
    "poolInfo": {"poolId": pool_id, "autoPoolSpecification": {
        "autoPoolIdPrefix": SAME, "poolLifetimeOption": enum("job", "jobschedule"), "keepAlive": SAME, "pool": pool_spec}},
    "onAllTasksComplete": enum("noaction", "terminatejob"), "onTaskFailure": enum("noaction", "performexitoptionsjobaction"),
    "usesTaskDependencies": SAME, "metadata": sub_list(NAME_VALUE),
    "networkConfiguration": Drop("networkConfiguration: pods use the cluster's pod network"),
    "taskFactory": task_factory,
    "applicationTemplateInfo": Drop("applicationTemplateInfo: expand the application template first"),
}
SCHEDULE = {"doNotRunUntil": SAME, "doNotRunAfter": SAME, "startWindow": duration(), "recurrenceInterval": duration()}
SCHEDULE_KIND = {
    "schedule": SCHEDULE, "jobSpecification": JOB, "metadata": sub_list(NAME_VALUE),
    "displayName": Drop("displayName: a JobSchedule has none in podbatch (its name is metadata.name)"),
}
POOL_HINTS = ("vmSize", "virtualMachineConfiguration", "cloudServiceConfiguration", "targetDedicatedNodes",
              "enableAutoScale", "taskSlotsPerNode", "maxTasksPerNode")
