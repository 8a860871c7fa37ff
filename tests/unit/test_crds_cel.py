"""The CEL rules (x-kubernetes-validations) of the generated CRDs, evaluated with
cel-python the way a ≥1.25 API server evaluates them: defaults applied first, `self`
bound to the value at the rule's place, date-time strings as timestamps.

The local 1.20 cluster ignores CEL, so this is where the rules are proven; each rule
must reject at least one object here, and every object a rule rejects must also be
rejected by the pydantic model (what `validate_object` enforces on old servers).
"""
from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import pytest

celpy = pytest.importorskip("celpy")
from celpy import celtypes  # noqa: E402

from podbatch import API_VERSION  # noqa: E402
from podbatch.api import KINDS, InvalidObject, validate_object  # noqa: E402
from podbatch.api.crdgen import crd  # noqa: E402

ENV = celpy.Environment()


def schema_of(kind: str) -> dict[str, Any]:
    return crd(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@lru_cache(maxsize=None)
def program(rule: str):
    return ENV.program(ENV.compile(rule))


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    """Structural defaulting: fill absent properties that have a default, recursively."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, sub in schema["properties"].items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(out[name], sub)
        return out
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        return {k: apply_defaults(v, schema["additionalProperties"]) for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(v, schema["items"]) for v in value]
    return value


def to_cel(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        def sub(k):
            return schema.get("properties", {}).get(k) or (schema.get("additionalProperties") or {})
        return celtypes.MapType({celtypes.StringType(k): to_cel(v, sub(k)) for k, v in value.items()})
    if isinstance(value, list):
        return celtypes.ListType([to_cel(v, schema.get("items", {})) for v in value])
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    if isinstance(value, int):
        return celtypes.IntType(value)
    if isinstance(value, float):
        return celtypes.DoubleType(value)
    if isinstance(value, str) and schema.get("format") == "date-time":
        return celtypes.TimestampType(value)
    if isinstance(value, str):
        return celtypes.StringType(value)
    raise TypeError(value)


def rules_in(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict]]:
    found = [(path, r) for r in schema.get("x-kubernetes-validations", [])]
    for name, sub in schema.get("properties", {}).items():
        found += rules_in(sub, f"{path}.{name}")
    if "items" in schema:
        found += rules_in(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += rules_in(schema["additionalProperties"], f"{path}[*]")
    return found


def cel_violations(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Messages of every CEL rule the (defaulted) value breaks."""
    out = []
    for rule in schema.get("x-kubernetes-validations", []):
        result = program(rule["rule"]).evaluate({"self": to_cel(value, schema)})
        if isinstance(result, Exception) or not bool(result):
            out.append(f"{path}: {rule['message']}")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                out += cel_violations(value[name], sub, f"{path}.{name}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += cel_violations(item, schema["items"], f"{path}[{i}]")
    return out


def check(kind: str, spec: dict[str, Any]) -> list[str]:
    schema = schema_of(kind)
    body = {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x"}, "spec": spec}
    body = apply_defaults(body, schema)
    return cel_violations(body["spec"], schema["properties"]["spec"], "spec")


KWOK = {"provider": "kwok"}
POOL_ID = {"poolId": "p"}
T = {"jobName": "j", "commandLine": "echo"}

GOOD = [
    ("TaskCollection", {"jobName": "j", "parametricSweep": {"parameterSets": [{"start": 0, "end": 1}], "repeatTask": {"commandLine": "b {0}"}}}),
    ("TaskCollection", {"jobName": "j", "tasks": [{"commandLine": "a", "id": "x"}]}),
    ("TaskCollection", {"jobName": "j", "taskPerFile": {"source": {"containerUrl": "https://a/c?sig=x", "prefix": "in/"},
                                                        "repeatTask": {"commandLine": "f {fileName}"}}}),
    ("Pool", {"nodeGroup": KWOK}),
    ("Pool", {"nodeGroup": {"provider": "static", "static": {"nodeSelector": {"a": "b"}}}}),
    ("Pool", {"nodeGroup": {"provider": "clusterapi", "clusterapi": {"scaleTargetRef": {"name": "md"}}}}),
    ("Pool", {"nodeGroup": {"provider": "autoscaler", "autoscaler": {"nodeSelector": {"a": "b"},
                                                                     "tolerations": [{"operator": "Exists"}]}}}),
    ("Pool", {"nodeGroup": {"provider": "kwok", "kwok": {"instanceType": "x"}}, "enableAutoScale": True,
              "autoScaleFormula": "$TargetDedicatedNodes = 1;"}),
    ("Pool", {"nodeGroup": KWOK, "startTask": {"commandLine": "x", "resourceFiles": [{"httpUrl": "h", "filePath": "f"}]}}),
    ("Job", {"poolInfo": POOL_ID, "maxParallelTasks": 3}),
    ("Job", {"poolInfo": {"autoPoolSpecification": {"pool": {"nodeGroup": KWOK}}}}),
    ("Job", {"poolInfo": POOL_ID, "jobManagerTask": {"commandLine": "m"}, "jobPreparationTask": {"commandLine": "p"}}),
    ("Task", T),
    ("Task", {**T, "id": "a", "dependsOn": {"taskIds": ["b"], "taskIdRanges": [{"start": 1, "end": 1}]}}),
    ("Task", {**T, "resourceFiles": [{"storageContainerUrl": "https://s/c", "blobPrefix": "in/"},
                                     {"secretKeyRef": {"name": "s", "key": "k"}, "filePath": "k"}]}),
    ("Task", {**T, "outputFiles": [{"filePattern": "*", "destination": {"httpUrl": "https://u"}}]}),
    ("Task", {**T, "userIdentity": {"autoUser": {"elevationLevel": "admin"}}}),
    ("Task", {**T, "userIdentity": {"autoUser": {"scope": "pool"}}}),
    ("Task", {**T, "containerSettings": {"imageName": "i", "containerRunOptions": " "}, "affinityInfo": {"affinityId": "n"}}),
    ("Task", {**T, "exitConditions": {"exitCodeRanges": [{"start": 1, "end": 9, "exitOptions": {"jobAction": "none"}}]}}),
    ("Task", {**T, "multiInstanceSettings": {"numberOfInstances": 3}}),
    ("JobSchedule", {"schedule": {"doNotRunUntil": "2030-01-01T00:00:00Z", "doNotRunAfter": "2030-01-02T00:00:00Z",
                                  "recurrenceInterval": "PT1H"}, "jobSpecification": {"poolInfo": POOL_ID}}),
    ("JobSchedule", {"schedule": {"cron": "0 * * * *", "timeZone": "UTC"}, "jobSpecification": {"poolInfo": POOL_ID}}),
]

BAD = [
    ("TaskCollection", {"jobName": "j"}, "give exactly one of parametricSweep, taskPerFile and tasks"),
    ("TaskCollection", {"jobName": "j", "tasks": [{"commandLine": "a"}], "parametricSweep": {
        "parameterSets": [{"start": 0, "end": 1}], "repeatTask": {"commandLine": "b"}}},
     "give exactly one of parametricSweep, taskPerFile and tasks"),
    ("TaskCollection", {"jobName": "j", "tasks": [{"commandLine": "a"}], "taskPerFile": {
        "source": {"containerUrl": "https://a/c"}, "repeatTask": {"commandLine": "b"}}},
     "give exactly one of parametricSweep, taskPerFile and tasks"),
    ("Pool", {"nodeGroup": {"provider": "static"}}, "nodeGroup.static is required"),
    ("Pool", {"nodeGroup": {"provider": "kwok", "static": {"nodeSelector": {}}}}, "nodeGroup.static is required"),
    ("Pool", {"nodeGroup": {"provider": "clusterapi"}}, "nodeGroup.clusterapi is required"),
    ("Pool", {"nodeGroup": {"provider": "autoscaler"}}, "nodeGroup.autoscaler is required"),
    ("Pool", {"nodeGroup": {"provider": "kwok", "autoscaler": {"nodeSelector": {}}}}, "nodeGroup.autoscaler is required"),
    ("Pool", {"nodeGroup": {"provider": "static", "static": {"nodeSelector": {}}, "kwok": {}}}, "nodeGroup.kwok is only"),
    ("Pool", {"nodeGroup": KWOK, "enableAutoScale": True}, "autoScaleFormula is required"),
    ("Pool", {"nodeGroup": KWOK, "startTask": {"commandLine": "x", "resourceFiles": [{"filePath": "f"}]}}, "exactly one of httpUrl"),
    ("Job", {"poolInfo": {}}, "exactly one of poolId"),
    ("Job", {"poolInfo": {"poolId": "p", "autoPoolSpecification": {"pool": {"nodeGroup": KWOK}}}}, "exactly one of poolId"),
    ("Job", {"poolInfo": POOL_ID, "maxParallelTasks": 0}, "maxParallelTasks must be -1"),
    ("Job", {"poolInfo": POOL_ID, "jobManagerTask": {"id": "x", "commandLine": "m"},
             "jobPreparationTask": {"id": "x", "commandLine": "p"}}, "different ids"),
    ("Job", {"poolInfo": {"autoPoolSpecification": {"pool": {"nodeGroup": {"provider": "static"}}}}}, "nodeGroup.static"),
    ("Task", {**T, "resourceFiles": [{"httpUrl": "h", "secretKeyRef": {"name": "s", "key": "k"}}]}, "exactly one of httpUrl"),
    ("Task", {**T, "resourceFiles": [{"httpUrl": "h", "blobPrefix": "p"}]}, "blobPrefix is only valid"),
    ("Task", {**T, "outputFiles": [{"filePattern": "*", "destination": {}}]}, "exactly one of container"),
    ("Task", {**T, "userIdentity": {"userName": "u"}}, "no named user accounts"),
    ("Task", {**T, "userIdentity": {"userName": "u", "autoUser": {}}}, "no named user accounts"),
    ("Task", {**T, "containerSettings": {"imageName": "i", "containerRunOptions": "--rm"}}, "containerRunOptions is not supported"),
    ("Pool", {"nodeGroup": KWOK, "startTask": {"commandLine": "x", "userIdentity": {"userName": "u"}}}, "no named user accounts"),
    ("Task", {**T, "dependsOn": {"taskIdRanges": [{"start": 9, "end": 1}]}}, "start must not be greater"),
    ("Task", {**T, "dependsOn": {}}, "dependsOn needs taskIds"),
    ("Task", {**T, "id": "a", "dependsOn": {"taskIds": ["a"]}}, "cannot depend on itself"),
    ("Task", {**T, "exitConditions": {"exitCodeRanges": [{"start": 5, "end": 1, "exitOptions": {}}]}}, "start must not be greater"),
    ("Task", {**T, "multiInstanceSettings": {"numberOfInstances": 2}, "requiredSlots": 2}, "requiredSlots must be 1"),
    ("JobSchedule", {"schedule": {"doNotRunUntil": "2030-01-02T00:00:00Z", "doNotRunAfter": "2030-01-01T00:00:00Z"},
                     "jobSpecification": {"poolInfo": POOL_ID}}, "doNotRunAfter must be after"),
    ("JobSchedule", {"schedule": {"recurrenceInterval": "PT1H", "cron": "* * * * *"},
                     "jobSpecification": {"poolInfo": POOL_ID}}, "not both"),
    ("JobSchedule", {"schedule": {"timeZone": "UTC"}, "jobSpecification": {"poolInfo": POOL_ID}}, "timeZone is only"),
    ("JobSchedule", {"schedule": {}, "jobSpecification": {"poolInfo": {}}}, "exactly one of poolId"),
]


def test_every_rule_compiles():
    for kind in KINDS:
        for path, rule in rules_in(schema_of(kind)):
            program(rule["rule"])  # raises on a syntax error
            assert rule["message"], path


@pytest.mark.parametrize("kind, spec", GOOD)
def test_good_objects_pass_cel_and_pydantic(kind, spec):
    assert check(kind, spec) == []
    validate_object({"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x"}, "spec": spec})


@pytest.mark.parametrize("kind, spec, message", BAD)
def test_bad_objects_fail_cel_and_pydantic(kind, spec, message):
    violations = check(kind, spec)
    assert any(message in v for v in violations), violations
    with pytest.raises(InvalidObject):
        validate_object({"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x"}, "spec": spec})


def test_every_rule_is_exercised_by_a_bad_object():
    fired = set()
    for kind, spec, _ in BAD:
        fired |= {v.split(": ", 1)[1] for v in check(kind, spec)}
    messages = {rule["message"] for kind in KINDS for _, rule in rules_in(schema_of(kind))}
    assert messages - fired == set()
