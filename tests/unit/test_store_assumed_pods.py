"""Pods the executor is creating, held in the store before the API answers (store.assume_pod):
a binding's pod is assumed at once, so the next pass sees its task bound and its node's slot
taken. A create refused outright drops it; a create whose answer was lost (504, timeout) may
have happened, so its pod is held until the watch shows it or ASSUMED_POD_TTL passes."""
from __future__ import annotations

import pytest

from podbatch.controllers import clock
from podbatch.controllers.store import ASSUMED_POD_TTL, Store

pytestmark = pytest.mark.unit


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def fake_clock():
    c = _Clock()
    prev = clock._clock
    clock.use(c)
    yield c
    clock.use(prev)


def _pod(rv: int | None = None) -> dict:
    meta = {"namespace": "ns", "name": "a-1",
            "labels": {"podbatch.io/role": "task", "podbatch.io/pool": "p", "podbatch.io/job": "j",
                       "podbatch.io/task": "a", "podbatch.io/task-uid": "ua", "podbatch.io/attempt": "1"},
            "annotations": {"podbatch.io/task-name": "a"}}
    if rv is not None:
        meta["resourceVersion"] = str(rv)
    return {"metadata": meta, "spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}}


def test_an_assumed_pod_takes_its_slot_and_a_refused_create_drops_it(fake_clock):
    s = Store()
    assert s.assume_pod(_pod())
    assert "ns/a-1" in s.pods and s.pod_slots_on("n1") == 1
    assert not s.assume_pod(_pod())            # held already
    s.forget_assumed_pod("ns", "a-1")          # a 4xx/500: not created
    assert "ns/a-1" not in s.pods and s.pod_slots_on("n1") == 0


def test_a_lost_create_holds_its_pod_until_the_watch_shows_it(fake_clock):
    s = Store()
    s.assume_pod(_pod())
    s.forget_assumed_pod("ns", "a-1", maybe_created=True)
    assert s.assumed_expire_in() == ASSUMED_POD_TTL
    s.put_pod(_pod(rv=7))                      # the watch: it was created
    fake_clock.now += ASSUMED_POD_TTL + 1
    s.expire_assumed_pods()
    assert s.pods["ns/a-1"].rv == 7 and s.assumed_expire_in() is None


def test_a_lost_create_the_watch_never_shows_expires(fake_clock):
    s = Store()
    s.assume_pod(_pod())
    s.forget_assumed_pod("ns", "a-1", maybe_created=True)
    fake_clock.now += ASSUMED_POD_TTL - 1
    s.expire_assumed_pods()
    assert "ns/a-1" in s.pods                  # still held: its slot stays taken
    fake_clock.now += 2
    s.expire_assumed_pods()
    assert "ns/a-1" not in s.pods and s.pod_slots_on("n1") == 0 and s.assumed_expire_in() is None


def test_forgetting_never_drops_the_pod_the_watch_brought(fake_clock):
    s = Store()
    s.assume_pod(_pod())
    s.put_pod(_pod(rv=3))
    s.forget_assumed_pod("ns", "a-1")
    assert s.pods["ns/a-1"].rv == 3
