"""Leader election (controllers/leader.py) against an in-memory Lease API and virtual time.

Time is virtual: `VirtualTime.advance` moves the clock and wakes the electors' sleeps in
order, so minutes of election run in milliseconds and every bound is exact.
"""
from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from kubernetes_asyncio.client.rest import ApiException

from podbatch.config import Settings
from podbatch.controllers.leader import (
    LeaderElection, LeaseConflict, default_identity, micro_time, resolve_lease_namespace)

NS, NAME = "podbatch-system", "podbatch-operator"
EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)


class VirtualTime:
    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return EPOCH + timedelta(seconds=self.now)

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._order), fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move the clock by `seconds`, waking each sleeper at its own time."""
        end = self.now + seconds
        while True:
            await _settle()
            while self._sleepers and self._sleepers[0][2].done():   # cancelled sleepers
                heapq.heappop(self._sleepers)
            if not self._sleepers or self._sleepers[0][0] > end:
                break
            wake, _, fut = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            fut.set_result(None)
        self.now = end
        await _settle()


async def _settle() -> None:
    # Fake API calls complete without real waiting; a few loop turns run them through.
    for _ in range(30):
        await asyncio.sleep(0)


class FakeLeases:
    """Leases in memory with the API server's rules: create 409s when one exists, replace
    409s on a stale resourceVersion; `fail` makes every call raise, `hang` never answer."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.version = 0
        self.calls: list[str] = []
        self.fail: Exception | None = None
        self.hang = False
        self.conflicts_to_inject = 0

    async def _enter(self, verb: str) -> None:
        self.calls.append(verb)
        await asyncio.sleep(0)   # a real call yields: lets two electors interleave
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail

    def _store(self, ns: str, name: str, body: dict) -> dict:
        self.version += 1
        obj = copy.deepcopy(body)
        obj.setdefault("metadata", {}).update(name=name, namespace=ns, resourceVersion=str(self.version))
        self.objects[(ns, name)] = obj
        return copy.deepcopy(obj)

    async def get(self, *, namespace: str, name: str, timeout: float) -> dict | None:
        await self._enter("get")
        obj = self.objects.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def create(self, *, namespace: str, body: dict, timeout: float) -> dict:
        await self._enter("create")
        name = body["metadata"]["name"]
        if (namespace, name) in self.objects:
            raise LeaseConflict("already exists")
        return self._store(namespace, name, body)

    async def replace(self, *, namespace: str, name: str, body: dict, timeout: float) -> dict:
        await self._enter("replace")
        current = self.objects.get((namespace, name))
        if current is None:
            raise ApiException(status=404, reason="not found")
        if self.conflicts_to_inject:
            self.conflicts_to_inject -= 1
            raise LeaseConflict("injected")
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise LeaseConflict("the object has been modified")
        return self._store(namespace, name, body)

    # --- what a test (a person with kubectl) does ---------------------------------------
    def spec(self) -> dict:
        return self.objects[(NS, NAME)]["spec"]

    def edit(self, **spec) -> None:
        obj = copy.deepcopy(self.objects[(NS, NAME)])
        obj["spec"].update(spec)
        self._store(NS, NAME, obj)


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def started(self) -> None:
        self.events.append("started")

    def stopped(self) -> None:
        self.events.append("stopped")


def elector(leases: FakeLeases, vt: VirtualTime, identity: str, rec: Recorder | None = None, **kw) -> LeaderElection:
    rec = rec or Recorder()
    return LeaderElection(name=NAME, namespace=NS, leases=leases, identity=identity, clock=vt, wall_clock=vt.wall,
                          sleep=vt.sleep, on_started_leading=kw.pop("on_started_leading", rec.started),
                          on_stopped_leading=kw.pop("on_stopped_leading", rec.stopped), **kw)


async def stop(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))


def test_acquires_an_absent_lease_and_renews_it():
    async def main():
        vt, leases, rec = VirtualTime(), FakeLeases(), Recorder()
        a = elector(leases, vt, "a", rec)
        task = asyncio.create_task(a.run())
        await vt.advance(0)
        assert a.is_leader and rec.events == ["started"]
        await asyncio.wait_for(a.wait_until_leader(), 1)
        spec = leases.spec()
        assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 0
        assert spec["leaseDurationSeconds"] == 15 and spec["renewTime"] == micro_time(EPOCH)
        leases.calls.clear()
        await vt.advance(60)
        assert a.is_leader and rec.events == ["started"]
        # The leader renews every retry period from the Lease it wrote: no reads.
        assert leases.calls == ["replace"] * 30
        assert leases.spec()["renewTime"] == micro_time(EPOCH + timedelta(seconds=60))
        assert leases.spec()["acquireTime"] == micro_time(EPOCH)
        await stop(task)
    run(main())


