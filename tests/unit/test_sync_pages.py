"""A relist puts the list page by page (Kube.list_pages), so 100,000 Tasks are never held
as one list; what no page had, and is older than the list, is forgotten at the end."""
from __future__ import annotations

import asyncio

import pytest

from podbatch.controllers import sync
from podbatch.controllers.store import Store

pytestmark = pytest.mark.unit


def _task(i: int, rv: int) -> dict:
    return {"metadata": {"namespace": "ns", "name": f"t{i}", "uid": f"u{i}", "resourceVersion": str(rv)},
            "spec": {"jobName": "j"}}


class _PagedKube:
    def __init__(self, pages: list[list[dict]], rv: str) -> None:
        self.pages, self.rv, self.held = pages, rv, []

    async def list_pages(self, plural: str):
        assert plural == "tasks"
        for page in self.pages:
            yield page, self.rv
            self.held.append(len(page))


def test_a_relist_in_pages_keeps_every_page_and_forgets_the_rest():
    s = Store()
    for i in range(7):
        s.put_task(_task(i, 10 + i))
    s.put_task(_task(99, 60))   # created after the list was taken: kept although unlisted
    kube = _PagedKube([[_task(0, 10), _task(1, 11)], [_task(3, 13)], [_task(5, 15), _task(6, 16)]], "50")
    gone = asyncio.run(sync.relist(s, kube, "tasks"))
    assert gone == 2 and sorted(s.tasks) == ["ns/t0", "ns/t1", "ns/t3", "ns/t5", "ns/t6", "ns/t99"]
    assert kube.held == [2, 1, 2] and s.counts_of("ns/j", None)[0]["active"] == 6
