"""Leader election (controllers/leader.py) against the real API server: one Lease, two
electors in this process, client-go's timings (lease 15 s, renew deadline 10 s, retry 2 s).
One operator acts at a time; a graceful stop hands over at once, a crash within about a
lease duration, and a leader whose Lease is taken stops leading."""
from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone

import pytest

from podbatch.controllers.leader import KubeLeases, LeaderElection, micro_time

pytestmark = pytest.mark.integration

LEASE = "podbatch-operator-test"


async def _client(kubeconfig: str):
    from kubernetes_asyncio import config
    return await config.new_client_from_config(config_file=kubeconfig)


async def until(what: str, predicate, timeout: float, interval: float = 0.05) -> float:
    """Seconds until predicate() holds; fails naming `what` after `timeout`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        if loop.time() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
    return loop.time() - start


async def only_one_leads(electors: list[LeaderElection], seconds: float) -> LeaderElection:
    """Sample for `seconds`: at every instant exactly one elector leads, always the same one."""
    leaders = set()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        leading = [e for e in electors if e.is_leader]
        assert len(leading) == 1, f"leaders: {[e.identity for e in leading]}"
        leaders.add(leading[0].identity)
        await asyncio.sleep(0.05)
    assert len(leaders) == 1
    return next(e for e in electors if e.is_leader)


class Elections:
    """Electors on one Lease, each with its own API client, all stopped at the end."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        self.kubeconfig, self.namespace = kubeconfig, namespace
        self.tasks: dict[str, asyncio.Task] = {}
        self.stopped: dict[str, int] = {}
        self.clients = []

    async def start(self, identity: str) -> LeaderElection:
        api = await _client(self.kubeconfig)
        self.clients.append(api)
        self.stopped[identity] = 0

        def on_stopped():
            self.stopped[identity] += 1

        e = LeaderElection(name=LEASE, namespace=self.namespace, api_client=api, identity=identity,
                           on_stopped_leading=on_stopped)
        self.tasks[identity] = asyncio.create_task(e.run(), name=f"elector-{identity}")
        return e

    async def stop(self, e: LeaderElection) -> None:
        task = self.tasks.pop(e.identity)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for api in self.clients:
            await api.close()


async def _read_lease(kubeconfig: str, namespace: str) -> dict:
    api = await _client(kubeconfig)
    try:
        return await KubeLeases(api_client=api).get(namespace=namespace, name=LEASE, timeout=10)
    finally:
        await api.close()


def _run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 120))


def test_exactly_one_leads_and_a_graceful_stop_hands_over_at_once(kubeconfig, namespace):
    async def main():
        el = Elections(kubeconfig, namespace)
        try:
            a, b = await el.start("elector-a"), await el.start("elector-b")
            await until("a leader", lambda: a.is_leader or b.is_leader, 10)
            leader = await only_one_leads([a, b], 5)
            standby = b if leader is a else a
            lease = await _read_lease(kubeconfig, namespace)
            assert lease["spec"]["holderIdentity"] == leader.identity
            assert lease["spec"]["leaseTransitions"] == 0 and lease["spec"]["leaseDurationSeconds"] == 15

            await el.stop(leader)      # graceful: stops leading, then releases the Lease
            assert not leader.is_leader and el.stopped[leader.identity] == 1
            waited = await until("the standby to lead", lambda: standby.is_leader, 8)
            assert waited < 5, f"took {waited:.1f}s after a release"
            lease = await _read_lease(kubeconfig, namespace)
            assert lease["spec"]["holderIdentity"] == standby.identity and lease["spec"]["leaseTransitions"] == 1
        finally:
            await el.close()
    _run(main())


def test_a_crashed_leader_is_replaced_within_the_lease_duration(kubeconfig, namespace):
    async def main():
        el = Elections(kubeconfig, namespace)
        try:
            a = await el.start("elector-a")
            await until("a to lead", lambda: a.is_leader, 10)
            b = await el.start("elector-b")
            await only_one_leads([a, b], 3)
            assert a.is_leader

            a.release_on_cancel = False   # a crash: renewals stop, nothing is released
            await el.stop(a)
            lease = await _read_lease(kubeconfig, namespace)
            assert lease["spec"]["holderIdentity"] == "elector-a"
            waited = await until("b to take over the expired Lease", lambda: b.is_leader, 25, interval=0.1)
            # Not before a lease duration after a's last renewal (at most a retry period
            # before the crash), and about a lease duration after it.
            assert 12 <= waited < 20, f"took over after {waited:.1f}s"
            lease = await _read_lease(kubeconfig, namespace)
            assert lease["spec"]["holderIdentity"] == "elector-b" and lease["spec"]["leaseTransitions"] == 1
        finally:
            await el.close()
    _run(main())


def test_a_leader_whose_lease_is_taken_stops_leading_within_the_renew_deadline(kubeconfig, namespace):
    async def main():
        el = Elections(kubeconfig, namespace)
        api = await _client(kubeconfig)
        try:
            from kubernetes_asyncio import client
            a = await el.start("elector-a")
            await until("a to lead", lambda: a.is_leader, 10)
            await client.CoordinationV1Api(api).patch_namespaced_lease(LEASE, namespace, {"spec": {
                "holderIdentity": "someone-else", "renewTime": micro_time(datetime.now(timezone.utc))}},
                _content_type="application/merge-patch+json")
            waited = await until("a to stop leading", lambda: not a.is_leader, 12)
            assert waited < 10, f"still leading {waited:.1f}s after losing the Lease"
            assert el.stopped["elector-a"] == 1
            # someone-else's claim counts for its lease duration: a does not take it back.
            await asyncio.sleep(5)
            assert not a.is_leader and a.holder == "someone-else"
            lease = await _read_lease(kubeconfig, namespace)
            assert lease["spec"]["holderIdentity"] == "someone-else"
        finally:
            await el.close()
            await api.close()
    _run(main())
