"""The operator serves Prometheus metrics (issue 5)."""
from __future__ import annotations

import socket
import urllib.request

import pytest

from kit import OperatorProcess, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_metrics_endpoint(kubeconfig, crds):
    port = _free_port()
    # serves no namespace of any test: only its metrics are looked at
    op = OperatorProcess(kubeconfig, "operator-metrics", env={"PODBATCH_METRICS_PORT": str(port),
                                                               "PODBATCH_NAMESPACES": "podbatch-metrics-none-*"}).start()
    try:
        body = wait_for("the metrics endpoint", lambda: _get(f"http://127.0.0.1:{port}/metrics"), 30)
        for name in ("podbatch_build_info", "podbatch_tasks", "podbatch_task_scheduling_latency_seconds", "podbatch_task_run_seconds",
                     "podbatch_scheduler_pass_seconds", "podbatch_api_errors_total", "podbatch_reconcile_pass_seconds"):
            assert name in body, f"{name} missing from /metrics"
    finally:
        op.stop()


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode()
    except OSError:
        return None
