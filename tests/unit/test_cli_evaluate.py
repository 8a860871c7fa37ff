"""`pool evaluate`'s reading of Batch's results string and its table."""
from __future__ import annotations

import pytest

from podbatch.cli.evaluate import parse_results, render


@pytest.mark.parametrize("results, want", [
    ("$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0", [("$TargetDedicatedNodes", "2"), ("$TargetLowPriorityNodes", "0")]),
    ("$x=[1, 2];$y=3", [("$x", "[1, 2]"), ("$y", "3")]),
    ("$v=[1;2];$w=1", [("$v", "[1;2]"), ("$w", "1")]),      # a ';' inside brackets is not a separator
    ("", []),
    (None, []),
])
def test_results_are_read_as_batch_writes_them(results, want):
    assert parse_results(results) == want


def test_the_table_and_an_error():
    assert render({"results": "$TargetDedicatedNodes=2;$a=10"}).splitlines() == [
        "$TargetDedicatedNodes  2", "$a                     10"]
    assert render({"error": {"code": "SyntaxError", "message": "line 1, column 3: …"}}) == \
        "error (SyntaxError): line 1, column 3: …"
