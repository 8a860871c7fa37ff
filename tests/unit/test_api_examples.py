"""Every podbatch object under examples/ is valid, strictly (unknown fields included)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from podbatch import GROUP
from podbatch.api import validate_object

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted(EXAMPLES.rglob("*.yaml"))


def podbatch_docs(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return [d for d in docs if d.get("apiVersion", "").startswith(GROUP + "/")]


def test_there_are_examples_of_every_kind():
    kinds = {d["kind"] for f in FILES for d in podbatch_docs(f)}
    assert kinds == {"Pool", "Job", "Task", "TaskCollection", "JobSchedule", "PoolGrant"}  # ComputeNodes are made by podbatch


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_is_valid(path):
    docs = podbatch_docs(path)
    assert docs, f"{path} has no podbatch objects"
    for doc in docs:
        validate_object(doc)


def test_quickstart_shape():
    docs = [d for f in sorted((EXAMPLES / "quickstart").glob("*.yaml")) for d in podbatch_docs(f)]
    pools = [d for d in docs if d["kind"] == "Pool"]
    tasks = [d for d in docs if d["kind"] == "Task"]
    assert pools[0]["metadata"]["name"] == "quickstart"
    assert (pools[0]["spec"]["targetDedicatedNodes"], pools[0]["spec"]["taskSlotsPerNode"]) == (3, 2)
    assert pools[0]["spec"]["nodeGroup"]["provider"] == "kwok"
    assert [t["metadata"]["name"] for t in tasks] == [f"quickstart-{i}" for i in range(1, 21)]
    assert all(t["spec"]["jobName"] == "quickstart" for t in tasks)
    assert tasks[0]["spec"]["commandLine"] == '/bin/sh -c "echo hello from $AZ_BATCH_TASK_ID; sleep 1"'