def test_a_standby_waits_while_the_lease_is_renewed():
    async def main():
        vt, leases = VirtualTime(), FakeLeases()
        a, b = elector(leases, vt, "a"), elector(leases, vt, "b")
        ta = asyncio.create_task(a.run())
        await vt.advance(0)
        tb = asyncio.create_task(b.run())
        for _ in range(60):
            await vt.advance(1)
            assert a.is_leader and not b.is_leader
        assert b.holder == "a" and leases.spec()["leaseTransitions"] == 0
        await stop(ta), await stop(tb)
    run(main())


def test_graceful_stop_releases_and_the_standby_takes_over_at_once():
    async def main():
        vt, leases = VirtualTime(), FakeLeases()
        ra, rb = Recorder(), Recorder()
        a, b = elector(leases, vt, "a", ra), elector(leases, vt, "b", rb)
        ta = asyncio.create_task(a.run())
        await vt.advance(0)
        tb = asyncio.create_task(b.run())
        await vt.advance(7)
        await stop(ta)
        assert not a.is_leader and ra.events == ["started", "stopped"]
        assert leases.spec()["holderIdentity"] == "" and leases.spec()["leaseDurationSeconds"] == 1
        released = vt.now
        while not b.is_leader:
            await vt.advance(0.1)
        # b's next try (retry period with jitter), not a lease duration later.
        assert vt.now - released <= 2.0 * 1.5 + 0.1
        assert rb.events == ["started"] and leases.spec()["holderIdentity"] == "b"
        assert leases.spec()["leaseTransitions"] == 1 and b.lease_transitions == 1
        await stop(tb)
    run(main())


def test_a_crashed_leader_is_replaced_after_the_lease_duration():
    async def main():
        vt, leases, rb = VirtualTime(), FakeLeases(), Recorder()
        a, b = elector(leases, vt, "a", release_on_cancel=False), elector(leases, vt, "b", rb)
        ta = asyncio.create_task(a.run())
        await vt.advance(0)
        tb = asyncio.create_task(b.run())
        await vt.advance(9)
        await stop(ta)          # a crash: no release, no more renewals
        assert leases.spec()["holderIdentity"] == "a"
        last_renewal = (datetime.fromisoformat(leases.spec()["renewTime"].replace("Z", "+00:00")) - EPOCH).total_seconds()
        while not b.is_leader:
            await vt.advance(0.05)
            assert vt.now < last_renewal + 15 + 2 * 1.5 + 0.2, "the standby waited too long"
        # Never before a lease duration has passed since the last renewal it could see.
        assert vt.now >= last_renewal + 15
        assert leases.spec()["holderIdentity"] == "b" and leases.spec()["leaseTransitions"] == 1
        assert rb.events == ["started"]
        await stop(tb)
    run(main())


def test_expiry_is_judged_by_the_local_clock_not_by_renew_time():
    """A renewTime far in the past (a skewed clock) does not make a live Lease expired:
    only a record that stops changing for a lease duration, as seen here, does."""
    async def main():
        vt, leases = VirtualTime(), FakeLeases()
        leases._store(NS, NAME, {"metadata": {"name": NAME}, "spec": {
            "holderIdentity": "other", "leaseDurationSeconds": 15, "leaseTransitions": 4,
            "acquireTime": "2000-01-01T00:00:00.000000Z", "renewTime": "2000-01-01T00:00:00.000000Z"}})
        b = elector(leases, vt, "b")
        tb = asyncio.create_task(b.run())
        for i in range(20):   # "other" keeps renewing, with its clock 24 years behind
            await vt.advance(2)
            leases.edit(renewTime=f"2000-01-01T00:00:{i:02d}.000000Z")
            assert not b.is_leader
        await vt.advance(14)
        assert not b.is_leader
        await vt.advance(15 + 3)
        assert b.is_leader and leases.spec()["leaseTransitions"] == 5
        await stop(tb)
    run(main())


def test_a_lease_taken_by_hand_stops_the_leader_at_its_next_renewal():
    async def main():
        vt, leases, ra = VirtualTime(), FakeLeases(), Recorder()
        a = elector(leases, vt, "a", ra)
        ta = asyncio.create_task(a.run())
        await vt.advance(1)
        leases.edit(holderIdentity="intruder", leaseTransitions=1)
        taken = vt.now
        while a.is_leader:
            await vt.advance(0.1)
        assert vt.now - taken <= 2.0 + 0.1 and ra.events == ["started", "stopped"]
        assert a.holder == "intruder"
        # The intruder never renews: a takes the Lease back one lease duration after it
        # saw the change, and counts the transition.
        await vt.advance(14)
        assert not a.is_leader
        await vt.advance(4)
        assert a.is_leader and leases.spec()["leaseTransitions"] == 2
        assert ra.events == ["started", "stopped", "started"]
        await stop(ta)
    run(main())


