"""Shared helpers of the cluster tiers: install the CRDs, apply objects, wait for states,
run the operator as a real process (so tests can SIGKILL it)."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable


ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = ROOT / "crds"
GROUP, VERSION = "podbatch.io", "v1alpha1"
API = f"{GROUP}/{VERSION}"
PLURALS = {"Pool": "pools", "ComputeNode": "computenodes", "Job": "jobs", "Task": "tasks", "JobSchedule": "jobschedules", "TaskCollection": "taskcollections"}
LOG_DIR = Path(os.environ.get("PODBATCH_TEST_LOGS", "/tmp/podbatch-test-logs"))


def install_crds(api_client, timeout: float = 60.0) -> None:
    """Create or replace every CRD of crds/ and wait until each is Established (the CLI's own)."""
    from podbatch.cli.kube import install_crds as cli_install_crds
    cli_install_crds(api_client, CRD_DIR, timeout=timeout)


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 120, interval: float = 0.5) -> Any:
    """Poll fn until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}"[:2000])


class Objects:
    """podbatch objects of one namespace through the Python client."""

    def __init__(self, custom_api, namespace: str) -> None:
        self.api, self.ns = custom_api, namespace

    def create(self, body: dict) -> dict:
        body = {"apiVersion": API, **body}
        body.setdefault("metadata", {})["namespace"] = self.ns
        return self.api.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURALS[body["kind"]], body)

    def get(self, kind: str, name: str) -> dict:
        return self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURALS[kind], name)

    def list(self, kind: str, label_selector: str = "") -> list[dict]:
        return self.api.list_namespaced_custom_object(GROUP, VERSION, self.ns, PLURALS[kind], label_selector=label_selector)["items"]

    def patch(self, kind: str, name: str, patch: dict) -> dict:
        return self.api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURALS[kind], name, patch,
                                                       _content_type="application/merge-patch+json")

    def delete(self, kind: str, name: str) -> None:
        from kubernetes.client.rest import ApiException
        try:
            self.api.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURALS[kind], name)
        except ApiException as e:
            if e.status != 404:
                raise

    def status(self, kind: str, name: str) -> dict:
        """The object's status; {} while it does not exist (yet)."""
        from kubernetes.client.rest import ApiException
        try:
            return self.get(kind, name).get("status") or {}
        except ApiException as e:
            if e.status == 404:
                return {}
            raise

    def wait_state(self, kind: str, name: str, state: str, timeout: float = 120) -> dict:
        return wait_for(f"{kind} {name} state {state}",
                        lambda: (lambda st: st if st.get("state") == state else None)(self.status(kind, name)), timeout)

    def wait_job_done(self, name: str, timeout: float = 300) -> dict:
        return self.wait_state("Job", name, "completed", timeout)


def kwok_pool(name: str, nodes: int, slots: int = 1, **spec: Any) -> dict:
    return {"kind": "Pool", "metadata": {"name": name},
            "spec": {"nodeGroup": {"provider": "kwok"}, "targetDedicatedNodes": nodes, "taskSlotsPerNode": slots, **spec}}


def job(name: str, pool: str, **spec: Any) -> dict:
    return {"kind": "Job", "metadata": {"name": name}, "spec": {"poolInfo": {"poolId": pool}, **spec}}


def task(name: str, job_name: str, command: str = "/bin/true", annotations: dict | None = None, **spec: Any) -> dict:
    meta: dict = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"kind": "Task", "metadata": meta, "spec": {"jobName": job_name, "commandLine": command, **spec}}


def sim(duration: float = 0, exit_code: int = 0) -> dict:
    """Annotations telling the node simulator how a task's pod on a kwok node behaves."""
    return {"sim.podbatch.io/duration": str(duration), "sim.podbatch.io/exit-code": str(exit_code)}


class OperatorProcess:
    """podbatch-operator as a child process, its log kept under LOG_DIR."""

    def __init__(self, kubeconfig: str, name: str = "operator", env: dict | None = None) -> None:
        self.kubeconfig, self.name, self.env = kubeconfig, name, env or {}
        self.proc: subprocess.Popen | None = None
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"

    def start(self) -> "OperatorProcess":
        # Operators serving the same namespaces share a Lease (only one acts), others do not
        # (test sessions side by side never wait on each other). The identity is the process's
        # name, stable across restarts: a SIGKILLed one takes its Lease back at once, as a
        # restarted container does.
        served = self.env.get("PODBATCH_NAMESPACES", "")
        env = {**os.environ, "KUBECONFIG": self.kubeconfig, "PODBATCH_METRICS_PORT": "0",
               "PODBATCH_LEASE_NAME": "podbatch-" + hashlib.sha1(served.encode()).hexdigest()[:12],
               "PODBATCH_LEADER_IDENTITY": self.name, **self.env}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "podbatch.controllers.run"], env=env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)
