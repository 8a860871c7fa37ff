"""Stop signals reach the task (issue 10). The real task wrapper (core/pods.py) is run here
under busybox sh, the task image's shell, with a PATH of busybox applets only: SIGTERM
(what the kubelet sends when a pod is deleted) and SIGINT sent to the wrapper reach the
task's process group, the task's own `trap` runs, its output still drains into
stdout.txt / stderr.txt and the wrapper ends with the task's exit code. Plus the same as
the container's PID 1 (a pid namespace, where the kernel drops signals PID 1 has no
handler for), and under dash without `setsid`, the fallback for images without one."""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from podbatch.core import pods

BUSYBOX = shutil.which("busybox")
DASH = shutil.which("dash")
pytestmark = pytest.mark.skipif(not BUSYBOX, reason="no busybox on this machine to run the task wrapper")
APPLETS = ("sh", "sleep", "kill", "mkdir", "mkfifo", "tee", "rm", "cat", "echo", "tr", "setsid")

# A task that cleans up on SIGTERM, busy in a foreground child (which must get the signal
# too, or the script's trap waits for the child to end).
TRAPPING = """
trap 'echo "trap ran"; echo cleanup-err >&2; echo cleaned > marker; exit 7' TERM
echo started
sleep 60
echo not reached
"""


def _bin(tmp_path: Path, applets=APPLETS) -> str:
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for a in applets:
        if not (d / a).exists():
            os.symlink(BUSYBOX, d / a)
    return str(d)


def _env(tmp_path: Path, applets=APPLETS, **extra: str) -> dict[str, str]:
    task_dir = tmp_path / "task"
    return {"PATH": _bin(tmp_path, applets), "AZ_BATCH_TASK_DIR": str(task_dir),
            "AZ_BATCH_TASK_WORKING_DIR": str(task_dir / "wd"), **extra}


def _script(tmp_path: Path, text: str) -> str:
    p = tmp_path / "task.sh"
    p.write_text(text)
    return str(p)