def test_a_leader_that_cannot_renew_is_deposed_at_the_renew_deadline():
    async def main():
        vt, leases, ra = VirtualTime(), FakeLeases(), Recorder()
        a = elector(leases, vt, "a", ra)
        ta = asyncio.create_task(a.run())
        await vt.advance(4)
        last_renewal = vt.now      # renewals at 0, 2, 4
        leases.fail = ApiException(status=500, reason="etcd is unhappy")
        await vt.advance(9.9)
        assert a.is_leader
        await vt.advance(0.1)
        assert not a.is_leader and ra.events == ["started", "stopped"]
        assert vt.now - last_renewal == pytest.approx(10)
        # The API server comes back; the Lease is still a's, so a leads again.
        leases.fail = None
        await vt.advance(3.1)
        assert a.is_leader and ra.events == ["started", "stopped", "started"]
        assert leases.spec()["leaseTransitions"] == 0
        await stop(ta)
    run(main())


def test_is_leader_is_false_past_the_renew_deadline_even_before_the_loop_runs():
    """A starved event loop: the renew loop has not run, yet writers must stop."""
    async def main():
        vt, leases = VirtualTime(), FakeLeases()
        a = elector(leases, vt, "a")
        ta = asyncio.create_task(a.run())
        await vt.advance(0)
        assert a.is_leader
        vt.now += 10.5          # time passes; no sleeper is woken
        assert not a.is_leader
        await stop(ta)
    run(main())


def test_a_hung_api_server_cannot_keep_a_leader_leading():
    """Real time and short periods: every call is bounded, so a call that never answers
    ends at the renew deadline and the leader is deposed."""
    async def main():
        leases, rec = FakeLeases(), Recorder()
        a = LeaderElection(name=NAME, namespace=NS, leases=leases, identity="a", lease_duration=1.0,
                           renew_deadline=0.5, retry_period=0.1, on_started_leading=rec.started,
                           on_stopped_leading=rec.stopped)
        ta = asyncio.create_task(a.run())
        await asyncio.wait_for(a.wait_until_leader(), 1)
        leases.hang = True
        loop = asyncio.get_running_loop()
        hung_at = loop.time()
        await asyncio.wait_for(a.wait_until_follower(), 2)
        assert loop.time() - hung_at < 1.0   # renew deadline 0.5 s, next try 0.1 s, loaded machine
        assert not a.is_leader and rec.events == ["started", "stopped"]
        t0 = loop.time()
        await stop(ta)   # the release hangs too, and is bounded as well
        assert loop.time() - t0 < 0.5
    run(main())


def test_of_two_racing_for_an_absent_lease_exactly_one_wins():
    async def main():
        vt, leases = VirtualTime(), FakeLeases()
        a, b = elector(leases, vt, "a"), elector(leases, vt, "b")
        ta, tb = asyncio.create_task(a.run()), asyncio.create_task(b.run())
        await vt.advance(0)
        assert a.is_leader != b.is_leader
        assert leases.calls.count("create") == 2 and len(leases.objects) == 1
        await vt.advance(30)
        assert a.is_leader != b.is_leader
        await stop(ta), await stop(tb)
    run(main())


def test_a_conflict_on_takeover_means_the_race_is_lost():
    async def main():
        vt, leases = VirtualTime(), FakeLeases()
        leases._store(NS, NAME, {"metadata": {"name": NAME}, "spec": {"holderIdentity": "", "leaseTransitions": 3}})
        b = elector(leases, vt, "b")
        leases.conflicts_to_inject = 1
        tb = asyncio.create_task(b.run())
        await vt.advance(0)
        assert not b.is_leader
        await vt.advance(3.1)
        assert b.is_leader and leases.spec()["leaseTransitions"] == 4
        await stop(tb)
    run(main())


