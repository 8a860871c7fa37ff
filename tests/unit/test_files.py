"""Resource and output files (issue 6 items 5-6): script generation, globs, upload
conditions, container expansion, failure reporting; and the generated scripts run under
busybox against local HTTP servers when this machine has a busybox."""
from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from podbatch.core import files, pods, tasks

BUSYBOX = shutil.which("busybox")
needs_busybox = pytest.mark.skipif(not BUSYBOX, reason="no busybox on this machine to run the generated scripts")


# ------------------------------------------------------------------ globs

@pytest.mark.parametrize("pattern,yes,no", [
    ("*.txt", ["a.txt", ".txt"], ["d/a.txt", "a.txt.bak"]),
    ("**/*.txt", ["a.txt", "d/a.txt", "d/e/a.txt"], ["a.txtx", "d/a.dat"]),
    ("out/**", ["out/a", "out/d/e"], ["outx/a", "a"]),
    ("a?c.[ch]", ["abc.c", "axc.h"], ["abbc.c", "abc.o", "a/c.c"]),
    ("[!x]*.log", ["a.log"], ["x.log"]),
    ("d/**/e/*.o", ["d/e/1.o", "d/x/y/e/2.o"], ["d/e/f/1.o", "e/1.o"]),
    ("v+(1).txt", ["v+(1).txt"], ["vv(1).txt", "v1.txt"]),
])
def test_glob_regex(pattern, yes, no):
    rx = re.compile(files.glob_regex(pattern))
    for p in yes:
        assert rx.match(p), (pattern, p, rx.pattern)
    for p in no:
        assert not rx.match(p), (pattern, p, rx.pattern)


def test_split_pattern():
    assert files.split_pattern("../std*.txt") == ("..", "std*.txt")
    assert files.split_pattern("out/**/*.dat") == ("out", "**/*.dat")
    assert files.split_pattern("*.log") == (".", "*.log")
    assert files.split_pattern("/abs/x/*.o") == ("/abs/x", "*.o")
    assert files.split_pattern("result.txt") == ("result.txt", None)


def test_upload_conditions():
    assert files.condition_test("taskSuccess") == '[ "$rc" -eq 0 ]'
    assert files.condition_test("taskFailure") == '[ "$rc" -ne 0 ]'
    assert files.condition_test("taskCompletion") == files.condition_test(None) == "true"


# ------------------------------------------------------------------ resource files

def test_expand_container_listing_keeps_sas_and_names_under_file_path():
    url = "https://acct.blob.core.windows.net/inputs?sv=2024&sig=abc%2B"
    rfs = [{"httpUrl": "http://x/a", "filePath": "a"},
           {"storageContainerUrl": url, "blobPrefix": "in/", "filePath": "data", "fileMode": "0755"}]
    assert files.container_listing_wanted(rfs) == [(url, "in/")]
    out = files.expand_resource_files(rfs, {(url, "in/"): ["in/x.sh", "in/sub dir/y.txt", "in/dir/"]})
    assert out[0] == rfs[0]
    assert out[1] == {"httpUrl": "https://acct.blob.core.windows.net/inputs/in/x.sh?sv=2024&sig=abc%2B",
                      "filePath": "data/in/x.sh", "fileMode": "0755"}
    assert out[2]["httpUrl"].startswith("https://acct.blob.core.windows.net/inputs/in/sub%20dir/y.txt?sv=")
    assert len(out) == 3   # the directory marker blob is skipped


def test_expand_failures_become_error_entries():
    url = "http://h/c?sig=s"
    out = files.expand_resource_files([{"storageContainerUrl": url}], {(url, ""): "listing the container failed: HTTP 403 Forbidden"})
    assert out == [{"error": "listing the container failed: HTTP 403 Forbidden", "url": url}]
    out = files.expand_resource_files([{"storageContainerUrl": url}], {(url, ""): ["../escape"]})
    assert "must stay inside" in out[0]["error"]
    script = files.resource_script(out)
    assert "pb_fail" in script.splitlines()[-1]


