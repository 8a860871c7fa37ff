"""Resource files and output files on the real node (issue 6 items 5-6).

Sources and destinations the pods reach at the host's pod-network address (10.244.0.1):
a plain HTTP server of the test, and Azurite (Microsoft's Azure Storage emulator, from
the npm registry, installed into the podbatch cache on first use) with containers and
SAS URLs made by azure-storage-blob; plus a ConfigMap, a Secret and a hostPath PV/PVC.
The real node is this machine, so files are checked on disk too.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kit import job, task, wait_for

pytestmark = pytest.mark.e2e
REAL_NODE = os.environ.get("PODBATCH_REAL_NODE", "localhost")
ON_THIS_MACHINE = REAL_NODE == "localhost"
HOST = os.environ.get("PODBATCH_HOST_FOR_PODS", "10.244.0.1")
CACHE = Path(os.environ.get("PODBATCH_CACHE", Path.home() / ".cache/podbatch"))
ACCOUNT = "devstoreaccount1"
# Azurite's documented well-known development key (not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

if not ON_THIS_MACHINE:
    pytestmark = [pytest.mark.e2e, pytest.mark.skip(reason="the servers of these tests live on the real node's host")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _azurite_bin() -> Path:
    prefix = CACHE / "azurite"
    exe = prefix / "node_modules/.bin/azurite-blob"
    if not exe.exists():
        if not shutil.which("npm"):
            pytest.skip("npm is not installed: cannot install Azurite (apt-get install npm)")
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(prefix), "azurite@3"],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not exe.exists():
            pytest.skip(f"npm install azurite@3 failed: {r.stderr[-500:]}")
    return exe


@pytest.fixture(scope="module")
def azurite():
    """Azurite's blob service on HOST; yields (service client, account URL); stopped after."""
    pytest.importorskip("azure.storage.blob", reason="azure-storage-blob is a dependency of podbatch: pip install -e .")
    from azure.storage.blob import BlobServiceClient
    exe = _azurite_bin()
    port = _free_port()
    location = tempfile.mkdtemp(prefix="podbatch-azurite-")
    log = open(Path(location) / "azurite.log", "wb")
    proc = subprocess.Popen([str(exe), "--blobHost", HOST, "--blobPort", str(port), "--loose", "--skipApiVersionCheck",
                             "--disableTelemetry", "--location", location], stdout=log, stderr=subprocess.STDOUT)
    account_url = f"http://{HOST}:{port}/{ACCOUNT}"
    try:
        def up():
            try:
                with socket.create_connection((HOST, port), timeout=1):
                    return True
            except OSError:
                assert proc.poll() is None, f"Azurite exited: {(Path(location) / 'azurite.log').read_text()[-1000:]}"
                return False
        wait_for("Azurite listening", up, 60)
        svc = BlobServiceClient(account_url=account_url, credential={"account_name": ACCOUNT, "account_key": KEY})
        yield svc, account_url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(location, ignore_errors=True)


def _container(svc, name: str, **perms) -> tuple[object, str]:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas
    cc = svc.get_container_client(name)
    cc.create_container()
    sas = generate_container_sas(ACCOUNT, name, account_key=KEY, permission=ContainerSasPermissions(**perms),
                                 expiry=datetime.now(timezone.utc) + timedelta(hours=2))
    return cc, f"{cc.url}?{sas}"


