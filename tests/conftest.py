"""Test tiers and the cluster they run against.

unit tests need nothing. integration and e2e tests run against the cluster named by
KUBECONFIG, or, when none is given, against the local cluster of hack/ which this
session brings up once and takes down at the end (unless it was already up).
The node simulator (hack/nodesim.py) is started for the session so Nodes marked
kwok.x-k8s.io/node=fake have a kubelet; set PODBATCH_NODESIM=external when a real
kwok (or an already running simulator) serves them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HACK = ROOT / "hack"
# Namespaces of this test session share a prefix; the session's operator serves only
# those, so two sessions (or a developer's operator) on one cluster never meet.
SESSION = uuid.uuid4().hex[:5]
NS_PREFIX = f"pb{SESSION}-"
LOCAL_KUBECONFIG = Path(os.environ.get("PODBATCH_CACHE", Path.home() / ".cache/podbatch")) / "cluster/kubeconfig"


def pytest_collection_modifyitems(config, items):
    # A test with no tier marker is a unit test.
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("integration", "e2e", "bench")):
            item.add_marker(pytest.mark.unit)
    # The fault campaign restarts the API server and stops a kubelet: it runs last, so no
    # other test of the session meets a fault it did not ask for.
    items.sort(key=lambda item: item.nodeid.startswith("tests/e2e/test_faults.py"))


def _cluster_alive(kubeconfig: str) -> bool:
    r = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "get", "--raw", "/readyz"],
                       capture_output=True, text=True, timeout=20)
    return r.returncode == 0


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """Path of the kubeconfig of the cluster under test, bringing up the local one if needed."""
    given = os.environ.get("KUBECONFIG")
    if given:
        yield given
        return
    started = False
    if not (LOCAL_KUBECONFIG.exists() and _cluster_alive(str(LOCAL_KUBECONFIG))):
        subprocess.run([str(HACK / "cluster-up.sh")], check=True)
        started = True
    os.environ["KUBECONFIG"] = str(LOCAL_KUBECONFIG)
    try:
        yield str(LOCAL_KUBECONFIG)
    finally:
        os.environ.pop("KUBECONFIG", None)
        if started and os.environ.get("PODBATCH_KEEP_CLUSTER") != "1":
            subprocess.run([str(HACK / "cluster-down.sh")], check=False)


@pytest.fixture(scope="session")
def api_client(kubeconfig):
    from kubernetes import config
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="session")
def core_v1(api_client):
    from kubernetes import client
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def custom_api(api_client):
    from kubernetes import client
    return client.CustomObjectsApi(api_client)


def _local_nodesim_running(kubeconfig: str) -> bool:
    pid_file = LOCAL_KUBECONFIG.parent / "pids" / "nodesim.pid"
    if Path(kubeconfig) != LOCAL_KUBECONFIG or not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
        return True
    except (OSError, ValueError):
        return False


@pytest.fixture(scope="session")
def nodesim(kubeconfig):
    """The node simulator for the whole session (hack/nodesim.py). The local cluster runs
    its own; other clusters get one here unless PODBATCH_NODESIM=external (a real kwok)."""
    if os.environ.get("PODBATCH_NODESIM") == "external" or _local_nodesim_running(kubeconfig):
        yield None
        return
    log = open(LOCAL_KUBECONFIG.parent / "logs" / "nodesim-tests.log", "ab") if LOCAL_KUBECONFIG.parent.exists() else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, str(HACK / "nodesim.py"), "--kubeconfig", kubeconfig],
                            stdout=log, stderr=subprocess.STDOUT)
    time.sleep(1.0)
    assert proc.poll() is None, "node simulator died at start; see its log"
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture()
def namespace(core_v1, request):
    """A fresh namespace for one test, deleted afterwards. Its pools go first, while the
    session's operator still runs, so their nodes are released and nothing is left."""
    from kubernetes import client
    name = f"{NS_PREFIX}{uuid.uuid4().hex[:6]}"
    core_v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"podbatch.io/test": "1"})))
    yield name
    if "operator" in request.fixturenames:
        _delete_pools(request.getfixturevalue("custom_api"), name)
    try:
        core_v1.delete_namespace(name)
    except Exception:
        pass


def _delete_pools(custom_api, ns: str, timeout: float = 90) -> None:
    from kubernetes.client.rest import ApiException
    try:
        for pool in custom_api.list_namespaced_custom_object("podbatch.io", "v1alpha1", ns, "pools")["items"]:
            custom_api.delete_namespaced_custom_object("podbatch.io", "v1alpha1", ns, "pools", pool["metadata"]["name"])
        deadline = time.monotonic() + timeout
        while custom_api.list_namespaced_custom_object("podbatch.io", "v1alpha1", ns, "pools")["items"]:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    except ApiException:
        pass


@pytest.fixture(scope="session")
def crds(api_client):
    from kit import install_crds
    install_crds(api_client)


@pytest.fixture(scope="session")
def operator(kubeconfig, crds, nodesim):
    """podbatch-operator running for the session, cluster-wide (tests use their own namespaces)."""
    from kit import OperatorProcess
    op = OperatorProcess(kubeconfig, f"operator-{SESSION}", env={"PODBATCH_NAMESPACES": f"{NS_PREFIX}*",
                                                                        # autoscale tests need fresh samples, not 30 s old ones
                                                                        "PODBATCH_AUTOSCALE_SAMPLE_SECONDS": "2"}).start()
    time.sleep(2)
    assert op.alive(), f"the operator died at start; see {op.log_path}"
    yield op
    op.stop()


@pytest.fixture()
def objects(custom_api, namespace):
    from kit import Objects
    return Objects(custom_api, namespace)


REAL_NODE = os.environ.get("PODBATCH_REAL_NODE", "localhost")


@pytest.fixture()
def real_pool(operator, objects, core_v1):
    """A static pool `real` holding the cluster's real node (2 slots); always gives it back."""
    from kit import wait_for
    wait_for(f"node {REAL_NODE} to belong to no pool", lambda: "podbatch.io/pool" not in (
        core_v1.read_node(REAL_NODE).metadata.labels or {}), 300, interval=2)
    objects.create({"kind": "Pool", "metadata": {"name": "real"}, "spec": {
        "nodeGroup": {"provider": "static", "static": {"nodeSelector": {"kubernetes.io/hostname": REAL_NODE}}},
        "targetDedicatedNodes": 1, "taskSlotsPerNode": 2}})
    try:
        wait_for("the real node idle in pool real", lambda: any(
            (c.get("status") or {}).get("state") == "idle" for c in objects.list("ComputeNode")), 120)
        yield "real"
    finally:
        objects.delete("Pool", "real")
        wait_for("the real node released", lambda: "podbatch.io/pool" not in (
            core_v1.read_node(REAL_NODE).metadata.labels or {}), 120)