def test_resource_script_steps():
    script = files.resource_script([
        {"httpUrl": "https://h/x.sh", "fileMode": "755"},
        {"httpUrl": "http://h/y", "filePath": "in/y.txt"},
        {"secretKeyRef": {"name": "s", "key": "k"}, "filePath": "key.pem", "fileMode": "0400"},
        {"httpUrl": "http://h/z", "filePath": "/etc/passwd"},
        {"storageContainerUrl": "http://h/c"},
    ])
    lines = script.strip().splitlines()[-5:]
    assert lines[0] == "pb_get https://h/x.sh x.sh 0755 --no-check-certificate"
    assert lines[1] == "pb_get http://h/y in/y.txt 0770 ''"
    assert lines[2] == "pb_copy secret:s/k /podbatch-resources/2/file key.pem 0400"
    assert lines[3].startswith("pb_fail http://h/z") and "must stay inside" in lines[3]
    assert lines[4].startswith("pb_fail http://h/c") and "did not list" in lines[4]


def test_download_failure_info():
    info = files.download_failure("url=http://h:1/a/b.txt?sv=1&sig=SECRET\nwget: server returned error: HTTP/1.1 404 Not Found", 1)
    assert info["category"] == "usererror" and info["code"] == "BlobNotFound"
    assert "http://h:1/a/b.txt" in info["message"] and "404" in info["message"] and "SECRET" not in info["message"]
    assert {"name": "HttpStatusCode", "value": "404"} in info["details"]
    assert files.download_failure("url=u\nHTTP/1.1 403 Forbidden")["code"] == "BlobAccessDenied"
    assert files.download_failure("url=u\nlisting the container failed: HTTP 403 AuthorizationFailure")["code"] == "BlobAccessDenied"
    assert files.download_failure("url=u\ncan't connect to remote host")["code"] == "BlobDownloadMiscError"
    assert files.download_failure("", 2)["message"].endswith("exited with code 2")


# ------------------------------------------------------------------ the pod

def _pod(spec: dict, **kw) -> dict:
    task = {"metadata": {"name": "t1", "uid": "u"}, "spec": {"jobName": "j", "commandLine": "/bin/true", **spec}}
    job = {"metadata": {"name": "j"}, "spec": {}}
    placement = pods.Placement(namespace="ns", pool="p", node_name="n", compute_node="cn")
    return pods.task_pod(task=task, job=job, pool_spec={}, placement=placement, attempt=1, **kw)


def test_task_pod_without_files_is_unchanged():
    pod = _pod({})
    assert "initContainers" not in pod["spec"]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["podbatch-node", pods.WRAPPER_VOLUME]


