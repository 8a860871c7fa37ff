"""Task collections' pure parts (core/collections.py) and the store's record of them
(controllers/collstore.py): sizes, parameters, substitution, ids, ranges; materializing,
ends, counts, reactivation and a restart rebuilt from the status and the pods."""
from __future__ import annotations

import pytest

from podbatch.controllers.store import Store
from podbatch.core import collections as coll

pytestmark = pytest.mark.unit

SWEEP = {"jobName": "j", "parametricSweep": {"parameterSets": [{"start": 1, "end": 3}, {"start": 0, "end": 10, "step": 5}],
                                             "repeatTask": {"commandLine": "run {0} {1:3} {{x}}", "requiredSlots": 2,
                                                            "environmentSettings": [{"name": "A", "value": "{1}"}]}}}


@pytest.mark.parametrize("spec,n", [
    (SWEEP, 9),
    ({"parametricSweep": {"parameterSets": [{"start": 0, "end": 9999}], "repeatTask": {}}}, 10000),
    ({"parametricSweep": {"parameterSets": [{"start": 0, "end": 10, "step": 3}], "repeatTask": {}}}, 4),
    ({"tasks": [{"commandLine": "a"}, {"commandLine": "b"}]}, 2),
    ({"parametricSweep": {"parameterSets": [], "repeatTask": {}}}, 0),
])
def test_size(spec, n):
    assert coll.size(spec) == n


def test_the_first_parameter_set_is_the_outer_loop():
    assert [coll.parameters(SWEEP, i) for i in range(9)] == [
        (1, 0), (1, 5), (1, 10), (2, 0), (2, 5), (2, 10), (3, 0), (3, 5), (3, 10)]


@pytest.mark.parametrize("text,params,out", [
    ("f{0}", (7,), "f7"), ("f{0:4}", (7,), "f0007"), ("{1}-{0}", (1, 2), "2-1"),
    ("{{0}}", (7,), "{0}"), ("{2}", (1,), "{2}"), ("plain", (1,), "plain"), ("a}b", (1,), "a}b"),
])
def test_substitute(text, params, out):
    assert coll.substitute(text, params) == out


def test_a_task_spec_has_its_parameters_everywhere_and_no_id():
    spec = coll.task_spec(SWEEP, 4)   # (2, 5)
    assert spec["commandLine"] == "run 2 005 {x}" and spec["environmentSettings"] == [{"name": "A", "value": "5"}]
    assert coll.placeholders(SWEEP["parametricSweep"]["repeatTask"]) == {0, 1}


@pytest.mark.parametrize("spec,index,tid", [
    (SWEEP, 4, "c-4"), ({**SWEEP, "taskIdPrefix": ""}, 4, "4"), ({**SWEEP, "taskIdPrefix": "frame"}, 0, "frame0"),
    ({"tasks": [{"id": "first"}, {}]}, 0, "first"), ({"tasks": [{"id": "first"}, {}]}, 1, "c-1"),
])
def test_task_ids(spec, index, tid):
    assert coll.task_id(spec, "c", index) == tid


@pytest.mark.parametrize("name,index", [("c-4", 4), ("c-04", None), ("c-x", None), ("d-4", None), ("c-4-1", None)])
def test_index_of(name, index):
    assert coll.index_of("c", name) == index


@pytest.mark.parametrize("indexes,text", [
    ([], ""), ([0], "0"), ([0, 1, 2, 3, 7, 9, 10, 11], "0-3,7,9-11"), ([5, 6], "5-6"),
])
def test_ranges_round_trip(indexes, text):
    assert coll.ranges(indexes) == text
    assert list(coll.parse_ranges(text)) == indexes


def test_parse_ranges_skips_bad_parts():
    assert list(coll.parse_ranges(" 1 , x, 3-4,,")) == [1, 3, 4]


def _coll(n: int = 5, status: dict | None = None, **spec) -> dict:
    return {"apiVersion": "podbatch.io/v1alpha1", "kind": "TaskCollection",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1", "resourceVersion": "10", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "annotations": {"sim.podbatch.io/exit-code": "{0}", "other": "x"},
                         "ownerReferences": [{"kind": "Job", "name": "j", "uid": "ju", "apiVersion": "podbatch.io/v1alpha1"}]},
            "spec": {"jobName": "j", "parametricSweep": {"parameterSets": [{"start": 0, "end": n - 1}],
                                                         "repeatTask": {"commandLine": "x {0}"}}, **spec},
            "status": status or {}}