def _start(env: dict, *argv: str, shell: tuple[str, ...] = ()) -> subprocess.Popen:
    return subprocess.Popen([*(shell or (BUSYBOX, "sh")), "-c", pods.TASK_WRAPPER, "podbatch-task", *argv],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_text(path: Path, text: str, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def _stop(proc: subprocess.Popen, sig: int, *, pid: int | None = None, timeout: float = 20) -> tuple[int, str, str, float]:
    """Send `sig` to the wrapper; its exit code, stdout, stderr and how long it took to end."""
    t0 = time.monotonic()
    os.kill(pid or proc.pid, sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the wrapper did not end within {timeout}s of signal {sig}") from None
    return proc.returncode, out, err, time.monotonic() - t0


def test_sigterm_runs_the_tasks_trap_at_once_and_its_output_drains(tmp_path):
    env = _env(tmp_path)
    task_dir = Path(env["AZ_BATCH_TASK_DIR"])
    proc = _start(env, "sh", _script(tmp_path, TRAPPING))
    _wait_for_text(task_dir / "stdout.txt", "started")
    rc, out, err, took = _stop(proc, signal.SIGTERM)
    assert rc == 7, (out, err)
    assert took < 10, "the task's foreground child did not get the signal: its trap waited for it"
    assert (task_dir / "wd" / "marker").read_text() == "cleaned\n"
    assert (task_dir / "stdout.txt").read_text() == out == "started\ntrap ran\n"
    # the task's shell reports its foreground child's death itself; the wrapper adds nothing
    assert (task_dir / "stderr.txt").read_text() == err == "Terminated\ncleanup-err\n"
    assert not list(Path("/tmp").glob(f".podbatch-{proc.pid}.*")), "the FIFOs are removed"


def test_a_task_without_a_trap_ends_with_128_plus_15_and_the_upload_step_still_runs(tmp_path):
    env = _env(tmp_path, PODBATCH_UPLOAD='echo "upload after exit code $1"')
    task_dir = Path(env["AZ_BATCH_TASK_DIR"])
    proc = _start(env, "sh", "-c", "echo started; echo half a line >&2; sleep 60")
    _wait_for_text(task_dir / "stderr.txt", "half a line")
    rc, out, err, took = _stop(proc, signal.SIGTERM)
    assert rc == 128 + 15 and took < 10
    assert (task_dir / "stdout.txt").read_text() == "started\n"
    assert (task_dir / "stderr.txt").read_text() == "half a line\n"
    assert (task_dir / "fileuploadout.txt").read_text() == "upload after exit code 143\n"


def test_the_wrapper_waits_for_a_slow_cleanup_and_takes_its_exit_code(tmp_path):
    env = _env(tmp_path)
    task_dir = Path(env["AZ_BATCH_TASK_DIR"])
    script = _script(tmp_path, "trap 'echo stopping; sleep 1; echo stopped; exit 0' TERM\n"
                               "echo started\nsleep 60 & wait\n")
    proc = _start(env, "sh", script)
    _wait_for_text(task_dir / "stdout.txt", "started")
    rc, out, _, took = _stop(proc, signal.SIGTERM)
    assert rc == 0 and took >= 1
    assert out == (task_dir / "stdout.txt").read_text() == "started\nstopping\nstopped\n"


def test_children_of_the_task_get_the_signal_too(tmp_path):
    env = _env(tmp_path)
    task_dir = Path(env["AZ_BATCH_TASK_DIR"])
    child = "trap 'echo child cleaned; exit 0' TERM; echo child up; sleep 60 & wait"
    script = _script(tmp_path, f"trap 'wait; echo parent cleaned; exit 5' TERM\nsh -c \"{child}\" &\nwait\n")
    proc = _start(env, "sh", script)
    _wait_for_text(task_dir / "stdout.txt", "child up")
    rc, out, _, took = _stop(proc, signal.SIGTERM)
    assert rc == 5 and took < 10
    assert out.splitlines() == ["child up", "child cleaned", "parent cleaned"]


def test_sigint_reaches_a_task_that_handles_it(tmp_path):
    env = _env(tmp_path)
    task_dir = Path(env["AZ_BATCH_TASK_DIR"])
    prog = ("import signal, sys, time\n"
            "def stop(sig, _):\n"
            "    print('got', signal.Signals(sig).name, flush=True); sys.exit(5)\n"
            "signal.signal(signal.SIGINT, stop)\n"
            "print('started', flush=True)\n"
            "time.sleep(60)\n")
    proc = _start(env, sys.executable, "-c", prog)
    _wait_for_text(task_dir / "stdout.txt", "started")
    rc, out, _, _ = _stop(proc, signal.SIGINT)
    assert (rc, out) == (5, "started\ngot SIGINT\n")


def test_sigint_to_a_task_that_cannot_trap_it_ends_it_with_sigterm(tmp_path):
    """A background command of a non-interactive shell starts with SIGINT ignored, and a
    shell cannot trap a signal ignored on entry: SIGINT would do nothing, so SIGTERM goes."""
    env = _env(tmp_path)
    task_dir = Path(env["AZ_BATCH_TASK_DIR"])
    proc = _start(env, "sh", _script(tmp_path, TRAPPING))
    _wait_for_text(task_dir / "stdout.txt", "started")
    rc, out, _, took = _stop(proc, signal.SIGINT)
    assert rc == 7 and took < 10 and out == "started\ntrap ran\n"


def test_a_signal_while_waiting_for_the_host_list_ends_the_instance_before_its_command(tmp_path):
    env = _env(tmp_path, PODBATCH_HOSTS_FILE=str(tmp_path / "hosts"), PODBATCH_COORDINATION="echo coordinated")
    proc = _start(env, "sh", "-c", "echo never")
    time.sleep(0.6)
    rc, out, _, took = _stop(proc, signal.SIGTERM)
    assert rc == 128 + 15 and took < 5 and out == ""


def test_a_waiting_subtask_stops_and_its_coordination_daemons_get_the_signal(tmp_path):
    marker = tmp_path / "daemon-stopped"
    daemon = f"trap 'echo bye > {marker}; exit 0' TERM; echo daemon up; sleep 60 & wait"
    env = _env(tmp_path, PODBATCH_COORDINATION=f'sh -c "{daemon}" &', PODBATCH_THEN_WAIT="1")
    task_dir = Path(env["AZ_BATCH_TASK_DIR"])
    proc = _start(env, "echo", "never")
    _wait_for_text(task_dir / "stdout.txt", "daemon up")
    time.sleep(0.3)
    rc, out, _, took = _stop(proc, signal.SIGTERM)
    assert rc == 128 + 15 and took < 10, "a subtask used to wait out the grace period"
    assert marker.read_text() == "bye\n" and "never" not in out


def test_without_a_signal_nothing_changes(tmp_path):
    env = _env(tmp_path, PODBATCH_UPLOAD='echo "upload $1"')
    task_dir = Path(env["AZ_BATCH_TASK_DIR"])
    r = subprocess.run([BUSYBOX, "sh", "-c", pods.TASK_WRAPPER, "podbatch-task", "sh", "-c",
                        'read -r line; echo "in: $line"; echo "wd: $(pwd)"; echo err >&2; exit 3'],
                       env=env, input="from stdin\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 3
    assert r.stdout == (task_dir / "stdout.txt").read_text() == f"in: from stdin\nwd: {task_dir / 'wd'}\n"
    assert r.stderr == (task_dir / "stderr.txt").read_text() == "err\n"
    assert (task_dir / "fileuploadout.txt").read_text() == "upload 3\n"


def test_a_command_that_is_not_there_exits_127(tmp_path):
    env = _env(tmp_path)
    r = subprocess.run([BUSYBOX, "sh", "-c", pods.TASK_WRAPPER, "podbatch-task", "/no/such/command", "x"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 127 and "/no/such/command" in r.stderr


@pytest.mark.skipif(not DASH, reason="no dash on this machine")
def test_an_image_without_setsid_signals_the_task_process(tmp_path):
    """dash (Debian's /bin/sh) with no setsid on the PATH: no process group of its own, so
    the signal goes to the task's process alone (which has to pass it on to its children)."""
    env = _env(tmp_path, applets=tuple(a for a in APPLETS if a != "setsid"))
    task_dir = Path(env["AZ_BATCH_TASK_DIR"])
    script = _script(tmp_path, "trap 'kill $!; echo trap ran; exit 7' TERM\necho started\nsleep 60 & wait\n")
    proc = _start(env, "sh", script, shell=(DASH,))
    _wait_for_text(task_dir / "stdout.txt", "started")
    rc, out, _, took = _stop(proc, signal.SIGTERM)
    assert rc == 7 and took < 10 and out == "started\ntrap ran\n"


def _pid_namespaces_work() -> bool:
    try:
        return subprocess.run([BUSYBOX, "unshare", "-p", "-f", "--mount-proc", BUSYBOX, "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_as_pid_1_of_its_own_pid_namespace(tmp_path):
    """As in a container: the wrapper is PID 1, to which the kernel delivers only signals
    it has a handler for. Its FIFOs are then /tmp/.podbatch-1.*, so runs take a lock."""
    if not _pid_namespaces_work():
        pytest.skip("cannot create a pid namespace here (needs root)")
    env = _env(tmp_path)
    task_dir = Path(env["AZ_BATCH_TASK_DIR"])
    with open("/tmp/.podbatch-pid1-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stale in Path("/tmp").glob(".podbatch-1.*"):
            stale.unlink()
        proc = subprocess.Popen([BUSYBOX, "unshare", "-p", "-f", "--mount-proc", BUSYBOX, "sh", "-c", pods.TASK_WRAPPER,
                                 "podbatch-task", "sh", _script(tmp_path, TRAPPING)],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for_text(task_dir / "stdout.txt", "started")
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 1, children
        rc, out, _, took = _stop(proc, signal.SIGTERM, pid=int(children[0]))
    assert rc == 7 and took < 10
    assert out == "started\ntrap ran\n" and (task_dir / "wd" / "marker").exists()
