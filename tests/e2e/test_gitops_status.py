"""GitOps-ready status on real objects: the kstatus conditions the operator writes, `kubectl
wait --for=condition=Ready`, and the Argo CD health scripts (deploy/argocd/health) run in Lua
against the objects' live status."""
from __future__ import annotations

import pathlib
import subprocess
import time

import pytest

from kit import job, kwok_pool, sim, task, wait_for

pytestmark = pytest.mark.e2e

HEALTH = pathlib.Path(__file__).resolve().parents[2] / "deploy" / "argocd" / "health"
KUBECTL = "/usr/bin/kubectl"


def health(kind: str, obj: dict) -> tuple[str, str]:
    lupa = pytest.importorskip("lupa")
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute((HEALTH / f"podbatch.io_{kind}.lua").read_text())
    return hs["status"], hs["message"]


def conds(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def kubectl_wait(kubeconfig: str, ns: str, what: str, condition: str = "Ready", timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([KUBECTL, "--kubeconfig", kubeconfig, "-n", ns, "wait", f"--for=condition={condition}", what,
                           f"--timeout={timeout}s"], capture_output=True, text=True, timeout=timeout + 30)


@pytest.fixture()
def pools_cleaned(operator, objects):
    yield
    for p in objects.list("Pool"):
        objects.delete("Pool", p["metadata"]["name"])
    wait_for("the test's pools deleted", lambda: not objects.list("Pool"), timeout=120)


def follow_health(objects, kind: str, name: str, until: str, timeout: float = 90) -> list[str]:
    """The distinct health statuses of the live object, polled until `until` is reached."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = objects.get(kind, name)
        status = health(kind, obj)[0] if obj.get("status") else "NoStatus"
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == until:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{kind} {name} never became {until}: {seen}; status {objects.get(kind, name).get('status')}")


def test_pool_progresses_to_healthy_and_kubectl_wait_works(operator, objects, kubeconfig, pools_cleaned):
    objects.create(kwok_pool("gp", 3, startTask={"commandLine": "/bin/sh -c 'echo prepared'"}))
    seen = follow_health(objects, "Pool", "gp", "Healthy")
    assert "Progressing" in seen and "Degraded" not in seen, seen
    r = kubectl_wait(kubeconfig, objects.ns, "bpool/gp")
    assert r.returncode == 0, r.stderr
    pool = objects.get("Pool", "gp")
    st = pool["status"]
    assert st["observedGeneration"] == pool["metadata"]["generation"]
    c = conds(pool)
    assert c["Ready"]["status"] == "True" and c["Reconciling"]["status"] == "False" and c["Stalled"]["status"] == "False"
    assert all(x["observedGeneration"] == pool["metadata"]["generation"] for x in c.values())
    ready_since = c["Ready"]["lastTransitionTime"]

    # a job runs on it and completes: the pool's nodes go running and back (status writes),
    # its Ready stays True with the same transition time
    objects.create(job("done", "gp", onAllTasksComplete="terminatejob"))
    for i in range(3):
        objects.create(task(f"done-{i}", "done", annotations=sim(1.0)))
    r = kubectl_wait(kubeconfig, objects.ns, "bjob/done")
    assert r.returncode == 0, r.stderr
    follow_health(objects, "Job", "done", "Healthy")
    done = objects.wait_state("Job", "done", "completed", timeout=90)
    assert conds({"status": done})["Completed"]["status"] == "True"
    r = kubectl_wait(kubeconfig, objects.ns, "bjob/done", condition="Completed")
    assert r.returncode == 0, r.stderr
    for t in objects.list("Task"):
        assert health("Task", t)[0] == "Healthy", t.get("status")
        assert conds(t)["Ready"]["status"] == "True"
    assert conds(objects.get("Pool", "gp"))["Ready"]["lastTransitionTime"] == ready_since

    # resizing: Progressing (Reconciling) again, then Healthy at the new target
    objects.patch("Pool", "gp", {"spec": {"targetDedicatedNodes": 4}})
    seen = follow_health(objects, "Pool", "gp", "Healthy")
    assert seen[0] == "Progressing", seen
    pool = objects.get("Pool", "gp")
    assert pool["status"]["observedGeneration"] == pool["metadata"]["generation"]
    assert pool["status"]["currentDedicatedNodes"] == 4
    for c in objects.list("ComputeNode"):
        assert health("ComputeNode", c)[0] == "Healthy", c.get("status")


def test_job_on_a_missing_pool_is_degraded(operator, objects, kubeconfig):
    objects.create(job("lost", "no-such-pool"))
    follow_health(objects, "Job", "lost", "Degraded", timeout=60)
    j = objects.get("Job", "lost")
    c = conds(j)
    assert c["Stalled"]["status"] == "True" and c["Stalled"]["reason"] == "PoolNotFound"
    assert c["Ready"]["status"] == "False" and c["Schedulable"]["status"] == "False"
    assert "no-such-pool" in health("Job", j)[1]
    r = kubectl_wait(kubeconfig, objects.ns, "bjob/lost", condition="Stalled", timeout=30)
    assert r.returncode == 0, r.stderr