def test_task_pod_with_files():
    pod = _pod({"resourceFiles": [{"configMapKeyRef": {"name": "cm", "key": "run.sh"}, "filePath": "run.sh", "fileMode": "0755"}],
                "outputFiles": [{"filePattern": "*.log", "destination": {"persistentVolumeClaim": {"claimName": "res", "path": "x"}}}]},
               tools_image="busybox:tools")
    init = pod["spec"]["initContainers"][0]
    main = pod["spec"]["containers"][0]
    assert init["name"] == files.RESOURCE_CONTAINER and init["image"] == "busybox:tools"
    assert init["securityContext"] == main["securityContext"] and init["securityContext"]["runAsUser"] == pods.NONADMIN_UID
    assert init["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {m["name"] for m in init["volumeMounts"]} == {"podbatch-node", "podbatch-tools", "podbatch-rf-0"}
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert vols["podbatch-rf-0"]["configMap"] == {"name": "cm", "items": [{"key": "run.sh", "path": "file"}],
                                                  "optional": True, "defaultMode": 0o444}
    assert vols["podbatch-out-0"]["persistentVolumeClaim"] == {"claimName": "res"}
    assert {"name": "podbatch-out-0", "mountPath": "/podbatch-outputs/res"} in main["volumeMounts"]
    env = {e["name"]: e["value"] for e in main["env"]}
    assert "pb_cp" in env["PODBATCH_UPLOAD"]
    assert "PODBATCH_UPLOAD" not in {e["name"] for e in init["env"]}
    assert "AZ_BATCH_TASK_WORKING_DIR" in {e["name"] for e in init["env"]}


def test_subtasks_get_no_resource_files():
    pod = _pod({"resourceFiles": [{"httpUrl": "http://h/x", "filePath": "x"}]}, resource_files=[])
    assert "initContainers" not in pod["spec"]


# ------------------------------------------------------------------ the state machine

def _k8s_pod(phase: str, init: dict | None = None, main: dict | None = None) -> dict:
    st: dict = {"phase": phase}
    if init:
        st["initContainerStatuses"] = [{"name": files.RESOURCE_CONTAINER, "state": {"terminated": init}}]
    st["containerStatuses"] = [{"name": "task", "state": {"terminated": main} if main else {"waiting": {"reason": "PodInitializing"}}}]
    return {"metadata": {"name": "p"}, "status": st}


RUNNING_STATUS = {"state": "preparing", "attempt": 1, "podName": "p", "executionInfo": {"retryCount": 0}}
EXIT_CONDITIONS = {"exitConditions": {"preProcessingError": {"jobAction": "terminate"}, "fileUploadError": {"jobAction": "disable"},
                                      "exitCodes": [{"code": 3, "exitOptions": {"jobAction": "none"}}]},
                   "constraints": {"maxTaskRetryCount": 3}}


def test_download_failure_completes_without_retry_and_obeys_preprocessing_error():
    view = tasks.pod_view(_k8s_pod("Failed", init={"exitCode": 1, "message": "url=http://h/x.txt\nwget: server returned error: HTTP/1.1 404 Not Found"}))
    out = tasks.observe_attempt(task_spec=EXIT_CONDITIONS, job_spec={}, status=RUNNING_STATUS, pod=view, now="t")
    info = out.status["executionInfo"]
    assert out.status["state"] == "completed" and info["result"] == "failure" and info["retryCount"] == 0
    assert info["failureInfo"]["code"] == "BlobNotFound" and "http://h/x.txt" in info["failureInfo"]["message"]
    assert out.job_action == "terminate"


def test_upload_failure_after_success_is_a_file_upload_error():
    view = tasks.pod_view(_k8s_pod("Succeeded", init={"exitCode": 0},
                                   main={"exitCode": 0, "message": "podbatch:FileUploadError: upload of a.txt to http://h/c/a.txt failed: HTTP 403"}))
    out = tasks.observe_attempt(task_spec=EXIT_CONDITIONS, job_spec={}, status={**RUNNING_STATUS, "state": "running"}, pod=view, now="t")
    info = out.status["executionInfo"]
    assert info["result"] == "failure" and info["exitCode"] == 0
    assert info["failureInfo"] == {"category": "usererror", "code": "FileUploadError",
                                   "message": "Output files could not be uploaded: upload of a.txt to http://h/c/a.txt failed: HTTP 403"}
    assert out.job_action == "disable"


def test_upload_failure_with_a_named_exit_code_keeps_that_exit_codes_action():
    spec = {**EXIT_CONDITIONS, "constraints": {"maxTaskRetryCount": 0}}
    for code, action in ((3, "none"), (4, "disable")):
        view = tasks.pod_view(_k8s_pod("Failed", main={"exitCode": code, "message": "podbatch:FileUploadError: x"}))
        out = tasks.observe_attempt(task_spec=spec, job_spec={}, status={**RUNNING_STATUS, "state": "running"}, pod=view, now="t")
        assert out.status["executionInfo"]["failureInfo"]["code"] == "FailureExitCode"
        assert out.job_action == action


# ------------------------------------------------------------------ the scripts under busybox

@pytest.fixture()
def bb(tmp_path):
    """A PATH of busybox applets only (what the task image has)."""
    d = tmp_path / "bin"
    d.mkdir()
    for a in ("sh", "wget", "nc", "find", "grep", "sed", "wc", "cp", "mkdir", "head", "tail", "cat", "rm", "sleep",
              "dirname", "chmod", "printf", "ls"):
        os.symlink(BUSYBOX, d / a)
    return str(d)


class _Handler(http.server.SimpleHTTPRequestHandler):
    puts: dict = {}

    def do_PUT(self):  # noqa: N802
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n)
        if "deny" in self.path or self.headers.get("x-ms-blob-type") != "BlockBlob":
            self.send_response(403)
        else:
            self.puts[self.path] = body
            self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    _Handler.puts = {}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(root)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", root, _Handler.puts
    srv.shutdown()


def _run(bb_path: str, script: str, task_dir: Path, *args: str) -> tuple[int, str, str]:
    env = {"PATH": bb_path, "AZ_BATCH_TASK_DIR": str(task_dir), "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"),
           "PODBATCH_TERMINATION_LOG": str(task_dir / "termination-log"), "TMPDIR": str(task_dir)}
    r = subprocess.run([BUSYBOX, "sh", "-c", script, "x", *args], env=env, capture_output=True, text=True, timeout=60)
    log = task_dir / "termination-log"
    return r.returncode, log.read_text() if log.exists() else "", r.stderr


