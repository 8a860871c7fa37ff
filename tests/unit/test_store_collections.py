"""The store's TaskCollections (controllers/collstore.py): a relist of Tasks cannot forget a
collection's virtual tasks (they are no objects of the API; only their collection's
deletion drops them)."""
from __future__ import annotations

from podbatch.controllers.store import Store


def _collection(n: int) -> dict:
    return {"apiVersion": "podbatch.io/v1alpha1", "kind": "TaskCollection",
            "metadata": {"name": "c", "namespace": "ns", "uid": "cu", "resourceVersion": "5",
                         "ownerReferences": [{"kind": "Job", "name": "j", "uid": "ju", "apiVersion": "podbatch.io/v1alpha1"}]},
            "spec": {"jobName": "j", "parametricSweep": {"parameterSets": [{"start": 0, "end": n - 1}],
                                                        "repeatTask": {"commandLine": "f {0}"}}}}


def test_a_relist_of_tasks_keeps_the_virtual_tasks_of_a_collection():
    s = Store()
    s.put_collection(_collection(10))
    assert s.fill("ns/c", 4) == 4
    before = {k for k in s.tasks if k.startswith("ns/c-")}
    assert before == {"ns/c-0", "ns/c-1", "ns/c-2", "ns/c-3"}
    # a 410 relist (or kopf's first listing after the engine's own) of Tasks: none of them is listed
    assert s.replace("tasks", [], "1000000") == 0
    assert {k for k in s.tasks if k.startswith("ns/c-")} == before
    counts, _ = s.counts_of("ns/j", "ju")
    assert counts["active"] == 10, counts
    # the collection's own deletion (also seen by a relist of collections) drops them
    s.replace("taskcollections", [], "1000000")
    assert not [k for k in s.tasks if k.startswith("ns/c-")]
