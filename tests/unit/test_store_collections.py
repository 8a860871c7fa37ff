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


def test_a_task_per_file_collection_holds_its_job_until_its_files_are_listed():
    s = Store()
    body = _collection(1)
    body["spec"] = {"jobName": "j", "taskPerFile": {"source": {"containerUrl": "https://a/c"},
                                                    "repeatTask": {"commandLine": "f {fileName}"}}}
    s.put_collection(body)
    assert s.fill("ns/c", 10) == 0
    counts, _ = s.counts_of("ns/j", "ju")
    assert counts["active"] == 1, counts          # one pending unit: the job cannot complete without it
    assert s.status_patch("ns/c")["state"] == "active" and s.status_patch("ns/c")["size"] == 0
    listed = {**body, "metadata": {**body["metadata"], "resourceVersion": "6"}, "status": {"files": ["in/a", "in/b"]}}
    s.put_collection(listed)   # the status write of the listing, as its response comes back
    assert s.fill("ns/c", 10) == 2
    assert s.tasks["ns/c-1"]["spec"]["commandLine"] == "f b"
    counts, _ = s.counts_of("ns/j", "ju")
    assert counts["active"] == 2, counts


def test_collection_conditions_while_listing_and_when_the_listing_failed():
    from podbatch.core.conditions import collection_conditions
    base = {"invalid": None, "job_missing": None, "counts": {"completed": 0}, "size": 0}
    listing = {c.type: c for c in collection_conditions(**base, listing=(False, "listing the files of x"))}
    assert listing["Reconciling"].status and listing["Reconciling"].reason == "ListingFiles"
    assert "Ready" not in listing or not listing["Ready"].status
    failed = {c.type: c for c in collection_conditions(**base, listing=(True, "HTTP 403"))}
    assert failed["Stalled"].status and failed["Stalled"].reason == "FileListingFailed" and failed["Valid"].status
