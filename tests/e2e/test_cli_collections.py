"""kubectl podbatch with the tasks of a TaskCollection on the local cluster (issue 13): apply
gives the collection its Job's ownerReference, `tasks JOB` lists each task with state, exit
code, node and retries, `-l` selects among them, `logs` finds a task's pod, `status` counts
and sums them up, and `task terminate|reactivate` act on one task through its collection."""
from __future__ import annotations

import json
import textwrap

import pytest

from kit import job, kwok_pool, wait_for
from podbatch.cli import main as cli

pytestmark = pytest.mark.e2e

COLLECTION = textwrap.dedent("""\
    apiVersion: podbatch.io/v1alpha1
    kind: TaskCollection
    metadata:
      name: c
      labels: {tier: render}
      annotations: {sim.podbatch.io/exit-code: "{0}", sim.podbatch.io/duration: "{0}"}
    spec:
      jobName: j
      parametricSweep:
        parameterSets: [{start: 0, end: 2}, {start: 0, end: 0}]
        repeatTask: {commandLine: "frame {0}"}
    """)


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_collections_tasks_are_listed_read_and_operated_on_like_tasks(operator, objects, kubeconfig, namespace,
                                                                        custom_api, core_v1, tmp_path, capsys):
    common = ["--kubeconfig", kubeconfig, "-n", namespace]
    objects.create(kwok_pool("p", 1, slots=2))
    objects.create(job("j", "p"))
    f = tmp_path / "c.yaml"
    f.write_text(COLLECTION)
    rc, out, err = run(capsys, "apply", "-f", str(f), *common)
    assert rc == 0 and "taskcollection.podbatch.io/c created" in out, err
    jb = objects.get("Job", "j")
    assert [r["uid"] for r in objects.get("TaskCollection", "c")["metadata"]["ownerReferences"]] == [jb["metadata"]["uid"]]

    # task 0 exits 0 at once, task 1 exits 1 after 1 s, task 2 exits 2 after 2 s
    wait_for("the three ends", lambda: (objects.status("TaskCollection", "c").get("taskCounts") or {}).get("completed") == 3, 120)
    rc, out, err = run(capsys, "tasks", "j", *common)
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[:4] for r in rows] == [["c-0", "completed", "success", "0"], ["c-1", "completed", "failure", "1"],
                                     ["c-2", "completed", "failure", "2"]], out
    nodes = {c["spec"]["nodeName"] for c in objects.list("ComputeNode")}
    assert {r[4] for r in rows} <= nodes, out   # the node each ran on
    rc, out, _ = run(capsys, "tasks", "j", "-l", "podbatch.io/collection-index=1", "-o", "json", *common)
    items = json.loads(out)["items"]
    assert [i["metadata"]["name"] for i in items] == ["c-1"] and items[0]["status"]["podName"] == "c-1-1", items
    rc, out, _ = run(capsys, "tasks", "j", "-l", "tier=other", *common)
    assert rc == 0 and out == ""

    rc, out, _ = run(capsys, "status", "j", *common)
    assert "3/3 completed" in out and "c: 3 tasks, 0 active, 0 running, 1 succeeded (0), 2 failed (1-2)" in out, out

    # logs: the task's pod is found (a simulated node keeps no logs: it says which pod and node)
    rc = cli.main(["logs", "c-2", *common])
    err = capsys.readouterr().err
    assert rc != 0 and "c-2-1" in err and "simulated node" in err, err

    # reactivate a failed task: it runs again at attempt 2; one that succeeded is refused
    rc, out, err = run(capsys, "task", "reactivate", "c-1", *common)
    assert rc == 0 and "reactivate task c-1" in out, err
    rc, _, err = run(capsys, "task", "reactivate", "c-0", *common)
    assert rc != 0 and "has not failed" in err, err
    wait_for("c-1-2", lambda: any(p.metadata.name == "c-1-2" for p in core_v1.list_namespaced_pod(
        namespace, label_selector="podbatch.io/collection=c").items), 60)
    st = wait_for("the reactivated end", lambda: (lambda s: s if (s.get("taskCounts") or {}).get("completed") == 3
                                                   and s.get("handledReactivateRequestId") else None)(
        objects.status("TaskCollection", "c")), 60)
    assert next(t for t in st["failedTasks"] if t["index"] == 1)["podName"] == "c-1-2", st

    # terminate a task that runs: a second collection of one 60 s task
    objects.create({"kind": "TaskCollection", "metadata": {"name": "long", "annotations": {"sim.podbatch.io/duration": "60"}},
                    "spec": {"jobName": "j", "tasks": [{"id": "slow", "commandLine": "sleep 60"}]}})
    wait_for("slow running", lambda: (objects.status("TaskCollection", "long").get("taskCounts") or {}).get("running") == 1, 60)
    rc, out, err = run(capsys, "task", "terminate", "slow", "--job", "j", *common)
    assert rc == 0 and "terminateIndexes=0" in out, (out, err)
    st = wait_for("slow ended", lambda: (lambda s: s if s.get("failedIndexes") == "0" else None)(
        objects.status("TaskCollection", "long")), 60)
    assert st["failedTasks"][0]["failureInfo"]["code"] == "TaskEnded", st
    rc, out, err = run(capsys, "task", "terminate", "long-0", *common)
    assert rc == 0 and "already completed" in err, (out, err)
