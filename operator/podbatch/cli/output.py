"""Machine-readable output and exit codes of `kubectl podbatch`, for scripts.

`-o json|yaml|name` mean what they mean to kubectl: a `List` (apiVersion v1) of the API
objects as the server returned them, or `kind.group/name` lines. Pure: dicts in, text out.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import yaml

from podbatch import GROUP

OUTPUTS = ("json", "yaml", "wide", "name")

# Exit codes, the same for every command (documented in `--help` and docs/cli.md).
EXIT_OK = 0             # done; for status/watch: no task of the job failed
EXIT_TASKS_FAILED = 1   # status/watch: a task of the job failed, or the job ended without all tasks succeeding
EXIT_ERROR = 2          # bad usage, invalid manifests, or an error from the cluster (not found, forbidden, unreachable)
EXIT_TIMEOUT = 3        # watch --timeout passed before the job completed
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = (
    "exit codes: 0 ok (status/watch: no task failed); 1 a task of the job failed, or the job ended "
    "without all its tasks succeeding (status/watch); 2 usage, invalid manifests or an error from the "
    "cluster; 3 watch --timeout passed before the job completed; 130 interrupted")

# Job terminate reasons that are a failure in themselves (Batch's JobTerminateReason).
FAILED_TERMINATE_REASONS = ("MaxWallClockTimeExpiry", "TaskFailed")


def as_list(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The `List` kubectl prints for `get -o json|yaml` of several objects."""
    return {"apiVersion": "v1", "items": list(items), "kind": "List", "metadata": {"resourceVersion": ""}}


def object_name(obj: Mapping[str, Any]) -> str:
    """`kind.group/name`, as `kubectl get -o name` prints it (`task.podbatch.io/j-1`)."""
    api_version = str(obj.get("apiVersion") or "")
    group = api_version.split("/")[0] if "/" in api_version else GROUP
    return f"{str(obj.get('kind', '')).lower()}.{group}/{(obj.get('metadata') or {}).get('name', '')}"


def dump(data: Any, output: str) -> str:
    """`data` as kubectl writes it: JSON indented by 4 with sorted keys, or block YAML."""
    if output == "json":
        return json.dumps(data, indent=4, sort_keys=True, ensure_ascii=False)
    if output == "yaml":
        return yaml.safe_dump(data, default_flow_style=False, sort_keys=True, allow_unicode=True).rstrip("\n")
    raise ValueError(f"not a data output: {output}")


def render_objects(items: Sequence[Mapping[str, Any]], output: str | None, table: Any) -> str | None:
    """The listing text for `-o OUTPUT`; `table(items, wide)` makes the table. None: nothing
    to print (an empty listing as names, or an empty table)."""
    if output in ("json", "yaml"):
        return dump(as_list(items), output)
    if output == "name":
        return "\n".join(object_name(o) for o in items) or None
    if not items:
        return None
    return table(items, output == "wide")


def job_failed(job: Mapping[str, Any] | None, counts: Mapping[str, int]) -> bool:
    """Whether a job's outcome so far is a failure: a task failed, or the job completed for
    a failing reason or with tasks that never completed. A scheduling error alone (say, its
    pool does not exist yet) is not: it may clear, and `watch --timeout` bounds the wait."""
    if counts.get("failed", 0) > 0:
        return True
    status = (job or {}).get("status") or {}
    info = status.get("executionInfo") or {}
    if status.get("state") == "completed":
        if info.get("terminateReason") in FAILED_TERMINATE_REASONS:
            return True
        return counts.get("succeeded", 0) < counts.get("total", 0)
    return False


def job_exit_code(job: Mapping[str, Any] | None, counts: Mapping[str, int]) -> int:
    return EXIT_TASKS_FAILED if job_failed(job, counts) else EXIT_OK
