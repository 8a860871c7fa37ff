"""kubectl podbatch for scripts (issue 14): -o json|yaml|name|wide and -l on every listing,
the exit codes of status/watch, version, shell completion, and a CLI that imports none of
the operator's dependencies (`pipx install podbatch`)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from podbatch.cli import completion
from podbatch.cli import format as fmt
from podbatch.cli import main as cli
from podbatch.cli import output

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def task(name, job="j", state=None, result=None, exit_code=None, labels=None):
    t = {"apiVersion": "podbatch.io/v1alpha1", "kind": "Task", "metadata": {"name": name, "labels": labels or {}},
         "spec": {"jobName": job, "commandLine": "true"}}
    if state:
        t["status"] = {"state": state, "executionInfo": {}}
        if result:
            t["status"]["executionInfo"]["result"] = result
        if exit_code is not None:
            t["status"]["executionInfo"]["exitCode"] = exit_code
    return t


def job(name="j", state=None, reason=None, **spec):
    j = {"apiVersion": "podbatch.io/v1alpha1", "kind": "Job", "metadata": {"name": name, "namespace": "ns"},
         "spec": {"poolInfo": {"poolId": "p"}, **spec}}
    if state:
        j["status"] = {"state": state, "executionInfo": {"terminateReason": reason} if reason else {}}
    return j


# --- -o ------------------------------------------------------------------------------

def test_json_and_yaml_are_a_kubectl_list_of_the_objects():
    items = [task("j-1"), task("j-2")]
    for out, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        text = output.render_objects(items, out, fmt.tasks_table)
        assert load(text) == {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}
    assert output.render_objects([], "json", fmt.tasks_table).count('"items": []') == 1
    assert output.render_objects(items, "json", fmt.tasks_table).startswith('{\n    "apiVersion": "v1"')


def test_name_output_is_kind_dot_group_slash_name():
    pool = {"apiVersion": "podbatch.io/v1alpha1", "kind": "ComputeNode", "metadata": {"name": "p-1"}}
    assert output.object_name(pool) == "computenode.podbatch.io/p-1"
    assert output.render_objects([task("a"), task("b")], "name", fmt.tasks_table) == "task.podbatch.io/a\ntask.podbatch.io/b"
    assert output.render_objects([], "name", fmt.tasks_table) is None


def test_table_and_wide():
    items = [task("a")]
    assert output.render_objects(items, None, fmt.tasks_table).splitlines()[0].split()[0] == "ID"
    assert "JOB" in output.render_objects(items, "wide", fmt.tasks_table).splitlines()[0].split()
    assert output.render_objects([], "wide", fmt.tasks_table) is None


def test_jobs_and_schedules_tables():
    j = job("j-10", "completed", "TaskFailed", priority=5)
    j["status"]["taskCounts"] = {"active": 0, "running": 0, "completed": 3, "succeeded": 2, "failed": 1}
    out = fmt.jobs_table([j, job("j-9")], wide=True).splitlines()
    assert out[0].split() == ["NAME", "POOL", "STATE", "PRIORITY", "ACTIVE", "RUNNING", "SUCCEEDED", "FAILED",
                              "COMPLETED", "ENDED", "ONALLTASKSCOMPLETE"]
    assert out[1].split()[0] == "j-9"   # natural order
    assert out[2].split() == ["j-10", "p", "completed", "5", "0", "0", "2", "1", "3", "TaskFailed", "noaction"]
    s = {"metadata": {"name": "nightly"}, "spec": {"schedule": {"cron": "0 2 * * *"},
                                                     "jobSpecification": {"poolInfo": {"poolId": "p"}}},
         "status": {"state": "active", "executionInfo": {"nextRunTime": "2026-01-01T02:00:00Z", "recentJob": {"name": "nightly-1"}}}}
    out = fmt.schedules_table([s], wide=True).splitlines()
    assert out[1].split()[:2] == ["nightly", "active"] and "nightly-1" in out[1] and "0 2 * * *" in out[1]


class FakeCluster:
    """Just enough of kube.Cluster for the listing and job commands (pure logic)."""

    namespace = "ns"

    def __init__(self, objects):
        self.objects, self.selectors = objects, []

    def get(self, kind, name):
        from podbatch.cli.kube import CliError
        for o in self.objects:
            if o["kind"] == kind and o["metadata"]["name"] == name:
                return o
        raise CliError(f"{kind} {name!r} not found in namespace ns")

    def list(self, kind, label_selector=None):
        self.selectors.append(label_selector)
        want = dict(kv.split("=") for kv in label_selector.split(",")) if label_selector else {}
        return [o for o in self.objects if o["kind"] == kind
                and all(o["metadata"].get("labels", {}).get(k) == v for k, v in want.items())]

    def tasks_of(self, job_name):
        return [o for o in self.list("Task") if o["spec"]["jobName"] == job_name]

    def nodes_of(self, pool):
        return []


def run(monkeypatch, capsys, cluster, *argv):
    monkeypatch.setattr(cli, "_cluster", lambda args: cluster)
    rc = cli.main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_listing_filters_by_owner_and_selector_in_table_order(monkeypatch, capsys):
    objs = [job("j"), job("k"), task("j-10", labels={"tier": "a"}), task("j-2", labels={"tier": "a"}),
            task("j-3", labels={"tier": "b"}), task("k-1", job="k", labels={"tier": "a"})]
    cluster = FakeCluster(objs)
    rc, out, _ = run(monkeypatch, capsys, cluster, "tasks", "j", "-l", "tier=a", "-o", "name")
    assert (rc, out) == (0, "task.podbatch.io/j-2\ntask.podbatch.io/j-10\n")
    assert "tier=a" in cluster.selectors   # the Tasks are filtered by the API server
    rc, out, _ = run(monkeypatch, capsys, cluster, "tasks", "-o", "json")
    assert [t["metadata"]["name"] for t in json.loads(out)["items"]] == ["j-2", "j-3", "j-10", "k-1"]  # by id, naturally
    rc, out, err = run(monkeypatch, capsys, cluster, "tasks", "j", "-l", "tier=zzz")
    assert (rc, out, err) == (0, "", "no tasks in job j matching -l tier=zzz\n")
    rc, out, err = run(monkeypatch, capsys, cluster, "tasks", "nope", "-o", "json")
    assert rc == output.EXIT_ERROR and out == "" and "Job 'nope' not found" in err
    rc, out, _ = run(monkeypatch, capsys, cluster, "jobs", "-o", "yaml")
    assert [j["metadata"]["name"] for j in yaml.safe_load(out)["items"]] == ["j", "k"]


@pytest.mark.parametrize("command", sorted(cli.LISTINGS))
def test_every_listing_takes_output_and_selector(command):
    args = cli.parse_args([command, "-o", "name", "-l", "a=b"])
    assert (args.output, args.selector) == ("name", "a=b")
    with pytest.raises(SystemExit):
        cli.parse_args([command, "-o", "csv"])


# --- exit codes ------------------------------------------------------------------------

@pytest.mark.parametrize("j,tasks,expected", [
    (job("j", "completed", "AllTasksComplete"), [task("a", state="completed", result="success")], 0),
    (job("j", "completed", "AllTasksComplete"), [task("a", state="completed", result="failure")], 1),
    (job("j", "active"), [task("a", state="completed", exit_code=3), task("b", state="running")], 1),
    (job("j", "active"), [task("a", state="completed", result="success"), task("b", state="running")], 0),
    (job("j", "completed", "MaxWallClockTimeExpiry"), [], 1),
    (job("j", "completed", "UserTerminate"), [task("a", state="active")], 1),     # ended before every task ran
    (job("j", "completed", "UserTerminate"), [task("a", state="completed", result="success")], 0),
    (job("j"), [], 0),
])
def test_job_exit_code(j, tasks, expected):
    assert output.job_exit_code(j, fmt.count_tasks(tasks)) == expected


def test_a_scheduling_error_alone_is_not_a_failure():
    """PoolNotFound clears when the pool is created; only failed or never-run tasks count."""
    j = job("j", "active")
    j["status"]["executionInfo"]["schedulingError"] = {"code": "PoolNotFound", "message": "no pool"}
    assert not output.job_failed(j, fmt.count_tasks([task("a")]))
    assert output.job_failed(j, fmt.count_tasks([task("a", state="completed", exit_code=1)]))


def test_status_and_watch_exit_codes(monkeypatch, capsys):
    done_ok = FakeCluster([job("j", "completed", "AllTasksComplete"), task("a", state="completed", result="success")])
    done_bad = FakeCluster([job("j", "completed", "AllTasksComplete"), task("a", state="completed", result="success"),
                            task("b", state="completed", exit_code=2)])
    running = FakeCluster([job("j", "active"), task("a", state="running")])
    assert run(monkeypatch, capsys, done_ok, "status", "j")[0] == output.EXIT_OK
    assert run(monkeypatch, capsys, done_bad, "status", "j")[0] == output.EXIT_TASKS_FAILED
    assert run(monkeypatch, capsys, running, "status", "j")[0] == output.EXIT_OK
    assert run(monkeypatch, capsys, done_ok, "watch", "j")[0] == output.EXIT_OK
    rc, _, err = run(monkeypatch, capsys, done_bad, "watch", "j")
    assert rc == output.EXIT_TASKS_FAILED and "1 failed task(s), the job ended with AllTasksComplete" in err
    rc, _, err = run(monkeypatch, capsys, running, "watch", "j", "--interval", "0.01", "--timeout", "0.05")
    assert rc == output.EXIT_TIMEOUT and "timed out" in err
    assert run(monkeypatch, capsys, running, "watch", "missing")[0] == output.EXIT_ERROR


def test_exit_codes_are_in_the_help(capsys):
    for argv in (["--help"], ["watch", "--help"], ["status", "--help"]):
        with pytest.raises(SystemExit):
            cli.parse_args(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert "1 a task of the job failed" in text and "3 watch --timeout passed" in text, argv


# --- version ---------------------------------------------------------------------------

def test_version_client_only(capsys):
    import podbatch
    assert cli.main(["version", "--client", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "clientVersion": {"podbatch": podbatch.__version__, "apiVersion": "podbatch.io/v1alpha1"}}


def test_version_without_a_cluster_prints_the_client_and_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cli.main(["version", "--kubeconfig", str(tmp_path / "none")]) == output.EXIT_ERROR
    out = capsys.readouterr()
    assert out.out.startswith("Client Version: podbatch ") and "no kubeconfig" in out.err


def test_version_text():
    client = {"podbatch": "1.2.3", "apiVersion": "podbatch.io/v1alpha1"}
    text = fmt.version_text({"clientVersion": client, "serverVersion": {
        "kubernetes": "v1.20.2", "podbatchServedVersions": ["v1alpha1"], "podbatchPreferredVersion": "v1alpha1"}})
    assert text.splitlines() == ["Client Version: podbatch 1.2.3 (speaks podbatch.io/v1alpha1)",
                                 "Server Version: Kubernetes v1.20.2",
                                 "Served:         podbatch.io v1alpha1 (preferred v1alpha1)"]
    text = fmt.version_text({"clientVersion": client, "serverVersion": {
        "kubernetes": "v1.30.0", "podbatchServedVersions": ["v1beta1"], "podbatchPreferredVersion": "v1beta1"}})
    assert "warning: this CLI speaks podbatch.io/v1alpha1, which the cluster does not serve" in text
    text = fmt.version_text({"clientVersion": client, "serverVersion": {"kubernetes": "v1.30.0"}})
    assert "CRDs are not installed" in text


# --- completion ------------------------------------------------------------------------

def names(kind, connection):
    names.calls.append((kind, dict(connection)))
    return {"Job": ["quickstart", "nightly"], "Task": ["quickstart-1"], "ComputeNode": ["p-1"], "Pool": ["p"]}[kind]


@pytest.mark.parametrize("words,expected,directive", [
    ([""], ["apply", "validate", "status", "watch", "tasks", "logs", "pools", "nodes", "jobs", "schedules",
            "node", "job", "task", "files", "pool", "import", "version", "completion"], 4),
    (["no"], ["nodes", "node"], 4),
    (["node", ""], ["reboot", "reimage", "remove", "disable", "enable", "files"], 4),
    (["node", "reboot", "p-1", "--option", "re"], ["requeue", "retaineddata"], 4),
    (["tasks", "-o", ""], ["json", "yaml", "wide", "name"], 4),
    (["tasks", "--sel"], ["--selector"], 4),
    (["status", "q"], ["quickstart"], 4),
    (["-n", "x", "watch", ""], ["quickstart", "nightly"], 4),
    (["logs", "--tail", "5", ""], ["quickstart-1"], 4),
    (["node", "disable", ""], ["p-1"], 4),
    (["nodes", ""], ["p"], 4),
    (["status", "quickstart", ""], [], 4),
    (["apply", "-f", ""], [], 0),            # file names: the shell's own completion
    (["completion", ""], ["bash", "zsh"], 4),
])
def test_completion_candidates(words, expected, directive):
    names.calls = []
    assert completion.complete(cli.build_parser(), words, names) == (expected, directive)


def test_completion_passes_the_connection_options_to_the_lookup():
    names.calls = []
    completion.complete(cli.build_parser(), ["--context", "c1", "tasks", "-n", "team-a", "--kubeconfig=/k", ""], names)
    assert names.calls == [("Job", {"context": "c1", "namespace": "team-a", "kubeconfig": "/k"})]


def test_completion_without_a_cluster_offers_no_names():
    def broken(kind, connection):
        raise RuntimeError("no cluster")
    assert completion.complete(cli.build_parser(), ["status", ""], broken) == ([], 4)


def test_hidden_complete_command_speaks_cobras_protocol(capsys):
    assert cli.main(["__complete", "version", "--c"]) == 0
    assert capsys.readouterr().out == "--context\n--client\n:4\n"


@pytest.mark.skipif(not shutil.which("bash") or not (VENV_BIN / "kubectl-podbatch").exists(),
                    reason="needs bash and the installed kubectl-podbatch")
def test_bash_script_completes_in_a_real_bash():
    script = completion.script("bash")
    probe = textwrap.dedent("""\
        source /dev/stdin
        COMP_WORDS=(kubectl-podbatch job te); COMP_CWORD=2
        _kubectl_podbatch; printf '%s\\n' "${COMPREPLY[@]}"
        COMP_WORDS=(kubectl-podbatch tasks -o y); COMP_CWORD=3
        _kubectl_podbatch; printf '%s\\n' "${COMPREPLY[@]}"
        """)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KUBECONFIG": "/nonexistent"}
    res = subprocess.run(["bash", "-c", probe], input=script, capture_output=True, text=True, env=env, timeout=60)
    assert res.stdout.split() == ["terminate", "yaml"], res.stderr


@pytest.mark.skipif(not shutil.which("zsh") or not (VENV_BIN / "kubectl-podbatch").exists(),
                    reason="needs zsh and the installed kubectl-podbatch")
def test_zsh_script_completes_in_a_real_zsh():
    """The function the zsh script defines, run by zsh with compsys' builtins stubbed."""
    text = completion.script("zsh")
    assert text.startswith("#compdef kubectl-podbatch\n") and "compdef _kubectl_podbatch kubectl-podbatch" in text
    probe = textwrap.dedent("""\
        compdef() { : }
        compadd() { [[ $1 == -- ]] && shift; print -l -- "$@" }
        _files() { print FILES }
        source /dev/stdin
        words=(kubectl-podbatch job te); CURRENT=3; _kubectl_podbatch
        words=(kubectl-podbatch tasks -o y); CURRENT=4; _kubectl_podbatch
        words=(kubectl-podbatch apply -f ""); CURRENT=4; _kubectl_podbatch
        words=(kubectl-podbatch status quick ""); CURRENT=4; _kubectl_podbatch
        """)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "KUBECONFIG": "/nonexistent"}
    res = subprocess.run(["zsh", "-f", "-c", probe], input=text, capture_output=True, text=True, env=env, timeout=60)
    assert res.stdout.split() == ["terminate", "yaml", "FILES"], res.stderr