def test_a_leader_survives_an_unrelated_change_to_its_lease():
    """A 409 on the quick renewal (someone labelled the Lease) is not a loss: the leader
    reads the Lease, sees itself still holding it, and renews."""
    async def main():
        vt, leases, ra = VirtualTime(), FakeLeases(), Recorder()
        a = elector(leases, vt, "a", ra)
        ta = asyncio.create_task(a.run())
        await vt.advance(1)
        obj = copy.deepcopy(leases.objects[(NS, NAME)])
        obj["metadata"]["labels"] = {"team": "batch"}
        leases._store(NS, NAME, obj)
        leases.calls.clear()
        await vt.advance(2)
        assert leases.calls == ["replace", "get", "replace"]
        assert a.is_leader and ra.events == ["started"]
        assert leases.objects[(NS, NAME)]["metadata"]["labels"] == {"team": "batch"}
        await stop(ta)
    run(main())


def test_an_async_on_started_leading_runs_while_leading_and_is_cancelled_on_loss():
    async def main():
        vt, leases = VirtualTime(), FakeLeases()
        state = {"running": False, "cancelled": False}

        async def lead():
            state["running"] = True
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                state["cancelled"] = True
                raise

        stopped = []

        async def on_stopped():
            stopped.append(state["cancelled"])

        a = elector(leases, vt, "a", on_started_leading=lead, on_stopped_leading=on_stopped)
        ta = asyncio.create_task(a.run())
        await vt.advance(1)
        assert state == {"running": True, "cancelled": False}
        leases.edit(holderIdentity="intruder")
        await vt.advance(2)
        # The leading work was cancelled before on_stopped_leading ran.
        assert state["cancelled"] and stopped == [True]
        await stop(ta)
    run(main())


def test_failing_callbacks_do_not_stop_the_election():
    async def main():
        vt, leases = VirtualTime(), FakeLeases()

        def boom():
            raise RuntimeError("callback bug")

        a = elector(leases, vt, "a", on_started_leading=boom, on_stopped_leading=boom)
        ta = asyncio.create_task(a.run())
        await vt.advance(5)
        assert a.is_leader
        await stop(ta)
        assert leases.spec()["holderIdentity"] == ""
    run(main())


def test_a_crashed_elector_with_release_on_cancel_off_keeps_the_lease():
    async def main():
        vt, leases = VirtualTime(), FakeLeases()
        a = elector(leases, vt, "a", release_on_cancel=False)
        ta = asyncio.create_task(a.run())
        await vt.advance(1)
        await stop(ta)
        assert leases.spec()["holderIdentity"] == "a" and not a.is_leader
    run(main())


def test_timing_must_leave_a_gap_between_deposition_and_takeover():
    leases = FakeLeases()
    for duration, deadline, retry in ((15, 15, 2), (15, 10, 10), (15, 10, 0), (10, 15, 2)):
        with pytest.raises(ValueError):
            LeaderElection(name=NAME, namespace=NS, leases=leases, lease_duration=duration,
                           renew_deadline=deadline, retry_period=retry)
    with pytest.raises(ValueError):
        LeaderElection(name=NAME, namespace=NS)   # neither api_client nor leases


def test_identities_are_unique_per_elector():
    a, b = default_identity(), default_identity()
    assert a != b and a.split("_")[:2] == b.split("_")[:2]
    e = LeaderElection(name=NAME, namespace=NS, leases=FakeLeases())
    assert e.identity and not e.is_leader and e.holder == ""


def test_lease_namespace(tmp_path):
    sa = tmp_path / "namespace"
    assert resolve_lease_namespace(configured="ops", service_account_file=sa) == "ops"
    assert resolve_lease_namespace(configured="", service_account_file=sa) == "default"
    sa.write_text("podbatch-system\n")
    assert resolve_lease_namespace(configured="", service_account_file=sa) == "podbatch-system"


def test_settings(monkeypatch):
    s = Settings()
    assert (s.leader_election, s.lease_name, s.lease_namespace) == (True, "podbatch-operator", "")
    assert (s.lease_duration_seconds, s.renew_deadline_seconds, s.retry_period_seconds) == (15, 10, 2)
    monkeypatch.setenv("PODBATCH_LEASE_NAME", "ops-lease")
    monkeypatch.setenv("PODBATCH_LEADER_ELECTION", "false")
    s = Settings()
    assert s.lease_name == "ops-lease" and s.leader_election is False
    for bad in ({"renew_deadline_seconds": 15}, {"retry_period_seconds": 10}, {"lease_duration_seconds": 0},
                {"lease_name": ""}):
        with pytest.raises(ValidationError):
            Settings(**bad)
    e = LeaderElection.from_settings(Settings(lease_namespace="ops", retry_period_seconds=1), api_client=object(),
                                     identity="me")
    assert (e.name, e.namespace, e.identity, e.lease_duration, e.renew_deadline, e.retry_period) == \
        ("ops-lease", "ops", "me", 15, 10, 1)