def test_a_virtual_task_and_its_pod_belong_to_the_collection():
    body = coll.task_body(_coll(), 3, [{"kind": "Job", "uid": "ju"}])
    assert body["metadata"]["name"] == "c-3" and body["metadata"]["uid"] == "u1" and coll.virtual(body) == ("c", 3)
    assert body["spec"]["jobName"] == "j" and body["spec"]["id"] == "c-3" and body["spec"]["commandLine"] == "x 3"
    assert body["metadata"]["annotations"] == {"sim.podbatch.io/exit-code": "3"}
    pod = coll.mark_pod({"metadata": {"labels": {"a": "b"}, "ownerReferences": [{"kind": "Task"}]}}, body)
    assert pod["metadata"]["labels"] == {"a": "b", coll.LABEL_COLLECTION: "c", coll.LABEL_INDEX: "3"}
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "TaskCollection" and pod["metadata"]["ownerReferences"][0]["uid"] == "u1"


def _store_with(body: dict) -> Store:
    s = Store()
    s.put_job({"metadata": {"name": "j", "namespace": "ns", "uid": "ju", "resourceVersion": "1"}, "spec": {"poolInfo": {"poolId": "p"}}})
    s.put_collection(body)
    return s


def _complete(s: Store, name: str, result: str = "success", exit_code: int = 0) -> None:
    t = s.task(f"ns/{name}")
    s.write_virtual(t, {"state": "completed", "podName": f"{name}-1", "executionInfo": {"result": result, "exitCode": exit_code}})


def test_the_store_queues_a_window_and_counts_every_task():
    s = _store_with(_coll(5))
    assert s.counts_of("ns/j", "ju")[0] == {"active": 5, "running": 0, "completed": 0, "succeeded": 0, "failed": 0}
    assert s.fill("ns/c", 2) == 2 and list(s.queues["ns/j"]) == ["ns/c-0", "ns/c-1"]
    assert s.fill("ns/c", 2) == 0
    _complete(s, "c-0")
    _complete(s, "c-1", "failure", 3)
    assert "ns/c-0" not in s.tasks and list(s.queues["ns/j"]) == []
    counts, slots = s.counts_of("ns/j", "ju")
    assert counts == {"active": 3, "running": 0, "completed": 2, "succeeded": 1, "failed": 1}, counts
    assert s.counts_of("ns/j", "another-job-uid")[0]["active"] == 0
    patch = s.status_patch("ns/c")
    assert patch["succeededIndexes"] == "0" and patch["failedIndexes"] == "1" and patch["state"] == "active"
    assert patch["failedTasks"][0]["exitCode"] == 3 and patch["failedTasks"][0]["podName"] == "c-1-1"
    assert s.collections["ns/c"].urgent, "a failure is written before the plan goes on"


def test_a_new_attempt_is_urgent_and_a_restart_reads_it_back():
    s = _store_with(_coll(3))
    s.fill("ns/c", 3)
    t = s.task("ns/c-2")
    _, urgent = s.write_virtual(t, {"state": "active", "attempt": 2, "stoppingPods": ["c-2-1"],
                                    "executionInfo": {"retryCount": 1, "requeueCount": 0}})
    assert urgent
    status = s.status_patch("ns/c")
    assert status["attempts"] == [{"index": 2, "attempt": 2, "retryCount": 1, "requeueCount": 0, "stoppingPods": ["c-2-1"]}]
    # a restart: the status says index 0 succeeded and index 2 is at attempt 2
    fresh = _store_with(_coll(3, status={**status, "succeededIndexes": "0"}))
    assert fresh.fill("ns/c", 5) == 2
    t2 = fresh.task("ns/c-2")
    assert t2["status"]["attempt"] == 2 and t2["status"]["stoppingPods"] == ["c-2-1"]
    assert t2["status"]["executionInfo"]["retryCount"] == 1
    assert fresh.counts_of("ns/j", "ju")[0]["succeeded"] == 1


