"""kubectl podbatch apply: server-side apply that takes over another field manager's fields
only with --force-conflicts (as kubectl), and names the conflicting fields otherwise."""
from __future__ import annotations

import io
import json
import textwrap

import pytest
from kubernetes.client.rest import ApiException

from podbatch.cli import kube
from podbatch.cli import main as cli

pytestmark = pytest.mark.unit

POOL = {"apiVersion": "podbatch.io/v1alpha1", "kind": "Pool", "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"targetDedicatedNodes": 3, "nodeGroup": {"provider": "kwok"}}}
CONFLICT = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409,
            "message": "Apply failed with 1 conflict: conflict with \"argocd-controller\": .spec.targetDedicatedNodes",
            "details": {"causes": [{"reason": "FieldManagerConflict", "field": ".spec.targetDedicatedNodes",
                                    "message": "conflict with \"argocd-controller\""}]}}


class FakeCustomObjects:
    """An API server holding one Pool whose spec.targetDedicatedNodes another manager owns."""
    calls: list[dict] = []

    def __init__(self, api_client=None):
        pass

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        return {**POOL, "metadata": {**POOL["metadata"], "resourceVersion": "1"}}

    def patch_namespaced_custom_object(self, group, version, ns, plural, name, body, **kw):
        self.calls.append({"body": body, **kw})
        if not kw.get("force"):
            e = ApiException(status=409, reason="Conflict")
            e.body = json.dumps(CONFLICT)
            raise e
        return {**body, "metadata": {**body["metadata"], "resourceVersion": "2"}}


@pytest.fixture
def fake_api(monkeypatch):
    import kubernetes.client
    FakeCustomObjects.calls = []
    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", FakeCustomObjects)
    return FakeCustomObjects


def test_apply_does_not_force_and_names_the_conflicting_fields(fake_api):
    with pytest.raises(kube.ApplyConflict) as err:
        kube.apply_object(None, POOL, "ns")
    assert fake_api.calls[-1]["force"] is False
    assert fake_api.calls[-1]["field_manager"] == kube.FIELD_MANAGER
    msg = str(err.value)
    assert ".spec.targetDedicatedNodes" in msg and "argocd-controller" in msg and "--force-conflicts" in msg


def test_apply_forces_only_when_asked(fake_api):
    verb, obj = kube.apply_object(None, POOL, "ns", force_conflicts=True)
    assert fake_api.calls[-1]["force"] is True
    assert verb == "configured"


def test_other_errors_are_not_reported_as_conflicts():
    e = ApiException(status=409, reason="Conflict")
    e.body = json.dumps({"kind": "Status", "reason": "AlreadyExists", "code": 409, "message": "exists"})
    assert kube.apply_conflict(e, "Pool ns/p") is None
    assert kube.apply_conflict(ApiException(status=422, reason="Invalid"), "Pool ns/p") is None


class FakeCluster:
    def __init__(self, conflict_on=()):
        self.conflict_on, self.forced = set(conflict_on), []

    def apply(self, body, dry_run=False, force_conflicts=False):
        self.forced.append((body["metadata"]["name"], force_conflicts))
        if body["metadata"]["name"] in self.conflict_on and not force_conflicts:
            raise kube.ApplyConflict(f"{body['kind']} ns/{body['metadata']['name']}: 1 field(s) are managed by another field manager")
        return "configured", body


@pytest.fixture
def manifest(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text(textwrap.dedent("""\
        apiVersion: podbatch.io/v1alpha1
        kind: Pool
        metadata: {name: p}
        spec: {targetDedicatedNodes: 1, nodeGroup: {provider: kwok}}
        ---
        apiVersion: podbatch.io/v1alpha1
        kind: Job
        metadata: {name: j}
        spec: {poolInfo: {poolId: p}}
        """))
    return str(f)


def test_apply_command_reports_conflicts_applies_the_rest_and_fails(monkeypatch, manifest, capsys):
    fake = FakeCluster(conflict_on={"p"})
    monkeypatch.setattr(cli, "_cluster", lambda args: fake)
    out = io.StringIO()
    assert cli.cmd_apply(cli.parse_args(["apply", "-f", manifest]), out) == 2
    assert fake.forced == [("p", False), ("j", False)]
    assert "job.podbatch.io/j configured" in out.getvalue() and "pool.podbatch.io/p configured" not in out.getvalue()
    assert "Pool ns/p" in capsys.readouterr().err


def test_apply_command_force_conflicts(monkeypatch, manifest):
    fake = FakeCluster(conflict_on={"p"})
    monkeypatch.setattr(cli, "_cluster", lambda args: fake)
    assert cli.cmd_apply(cli.parse_args(["apply", "-f", manifest, "--force-conflicts"]), io.StringIO()) == 0
    assert fake.forced == [("p", True), ("j", True)]


def test_a_task_is_applied_with_its_jobs_owner_reference():
    from podbatch.cli.main import with_job_owner
    job = {"apiVersion": "podbatch.io/v1alpha1", "kind": "Job", "metadata": {"name": "j", "uid": "u-1"}}
    task = {"kind": "Task", "metadata": {"name": "t"}, "spec": {"jobName": "j"}}
    owned = with_job_owner(task, job)
    assert owned["metadata"]["ownerReferences"] == [{"apiVersion": "podbatch.io/v1alpha1", "kind": "Job", "name": "j",
                                                     "uid": "u-1", "controller": True, "blockOwnerDeletion": False}]
    assert "ownerReferences" not in task["metadata"]                       # the manifest itself is left alone
    assert with_job_owner(owned, {**job, "metadata": {"name": "j", "uid": "u-2"}}) is owned   # one owner Job, kept
    assert with_job_owner(task, None) is task                               # the Job is not there (yet)
    assert with_job_owner(task, {"kind": "Job", "metadata": {"name": "j"}}) is task   # a dry run's Job has no uid
