"""kubectl podbatch: the pure parts (formatting, arguments, patches, manifest validation)."""
from __future__ import annotations

import io
import textwrap

import pytest

from podbatch.cli import format as fmt
from podbatch.cli import main as cli
from podbatch.cli import manifests


def task(name, state=None, exit_code=None, result=None, node=None, retries=0, requeues=0, reason=None, message=None, tid=None):
    t = {"apiVersion": "podbatch.io/v1alpha1", "kind": "Task", "metadata": {"name": name},
         "spec": {"jobName": "j", "commandLine": "true"}}
    if tid:
        t["spec"]["id"] = tid
    if state:
        t["status"] = {"state": state, "executionInfo": {"retryCount": retries, "requeueCount": requeues},
                       "nodeInfo": {"nodeName": node}, "podName": f"{name}-1"}
        if exit_code is not None:
            t["status"]["executionInfo"]["exitCode"] = exit_code
        if result:
            t["status"]["executionInfo"]["result"] = result
        if reason:
            t["status"]["pendingReason"] = {"reason": reason, "message": message}
    return t


TASKS = [
    task("j-1", "completed", 0, "success", "n0"),
    task("j-2", "completed", 3, "failure", "n1", retries=2),
    task("j-3", "running", node="n0"),
    task("j-10", "active", reason="AllSlotsBusy", message="all slots busy"),
    task("j-4", "active", reason="AllSlotsBusy"),
    task("j-5", "active", reason="JobDisabled"),
    task("j-6"),  # not seen by the operator yet
]


# --- progress bar ----------------------------------------------------------------

@pytest.mark.parametrize("done,total,expected", [
    (0, 10, "░" * 10), (10, 10, "█" * 10), (5, 10, "█" * 5 + "░" * 5),
    (14, 20, "█" * 7 + "░" * 3), (1, 100, "█" + "░" * 9), (99, 100, "█" * 9 + "░"),
    (0, 0, "░" * 10), (12, 10, "█" * 10),
])
def test_progress_bar(done, total, expected):
    assert fmt.progress_bar(done, total) == expected


def test_progress_bar_width_and_ascii():
    assert fmt.progress_bar(1, 2, width=4, ascii=True) == "##--"
    assert fmt.progress_bar(1, 2, width=0) == ""


def test_count_tasks():
    c = fmt.count_tasks(TASKS)
    assert c["total"] == 7
    assert (c["active"], c["running"], c["completed"], c["succeeded"], c["failed"], c["unseen"]) == (4, 1, 2, 1, 1, 1)


@pytest.mark.parametrize("info,expected", [
    ({"result": "success", "exitCode": 0}, "success"), ({"exitCode": 0}, "success"),
    ({"exitCode": 1}, "failure"), ({}, "failure"),
    ({"exitCode": 0, "failureInfo": {"code": "TaskEnded"}}, "failure"),
])
def test_task_result(info, expected):
    t = {"metadata": {"name": "x"}, "status": {"state": "completed", "executionInfo": info}}
    assert fmt.task_result(t) == expected
    assert fmt.task_result({"metadata": {"name": "x"}, "status": {"state": "running"}}) is None


def test_job_progress_line_matches_the_demo_format():
    counts = {"total": 20, "completed": 14, "succeeded": 13, "failed": 1, "running": 4, "active": 2}
    pool = {"metadata": {"name": "quickstart"}, "spec": {"targetDedicatedNodes": 3},
            "status": {"nodeCounts": {"idle": 1, "running": 2, "total": 3}}}
    line = fmt.job_progress_line("quickstart", counts, "active", fmt.pool_node_summary(pool))
    assert line == ("job quickstart: ███████░░░ 14/20 completed (13 succeeded, 1 failed) · 4 running · 2 active"
                    " · pool quickstart: 3 idle/running nodes of 3")
    ascii_line = fmt.job_progress_line("quickstart", counts, "completed", None, ascii=True)
    assert ascii_line.startswith("job quickstart: #######--- 14/20") and " - job completed" in ascii_line


def test_pool_node_summary():
    assert fmt.pool_node_summary(None) == "pool: not found"
    pool = {"metadata": {"name": "p"}, "spec": {"targetDedicatedNodes": 5},
            "status": {"nodeCounts": {"idle": 1, "creating": 2, "starting": 0, "total": 3}}}
    assert fmt.pool_node_summary(pool) == "pool p: 1 idle/running node of 5 (2 creating)"
    bare = {"metadata": {"name": "p"}, "spec": {}}
    assert "no node counts yet" in fmt.pool_node_summary(bare)
    nodes = [{"status": {"state": "idle"}}, {"status": {"state": "offline"}}, {}]
    assert fmt.pool_node_summary(bare, nodes) == "pool p: 1 idle/running node (1 offline, 1 unknown)"


