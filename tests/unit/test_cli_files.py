"""The pure parts of `kubectl podbatch files` / `node files` (cli/files.py): path checks,
where a task's and a node's files are, the helper pod, the listing and get scripts (run
under busybox against a directory of this test), the listing's parsing and the messages.
The commands against a real node are in tests/e2e/test_cli_files.py."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from podbatch.cli import files
from podbatch.cli.kube import CliError
from podbatch.cli.main import build_parser

NS, POOL = "team-a", "real"
TASK_DIR = f"/var/lib/podbatch/{NS}/{POOL}/workitems/j/job-1/t1"
BUSYBOX = shutil.which("busybox")


def a_task(**status):
    base = {"state": "completed", "nodeInfo": {"poolId": POOL, "nodeId": "real-x1", "nodeName": "localhost",
                                               "taskRootDirectory": TASK_DIR}}
    return {"metadata": {"name": "j-t1"}, "spec": {"jobName": "j", "id": "t1"}, "status": {**base, **status}}


@pytest.mark.parametrize("path, expected", [
    (None, ""), ("", ""), (".", ""), ("stdout.txt", "stdout.txt"), ("./wd//out.txt", "wd/out.txt"),
    ("wd/", "wd"), (TASK_DIR, ""), (TASK_DIR + "/", ""), (TASK_DIR + "/wd/a.txt", "wd/a.txt"),
])
def test_relative_path(path, expected):
    assert files.relative_path(path, TASK_DIR) == expected


@pytest.mark.parametrize("path", ["..", "../t2/stdout.txt", "wd/../../t2", "/etc/passwd", TASK_DIR + "x/stdout.txt",
                                  TASK_DIR + "/../t2/stdout.txt"])
def test_paths_leaving_the_directory_are_refused(path):
    with pytest.raises(files.PathError):
        files.relative_path(path, TASK_DIR)


def test_task_location_is_its_node_and_task_directory():
    loc = files.task_location(a_task(), NS)
    assert (loc.node_name, loc.compute_node, loc.pool, loc.host_dir) == ("localhost", "real-x1", POOL, TASK_DIR)
    assert loc.what == "task j-t1"


@pytest.mark.parametrize("status, message", [
    ({"nodeInfo": None, "state": "active"}, r"has not run on a node yet \(state active\)"),
    ({"conditions": [{"type": "Retained", "status": "False", "reason": "RetentionTimeExpired",
                      "lastTransitionTime": "2026-01-01T00:00:00Z"}]}, "removed from the node when its retention ended"),
    ({"nodeInfo": {"poolId": POOL, "nodeName": "n", "taskRootDirectory": "/etc"}}, "is not a task directory of pool real"),
    ({"nodeInfo": {"poolId": POOL, "nodeName": "n", "taskRootDirectory": f"/var/lib/podbatch/other/{POOL}/workitems/j/job-1/t"}},
     "is not a task directory"),
    ({"nodeInfo": {"poolId": POOL, "nodeName": "n", "taskRootDirectory": f"/x/{NS}/{POOL}/workitems/../../../etc"}},
     "is not a task directory"),
])
def test_task_location_refuses(status, message):
    with pytest.raises(files.FilesError, match=message):
        files.task_location(a_task(**status), NS)


def test_node_location_is_the_pools_node_root_in_the_namespace():
    cnode = {"metadata": {"name": "real-x1"}, "spec": {"poolName": POOL, "nodeName": "127.0.0.2"}}
    pool = {"metadata": {"name": POOL}, "spec": {"nodeRootDir": "/data/batch/"}}
    loc = files.node_location(cnode, pool, NS)
    assert (loc.node_name, loc.host_dir, loc.what) == ("127.0.0.2", f"/data/batch/{NS}/{POOL}", "node real-x1")
    assert files.node_location(cnode, {"metadata": {"name": POOL}, "spec": {}}, NS).host_dir == f"/var/lib/podbatch/{NS}/{POOL}"
    with pytest.raises(files.FilesError, match="not a plain absolute path"):
        files.node_location(cnode, {"metadata": {"name": POOL}, "spec": {"nodeRootDir": "/data/../etc"}}, NS)


def test_the_helper_pod_mounts_only_the_directory_read_only_on_the_node():
    pod = files.helper_pod(files.task_location(a_task(), NS), image="tools:1")
    spec = pod["spec"]
    assert pod["metadata"]["namespace"] == NS and pod["metadata"]["generateName"] == "podbatch-files-"
    assert not any(k.startswith("podbatch.io/") for k in pod["metadata"]["labels"])   # the operator ignores it
    assert spec["nodeName"] == "localhost" and spec["restartPolicy"] == "Never"
    assert spec["tolerations"] == [{"key": "podbatch.io/pool", "operator": "Equal", "value": f"{NS}.{POOL}",
                                    "effect": "NoSchedule"}]
    assert spec["volumes"] == [{"name": "files", "hostPath": {"path": TASK_DIR, "type": "Directory"}}]
    (c,) = spec["containers"]
    assert c["image"] == "tools:1" and c["volumeMounts"] == [{"name": "files", "mountPath": "/files", "readOnly": True}]
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["DAC_READ_SEARCH"]}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False and c["securityContext"]["readOnlyRootFilesystem"]
    assert spec["automountServiceAccountToken"] is False
    assert c["command"] == ["sleep", str(spec["activeDeadlineSeconds"])]   # it ends by itself if never deleted


def test_paths_reach_the_scripts_as_arguments_not_as_script_text():
    evil = "x'; rm -rf / #"
    assert files.get_command(evil)[-1] == evil and evil not in files.get_command(evil)[2]
    assert files.list_command(evil, None)[-2:] == [evil, "1000"] and files.list_command("", 1)[-2:] == ["", "1"]


@pytest.fixture()
def task_dir(tmp_path):
    d = tmp_path / "t1"
    (d / "wd" / "sub").mkdir(parents=True)
    (d / "stdout.txt").write_text("hello\n")
    (d / "stdout.txt").chmod(0o640)
    (d / "stderr.txt").write_text("")
    (d / "wd" / "out.bin").write_bytes(bytes(range(256)))
    (d / "wd" / "sub" / "odd|name").write_text("x")
    return d


def busybox_sh(script: str, root, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([BUSYBOX, "sh", "-c", script.replace(files.MOUNT, str(root)), "podbatch-files", *argv],
                          capture_output=True, env={"PATH": str(root.parent / "bin")})


@pytest.fixture()
def busybox_bin(tmp_path):
    if not BUSYBOX:
        pytest.skip("busybox not installed")
    b = tmp_path / "bin"
    b.mkdir()
    for tool in ("sh", "find", "stat", "cat"):
        (b / tool).symlink_to(BUSYBOX)


def test_the_listing_script_under_busybox_and_its_parsing(task_dir, busybox_bin):
    r = busybox_sh(files.LIST_SCRIPT, task_dir, "", "1000")
    assert r.returncode == 0, r.stderr
    entries = files.parse_listing(r.stdout.decode(), "")
    by_name = {e["name"]: e for e in entries}
    assert list(by_name) == ["stderr.txt", "stdout.txt", "wd", "wd/out.bin", "wd/sub", "wd/sub/odd|name"]
    assert by_name["stdout.txt"]["properties"]["contentLength"] == 6 and not by_name["stdout.txt"]["isDirectory"]
    assert by_name["wd/out.bin"]["properties"]["contentLength"] == 256 and by_name["wd"]["isDirectory"]
    assert by_name["stdout.txt"]["properties"]["lastModified"].endswith("Z")
    assert by_name["stdout.txt"]["properties"]["fileMode"] == "0640"

    r = busybox_sh(files.LIST_SCRIPT, task_dir, "wd", "1")
    assert [e["name"] for e in files.parse_listing(r.stdout.decode(), "wd")] == ["wd/out.bin", "wd/sub"]
    r = busybox_sh(files.LIST_SCRIPT, task_dir, "stdout.txt", "1000")
    assert [e["name"] for e in files.parse_listing(r.stdout.decode(), "stdout.txt")] == ["stdout.txt"]
    r = busybox_sh(files.LIST_SCRIPT, task_dir, "nope", "1000")
    assert r.returncode == files.EXIT_MISSING and b"nope: no such file or directory" in r.stderr


def test_the_get_script_under_busybox(task_dir, busybox_bin):
    r = busybox_sh(files.GET_SCRIPT, task_dir, "wd/out.bin")
    assert (r.returncode, r.stdout) == (0, bytes(range(256)))
    r = busybox_sh(files.GET_SCRIPT, task_dir, "wd")
    assert r.returncode == files.EXIT_IS_DIRECTORY and b"is a directory" in r.stderr
    r = busybox_sh(files.GET_SCRIPT, task_dir, "wd/nope")
    assert r.returncode == files.EXIT_MISSING and b"no such file" in r.stderr


def test_parse_listing_keeps_a_name_with_a_newline_and_drops_the_start_directory():
    text = ("directory|4096|0|755|./\n" "regular file|3|60|640|./a\nb\n" "symbolic link|11|0|777|./wd/l\n")
    entries = files.parse_listing(text, "")
    assert [(e["name"], e["properties"]["lastModified"], e["properties"]["fileMode"]) for e in entries] == [
        ("a\nb", "1970-01-01T00:01:00Z", "0640"), ("wd/l", "1970-01-01T00:00:00Z", "0777")]
    table = files.listing_table(files.parse_listing("directory|4096|0|755|./wd\nregular file|12|0|644|./wd/x\n", ""))
    assert table.splitlines() == ["MODE  SIZE  MODIFIED              NAME",
                                  "0755     -  1970-01-01T00:00:00Z  wd/",
                                  "0644    12  1970-01-01T00:00:00Z  wd/x"]


def test_messages_for_a_refused_or_stuck_helper_pod():
    loc = files.task_location(a_task(), NS)
    psa = files.create_refused(loc, 403, 'Forbidden: pods "x" is forbidden: violates PodSecurity "baseline:latest": hostPath volumes')
    assert "Pod Security admission refuses hostPath pods" in psa and f"kubectl label namespace {NS}" in psa
    rbac = files.create_refused(loc, 403, 'Forbidden: pods is forbidden: User "bob" cannot create resource "pods"')
    assert "create, get and delete pods and pods/exec (get and create) in namespace team-a" in rbac
    handshake = ('Handshake status 403 Forbidden -+-+- {"date": "x"} -+-+- {"kind":"Status","message":'
                 '"pods \\"p\\" is forbidden: User \\"bob\\" cannot get resource \\"pods/exec\\"","code":403}')
    text = files.exec_refused(loc, handshake)
    assert text.startswith('task j-t1: cannot exec into the helper pod: pods "p" is forbidden: User "bob" cannot get')
    assert "pods/exec (get and create) in namespace team-a" in text
    assert files.start_problem({"status": {"phase": "Pending"}}, []) is None
    gone = [{"reason": "FailedMount", "message": "MountVolume.SetUp failed for volume \"files\" : hostPath type check failed: /x is not a directory"}]
    assert "does not exist on the node" in files.start_problem({"status": {"phase": "Pending"}}, gone)
    pull = {"status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff", "message": "no"}}}]}}
    assert "--image" in files.start_problem(pull, [])


def test_the_commands_parse_and_dispatch_to_files():
    p = build_parser()
    a = p.parse_args(["files", "get", "t1", "wd/out.txt", "-o", "out.txt", "--job", "j"])
    assert (a.run, a.op, a.task, a.path, a.output_file, a.job) == (files.cmd_files, "get", "t1", "wd/out.txt", "out.txt", "j")
    a = p.parse_args(["node", "files", "ls", "n1", "-o", "json", "--depth", "1"])
    assert (a.run, a.command, a.op, a.node, a.path, a.output, a.depth) == (files.cmd_files, "node", "ls", "n1", None, "json", 1)
    assert not hasattr(p.parse_args(["node", "reboot", "n1"]), "run")   # the operations keep their own command
    with pytest.raises(SystemExit):
        p.parse_args(["files", "get", "t1"])   # get needs a PATH


def test_a_bad_depth_is_refused_before_the_cluster_is_asked():
    a = build_parser().parse_args(["files", "ls", "t1", "--depth", "0", "--kubeconfig", "/nonexistent"])
    with pytest.raises(CliError, match="--depth must be 1 or more"):
        files.cmd_files(a)
