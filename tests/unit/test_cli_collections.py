"""kubectl podbatch and the tasks of TaskCollections: the pure parts (cli/colltasks.py and
the collection lines of format.py). A collection task is no object of the API; the CLI
builds its row from the collection's status and the pod of its last attempt."""
from __future__ import annotations

import pytest

from podbatch.cli import colltasks as ct
from podbatch.cli import format as fmt
from podbatch.core import binding


def collection(n=5, status=None, **spec):
    body = {"apiVersion": "podbatch.io/v1alpha1", "kind": "TaskCollection",
            "metadata": {"name": "sw", "namespace": "ns", "uid": "u1", "labels": {"tier": "x"}},
            "spec": {"jobName": "j", "parametricSweep": {"parameterSets": [{"start": 0, "end": n - 1}],
                                                        "repeatTask": {"commandLine": "f {0}"}}, **spec}}
    if status is not None:
        body["status"] = status
    return body


def pod(index, attempt, phase="Running", node="n1", exit_code=None, coll="sw", retries=0):
    p = {"metadata": {"name": f"{coll}-{index}-{attempt}",
                      "labels": {"podbatch.io/collection": coll, "podbatch.io/collection-index": str(index),
                                 "podbatch.io/attempt": str(attempt)},
                      "annotations": {"podbatch.io/binding": binding.annotation({"nodeName": node}, "2026-01-01T00:00:00Z")}},
         "spec": {"nodeName": node, "containers": [{"name": "task", "env": [
             {"name": "AZ_BATCH_TASK_RETRY_COUNT", "value": str(retries)}]}]},
         "status": {"phase": phase}}
    if exit_code is not None:
        p["status"]["containerStatuses"] = [{"name": "task", "state": {"terminated": {
            "exitCode": exit_code, "startedAt": "2026-01-01T00:00:01Z", "finishedAt": "2026-01-01T00:00:02Z"}}}]
    return p


STATUS = {"state": "active", "size": 5,
          "taskCounts": {"active": 2, "running": 1, "completed": 2, "succeeded": 1, "failed": 1},
          "succeededIndexes": "0", "failedIndexes": "1",
          "failedTasks": [{"index": 1, "id": "sw-1", "exitCode": 3, "retryCount": 2, "podName": "sw-1-3",
                           "nodeId": "n2", "failureInfo": {"category": "UserError", "code": "FailureExitCode"}}],
          "attempts": [{"index": 3, "attempt": 2, "retryCount": 1}]}


def test_rows_give_each_task_its_state_result_exit_node_and_retries_as_a_task_has_them():
    pods = [pod(0, 1, "Succeeded", exit_code=0), pod(1, 3, "Failed", node="n2", exit_code=3),
            pod(2, 1, "Running"), pod(3, 1, "Failed", exit_code=1), pod(9, 1, coll="other")]
    rows = ct.Rows(collection(status=STATUS), pods).rows()
    by = {r["metadata"]["name"]: r for r in rows}
    assert [r["spec"]["id"] for r in rows] == ["sw-0", "sw-1", "sw-2", "sw-3", "sw-4"]
    s0 = by["sw-0"]["status"]
    assert s0["state"] == "completed" and s0["executionInfo"]["result"] == "success" and s0["nodeInfo"]["nodeName"] == "n1"
    s1 = by["sw-1"]["status"]
    assert (s1["executionInfo"]["exitCode"], s1["executionInfo"]["retryCount"], s1["podName"], s1["attempt"]) == (3, 2, "sw-1-3", 3)
    assert s1["executionInfo"]["failureInfo"]["code"] == "FailureExitCode"
    assert by["sw-2"]["status"]["state"] == "running" and by["sw-2"]["status"]["podName"] == "sw-2-1"
    # index 3 is at attempt 2 (a retry): its failed pod of attempt 1 is history, it waits
    s3 = by["sw-3"]["status"]
    assert s3["state"] == "active" and s3["attempt"] == 2 and s3["executionInfo"]["retryCount"] == 1, s3
    assert by["sw-4"]["status"]["pendingReason"]["reason"] == ct.QUEUED
    # labels: the collection's, plus which collection and index (what -l selects on)
    assert by["sw-4"]["metadata"]["labels"] == {"tier": "x", "podbatch.io/collection": "sw", "podbatch.io/collection-index": "4"}
    assert ct.collection_of(by["sw-4"]) == ("sw", 4)
    table = fmt.tasks_table(rows)
    assert [line.split()[:4] for line in table.splitlines()[1:3]] == [["sw-0", "completed", "success", "0"],
                                                                       ["sw-1", "completed", "failure", "3"]]