def test_job_done():
    counts_done = {"total": 2, "completed": 2}
    assert fmt.job_done({"status": {"state": "completed"}}, {"total": 3, "completed": 1})
    assert fmt.job_done({"spec": {}}, counts_done)
    assert not fmt.job_done({"spec": {"onAllTasksComplete": "terminatejob"}, "status": {"state": "active"}}, counts_done)
    assert not fmt.job_done({"spec": {}}, {"total": 0, "completed": 0})


# --- tables ------------------------------------------------------------------------

def test_table_alignment_and_none():
    out = fmt.table(["name", "exit"], [["a", 0], ["long-name", None]])
    assert out.splitlines() == ["NAME        EXIT", "a           0", "long-name   <none>"]


def test_tasks_table_sorted_naturally():
    out = fmt.tasks_table(TASKS)
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATE", "RESULT", "EXIT", "NODE", "RETRIES", "REQUEUES", "POD"]
    ids = [line.split()[0] for line in lines[1:]]
    assert ids == ["j-1", "j-2", "j-3", "j-4", "j-5", "j-6", "j-10"]
    row2 = lines[2].split()
    assert row2[:6] == ["j-2", "completed", "failure", "3", "n1", "2"]
    wide = fmt.tasks_table([task("n", tid="7")], wide=True)
    assert wide.splitlines()[0].split()[-3:] == ["NAME", "JOB", "REASON"] and wide.splitlines()[1].startswith("7 ")
    assert wide.splitlines()[1].split()[-3:] == ["n", "j", "<none>"]


def test_pools_and_nodes_tables():
    pools = [{"metadata": {"name": "b"}, "spec": {"nodeGroup": {"provider": "kwok"}, "targetDedicatedNodes": 3, "taskSlotsPerNode": 2},
              "status": {"allocationState": "steady", "currentDedicatedNodes": 3,
                         "nodeCounts": {"idle": 2, "running": 1, "offline": 1, "total": 4}}},
             {"metadata": {"name": "a"}, "spec": {"nodeGroup": {"provider": "static"}, "enableAutoScale": True}}]
    out = fmt.pools_table(pools).splitlines()
    assert out[0].split() == ["NAME", "PROVIDER", "ALLOCATION", "CURRENT", "TARGET", "SLOTS", "IDLE", "RUNNING", "OTHER"]
    assert out[1].split() == ["a", "static", "<none>", "0", "auto", "1", "0", "0", "0"]
    assert out[2].split() == ["b", "kwok", "steady", "3", "3", "2", "2", "1", "1"]
    nodes = [{"metadata": {"name": "p-10"}, "spec": {"nodeName": "k-10"}, "status": {"state": "idle"}},
             {"metadata": {"name": "p-2"}, "spec": {"nodeName": "k-2", "schedulingState": "disabled"},
              "status": {"state": "running", "runningTasksCount": 2, "startTaskInfo": {"result": "success"}}}]
    out = fmt.nodes_table(nodes).splitlines()
    assert [line.split()[0] for line in out[1:]] == ["p-2", "p-10"]
    assert out[1].split()[:5] == ["p-2", "k-2", "running", "disabled", "2"]


# --- status ------------------------------------------------------------------------

def test_pending_reasons_grouped_largest_first():
    groups = fmt.pending_reasons(TASKS)
    assert list(groups) == ["AllSlotsBusy", "JobDisabled", "NotSeenByOperator"]
    assert groups["AllSlotsBusy"]["count"] == 2
    assert groups["AllSlotsBusy"]["tasks"] == ["j-4", "j-10"]
    assert groups["AllSlotsBusy"]["message"] == "all slots busy"