@needs_busybox
def test_resource_script_downloads_with_modes_and_reports_a_404(bb, server, tmp_path):
    base, root, _ = server
    (root / "tool.sh").write_text("echo hi\n")
    (root / "d").mkdir()
    (root / "d" / "data.txt").write_text("data\n")
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    script = files.resource_script([{"httpUrl": f"{base}/tool.sh", "fileMode": "0755"},
                                    {"httpUrl": f"{base}/d/data.txt", "filePath": "in/deep/data.txt", "fileMode": "0640"}])
    rc, msg, err = _run(bb, script, task_dir)
    assert rc == 0, err
    assert (task_dir / "wd/tool.sh").read_text() == "echo hi\n"
    assert oct((task_dir / "wd/tool.sh").stat().st_mode & 0o777) == "0o755"
    assert oct((task_dir / "wd/in/deep/data.txt").stat().st_mode & 0o777) == "0o640"

    rc, msg, err = _run(bb, files.resource_script([{"httpUrl": f"{base}/missing.bin", "filePath": "m"}]), task_dir)
    assert rc == 1 and not (task_dir / "wd/m").exists()
    info = files.download_failure(msg, rc)
    assert info["code"] == "BlobNotFound" and f"{base}/missing.bin" in info["message"], info


@needs_busybox
def test_upload_script_per_condition_globs_and_failures(bb, server, tmp_path, monkeypatch):
    base, _, puts = server
    task_dir = tmp_path / "task"
    (task_dir / "wd/out/sub").mkdir(parents=True)
    (task_dir / "stdout.txt").write_text("so\n")
    (task_dir / "wd/out/a.dat").write_text("a")
    (task_dir / "wd/out/sub/b c.dat").write_text("bc")
    (task_dir / "wd/out/skip.txt").write_text("x")
    pvc = tmp_path / "pvc"
    outputs = [
        {"filePattern": "../std*.txt", "destination": {"container": {"containerUrl": f"{base}/acct/cont?sv=1&sig=s", "path": "logs"}},
         "uploadOptions": {"uploadCondition": "taskSuccess"}},
        {"filePattern": "out/**/*.dat", "destination": {"persistentVolumeClaim": {"claimName": "res", "path": "run1"}}},
        {"filePattern": "out/a.dat", "destination": {"httpUrl": f"{base}/put/a-on-failure"},
         "uploadOptions": {"uploadCondition": "taskFailure"}},
    ]
    script = files.upload_plan(outputs).script.replace(files.OUTPUTS_DIR + "/res", str(pvc))
    rc, msg, err = _run(bb, script, task_dir, "0")
    assert rc == 0 and msg == "", err
    assert puts == {"/acct/cont/logs/stdout.txt?sv=1&sig=s": b"so\n"}
    assert (pvc / "run1/a.dat").read_text() == "a" and (pvc / "run1/sub/b c.dat").read_text() == "bc"
    assert not (pvc / "run1/skip.txt").exists()

    puts.clear()
    rc, msg, err = _run(bb, script, task_dir, "2")
    assert rc == 0, err
    assert set(puts) == {"/put/a-on-failure"}   # taskSuccess skipped, taskFailure uploaded

    bad = files.upload_plan([{"filePattern": "out/*.dat", "destination": {"httpUrl": f"{base}/deny"}},
                             {"filePattern": "nothere.txt", "destination": {"httpUrl": f"{base}/x"}}]).script
    rc, msg, err = _run(bb, bad, task_dir, "0")
    assert rc == 1
    reason = files.upload_failure(msg)
    assert "HTTP 403" in reason and "no file nothere.txt" in reason, msg


def test_common_resource_files_go_to_the_task_directory():
    script = files.resource_script(files.into_task_dir(
        [{"configMapKeyRef": {"name": "cm", "key": "serve.sh"}, "filePath": "bin/serve.sh", "fileMode": "0755"},
         {"httpUrl": "http://h/data", "filePath": "d"}]) + [{"httpUrl": "http://h/own", "filePath": "own"}])
    steps = script.splitlines()[-3:]
    assert steps[0] == 'pb_copy configmap:cm/serve.sh /podbatch-resources/0/file "$AZ_BATCH_TASK_DIR"/bin/serve.sh 0755'
    assert steps[1].startswith('pb_get http://h/data "$AZ_BATCH_TASK_DIR"/d ')
    assert steps[2].startswith("pb_get http://h/own own "), "the task's own resource files stay in its working directory"
    with pytest.raises(files.FileSpecError):
        files._resource_step(0, files.into_task_dir([{"httpUrl": "http://h/x", "filePath": "../x"}])[0])