def test_a_pod_brings_its_task_back_after_a_restart():
    s = Store()
    pod = {"metadata": {"name": "c-4-1", "namespace": "ns", "resourceVersion": "5", "uid": "pu",
                        "labels": {"podbatch.io/role": "task", "podbatch.io/task": "c-4", "podbatch.io/task-uid": "u1",
                                   "podbatch.io/attempt": "1", coll.LABEL_COLLECTION: "c", coll.LABEL_INDEX: "4"},
                        "annotations": {"podbatch.io/task-name": "c-4",
                                        "podbatch.io/binding": '{"nodeInfo":{"nodeId":"n1","poolId":"p"},"boundAt":"x"}'}},
           "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}}
    s.put_pod(pod)   # listed before its collection
    s.put_collection(_coll(5))
    t = s.task("ns/c-4")
    assert t is not None and t["status"]["state"] == "preparing" and t["status"]["nodeInfo"]["nodeId"] == "n1"
    assert s.counts_of("ns/j", "ju")[0]["running"] == 1


def test_reactivate_runs_a_failed_task_again_at_its_next_attempt():
    s = _store_with(_coll(3, terminateIndexes="2"))
    s.fill("ns/c", 3)
    _complete(s, "c-1", "failure", 1)
    s.end_unbound("ns/c", 2, {"code": "TaskEnded"}, "now")
    s.drop_virtual("ns/c", 0)
    assert s.reactivate("ns/c", "r1", [0, 1, 2]) == 1   # 0 did not fail, 2 was terminated
    st = s.status_patch("ns/c")
    assert st["failedIndexes"] == "2" and st["handledReactivateRequestId"] == "r1"
    assert st["attempts"] == [{"index": 1, "attempt": 2, "retryCount": 0, "requeueCount": 0}]
    s.fill("ns/c", 5)
    assert s.task("ns/c-1")["status"]["attempt"] == 2


# --- task per file ---------------------------------------------------------------------

PER_FILE = {"jobName": "j", "taskPerFile": {
    "source": {"containerUrl": "https://acct.blob.example/frames?sv=1&sig=a%2Bb", "prefix": "in/"},
    "repeatTask": {"commandLine": "ffmpeg -i {fileName} {fileNameWithoutExtension}.mp4 {{literal}}",
                   "resourceFiles": [{"httpUrl": "{url}", "filePath": "{fileName}"}],
                   "environmentSettings": [{"name": "SRC", "value": "{filePath}"}]}}}


def test_a_task_per_file_collection_has_a_task_per_listed_file_and_none_before_the_listing():
    assert coll.size(PER_FILE) == 0 and coll.size(PER_FILE, []) == 0
    files = ["in/a b.mov", "in/deep/c.tar.gz", "in/.hidden"]
    assert coll.size(PER_FILE, files) == 3
    assert coll.body_size({"spec": PER_FILE, "status": {"files": files}}) == 3


@pytest.mark.parametrize("name,expected", [
    ("in/a b.mov", {"url": "https://acct.blob.example/frames/in/a%20b.mov?sv=1&sig=a%2Bb", "filePath": "in/a b.mov",
                    "fileName": "a b.mov", "fileNameWithoutExtension": "a b"}),
    ("in/deep/c.tar.gz", {"url": "https://acct.blob.example/frames/in/deep/c.tar.gz?sv=1&sig=a%2Bb",
                          "filePath": "in/deep/c.tar.gz", "fileName": "c.tar.gz", "fileNameWithoutExtension": "c.tar"}),
    ("in/.hidden", {"url": "https://acct.blob.example/frames/in/.hidden?sv=1&sig=a%2Bb", "filePath": "in/.hidden",
                    "fileName": ".hidden", "fileNameWithoutExtension": ".hidden"}),
])
def test_file_placeholders(name, expected):
    assert coll.file_params(PER_FILE, name) == expected


def test_a_file_task_has_its_placeholders_replaced_everywhere():
    t = coll.task_spec(PER_FILE, 1, ["in/x.mov", "in/y.mov"])
    assert t["commandLine"] == "ffmpeg -i y.mov y.mp4 {literal}"
    assert t["resourceFiles"] == [{"httpUrl": "https://acct.blob.example/frames/in/y.mov?sv=1&sig=a%2Bb", "filePath": "y.mov"}]
    assert t["environmentSettings"] == [{"name": "SRC", "value": "in/y.mov"}]
    assert coll.task_spec(PER_FILE, 0, ["in/{0}.txt"])["environmentSettings"][0]["value"] == "in/{0}.txt"   # not re-read
    body = {"metadata": {"name": "f", "namespace": "ns", "uid": "u",
                         "annotations": {"sim.podbatch.io/duration": "{fileNameWithoutExtension}"}},
            "spec": PER_FILE, "status": {"files": ["in/3.dat"]}}
    vt = coll.task_body(body, 0, [])
    assert vt["metadata"]["annotations"] == {"sim.podbatch.io/duration": "3"} and vt["spec"]["id"] == "f-0"