@pytest.fixture()
def web():
    """A plain HTTP server of the test on HOST serving a temp dir; yields (base URL, dir)."""
    root = Path(tempfile.mkdtemp(prefix="podbatch-web-"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer((HOST, 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://{HOST}:{srv.server_address[1]}", root
    finally:
        srv.shutdown()
        srv.server_close()
        shutil.rmtree(root, ignore_errors=True)


def _mode(p: Path) -> str:
    return oct(p.stat().st_mode & 0o777)[2:].rjust(4, "0")


def test_resource_files_from_http_blob_container_and_kubernetes(real_pool, objects, core_v1, namespace, web, azurite):
    from kubernetes import client
    base, root = web
    (root / "tool.sh").write_text("#!/bin/sh\necho tool ran\n")
    (root / "data").mkdir()
    (root / "data/table.csv").write_text("a,b\n1,2\n")
    svc, _ = azurite
    cc, sas_url = _container(svc, f"in{namespace[-6:]}", read=True, list=True)
    cc.upload_blob("job/in/one.txt", b"one\n")
    cc.upload_blob("job/in/deep/two.sh", b"echo two\n")
    cc.upload_blob("other/skip.txt", b"not me\n")
    core_v1.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="scripts"), data={"run.sh": "echo from-configmap\n"}))
    core_v1.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="creds"), string_data={"token": "s3cret\n"}))

    objects.create(job("rf", real_pool))
    resource_files = [
        {"httpUrl": f"{base}/tool.sh", "filePath": "tool.sh", "fileMode": "0755"},
        {"httpUrl": f"{base}/data/table.csv", "filePath": "inputs/table.csv", "fileMode": "0640"},
        {"storageContainerUrl": sas_url, "blobPrefix": "job/in/", "filePath": "blobs", "fileMode": "0750"},
        {"configMapKeyRef": {"name": "scripts", "key": "run.sh"}, "filePath": "run.sh", "fileMode": "0700"},
        {"secretKeyRef": {"name": "creds", "key": "token"}, "filePath": "secret/token", "fileMode": "0600"},
    ]
    # the command needs its files: it runs the downloaded tool and the ConfigMap's script
    objects.create(task("uses-files", "rf", "/bin/sh -c './tool.sh && sh run.sh && cat blobs/job/in/one.txt secret/token'",
                        id="rf-1", resourceFiles=resource_files))
    st = objects.wait_state("Task", "uses-files", "completed", 180)
    logs = core_v1.read_namespaced_pod_log(st["podName"], namespace, container="task")
    assert st["executionInfo"]["result"] == "success", (st, logs)
    assert logs.split() == ["tool", "ran", "from-configmap", "one", "s3cret"]

    wd = Path(st["nodeInfo"]["taskRootDirectory"]) / "wd"
    expected = {"tool.sh": "0755", "inputs/table.csv": "0640", "blobs/job/in/one.txt": "0750",
                "blobs/job/in/deep/two.sh": "0750", "run.sh": "0700", "secret/token": "0600"}
    for rel, mode in expected.items():
        assert (wd / rel).is_file(), f"{rel} missing in {wd}"
        assert _mode(wd / rel) == mode, (rel, _mode(wd / rel))
    assert (wd / "blobs/job/in/deep/two.sh").read_text() == "echo two\n"
    assert not (wd / "blobs/other").exists()   # blobPrefix: only job/in/


def test_missing_resource_file_is_a_preprocessing_error(real_pool, objects, namespace, web):
    base, _ = web
    objects.create(job("bad", real_pool, onTaskFailure="performexitoptionsjobaction"))
    url = f"{base}/no/such/file.bin"
    objects.create(task("missing", "bad", "/bin/true", resourceFiles=[{"httpUrl": url, "filePath": "f.bin"}],
                        constraints={"maxTaskRetryCount": 3},
                        exitConditions={"preProcessingError": {"jobAction": "terminate"}}))
    st = objects.wait_state("Task", "missing", "completed", 180)
    info = st["executionInfo"]
    failure = info["failureInfo"]
    assert info["result"] == "failure" and info["retryCount"] == 0, info
    assert failure["category"] == "usererror" and failure["code"] == "BlobNotFound", failure
    assert url in failure["message"] and "404" in failure["message"], failure
    assert {"name": "HttpStatusCode", "value": "404"} in failure["details"]
    jst = objects.wait_job_done("bad", 120)   # exitConditions.preProcessingError: terminate
    assert jst["executionInfo"]["terminateReason"] == "TaskFailed"