def test_status_report():
    job = {"metadata": {"name": "j", "namespace": "ns"}, "spec": {"poolInfo": {"poolId": "p"}, "priority": 5},
           "status": {"state": "active", "taskCounts": {"active": 4, "running": 1, "completed": 2, "succeeded": 1, "failed": 1},
                      "executionInfo": {"schedulingError": {"code": "PoolNotFound", "message": "no pool p"}}}}
    out = fmt.status_report(job, TASKS, {"metadata": {"name": "p"}, "status": {"nodeCounts": {"idle": 2}}}, width=10)
    assert "Job:       j (namespace ns)" in out
    assert "State:     active" in out
    assert "priority 5" in out
    assert "Error:     PoolNotFound: no pool p" in out
    assert "Progress:  ██░░░░░░░░ 2/7 completed" in out
    assert "4 active, 0 preparing, 1 running, 2 completed (1 succeeded, 1 failed)" in out
    assert "pool p: 2 idle/running nodes" in out
    assert "completed/failure" in out and "completed/success" in out
    assert "AllSlotsBusy (2) — all slots busy: j-4, j-10" in out
    unseen = fmt.status_report({"metadata": {"name": "j"}, "spec": {}}, [])
    assert "not seen by the operator yet" in unseen


# --- validation report -----------------------------------------------------------------

def test_parse_invalid():
    msg = "invalid Task 'x':\n  spec.commandLine: Field required\n  spec.requiredSlots: Input should be greater than or equal to 1"
    assert fmt.parse_invalid(msg) == [("spec.commandLine", "Field required"),
                                      ("spec.requiredSlots", "Input should be greater than or equal to 1")]
    assert fmt.parse_invalid("apiVersion must be podbatch.io/v1alpha1, not 'v1'") == [("", "apiVersion must be podbatch.io/v1alpha1, not 'v1'")]