def test_a_collection_the_operator_has_not_seen_has_rows_without_status_and_a_stalled_one_says_why():
    rows = ct.Rows(collection()).rows()
    assert [r.get("status") for r in rows] == [None] * 5
    assert fmt.count_tasks(rows)["unseen"] == 5
    stalled = {"state": "active", "size": 5, "conditions": [
        {"type": "Stalled", "status": "True", "reason": "InvalidSpec", "message": "spec.jobName cannot change"}]}
    row = ct.Rows(collection(status=stalled)).row(2)
    assert row["status"]["pendingReason"] == {"reason": "InvalidSpec", "message": "spec.jobName cannot change"}


def test_a_task_is_found_by_its_name_or_its_batch_id():
    c = collection(n=12)
    assert ct.find_index(c, "sw-11") == 11 and ct.find_index(c, "sw-12") is None and ct.find_index(c, "sw-01") is None
    c = collection(n=12, taskIdPrefix="frame-")
    assert ct.find_index(c, "frame-7") == 7 and ct.find_index(c, "sw-7") == 7 and ct.find_index(c, "frame-x") is None
    listed = {"metadata": {"name": "l"}, "spec": {"jobName": "j", "tasks": [{"id": "first", "commandLine": "a"},
                                                                              {"commandLine": "b"}]}}
    assert ct.find_index(listed, "first") == 0 and ct.find_index(listed, "l-1") == 1 and ct.find_index(listed, "l-0") == 0


@pytest.mark.parametrize("selector,labels,expected", [
    ("tier=x", {"tier": "x"}, True), ("tier=x", {"tier": "y"}, False), ("tier!=x", {}, True),
    ("tier in (x, y),a", {"tier": "y", "a": "1"}, True), ("tier notin (x)", {"tier": "x"}, False),
    ("!a", {"a": "1"}, False), ("!a", {}, True), ("", {}, True),
])
def test_label_selectors_read_as_kubectl_does(selector, labels, expected):
    assert ct.selects(ct.parse_selector(selector), labels) is expected


def test_a_bad_selector_is_named():
    with pytest.raises(ValueError, match="cannot read the label selector.*'!a=b'"):
        ct.parse_selector("!a=b")


def test_terminate_adds_to_the_ranges_and_reactivate_keeps_an_unhandled_request():
    c = collection(n=20, terminateIndexes="1-3")
    assert ct.terminate_patch(c, 7) == {"terminateIndexes": "1-3,7"}
    assert ct.terminate_patch(c, 4) == {"terminateIndexes": "1-4"}
    # a previous request not handled yet: its indexes go with the new one; the index leaves terminateIndexes
    c = collection(n=20, terminateIndexes="1-3", reactivate={"requestId": "a", "indexes": "9"})
    assert ct.reactivate_patch(c, 2, "b") == {"reactivate": {"requestId": "b", "indexes": "2,9"}, "terminateIndexes": "1,3"}
    c["status"] = {"handledReactivateRequestId": "a"}
    assert ct.reactivate_patch(c, 5, "b") == {"reactivate": {"requestId": "b", "indexes": "5"}}
    c = collection(n=20, terminateIndexes="2")
    assert ct.reactivate_patch(c, 2, "b")["terminateIndexes"] is None   # merge patch: the field goes


def test_an_operation_with_nothing_to_do_says_so():
    rows = {r["metadata"]["name"]: r for r in ct.Rows(collection(status=STATUS), [pod(0, 1, "Succeeded", exit_code=0)]).rows()}
    err, msg = ct.operation_problem(rows["sw-0"], "reactivate")
    assert err and "has not failed" in msg
    assert ct.operation_problem(rows["sw-1"], "reactivate") is None
    err, msg = ct.operation_problem(rows["sw-1"], "terminate")
    assert not err and "already completed" in msg
    assert ct.operation_problem(rows["sw-4"], "terminate") is None


def test_status_counts_collections_from_their_status_and_prints_a_line_for_each():
    tasks = [{"metadata": {"name": "t"}, "spec": {"jobName": "j"}, "status": {"state": "completed",
                                                                               "executionInfo": {"result": "success"}}}]
    colls = [collection(status=STATUS), {**collection(n=3), "metadata": {"name": "new"}}]
    c = fmt.count_tasks(tasks, colls)
    assert (c["total"], c["active"], c["running"], c["completed"], c["succeeded"], c["failed"], c["unseen"]) == (9, 5, 1, 3, 2, 1, 3)
    job = {"metadata": {"name": "j", "namespace": "ns"}, "spec": {}, "status": {"state": "active"}}
    text = fmt.status_report(job, tasks, collections=colls)
    assert "3/9 completed" in text
    assert "  sw: 5 tasks, 2 active, 1 running, 1 succeeded (0), 1 failed (1)" in text
    assert "  new: 3 tasks, not seen by the operator yet" in text