@pytest.fixture()
def pvc(core_v1, namespace):
    """A hostPath PersistentVolume (cluster-scoped, deleted after) bound to claim `results`."""
    path = Path(tempfile.mkdtemp(prefix="podbatch-pv-"))
    path.chmod(0o777)   # the task writes as its non-root user
    pv_name = f"{namespace}-results"
    core_v1.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name, "labels": {"podbatch.io/test": "1"}},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path)},
                 "claimRef": {"namespace": namespace, "name": "results"}}})
    try:
        core_v1.create_namespaced_persistent_volume_claim(namespace, {
            "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "results"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv_name,
                     "resources": {"requests": {"storage": "1Gi"}}}})
        wait_for("claim results Bound", lambda: core_v1.read_namespaced_persistent_volume_claim(
            "results", namespace).status.phase == "Bound", 60)
        yield "results", path
    finally:
        for delete in (lambda: core_v1.delete_namespaced_persistent_volume_claim("results", namespace),
                       lambda: core_v1.delete_persistent_volume(pv_name)):
            try:
                delete()
            except Exception:
                pass
        try:
            wait_for(f"PV {pv_name} gone", lambda: pv_name not in {v.metadata.name for v in core_v1.list_persistent_volume().items}, 60)
        except Exception:
            pass
        shutil.rmtree(path, ignore_errors=True)


def test_a_task_per_file_collection_runs_one_task_per_blob_and_a_failed_listing_holds_its_job(
        real_pool, objects, namespace, azurite):
    """taskPerFile (issue 13): the operator lists the container once, records the files in
    the collection's status, and each task gets its blob by {url}; a listing that fails
    stalls the collection with the reason, and its job does not complete without it."""
    svc, _ = azurite
    cc, sas_url = _container(svc, "perfile", read=True, list=True)
    for name, data in (("in/alpha.txt", b"alpha\n"), ("in/deep/beta.txt", b"beta\n"), ("out/skip.txt", b"no\n")):
        cc.upload_blob(name, data)
    objects.create(job("pf", real_pool, onAllTasksComplete="terminatejob"))
    objects.create({"kind": "TaskCollection", "metadata": {"name": "each"}, "spec": {"jobName": "pf", "taskPerFile": {
        "source": {"containerUrl": sas_url, "prefix": "in/"},
        "repeatTask": {"commandLine": "grep -qx {fileNameWithoutExtension} {fileName}",
                       "resourceFiles": [{"httpUrl": "{url}", "filePath": "{fileName}"}],
                       "environmentSettings": [{"name": "BLOB", "value": "{filePath}"}]}}}})
    done = objects.wait_job_done("pf", 180)
    assert done["taskCounts"]["succeeded"] == 2 and done["taskCounts"]["failed"] == 0, done
    st = objects.status("TaskCollection", "each")
    assert st["files"] == ["in/alpha.txt", "in/deep/beta.txt"] and st["size"] == 2 and st["succeededIndexes"] == "0-1", st

    # a SAS that does not allow listing: stalled with the storage's answer; the job waits
    _, no_list = _container(svc, "nolist", read=True)
    objects.create(job("bad", real_pool, onAllTasksComplete="terminatejob"))
    objects.create(task("bad-first", "bad", "true"))
    objects.create({"kind": "TaskCollection", "metadata": {"name": "unlisted"}, "spec": {"jobName": "bad", "taskPerFile": {
        "source": {"containerUrl": no_list}, "repeatTask": {"commandLine": "true"}}}})
    cond = wait_for("the listing's failure", lambda: next((c for c in objects.status("TaskCollection", "unlisted").get("conditions") or []
                                                           if c["type"] == "Stalled" and c["status"] == "True"), None), 90)
    assert cond["reason"] == "FileListingFailed" and "HTTP 403" in cond["message"], cond
    objects.wait_state("Task", "bad-first", "completed", 120)
    time.sleep(3)
    bad = objects.status("Job", "bad")
    assert bad.get("state") == "active" and bad["taskCounts"]["active"] == 1, bad


