"""Pod template overrides (`spec.podTemplate` of Pool, Job and Task) and the Pool's
`mountConfiguration`: what a user may add to the pods podbatch builds.

A restricted PodTemplateSpec. Everything Kubernetes users reach for is here (volumes,
volume mounts, image pull secrets, resources, env and envFrom, labels and annotations,
sidecar and init containers, a runtime class, pod security groups); what podbatch itself
decides is not: node binding, the pool's tolerations, the wrapper command, restart
policy, deadlines, service accounts, who a container runs as, host namespaces and host
paths. Those fields are declared here only to be refused by name, with the reason, so
that a 1.20 API server keeps them (it prunes unknown fields) and the operator reports
them (condition InvalidSpec and an Event); docs/podtemplates.md says why each one.
The merge into the pod is the pure `podbatch.core.podtemplates`.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, Field, StringConstraints, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from podbatch.api.common import IntOrString, SpecModel

REFUSED = "Refused: "
RESERVED_PREFIX = "podbatch-"
MAIN_CONTAINER = "task"
RESERVED_CONTAINERS = ("start-task", "resource-files", "node-directories")
RESERVED_MOUNT_PATHS = ("/podbatch-", "/etc/podbatch")
DEFAULT_NODE_ROOT = "/var/lib/podbatch"
RESERVED_ENV_PREFIXES = ("AZ_BATCH_", "PODBATCH_")
QUANTITY = r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[numkMGTPE]i?|Ki|Mi|Gi|Ti|Pi|Ei)?$"

Loose = Annotated[Any, WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True})]
"""A value kept as written (the API server checks it when podbatch creates the pod)."""
LooseObject = Annotated[dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})]


def refused(reason: str) -> Any:
    """A field podbatch decides itself: declared so it is kept and refused with `reason`."""
    return Field(default=None, description=REFUSED + reason)


class RefusingModel(SpecModel):
    """A model whose `refused(...)` fields fail validation with their reason, at their path."""

    @field_validator("*", mode="after")
    @classmethod
    def _refuse(cls, value: Any, info) -> Any:
        description = cls.model_fields[info.field_name].description or ""
        if value is not None and description.startswith(REFUSED):
            raise PydanticCustomError("podtemplate_refused", description[len(REFUSED):])
        return value


def _podbatch_key(key: str) -> bool:
    prefix = key.split("/", 1)[0] if "/" in key else ""
    return prefix == "podbatch.io" or prefix.endswith(".podbatch.io")


class PodTemplateMetadata(SpecModel):
    """Labels and annotations added to the pods (podbatch's own podbatch.io/ keys win)."""

    labels: Optional[dict[str, str]] = None
    """Labels of the pods; keys under podbatch.io/ are podbatch's and refused."""
    annotations: Optional[dict[str, str]] = None
    """Annotations of the pods; keys under podbatch.io/ are podbatch's and refused."""

    @model_validator(mode="after")
    def _not_podbatch_keys(self) -> "PodTemplateMetadata":
        for what, items in (("labels", self.labels), ("annotations", self.annotations)):
            bad = sorted(k for k in items or {} if _podbatch_key(k))
            if bad:
                raise ValueError(f"{what} {', '.join(bad)}: podbatch.io/ keys are podbatch's own bookkeeping; use another prefix")
        return self


class EnvVar(SpecModel):
    """An environment variable, as in a Kubernetes container."""

    name: Annotated[str, StringConstraints(min_length=1)]
    """The variable's name. In the task container AZ_BATCH_* and PODBATCH_* are podbatch's and refused."""
    value: Optional[str] = None
    """Its value."""
    value_from: Optional[LooseObject] = None
    """Kubernetes' valueFrom: secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef."""


class VolumeMount(RefusingModel):
    """A volume mounted into a container, as in Kubernetes."""

    name: Annotated[str, StringConstraints(min_length=1)]
    """The volume's name: one of a template's volumes (pool, job or task) or of the
    pool's mountConfiguration. podbatch's own volumes (podbatch-*) are refused."""
    mount_path: Annotated[str, StringConstraints(pattern=r"^/")]
    """Where it appears in the container. Not under /podbatch-*, /etc/podbatch or the
    pool's node root directory (podbatch mounts those)."""
    read_only: Optional[bool] = None
    """Mount read-only."""
    sub_path: Optional[str] = None
    """A path inside the volume to mount instead of its root."""
    sub_path_expr: Optional[str] = None
    """subPath with $(VAR) expanded from the container's environment."""
    mount_propagation: Optional[Loose] = refused(
        "mount propagation is for privileged containers, and podbatch keeps pods unprivileged; remove it")

    @model_validator(mode="after")
    def _not_podbatch(self) -> "VolumeMount":
        if self.name.startswith(RESERVED_PREFIX):
            raise ValueError(f"name {self.name}: volumes named podbatch-* are podbatch's own; mount a volume of the template")
        path = self.mount_path.rstrip("/") or "/"
        if path.startswith(RESERVED_MOUNT_PATHS) or path == DEFAULT_NODE_ROOT or path.startswith(DEFAULT_NODE_ROOT + "/"):
            raise ValueError(f"mountPath {self.mount_path}: podbatch mounts its node directories and tools there; pick another path")
        return self


def _check_quantity(value: Any) -> Any:
    if isinstance(value, str) and not re.match(QUANTITY, value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (like 2, 500m, 1.5, 4Gi)")
    return value


Quantity = Annotated[IntOrString, AfterValidator(_check_quantity)]


class ContainerResources(SpecModel):
    """Kubernetes requests and limits."""

    requests: Optional[dict[str, Quantity]] = None
    """Resource requests (cpu, memory, …) as quantities, e.g. 2, "500m", "1Gi"."""
    limits: Optional[dict[str, Quantity]] = None
    """Resource limits as quantities."""


_WHO = "who a container runs as comes from userIdentity (autoUser.elevationLevel), and podbatch keeps the restricted profile; remove it"


class ContainerSecurityContext(RefusingModel):
    """What a template may add to a container's securityContext: only tightening."""

    read_only_root_filesystem: Optional[bool] = None
    """Mount the container's root filesystem read-only."""
    privileged: Optional[Loose] = refused(_WHO)
    run_as_user: Optional[Loose] = refused(_WHO)
    run_as_group: Optional[Loose] = refused(_WHO)
    run_as_non_root: Optional[Loose] = refused(_WHO)
    allow_privilege_escalation: Optional[Loose] = refused(_WHO)
    capabilities: Optional[Loose] = refused(_WHO)
    seccomp_profile: Optional[Loose] = refused(_WHO)
    se_linux_options: Optional[Loose] = refused(_WHO)
    proc_mount: Optional[Loose] = refused(_WHO)
    windows_options: Optional[Loose] = refused("podbatch runs Linux containers; remove it")


_TASK_ONLY = {
    "image": "the task's image is containerSettings.imageName (or the pool's image)",
    "command": "podbatch runs commandLine through its wrapper; change commandLine",
    "args": "podbatch runs commandLine through its wrapper; change commandLine",
    "working_dir": "the working directory is containerSettings.workingDirectory",
    "image_pull_policy": "the pool's imagePullPolicy applies",
    "lifecycle": "podbatch's wrapper handles the task's stop signals",
    "readiness_probe": "a task is not a service",
}


class PodTemplateContainer(RefusingModel):
    """A container of the template. Named `task`: changes to podbatch's main container (the
    task's, or the start task's in a pool's node-preparation pod): resources, env,
    envFrom, volumeMounts, ports and securityContext are merged in. Any other name: a
    sidecar (in `containers`) or an init container (in `initContainers`), run as the
    task's user."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
    """`task`, or the name of a sidecar or init container (not podbatch-*, start-task,
    resource-files, node-directories)."""
    image: Optional[str] = None
    """The sidecar's or init container's image (required for them; refused for `task`)."""
    image_pull_policy: Optional[Literal["Always", "IfNotPresent", "Never"]] = None
    """A sidecar's or init container's pull policy (default: the pool's imagePullPolicy)."""
    command: Optional[list[str]] = None
    """The sidecar's or init container's command. Required for a sidecar: podbatch runs it
    under a small wrapper that ends the sidecar when the task ends, so the image's
    entrypoint is not used. Refused for `task`."""
    args: Optional[list[str]] = None
    """Arguments appended to command."""
    working_dir: Optional[str] = None
    """The sidecar's or init container's working directory."""
    env: Optional[list[EnvVar]] = None
    """Environment variables; for `task` they go over the Batch environment settings of
    the same level (docs/podtemplates.md), and AZ_BATCH_* / PODBATCH_* are refused."""
    env_from: Optional[list[LooseObject]] = None
    """Kubernetes envFrom: every key of a ConfigMap or Secret (configMapRef, secretRef,
    prefix). Variables podbatch sets still win (env wins over envFrom)."""
    volume_mounts: Optional[list[VolumeMount]] = None
    """Volumes of the template (or of mountConfiguration) to mount."""
    resources: Optional[ContainerResources] = None
    """Requests and limits; for `task` merged over spec.resources key by key."""
    ports: Optional[list[LooseObject]] = None
    """Container ports, as in Kubernetes (informational)."""
    security_context: Optional[ContainerSecurityContext] = None
    """Only readOnlyRootFilesystem; the rest is podbatch's (from userIdentity)."""
    lifecycle: Optional[LooseObject] = None
    """A sidecar's lifecycle hooks (refused for `task`)."""
    readiness_probe: Optional[LooseObject] = None
    """A sidecar's readiness probe (refused for `task`)."""
    liveness_probe: Optional[Loose] = refused(
        "a container restarted by a probe fails the pod (podbatch runs each attempt with restartPolicy Never); remove it")
    startup_probe: Optional[Loose] = refused(
        "a container restarted by a probe fails the pod (podbatch runs each attempt with restartPolicy Never); remove it")

    def check(self, *, role: str) -> None:
        """Raise ValueError for what a container may not have in its `role` (containers or initContainers)."""
        if self.name == MAIN_CONTAINER:
            if role == "initContainers":
                raise ValueError("name task: `task` is podbatch's main container, not an init container; pick another name")
            for field_, why in _TASK_ONLY.items():
                if getattr(self, field_) is not None:
                    alias = type(self).model_fields[field_].alias or field_
                    raise ValueError(f"{alias}: {why}; remove it from the `task` container")
            bad = sorted(e.name for e in self.env or [] if e.name.startswith(RESERVED_ENV_PREFIXES))
            if bad:
                raise ValueError(f"env {', '.join(bad)}: AZ_BATCH_* and PODBATCH_* variables are podbatch's; use another name")
            return
        if self.name.startswith(RESERVED_PREFIX) or self.name in RESERVED_CONTAINERS:
            raise ValueError(f"name {self.name}: a name podbatch uses for its own containers; pick another")
        if not self.image:
            raise ValueError(f"image: the {'sidecar' if role == 'containers' else 'init container'} {self.name} needs an image")
        if role == "containers" and not self.command:
            raise ValueError(f"command: the sidecar {self.name} needs its command: podbatch runs it under a wrapper "
                             "that ends it when the task ends, so the image's entrypoint is not used")


class PodTemplateVolume(RefusingModel):
    """A volume of the pods, with exactly one source, as in Kubernetes."""

    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
    """The volume's name (not podbatch-*); a later template's volume of the same name
    replaces an earlier one (pool, then job, then task)."""
    persistent_volume_claim: Optional[LooseObject] = None
    """A PersistentVolumeClaim of the namespace: claimName, readOnly."""
    config_map: Optional[LooseObject] = None
    """A ConfigMap's keys as files: name, items, defaultMode, optional."""
    secret: Optional[LooseObject] = None
    """A Secret's keys as files: secretName, items, defaultMode, optional."""
    empty_dir: Optional[LooseObject] = None
    """A scratch directory living as long as the pod: medium, sizeLimit."""
    csi: Optional[LooseObject] = None
    """An inline CSI volume: driver, volumeAttributes, nodePublishSecretRef, readOnly."""
    nfs: Optional[LooseObject] = None
    """An NFS export: server, path, readOnly."""
    projected: Optional[LooseObject] = None
    """Several sources (secret, configMap, downwardAPI, serviceAccountToken) in one directory."""
    downward_api: Optional[LooseObject] = None
    """Pod fields as files."""
    ephemeral: Optional[LooseObject] = None
    """A generic ephemeral volume: a PVC made for the pod from volumeClaimTemplate."""
    host_path: Optional[Loose] = refused(
        "the only host paths in task pods are podbatch's node directories; use a PersistentVolumeClaim "
        "(a cluster admin's local or hostPath PersistentVolume) instead")

    @model_validator(mode="after")
    def _one_source(self) -> "PodTemplateVolume":
        if self.name.startswith(RESERVED_PREFIX):
            raise ValueError(f"name {self.name}: volumes named podbatch-* are podbatch's own; pick another name")
        sources = [n for n in ("persistent_volume_claim", "config_map", "secret", "empty_dir", "csi", "nfs",
                               "projected", "downward_api", "ephemeral") if getattr(self, n) is not None]
        if len(sources) != 1:
            raise ValueError(f"volume {self.name} needs exactly one source (persistentVolumeClaim, configMap, secret, "
                             "emptyDir, csi, nfs, projected, downwardAPI, ephemeral)")
        return self


class LocalObjectReference(SpecModel):
    """An object of the same namespace, by name."""

    name: Annotated[str, StringConstraints(min_length=1)]
    """The object's name."""


class PodSecurityContext(RefusingModel):
    """The pod-level securityContext a template may set: groups only."""

    fs_group: Optional[Annotated[int, Field(ge=0)]] = None
    """Group that owns the pod's volumes (writable PVCs for the nonadmin uid 1000)."""
    fs_group_change_policy: Optional[Literal["OnRootMismatch", "Always"]] = None
    """When fsGroup ownership is applied to a volume."""
    supplemental_groups: Optional[list[Annotated[int, Field(ge=0)]]] = None
    """Extra groups of every container's process."""
    run_as_user: Optional[Loose] = refused(_WHO)
    run_as_group: Optional[Loose] = refused(_WHO)
    run_as_non_root: Optional[Loose] = refused(_WHO)
    sysctls: Optional[Loose] = refused("podbatch keeps pods to the restricted profile, which allows no sysctls; remove it")
    se_linux_options: Optional[Loose] = refused(_WHO)
    seccomp_profile: Optional[Loose] = refused(_WHO)
    windows_options: Optional[Loose] = refused("podbatch runs Linux containers; remove it")


_PLACED = "podbatch places task pods on the pool's nodes itself (its own scheduler); remove it"
_ACCOUNT = ("task pods get API access only as a job manager with authenticationTokenSettings "
            "(its own ServiceAccount); remove it")
_HOST = "podbatch keeps pods off the host's namespaces (node directories are its only host access); remove it"


class PodTemplatePodSpec(RefusingModel):
    """What a template adds to the pod's spec."""

    volumes: Optional[list[PodTemplateVolume]] = Field(default=None, max_length=100)
    """Volumes of the pod, mounted through containers[].volumeMounts."""
    containers: Optional[list[PodTemplateContainer]] = Field(default=None, max_length=20)
    """`task` (changes to podbatch's main container) and sidecars. A sidecar starts with
    the task and is stopped once the task's command ended (docs/podtemplates.md)."""
    init_containers: Optional[list[PodTemplateContainer]] = Field(default=None, max_length=20)
    """Init containers, run after podbatch's own (node directories, application packages,
    resource files) and before the task."""
    image_pull_secrets: Optional[list[LocalObjectReference]] = None
    """Secrets of the namespace used to pull the pods' images."""
    runtime_class_name: Optional[str] = None
    """A RuntimeClass (gVisor, Kata, …). A pool's is the pool admin's: a job or task
    template may set one only where the pool's template sets none."""
    security_context: Optional[PodSecurityContext] = None
    """fsGroup, fsGroupChangePolicy and supplementalGroups. What a pool's template sets
    here, job and task templates may not change."""
    host_aliases: Optional[list[LooseObject]] = None
    """Extra /etc/hosts entries: ip and hostnames."""
    dns_config: Optional[LooseObject] = None
    """DNS options of the pods: nameservers, searches, options."""
    node_name: Optional[Loose] = refused("podbatch binds task pods to their node itself; remove it")
    node_selector: Optional[Loose] = refused(_PLACED)
    affinity: Optional[Loose] = refused(_PLACED)
    tolerations: Optional[Loose] = refused("podbatch sets the tolerations of the pool's taint itself; remove it")
    scheduler_name: Optional[Loose] = refused(_PLACED)
    topology_spread_constraints: Optional[Loose] = refused(_PLACED)
    priority_class_name: Optional[Loose] = refused("podbatch orders tasks by job and task priority itself; remove it")
    priority: Optional[Loose] = refused("podbatch orders tasks by job and task priority itself; remove it")
    preemption_policy: Optional[Loose] = refused("podbatch orders tasks by job and task priority itself; remove it")
    restart_policy: Optional[Loose] = refused(
        "podbatch runs one pod per attempt (restartPolicy Never) and retries itself (constraints.maxTaskRetryCount); remove it")
    active_deadline_seconds: Optional[Loose] = refused("use constraints.maxWallClockTime; remove it")
    termination_grace_period_seconds: Optional[Loose] = refused(
        "podbatch gives its pods 5 s to stop, which its requeue and terminate timing relies on; remove it")
    service_account_name: Optional[Loose] = refused(_ACCOUNT)
    service_account: Optional[Loose] = refused(_ACCOUNT)
    automount_service_account_token: Optional[Loose] = refused(_ACCOUNT)
    host_network: Optional[Loose] = refused(_HOST)
    host_pid: Optional[Loose] = refused(_HOST)
    host_ipc: Optional[Loose] = refused(_HOST)
    share_process_namespace: Optional[Loose] = refused(
        "podbatch's wrapper must be the first process of the task container (it passes stop signals on); remove it")

    @model_validator(mode="after")
    def _containers(self) -> "PodTemplatePodSpec":
        seen: set[str] = set()
        for role, items in (("containers", self.containers), ("initContainers", self.init_containers)):
            for i, c in enumerate(items or []):
                if c.name in seen:
                    raise ValueError(f"{role}[{i}]: a second container named {c.name}")
                seen.add(c.name)
                try:
                    c.check(role=role)
                except ValueError as e:
                    raise ValueError(f"{role}[{i}] ({c.name}): {e}") from None
        names = [v.name for v in self.volumes or []]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"volumes: {', '.join(dup)} declared twice")
        return self


class PodTemplate(SpecModel):
    """Beyond Batch: additions to the pods podbatch builds (Kubernetes' pod template,
    restricted). Merged pool first, then job, then task; podbatch's own fields win and
    those a template may not change are refused (docs/podtemplates.md)."""

    metadata: Optional[PodTemplateMetadata] = None
    """Labels and annotations of the pods."""
    spec: Optional[PodTemplatePodSpec] = None
    """Volumes, containers, image pull secrets, runtime class, pod security groups."""


# --------------------------------------------------------------------------- mountConfiguration

_SECRET = ("put the account name and key into a Secret (keys azurestorageaccountname, azurestorageaccountkey) "
           "and name it in secretName")


class NfsMountConfiguration(RefusingModel):
    """An NFS export mounted into the pool's pods (a Kubernetes nfs volume)."""

    source: Annotated[str, StringConstraints(pattern=r"^[^:/\s]+:/.*$")]
    """The export, `server:/path`."""
    relative_mount_path: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$")]
    """Directory under $AZ_BATCH_NODE_MOUNTS_DIR where it appears in the pods."""
    read_only: Optional[bool] = None
    """Beyond Batch: mount it read-only."""
    mount_options: Optional[Loose] = refused(
        "an inline nfs volume takes no mount options; create an NFS PersistentVolume with mountOptions and "
        "mount its claim through spec.podTemplate")


class AzureFileShareConfiguration(RefusingModel):
    """An Azure file share mounted through the Azure Files CSI driver (file.csi.azure.com)."""

    account_name: str
    """The storage account."""
    azure_file_url: Annotated[str, StringConstraints(pattern=r"^https://[^/]+/[^/]+/?$")]
    """https://<account>.file.core.windows.net/<share>; the share is its path."""
    relative_mount_path: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$")]
    """Directory under $AZ_BATCH_NODE_MOUNTS_DIR where it appears in the pods."""
    secret_name: str
    """Beyond Batch: the Secret of the namespace with azurestorageaccountname and
    azurestorageaccountkey (the CSI driver's nodePublishSecretRef)."""
    mount_options: Optional[str] = None
    """Mount options, passed to the driver as volumeAttributes.mountOptions."""
    account_key: Optional[Loose] = refused(_SECRET)


class AzureBlobFileSystemConfiguration(RefusingModel):
    """An Azure blob container mounted through the Azure Blob CSI driver (blob.csi.azure.com)."""

    account_name: str
    """The storage account."""
    container_name: str
    """The blob container."""
    relative_mount_path: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+$")]
    """Directory under $AZ_BATCH_NODE_MOUNTS_DIR where it appears in the pods."""
    secret_name: str
    """Beyond Batch: the Secret of the namespace with azurestorageaccountname and
    azurestorageaccountkey or azurestorageaccountsastoken (nodePublishSecretRef)."""
    account_key: Optional[Loose] = refused(_SECRET)
    sas_key: Optional[Loose] = refused(_SECRET.replace("azurestorageaccountkey", "azurestorageaccountsastoken"))
    identity_reference: Optional[Loose] = refused(
        "podbatch pools have no managed identity; use secretName (or a PersistentVolume of the blob CSI driver "
        "with workload identity, mounted through spec.podTemplate)")
    blobfuse_options: Optional[Loose] = refused(
        "blobfuse runs inside the blob CSI driver here; set its options on a PersistentVolume of blob.csi.azure.com "
        "(mountOptions) and mount its claim through spec.podTemplate")


class MountConfiguration(RefusingModel):
    """One file system mounted into every pod of the pool (Batch's mountConfiguration),
    at $AZ_BATCH_NODE_MOUNTS_DIR/<relativeMountPath>; exactly one kind."""

    nfs_mount_configuration: Optional[NfsMountConfiguration] = None
    """An NFS export (a Kubernetes nfs volume)."""
    azure_file_share_configuration: Optional[AzureFileShareConfiguration] = None
    """An Azure file share (needs the Azure Files CSI driver in the cluster)."""
    azure_blob_file_system_configuration: Optional[AzureBlobFileSystemConfiguration] = None
    """An Azure blob container (needs the Azure Blob CSI driver in the cluster)."""
    cifs_mount_configuration: Optional[Loose] = refused(
        "podbatch mounts no CIFS share itself; create a PersistentVolume of the SMB CSI driver (smb.csi.k8s.io) "
        "and mount its claim through spec.podTemplate")

    @model_validator(mode="after")
    def _exactly_one(self) -> "MountConfiguration":
        kinds = [self.nfs_mount_configuration, self.azure_file_share_configuration,
                 self.azure_blob_file_system_configuration]
        if sum(k is not None for k in kinds) != 1:
            raise ValueError("a mountConfiguration entry needs exactly one of nfsMountConfiguration, "
                             "azureFileShareConfiguration, azureBlobFileSystemConfiguration")
        return self


MountConfigurations = Annotated[list[MountConfiguration], Field(max_length=20)]
