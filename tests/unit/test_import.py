"""`kubectl podbatch import`: the request bodies of Azure Batch's REST reference (Pool - Add,
Job - Add, Task - Add, Task - Add Collection, Job Schedule - Add) and `az batch` templates,
under tests/fixtures/batch/, convert to podbatch objects that validate, and every field of
the input is accounted for: converted (and found, unchanged where copied, in the output)
or reported dropped with a reason."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from podbatch.api import validate_object
from podbatch.cli import importer
from podbatch.cli import main as cli
from podbatch.cli.batchfields import iso_duration
from podbatch.cli.importer import ImportProblem, import_data, leaves
from podbatch.core import collections as collcore

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "batch"
SAMPLES = sorted(FIXTURES.glob("*.json"))
OPTIONS = {"template-job-sweep.json": {"params": {"poolId": "render"}}}
KWOK = {"provider": "kwok"}


def lookup(doc, path: str):
    """The value at `a.b[0].c`; KeyError/IndexError when absent."""
    for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        doc = doc[int(index)] if index else doc[key]
    return doc


def unaccounted(data, result) -> list[str]:
    """Every way the result could lose or misreport a field; empty when all is accounted for."""
    problems = []
    inputs = {p for p, _ in leaves(data)}
    converted, dropped = set(result.converted), set(result.dropped)
    problems += [f"{p}: neither converted nor reported dropped" for p in sorted(inputs - converted - dropped)]
    problems += [f"{p}: both converted and dropped" for p in sorted(converted & dropped)]
    problems += [f"{p}: accounted for but not in the input" for p in sorted((converted | dropped) - inputs)]
    objects = {f"{o['kind']}/{o['metadata']['name']}": o for o in result.objects}
    for p, target in result.converted.items():
        if not target:
            continue                                  # unset on purpose (null, Batch's "unlimited", template parameters)
        key, dst = target.split(":", 1)
        try:
            value = lookup(objects[key], dst)
        except (KeyError, IndexError, TypeError):
            problems.append(f"{p}: said to go to {target}, which is not in the output")
            continue
        if p in result.same and value != lookup(data, p):
            problems.append(f"{p}: copied to {target} as {value!r}, not {lookup(data, p)!r}")
    return problems


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_batch_samples_convert_with_no_field_lost(path):
    data = json.loads(path.read_text())
    result = import_data(data, job="jobid", node_group=KWOK, **OPTIONS.get(path.name, {}))
    assert result.objects
    for obj in result.objects:
        validate_object(obj)                          # what `apply` checks before sending
    assert unaccounted(data, result) == []
    # the samples hold only Batch fields: each one is known, none fell to the catch-all
    assert [p for p, why in result.dropped.items() if importer.UNKNOWN in why] == []


def test_the_accounting_catches_a_lost_or_misreported_field():
    data = json.loads((FIXTURES / "task-add-containersettings.json").read_text())
    result = import_data(data, job="j")
    assert unaccounted(data, result) == []
    del result.converted["containerSettings.imageName"]
    assert unaccounted(data, result) == ["containerSettings.imageName: neither converted nor reported dropped"]
    result.converted["containerSettings.imageName"] = "Task/j-taskid:spec.containerSettings.imageName"
    result.objects[0]["spec"]["containerSettings"]["imageName"] = "debian"
    assert unaccounted(data, result) == ["containerSettings.imageName: copied to "
                                         "Task/j-taskid:spec.containerSettings.imageName as 'debian', not 'ubuntu'"]


def test_pool_fields_map_and_vm_fields_are_reported():
    data = json.loads((FIXTURES / "pool-add-virtualmachineconfiguration.json").read_text())
    result = import_data(data, node_group=KWOK)
    (pool,) = result.objects
    assert pool["metadata"]["name"] == "pool2"
    assert pool["spec"]["nodeGroup"] == KWOK
    assert pool["spec"]["vmSize"] == "standard_a1" and pool["spec"]["taskSlotsPerNode"] == 3
    assert pool["spec"]["metadata"] == [{"name": "myproperty", "value": "myvalue"}]
    assert set(result.dropped) == {"virtualMachineConfiguration.imageReference.publisher",
                                   "virtualMachineConfiguration.imageReference.offer",
                                   "virtualMachineConfiguration.imageReference.sku",
                                   "virtualMachineConfiguration.nodeAgentSKUId"}
    assert all(importer.NODE_GROUP in why for why in result.dropped.values())
    text = importer.report(result, "pool.json")
    assert "virtualMachineConfiguration.imageReference" in text and "--node-group" in text


def test_without_node_group_a_pool_gets_a_placeholder_that_validates():
    data = {"id": "Render_Pool", "vmSize": "standard_d2", "targetDedicatedNodes": 2}
    result = import_data(data)
    (pool,) = result.objects
    assert pool["metadata"]["name"] == "render-pool"
    assert pool["spec"]["nodeGroup"] == {"provider": "static",
                                         "static": {"nodeSelector": {importer.PLACEHOLDER_LABEL: "render-pool"}}}
    validate_object(pool)
    assert result.placeholders == {"Pool/render-pool": "render-pool"}
    text = importer.to_yaml(result, "p.json")
    assert re.search(r"# placeholder: where this pool's Nodes come from.*\n  nodeGroup:", text)
    assert "named 'render-pool'" in importer.report(result, "p.json")


def test_container_pool_image_and_renamed_fields():
    data = {"id": "p", "vmSize": "x", "maxTasksPerNode": 4, "targetDedicated": 2,
            "virtualMachineConfiguration": {"nodeAgentSKUId": "batch.node.ubuntu 20.04", "containerConfiguration": {
                "type": "dockerCompatible", "containerImageNames": ["python:3.12"]}}}
    spec = import_data(data, node_group=KWOK).objects[0]["spec"]
    assert (spec["image"], spec["taskSlotsPerNode"], spec["targetDedicatedNodes"]) == ("python:3.12", 4, 2)
    two = {**data, "taskSlotsPerNode": 2, "virtualMachineConfiguration": {"containerConfiguration": {
        "containerImageNames": ["a", "b"]}}}
    result = import_data(two, node_group=KWOK)
    assert "image" not in result.objects[0]["spec"] and result.objects[0]["spec"]["taskSlotsPerNode"] == 2
    assert "superseded by taskSlotsPerNode" in result.dropped["maxTasksPerNode"]
    assert "prefetches no images" in result.dropped["virtualMachineConfiguration.containerConfiguration.containerImageNames[1]"]


def test_tasks_need_their_job_and_keep_their_batch_id():
    data = json.loads((FIXTURES / "task-add-collection-basic.json").read_text())
    with pytest.raises(ImportProblem, match="--job NAME"):
        import_data(data)
    result = import_data(data, job="Nightly_Run")
    assert [(t["metadata"]["name"], t["spec"]["jobName"], t["spec"]["id"]) for t in result.objects] == [
        ("nightly-run-simple1", "nightly-run", "simple1"), ("nightly-run-simple2", "nightly-run", "simple2")]
    assert import_data(data["value"], job="j").objects[1]["spec"]["id"] == "simple2"   # a bare list too


def test_unknown_read_only_and_refused_fields_are_reported_not_lost():
    task = {"id": "t", "commandLine": "/bin/true", "state": "completed", "creationTime": "2024-01-01T00:00:00Z",
            "comandLine": "typo", "runElevated": True, "constraints": {
                "maxWallClockTime": "P10675199DT2H48M5.4775807S", "retentionTime": "P10675199DT2H48M5.4775807S"}}
    result = import_data(task, job="j")
    spec = result.objects[0]["spec"]
    assert result.dropped["state"] == importer.READ_ONLY and result.dropped["creationTime"] == importer.READ_ONLY
    assert importer.UNKNOWN in result.dropped["comandLine"]
    assert spec["userIdentity"] == {"autoUser": {"elevationLevel": "admin"}}
    assert "constraints" not in spec                       # unlimited wall clock is unset; unlimited retention has none
    assert result.converted["constraints.maxWallClockTime"] == ""
    assert "unlimited retention" in result.dropped["constraints.retentionTime"]
    # a value the Batch API takes and podbatch's model refuses is dropped with the model's message
    pool = {"id": "p", "vmSize": "x", "startTask": {"commandLine": "/bin/true", "maxTaskRetryCount": 500}}
    result = import_data(pool, node_group=KWOK)
    assert "maxTaskRetryCount" not in result.objects[0]["spec"]["startTask"]
    assert "podbatch refuses it" in result.dropped["startTask.maxTaskRetryCount"]
    assert unaccounted(pool, result) == []


def test_az_show_output_reads_its_durations_and_drops_its_state():
    data = json.loads((FIXTURES / "az-pool-show.json").read_text())
    result = import_data(data, node_group=KWOK)
    spec = result.objects[0]["spec"]
    assert spec["resizeTimeout"] == "PT15M" and spec["autoScaleEvaluationInterval"] == "PT15M"
    assert result.dropped["currentDedicatedNodes"] == importer.READ_ONLY
    assert result.converted["displayName"] == ""                   # null: nothing to carry, nothing to report
    assert iso_duration("10675199 days, 2:48:05.477580") == "P10675199DT2H48M5.477580S"
    assert iso_duration("1 day, 0:00:30.5") == "P1DT30.5S"


def test_bad_input_gets_a_clear_message(tmp_path):
    with pytest.raises(ImportProblem, match="not an Azure Batch pool, job, task"):
        import_data({"hello": 1})
    with pytest.raises(ImportProblem, match="has no id"):
        import_data({"vmSize": "x"}, node_group=KWOK)
    bad = tmp_path / "bad.json"
    bad.write_text("{\"id\": ")
    with pytest.raises(ImportProblem, match="not valid JSON: line 1"):
        importer.read_json(str(bad))
    with pytest.raises(ImportProblem, match="use kwok, static:KEY=VALUE"):
        importer.parse_node_group("aws")
    assert importer.parse_node_group("static:pool=a,zone=b") == {
        "provider": "static", "static": {"nodeSelector": {"pool": "a", "zone": "b"}}}


def test_template_parameters_and_parametric_sweep():
    data = json.loads((FIXTURES / "template-job-sweep.json").read_text())
    with pytest.raises(ImportProblem, match=r"--param poolId=VALUE"):
        import_data(data)
    result = import_data(data, params={"poolId": "render", "taskEnd": "2"})
    job, coll, merge = result.objects
    assert job["spec"]["poolInfo"]["poolId"] == "render" and job["spec"]["onAllTasksComplete"] == "terminatejob"
    assert job["spec"]["usesTaskDependencies"] is True     # the merge task depends on the others
    # the sweep is one TaskCollection (O(1) objects), its tasks the ones the Batch CLI makes:
    # ids 0, 1, … and the placeholders filled in by the operator (core/collections.py)
    assert coll["kind"] == "TaskCollection" and coll["spec"]["jobName"] == job["metadata"]["name"]
    assert coll["spec"]["taskIdPrefix"] == "" and collcore.size(coll["spec"]) == 2
    made = [collcore.substitute(coll["spec"]["parametricSweep"]["repeatTask"], collcore.parameters(coll["spec"], i))
            for i in range(2)]
    assert [t["commandLine"] for t in made] == ["/bin/bash -c 'echo Hello world from task 001'",
                                                "/bin/bash -c 'echo Hello world from task 002'"]
    assert made[0]["constraints"] == {"retentionTime": "PT1H"}
    assert merge["kind"] == "Task" and merge["spec"]["id"] == "merge" and merge["spec"]["dependsOn"] == {
        "taskIdRanges": [{"start": 0, "end": 1}]}
    with pytest.raises(ImportProblem, match="declares no such parameter"):
        import_data(data, params={"poolId": "x", "nope": "1"})


def test_cli_prints_yaml_and_reports_on_stderr(capsys):
    rc = cli.main(["import", str(FIXTURES / "job-add-preparation-release.json"), "--node-group", "kwok"])
    out, err = capsys.readouterr()
    assert rc == 0
    (job,) = list(yaml.safe_load_all(out))
    validate_object(job)
    assert job["spec"]["poolInfo"] == {"poolId": "renderpool-1"}
    assert job["spec"]["jobPreparationTask"]["resourceFiles"] == [
        {"storageContainerUrl": "https://mystorage1.blob.core.windows.net/assets?sas", "blobPrefix": "city/",
         "filePath": "assets"}]
    assert "jobPreparationTask.resourceFiles[0].autoStorageContainerName" in err and "auto-storage" in err
    assert "networkConfiguration" in err
    rc = cli.main(["import", str(FIXTURES / "task-add-basic.json"), "--job", "j", "-o", "json"])
    out, _ = capsys.readouterr()
    assert rc == 0 and json.loads(out)["items"][0]["metadata"]["name"] == "j-task1"
    rc = cli.main(["import", str(FIXTURES / "task-add-basic.json")])
    assert rc == 2 and "--job NAME" in capsys.readouterr().err


def test_cli_refuses_to_apply_a_placeholder_pool(capsys):
    rc = cli.main(["import", str(FIXTURES / "pool-add-virtualmachineconfiguration.json"), "--apply"])
    assert rc == 2 and "--node-group" in capsys.readouterr().err


def test_a_sweep_a_collection_cannot_hold_becomes_tasks():
    """A descending sweep, or a repeatTask with multi-instance settings (a gang), is made a
    Task per combination, with the same ids and placeholders filled in."""
    def job_with(factory: dict) -> dict:
        return {"job": {"type": "Microsoft.Batch/batchAccounts/jobs", "properties": {
            "id": "j", "poolInfo": {"poolId": "p"}, "taskFactory": {"type": "parametricSweep", **factory}}}}
    down = import_data(job_with({"parameterSets": [{"start": 3, "end": 1, "step": -1}],
                                 "repeatTask": {"commandLine": "echo {0}"}}))
    assert [(o["kind"], o["spec"].get("id"), o["spec"].get("commandLine")) for o in down.objects[1:]] == [
        ("Task", "0", "echo 3"), ("Task", "1", "echo 2"), ("Task", "2", "echo 1")]
    gang = import_data(job_with({"parameterSets": [{"start": 0, "end": 1}], "repeatTask": {
        "commandLine": "mpirun app {0}", "multiInstanceSettings": {"numberOfInstances": 2}}}))
    assert [o["kind"] for o in gang.objects] == ["Job", "Task", "Task"]
    two = import_data(job_with({"parameterSets": [{"start": 0, "end": 1}, {"start": 5, "end": 6}],
                                "repeatTask": {"commandLine": "run {0} {1}"}}))
    (coll,) = two.objects[1:]
    assert [collcore.substitute(coll["spec"]["parametricSweep"]["repeatTask"], collcore.parameters(coll["spec"], i))["commandLine"]
            for i in range(4)] == ["run 0 5", "run 0 6", "run 1 5", "run 1 6"]   # the Batch CLI's order
