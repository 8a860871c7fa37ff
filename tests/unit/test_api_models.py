"""The pydantic models: aliases, defaults, durations, round trips, strict validation."""
from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from podbatch import API_VERSION
from podbatch.api import (
    KINDS, ComputeNode, InvalidObject, Job, JobSchedule, Pool, PoolStatus, Task, TaskStatus,
    parse_duration, validate_object,
)
from podbatch.api.common import EnvironmentSetting, ResourceFile


@pytest.mark.parametrize("text, expected", [
    ("PT30M", timedelta(minutes=30)),
    ("P1DT2H", timedelta(days=1, hours=2)),
    ("PT0.5S", timedelta(seconds=0.5)),
    ("P7D", timedelta(days=7)),
    ("P1W", timedelta(weeks=1)),
    ("PT1H30M15S", timedelta(hours=1, minutes=30, seconds=15)),
    ("30m", timedelta(minutes=30)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("10s", timedelta(seconds=10)),
    ("500ms", timedelta(milliseconds=500)),
    ("1.5h", timedelta(minutes=90)),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "P", "PT", "P1DT", "30", "1d", "-5m", "PT-1M", "1h 30m", "P1.5D", "PT30m", "abc"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_bad_duration_in_a_spec_names_the_field():
    with pytest.raises(ValidationError) as e:
        Pool.model_validate({"spec": {"nodeGroup": {"provider": "kwok"}, "resizeTimeout": "fifteen minutes"}})
    assert "resizeTimeout" in str(e.value)


POOL_BODY = {
    "apiVersion": API_VERSION, "kind": "Pool",
    "metadata": {"name": "p", "namespace": "ns", "generation": 2, "uid": "u"},
    "spec": {"nodeGroup": {"provider": "kwok"}, "targetDedicatedNodes": 3, "taskSlotsPerNode": 2},
    "status": {"allocationState": "steady", "currentDedicatedNodes": 3, "somethingNew": 1,
               "nodeCounts": {"idle": 3, "total": 3},
               "conditions": [{"type": "Ready", "status": "True", "reason": "Steady",
                               "lastTransitionTime": "2024-05-01T10:00:00Z"}]},
}


def test_pool_reads_what_the_api_server_returns():
    pool = Pool.model_validate(POOL_BODY)
    assert pool.spec.target_dedicated_nodes == 3
    assert pool.spec.task_slots_per_node == 2
    assert pool.spec.image == "busybox"
    assert pool.spec.image_pull_policy == "IfNotPresent"
    assert pool.spec.resize_timeout == "PT15M"
    assert pool.spec.node_deallocation_option == "requeue"
    assert pool.spec.node_root_dir == "/var/lib/podbatch"
    assert pool.status.node_counts.idle == 3 and pool.status.node_counts.running == 0
    assert pool.status.conditions[0].last_transition_time.year == 2024
    assert pool.metadata["name"] == "p"


def test_status_dump_is_camel_case_without_nones():
    status = PoolStatus(allocation_state="resizing", current_dedicated_nodes=1)
    assert status.to_dict() == {"allocationState": "resizing", "currentDedicatedNodes": 1}
    task_status = TaskStatus(state="running", pod_name="t-1", attempt=1)
    assert task_status.model_dump(by_alias=True, exclude_none=True) == {"state": "running", "podName": "t-1", "attempt": 1}


def test_spec_accepts_python_names_too():
    env = EnvironmentSetting(name="A", value="1")
    assert env.to_dict() == {"name": "A", "value": "1"}
    rf = ResourceFile(http_url="https://x", file_path="x")
    assert rf.to_dict() == {"httpUrl": "https://x", "filePath": "x"}


def test_round_trip_of_every_kind():
    bodies = [
        POOL_BODY,
        {"apiVersion": API_VERSION, "kind": "ComputeNode", "metadata": {"name": "n"},
         "spec": {"poolName": "p", "nodeName": "node-1", "reboot": {"requestId": "r1"}}},
        {"apiVersion": API_VERSION, "kind": "Job", "metadata": {"name": "j"},
         "spec": {"poolInfo": {"poolId": "p"}, "priority": 10}},
        {"apiVersion": API_VERSION, "kind": "Task", "metadata": {"name": "j-1"},
         "spec": {"jobName": "j", "commandLine": "echo hi"}},
        {"apiVersion": API_VERSION, "kind": "JobSchedule", "metadata": {"name": "s"},
         "spec": {"schedule": {"recurrenceInterval": "PT1H"}, "jobSpecification": {"poolInfo": {"poolId": "p"}}}},
    ]
    for body in bodies:
        model = KINDS[body["kind"]].model.model_validate(body)
        again = type(model).model_validate(model.to_dict())
        assert again == model
        assert model.to_dict()["apiVersion"] == API_VERSION


def test_defaults_of_node_job_task():
    node = ComputeNode.model_validate({"spec": {"poolName": "p", "nodeName": "n", "reboot": {"requestId": "x"}}})
    assert node.spec.is_dedicated and node.spec.scheduling_state == "enabled"
    assert node.spec.reboot.node_reboot_option == "requeue"
    job = Job.model_validate({"spec": {"poolInfo": {"poolId": "p"}}})
    assert (job.spec.priority, job.spec.max_parallel_tasks, job.spec.on_all_tasks_complete) == (0, -1, "noaction")
    assert job.spec.desired_state == "active" and job.spec.disable_tasks == "requeue"
    task = Task.model_validate({"metadata": {"name": "j-3"}, "spec": {"jobName": "j", "commandLine": "x"}})
    assert task.task_id == "j-3" and task.spec.required_slots == 1 and task.spec.priority == 0
    task = Task.model_validate({"metadata": {"name": "j-3"}, "spec": {"jobName": "j", "id": "3", "commandLine": "x"}})
    assert task.task_id == "3"


@pytest.mark.parametrize("kind, spec, field", [
    ("Pool", {"nodeGroup": {"provider": "kwok"}, "taskSlotsPerNode": 0}, "taskSlotsPerNode"),
    ("Pool", {"nodeGroup": {"provider": "kwok"}, "taskSlotsPerNode": 257}, "taskSlotsPerNode"),
    ("Pool", {"nodeGroup": {"provider": "kwok"}, "targetDedicatedNodes": -1}, "targetDedicatedNodes"),
    ("Pool", {"nodeGroup": {"provider": "static"}}, "static"),
    ("Pool", {"nodeGroup": {"provider": "kwok", "static": {"nodeSelector": {}}}}, "static"),
    ("Pool", {"nodeGroup": {"provider": "kwok"}, "enableAutoScale": True}, "autoScaleFormula"),
    ("Pool", {"nodeGroup": {"provider": "kwok"}, "taskSchedulingPolicy": {"nodeFillType": "fill"}}, "nodeFillType"),
    ("Job", {"poolInfo": {}}, "poolInfo"),
    ("Job", {"poolInfo": {"poolId": "p"}, "priority": 1001}, "priority"),
    ("Job", {"poolInfo": {"poolId": "p"}, "maxParallelTasks": 0}, "maxParallelTasks"),
    ("Task", {"jobName": "j", "commandLine": "x", "id": "has space"}, "id"),
    ("Task", {"jobName": "j", "commandLine": "x", "resourceFiles": [{"filePath": "a"}]}, "resourceFiles"),
    ("Task", {"jobName": "j", "commandLine": "x", "dependsOn": {"taskIdRanges": [{"start": 5, "end": 1}]}}, "taskIdRanges"),
    ("Task", {"jobName": "j", "commandLine": "x", "id": "a", "dependsOn": {"taskIds": ["a"]}}, "depend on itself"),
    ("Task", {"jobName": "j"}, "commandLine"),
    ("JobSchedule", {"schedule": {"doNotRunUntil": "2030-01-02T00:00:00Z", "doNotRunAfter": "2030-01-01T00:00:00Z"},
                     "jobSpecification": {"poolInfo": {"poolId": "p"}}}, "doNotRunAfter"),
    ("JobSchedule", {"schedule": {"recurrenceInterval": "10s"}, "jobSpecification": {"poolInfo": {"poolId": "p"}}},
     "recurrenceInterval"),
])
def test_validate_object_rejects_and_names_the_field(kind, spec, field):
    body = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    with pytest.raises(InvalidObject) as e:
        validate_object(body)
    assert field in str(e.value)


def test_validate_object_rejects_unknown_fields_which_a_1_20_server_would_prune():
    body = {"apiVersion": API_VERSION, "kind": "Pool", "metadata": {"name": "x"},
            "spec": {"nodeGroup": {"provider": "kwok"}, "targetDedicatedNode": 3}}
    with pytest.raises(InvalidObject, match="spec.targetDedicatedNode: Extra inputs are not permitted"):
        validate_object(body)


def test_validate_object_checks_kind_and_version():
    with pytest.raises(InvalidObject, match="apiVersion"):
        validate_object({"apiVersion": "batch/v1", "kind": "Job", "spec": {}})
    with pytest.raises(InvalidObject, match="kind"):
        validate_object({"apiVersion": API_VERSION, "kind": "Nope", "spec": {}})


def test_validate_object_ignores_status():
    body = {**POOL_BODY, "status": {"allocationState": "not-a-state"}}
    assert isinstance(validate_object(body), Pool)


def test_jobschedule_embeds_a_full_job_spec():
    js = JobSchedule.model_validate({"spec": {"schedule": {"cron": "*/5 * * * *", "timeZone": "Europe/Paris"},
                                              "jobSpecification": {"poolInfo": {"poolId": "p"}, "priority": 5}}})
    assert js.spec.job_specification.priority == 5


def test_api_imports_no_kubernetes_client_or_kopf():
    import subprocess
    import sys
    code = ("import sys, podbatch.api, podbatch.api.crdgen; "
            "bad = [m for m in ('kopf', 'kubernetes', 'kubernetes_asyncio') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