def test_validation_report_names_file_object_and_field(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(textwrap.dedent("""\
        apiVersion: podbatch.io/v1alpha1
        kind: Task
        metadata: {name: bad}
        spec: {jobName: j, comandLine: echo, requiredSlots: 0}
        ---
        apiVersion: podbatch.io/v1alpha1
        kind: Job
        metadata: {name: good}
        spec: {poolInfo: {poolId: p}}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: cm}
        """))
    docs = manifests.load([tmp_path])
    assert [d.kind for d in docs] == ["Task", "Job", "ConfigMap"]
    problems = manifests.validate(docs)
    assert len(problems) == 1
    report = fmt.validation_report(problems).splitlines()
    assert f"{f}#0: Task/bad: spec.commandLine: Field required" in report
    assert f"{f}#0: Task/bad: spec.requiredSlots: Input should be greater than or equal to 1" in report
    assert any(line.startswith(f"{f}#0: Task/bad: spec.comandLine: Extra inputs") for line in report)


def test_examples_are_valid():
    from pathlib import Path
    docs = manifests.load([Path(__file__).resolve().parents[2] / "examples"])
    assert docs and manifests.validate(docs) == []


def test_manifest_errors(tmp_path):
    with pytest.raises(manifests.ManifestError, match="no such file"):
        manifests.load([tmp_path / "missing.yaml"])
    (tmp_path / "x.yaml").write_text("a: [1\n")
    with pytest.raises(manifests.ManifestError, match="not valid YAML"):
        manifests.load([tmp_path / "x.yaml"])
    (tmp_path / "x.yaml").write_text("apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n")
    assert [m.source.endswith(".items[0]") for m in manifests.load([tmp_path / "x.yaml"])] == [True]


def test_validate_command_exit_codes(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("apiVersion: podbatch.io/v1alpha1\nkind: Pool\nmetadata: {name: p}\nspec: {}\n")
    assert cli.main(["validate", "-f", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert "Pool/p: spec.nodeGroup: Field required" in err and "nothing was sent" in err
    # apply validates first and exits 2 before it needs any cluster
    assert cli.main(["apply", "-f", str(tmp_path / "bad.yaml"), "--kubeconfig", str(tmp_path / "none")]) == 2
    assert cli.main(["validate", "-f", str(tmp_path / "missing")]) == 2


# --- arguments and patches ------------------------------------------------------------

def ids():
    n = iter(range(1, 100))
    return lambda: f"id-{next(n)}"


@pytest.mark.parametrize("argv,expected", [
    (["node", "reboot", "n1"], ("ComputeNode", "n1", {"reboot": {"requestId": "id-1", "nodeRebootOption": "requeue"}})),
    (["node", "reimage", "n1", "--option", "terminate"],
     ("ComputeNode", "n1", {"reimage": {"requestId": "id-1", "nodeReimageOption": "terminate"}})),
    (["node", "remove", "n1", "--option", "retaineddata"],
     ("ComputeNode", "n1", {"remove": {"requestId": "id-1", "nodeDeallocationOption": "retaineddata"}})),
    (["node", "disable", "n1", "--option", "taskcompletion"],
     ("ComputeNode", "n1", {"schedulingState": "disabled", "nodeDisableSchedulingOption": "taskcompletion"})),
    (["node", "enable", "n1"], ("ComputeNode", "n1", {"schedulingState": "enabled"})),
    (["job", "disable", "j", "--option", "wait"], ("Job", "j", {"desiredState": "disabled", "disableTasks": "wait"})),
    (["job", "enable", "j"], ("Job", "j", {"desiredState": "active"})),
    (["job", "terminate", "j"], ("Job", "j", {"desiredState": "terminated", "terminateReason": "UserTerminate"})),
    (["job", "terminate", "j", "--reason", "enough"], ("Job", "j", {"desiredState": "terminated", "terminateReason": "enough"})),
    (["task", "reactivate", "t"], ("Task", "t", {"reactivateRequestId": "id-1", "desiredState": "active"})),
    (["task", "terminate", "t"], ("Task", "t", {"desiredState": "terminated"})),
])
def test_operation_patches(argv, expected):
    assert cli.spec_patch(cli.parse_args(argv), ids()) == expected


def test_patches_fit_the_models():
    """Every patch, merged into a valid object, still validates against its kind's model."""
    from podbatch.api import validate_object
    bases = {
        "ComputeNode": {"spec": {"poolName": "p", "nodeName": "k"}},
        "Job": {"spec": {"poolInfo": {"poolId": "p"}}},
        "Task": {"spec": {"jobName": "j", "commandLine": "true"}},
    }
    for argv in (["node", "reboot", "n"], ["node", "reimage", "n"], ["node", "remove", "n", "--option", "taskcompletion"],
                 ["node", "disable", "n"], ["job", "disable", "n", "--option", "terminate"], ["job", "terminate", "n"],
                 ["task", "reactivate", "n"], ["task", "terminate", "n"]):
        kind, name, patch = cli.spec_patch(cli.parse_args(argv), ids())
        body = {"apiVersion": "podbatch.io/v1alpha1", "kind": kind, "metadata": {"name": name},
                "spec": {**bases[kind]["spec"], **patch}}
        validate_object(body)


def test_request_ids_are_new_each_time():
    from podbatch.cli.kube import new_request_id
    a = cli.spec_patch(cli.parse_args(["node", "reboot", "n"]), new_request_id)
    b = cli.spec_patch(cli.parse_args(["node", "reboot", "n"]), new_request_id)
    assert a[2]["reboot"]["requestId"] != b[2]["reboot"]["requestId"]


def test_global_options_before_or_after_the_command():
    a = cli.parse_args(["-n", "ns1", "--kubeconfig", "/k", "status", "j"])
    b = cli.parse_args(["status", "j", "-n", "ns1", "--kubeconfig", "/k"])
    for args in (a, b):
        assert (args.command, args.job, args.namespace, args.kubeconfig) == ("status", "j", "ns1", "/k")
    c = cli.parse_args(["node", "disable", "n", "-n", "x"])
    assert (c.command, c.action, c.node, c.option, c.namespace) == ("node", "disable", "n", "requeue", "x")
    assert not hasattr(cli.parse_args(["pools"]), "namespace")


@pytest.mark.parametrize("argv", [
    ["node", "reboot", "n", "--option", "wait"], ["node", "disable", "n", "--option", "retaineddata"],
    ["job", "disable", "j", "--option", "taskcompletion"], ["apply"], ["node"], [],
])
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as e:
        cli.parse_args(argv)
    assert e.value.code == 2


def test_other_commands_parse():
    a = cli.parse_args(["apply", "-f", "a.yaml", "-f", "dir", "--dry-run"])
    assert a.filename == ["a.yaml", "dir"] and a.dry_run
    a = cli.parse_args(["logs", "t", "--stderr", "--tail", "5"])
    assert (a.task, a.stderr, a.tail, a.job) == ("t", True, 5, None)
    a = cli.parse_args(["watch", "j", "--interval", "0.5", "--timeout", "60"])
    assert (a.interval, a.timeout) == (0.5, 60)
    assert cli.parse_args(["tasks", "j", "-o", "wide"]).output == "wide"
    assert cli.parse_args(["nodes", "p"]).pool == "p"


def test_live_line_plain_output_only_on_change():
    out = io.StringIO()
    live = cli.LiveLine(out)
    assert not live.tty
    live.show("a")
    live.show("a")
    live.show("b")
    live.done()
    lines = out.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["a", "b"]