def test_output_files_to_a_blob_container_and_a_pvc_per_upload_condition(real_pool, objects, namespace, azurite, pvc):
    svc, _ = azurite
    cc, sas_url = _container(svc, f"out{namespace[-6:]}", read=True, list=True, write=True, create=True)
    claim, pv_dir = pvc
    objects.create(job("of", real_pool))
    make = "mkdir -p out/sub && echo A > out/a.dat && echo B > out/sub/b.dat && echo note > out/note.txt && echo done"

    def outputs(prefix: str) -> list[dict]:
        return [
            {"filePattern": "../std*.txt", "uploadOptions": {"uploadCondition": "taskSuccess"},
             "destination": {"container": {"containerUrl": sas_url, "path": f"{prefix}/logs"}}},
            {"filePattern": "out/**/*.dat", "uploadOptions": {"uploadCondition": "taskFailure"},
             "destination": {"container": {"containerUrl": sas_url, "path": f"{prefix}/failed"}}},
            {"filePattern": "out/**", "uploadOptions": {"uploadCondition": "taskCompletion"},
             "destination": {"persistentVolumeClaim": {"claimName": claim, "path": prefix}}},
            {"filePattern": "out/a.dat", "destination": {"container": {"containerUrl": sas_url, "path": f"{prefix}/single/a.dat"}}},
        ]
    objects.create(task("ok", "of", f"/bin/sh -c '{make}'", outputFiles=outputs("ok")))
    objects.create(task("fails", "of", f"/bin/sh -c '{make}; exit 3'", outputFiles=outputs("fails")))
    ok = objects.wait_state("Task", "ok", "completed", 180)
    fails = objects.wait_state("Task", "fails", "completed", 180)
    assert ok["executionInfo"]["result"] == "success", ok
    assert fails["executionInfo"]["exitCode"] == 3 and fails["executionInfo"]["failureInfo"]["code"] == "FailureExitCode", fails

    blobs = {b.name: cc.download_blob(b.name).readall() for b in cc.list_blobs()}
    assert blobs == {
        "ok/logs/stdout.txt": b"done\n", "ok/logs/stderr.txt": b"", "ok/single/a.dat": b"A\n",   # success: taskSuccess
        "fails/failed/a.dat": b"A\n", "fails/failed/sub/b.dat": b"B\n", "fails/single/a.dat": b"A\n",   # failure: taskFailure
    }, sorted(blobs)
    for prefix in ("ok", "fails"):   # taskCompletion: both, with the directory structure below the pattern's base
        assert (pv_dir / prefix / "a.dat").read_text() == "A\n"
        assert (pv_dir / prefix / "sub/b.dat").read_text() == "B\n"
        assert (pv_dir / prefix / "note.txt").read_text() == "note\n"
    task_dir = Path(ok["nodeInfo"]["taskRootDirectory"])
    assert "uploaded" in (task_dir / "fileuploadout.txt").read_text()


def test_failed_upload_is_a_file_upload_error(real_pool, objects, namespace, azurite):
    svc, _ = azurite
    _, read_only = _container(svc, f"ro{namespace[-6:]}", read=True, list=True)   # no write permission
    objects.create(job("up", real_pool, onTaskFailure="performexitoptionsjobaction"))
    objects.create(task("denied", "up", "/bin/sh -c 'echo x > r.txt'",
                        outputFiles=[{"filePattern": "r.txt", "destination": {"container": {"containerUrl": read_only}}}],
                        exitConditions={"fileUploadError": {"jobAction": "terminate"}}))
    st = objects.wait_state("Task", "denied", "completed", 180)
    info = st["executionInfo"]
    assert info["result"] == "failure" and info["exitCode"] == 0, info
    failure = info["failureInfo"]
    assert failure["code"] == "FileUploadError" and failure["category"] == "usererror", failure
    assert "HTTP 403" in failure["message"] and "sig=" not in failure["message"].replace("sig=REDACTED", ""), failure
    jst = objects.wait_job_done("up", 120)
    assert jst["executionInfo"]["terminateReason"] == "TaskFailed"
