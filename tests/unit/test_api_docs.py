"""docs/api.md is generated from the models and kept up to date (make crds)."""
from __future__ import annotations

from podbatch.api import KINDS
from podbatch.api.docs import DOC, render


def test_api_reference_is_up_to_date():
    assert DOC.read_text() == render(), "docs/api.md is stale: run make crds"


def test_api_reference_lists_every_kind_and_key_fields():
    text = render()
    for kind in KINDS:
        assert f"## {kind}\n" in text and f"### {kind}.spec" in text and f"### {kind}.status" in text
    for field in ("`taskSlotsPerNode`", "`dependsOn.taskIdRanges[].start`", "`schedule.recurrenceInterval`",
                  "`nodeCounts.waitingForStartTask`", "`executionInfo.requeueCount`"):
        assert field in text, field
