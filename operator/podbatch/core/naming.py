"""Deterministic names and labels, so every create is safe to repeat after a crash."""
from __future__ import annotations

import hashlib
import re

from podbatch import GROUP

LABEL_POOL = f"{GROUP}/pool"            # on Nodes: "<ns>.<pool>"; on pods: pool name
LABEL_ROLE = f"{GROUP}/role"            # task | nodeprep | jobprep | jobrelease
LABEL_JOB = f"{GROUP}/job"
LABEL_TASK = f"{GROUP}/task"
LABEL_TASK_UID = f"{GROUP}/task-uid"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_NODE = f"{GROUP}/node"            # ComputeNode name
LABEL_LOW_PRIORITY = f"{GROUP}/low-priority"
ANNOTATION_FAKE_NODE = "kwok.x-k8s.io/node"
ANNOTATION_HOST_LIST = f"{GROUP}/host-list"   # on a gang's pods: the instances' pod IPs, primary first
ANNOTATION_REMOVALS = f"{GROUP}/removed-nodes"   # on a Pool: node removals that lower its effective target (core/removals.py)
ANNOTATION_BINDING = f"{GROUP}/binding"   # on a task's pod: the binding it records (core/binding.py)
TAINT_POOL = f"{GROUP}/pool"
FINALIZER = f"{GROUP}/finalizer"
SIM_PREFIX = "sim.podbatch.io/"
LABEL_SCHEDULE = f"{GROUP}/job-schedule"   # on Jobs a JobSchedule created
LABEL_AUTO_POOL_OF = f"{GROUP}/auto-pool-of"   # on an auto pool: "job.<name>" or "jobschedule.<name>"


def _short(name: str, limit: int) -> str:
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9]}-{digest}"


def label_value(value: str) -> str:
    """A label value (<= 63 chars, alnum at both ends) that stays unique for long inputs."""
    return _short(value, 63).strip("-_.") or "x"


def auto_pool_name(prefix: str | None, owner: str) -> str:
    """The Pool of an autoPoolSpecification: `<prefix>-<job or job schedule>`, deterministic,
    so it is found again after a restart and never created twice."""
    p = re.sub(r"[^a-z0-9-]+", "-", (prefix or "auto").lower()).strip("-") or "auto"
    return _short(f"{p}-{owner}", 50).strip("-.")


def pool_node_label(namespace: str, pool: str) -> str:
    return label_value(f"{namespace}.{pool}")


def task_pod_name(task_name: str, attempt: int) -> str:
    """Pod of one attempt of a task: the same name for the same attempt, always."""
    return _short(task_name, 240) + f"-{attempt}"


def nodeprep_pod_name(compute_node: str, boot: str, retry: int) -> str:
    return _short(compute_node, 200) + f"-start-{boot}-{retry}"


def boot_token(request_id: str | None) -> str:
    """Short stable token of the reboot/reimage request that started this boot of a node."""
    if not request_id:
        return "0"
    return hashlib.sha1(request_id.encode()).hexdigest()[:6]


def kwok_node_name(namespace: str, pool: str, index: int) -> str:
    return f"{_short(f'{namespace}-{pool}', 200)}-{index}"


def jobprep_pod_name(job: str, compute_node: str, boot: str, retry: int) -> str:
    return _short(f"{job}-prep-{compute_node}", 230) + f"-{boot}-{retry}"


def jobrelease_pod_name(job: str, compute_node: str) -> str:
    return _short(f"{job}-release-{compute_node}", 250)


def subtask_pod_name(task_name: str, attempt: int, index: int) -> str:
    return f"{task_pod_name(task_name, attempt)}-s{index}"


def job_manager_task_name(job: str, task_id: str) -> str:
    return _short(f"{job}-{task_id}", 250)


LABEL_JOB_MANAGER = f"{GROUP}/job-manager"


def cleanup_pod_name(compute_node: str, tag: str) -> str:
    return _short(compute_node, 200) + "-cleanup-" + hashlib.sha1(tag.encode()).hexdigest()[:8]