# --- the CLI without the operator's dependencies ------------------------------------------

def operator_only_modules() -> list[str]:
    """Top-level modules of the distributions in pyproject's `operator` extra."""
    import tomllib
    from importlib.metadata import packages_distributions
    from packaging.requirements import Requirement
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["operator"]
    dists = {Requirement(r).name.lower().replace("_", "-") for r in extra}
    return sorted(mod for mod, ds in packages_distributions().items()
                  if any(d.lower().replace("_", "-") in dists for d in ds))


def test_the_operator_extra_holds_the_operators_dependencies():
    mods = operator_only_modules()
    assert {"kopf", "kubernetes_asyncio", "prometheus_client", "pydantic_settings", "azure"} <= set(mods), mods


def test_cli_runs_without_the_operator_extra():
    blocked = operator_only_modules()
    code = textwrap.dedent(f"""\
        import sys
        for m in {blocked!r}:
            sys.modules[m] = None          # `import kopf` now raises ImportError
        from podbatch.cli import main, kube, manifests, format, output, completion
        assert main.main(["validate", "-f", {str(ROOT / "examples/quickstart")!r}]) == 0
        assert main.main(["version", "--client"]) == 0
        assert main.main(["__complete", "jo"]) == 0
        main.build_parser().format_help()
        from podbatch import operator_main
        assert operator_main.main() == 2
        print("imported:", sorted(m for m in {blocked!r} if sys.modules.get(m) is not None))
        """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "imported: []" in res.stdout
    assert "3 object(s) valid" in res.stdout or "object(s) valid" in res.stdout
    assert "pip install 'podbatch[operator]'" in res.stderr


def test_pyproject_keeps_operator_dependencies_out_of_the_cli():
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for dep in ("kopf", "kubernetes_asyncio", "azure", "prometheus", "pydantic-settings"):
        assert dep not in core
    assert project["scripts"]["kubectl_complete-podbatch"] == "podbatch.cli.completion:kubectl_complete_main"
