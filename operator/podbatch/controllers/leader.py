"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go does it.

podbatch is the scheduler of its pools and keeps expectations in memory: two operators
writing at once could bind one task twice or count one retry twice. So one operator
acts at a time. It holds a Lease and renews it every retry period; a standby takes the
Lease when it is released, or when its record has not changed for a lease duration as
measured by the standby's own clock from when it last saw it change (clocks of two
machines are never compared). A leader that has not renewed within its renew deadline,
shorter than the lease duration, stops leading before any standby may start: that gap
is what keeps two leaders from overlapping. Updates carry the resourceVersion read, so
of two electors racing for one Lease exactly one wins (the other gets a 409).

Where this differs from client-go, on purpose:
- a leader that sees another holder on the Lease stops at once (client-go keeps
  leading until its renew deadline);
- a standby also wakes when the Lease it watches would expire, and its jitter is
  smaller, so a crashed leader is replaced in about one lease duration;
- `is_leader` checks the renew deadline on every read, so a starved event loop cannot
  keep a deposed leader writing before the renew loop notices;
- after losing the Lease the elector campaigns again (client-go's users exit).
"""
from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
import math
import os
import random
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

if TYPE_CHECKING:
    from podbatch.config import Settings

log = logging.getLogger("podbatch.leader")

# client-go's defaults.
LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
# A standby retries every retry period * [1, 1 + JITTER): enough to keep standbys from
# trying in step; client-go's 1.2 would add up to 2.4 s to every takeover.
JITTER = 0.5
# Woken at an observed expiry, a standby waits this much more so it does not find the
# Lease valid by a hair.
EXPIRY_MARGIN = 0.05
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

Callback = Callable[[], Any]   # plain, or returning an awaitable


class LeaseConflict(Exception):
    """The Lease changed since it was read, or was created meanwhile (409): lost the race."""


class Leases(Protocol):
    """The three Lease calls an elector makes; each must end within `timeout` seconds."""

    async def get(self, *, namespace: str, name: str, timeout: float) -> dict | None: ...

    async def create(self, *, namespace: str, body: dict, timeout: float) -> dict: ...

    async def replace(self, *, namespace: str, name: str, body: dict, timeout: float) -> dict: ...


class KubeLeases:
    """Leases on the API server (CoordinationV1Api), read and written as plain dicts."""

    def __init__(self, *, api_client: client.ApiClient) -> None:
        self.api = client.CoordinationV1Api(api_client)

    async def get(self, *, namespace: str, name: str, timeout: float) -> dict | None:
        try:
            return await _json(self.api.read_namespaced_lease(
                name, namespace, _preload_content=False, _request_timeout=timeout))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def create(self, *, namespace: str, body: dict, timeout: float) -> dict:
        return await _json(self.api.create_namespaced_lease(
            namespace, body, _preload_content=False, _request_timeout=timeout))

    async def replace(self, *, namespace: str, name: str, body: dict, timeout: float) -> dict:
        return await _json(self.api.replace_namespaced_lease(
            name, namespace, body, _preload_content=False, _request_timeout=timeout))


async def _json(call: Awaitable[Any]) -> dict:
    # Raw responses: the generated models would turn MicroTime into datetimes and back.
    resp = await call
    try:
        data = await resp.read()
    finally:
        resp.release()
    if resp.status == 409:
        raise LeaseConflict(data[:300].decode(errors="replace"))
    if not 200 <= resp.status <= 299:
        raise ApiException(status=resp.status, reason=data[:300].decode(errors="replace"))
    return json.loads(data)


@dataclass(frozen=True)
class LeaderRecord:
    """The Lease's spec: who holds it, since when, and for how long a renewal counts."""
    holder: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: dict) -> "LeaderRecord":
        spec = lease.get("spec") or {}
        return cls(holder=spec.get("holderIdentity") or "",
                   lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   transitions=int(spec.get("leaseTransitions") or 0))

    def to_spec(self) -> dict:
        return {"holderIdentity": self.holder, "leaseDurationSeconds": self.lease_duration_seconds,
                "acquireTime": self.acquire_time, "renewTime": self.renew_time,
                "leaseTransitions": self.transitions}


def default_identity() -> str:
    """hostname (the pod's name in a cluster), pid and a random suffix: unique per process
    even when a restarted pod keeps its name."""
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(4)}"


def resolve_lease_namespace(*, configured: str, service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    """The configured namespace; else the operator's own when it runs in a pod; else default."""
    if configured:
        return configured
    try:
        own = service_account_file.read_text().strip()
    except OSError:
        own = ""
    return own or "default"


def micro_time(moment: datetime) -> str:
    """A metav1.MicroTime as the API server writes it."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class LeaderElection:
    """One elector for one Lease. `run()` campaigns, leads and campaigns again until
    cancelled; cancelling it stops leading first and then releases the Lease."""

    def __init__(self, *, name: str, namespace: str, api_client: client.ApiClient | None = None,
                 leases: Leases | None = None, identity: str | None = None,
                 lease_duration: float = LEASE_DURATION, renew_deadline: float = RENEW_DEADLINE,
                 retry_period: float = RETRY_PERIOD,
                 on_started_leading: Callback | None = None, on_stopped_leading: Callback | None = None,
                 release_on_cancel: bool = True,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime] = _utcnow,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        """`clock` (seconds, monotonic) judges expiry and deadlines; `wall_clock` only stamps
        the Lease for people reading it. An async `on_started_leading` runs as a task that
        is cancelled when leadership ends (client-go's OnStartedLeading(ctx))."""
        if (api_client is None) == (leases is None):
            raise ValueError("give exactly one of api_client and leases")
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration, got "
                             f"{retry_period} < {renew_deadline} < {lease_duration}")
        self.name = name
        self.namespace = namespace
        self.identity = identity or default_identity()
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.release_on_cancel = release_on_cancel
        self._leases: Leases = leases if leases is not None else KubeLeases(api_client=api_client)
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._leading = False
        self._renewed_at = -math.inf     # clock() when the last successful write was sent
        self._lease: dict | None = None  # the Lease as last read or written (its resourceVersion)
        self._observed: LeaderRecord | None = None
        self._observed_at = -math.inf    # clock() when the record last changed, to us
        self._became_leader = asyncio.Event()
        self._became_follower = asyncio.Event()
        self._became_follower.set()
        self._leading_task: asyncio.Future | None = None

    @classmethod
    def from_settings(cls, settings: "Settings", *, api_client: client.ApiClient, identity: str | None = None,
                      on_started_leading: Callback | None = None,
                      on_stopped_leading: Callback | None = None) -> "LeaderElection":
        return cls(name=settings.lease_name, namespace=resolve_lease_namespace(configured=settings.lease_namespace),
                   api_client=api_client, identity=identity,
                   lease_duration=settings.lease_duration_seconds,
                   renew_deadline=settings.renew_deadline_seconds, retry_period=settings.retry_period_seconds,
                   on_started_leading=on_started_leading, on_stopped_leading=on_stopped_leading)

    # --- what callers read ----------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """True only while leading and within the renew deadline of the last renewal."""
        return self._leading and self._clock() - self._renewed_at < self.renew_deadline

    @property
    def holder(self) -> str:
        """The holder last seen on the Lease ("" when released or not read yet)."""
        return self._observed.holder if self._observed else ""

    @property
    def lease_transitions(self) -> int:
        """How often the Lease changed hands, as last seen."""
        return self._observed.transitions if self._observed else 0

    async def wait_until_leader(self) -> None:
        await self._became_leader.wait()

    async def wait_until_follower(self) -> None:
        """Returns at once when not leading; else when leadership ends."""
        await self._became_follower.wait()

    # --- the loop ---------------------------------------------------------------------
    async def run(self) -> None:
        """Campaign, lead while renewals succeed, campaign again; until cancelled."""
        try:
            while True:
                await self._acquire()
                await self._renew_until_lost()
        finally:
            await self._shut_down()

    async def _acquire(self) -> None:
        while True:
            started = self._clock()
            if await self._attempt(timeout=self.renew_deadline):
                self._renewed_at = started
                await self._start_leading()
                return
            await self._sleep(self._candidate_wait())

    def _candidate_wait(self) -> float:
        wait = self.retry_period * (1 + JITTER * random.random())
        if self._observed is not None and self._observed.holder and self._observed.holder != self.identity:
            expires_in = self._expires_at() - self._clock()
            if 0 < expires_in < wait:
                wait = expires_in + EXPIRY_MARGIN
        return wait

    async def _renew_until_lost(self) -> None:
        while True:
            await self._sleep(self.retry_period)
            started = self._clock()
            left = self._renewed_at + self.renew_deadline - started
            if left <= 0:   # woken too late (a starved loop): the deadline has passed
                await self._stop_leading(reason=f"not renewed within {self.renew_deadline:g}s")
                return
            if await self._attempt(timeout=left):
                self._renewed_at = started
                continue
            if self._observed is not None and self._observed.holder != self.identity:
                await self._stop_leading(reason=f"the Lease is held by {self._observed.holder or 'nobody'!r}")
                return
            if self._clock() - self._renewed_at >= self.renew_deadline:
                await self._stop_leading(reason=f"not renewed within {self.renew_deadline:g}s")
                return

    async def _attempt(self, *, timeout: float) -> bool:
        # The outer bound holds even if a call ignores its own timeout.
        try:
            return await asyncio.wait_for(self._try_acquire_or_renew(timeout=timeout), timeout)
        except LeaseConflict:
            log.debug("lease %s/%s: lost a race (409)", self.namespace, self.name)
        except TimeoutError:
            log.warning("lease %s/%s: no answer within %.1fs", self.namespace, self.name, timeout)
        except Exception as e:
            log.warning("lease %s/%s: %s", self.namespace, self.name, _describe(e))
        return False

    async def _try_acquire_or_renew(self, *, timeout: float) -> bool:
        stamp = micro_time(self._wall_clock())
        duration = max(1, math.ceil(self.lease_duration))
        # 1. A leader renews the Lease it last wrote: one call; a 409 means look again.
        if self._leading and self._lease is not None and self.holder == self.identity:
            renewed = LeaderRecord(holder=self.identity, lease_duration_seconds=duration,
                                   acquire_time=self._observed.acquire_time or stamp, renew_time=stamp,
                                   transitions=self._observed.transitions)
            try:
                await self._write(renewed, timeout=timeout)
                return True
            except LeaseConflict:
                pass
        # 2. Read the Lease; create it when there is none.
        lease = await self._leases.get(namespace=self.namespace, name=self.name, timeout=timeout)
        if lease is None:
            record = LeaderRecord(holder=self.identity, lease_duration_seconds=duration,
                                  acquire_time=stamp, renew_time=stamp, transitions=0)
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace}, "spec": record.to_spec()}
            self._observe_own(await self._leases.create(namespace=self.namespace, body=body, timeout=timeout))
            return True
        # 3. The expiry clock restarts whenever the record changes.
        self._observe(lease)
        seen = self._observed
        if seen.holder and seen.holder != self.identity and self._clock() < self._expires_at():
            return False
        # 4. Renew our own, or take over a released or expired one.
        if seen.holder == self.identity:
            record = LeaderRecord(holder=self.identity, lease_duration_seconds=duration,
                                  acquire_time=seen.acquire_time or stamp, renew_time=stamp,
                                  transitions=seen.transitions)
        else:
            record = LeaderRecord(holder=self.identity, lease_duration_seconds=duration,
                                  acquire_time=stamp, renew_time=stamp, transitions=seen.transitions + 1)
        await self._write(record, timeout=timeout)
        return True

    async def _write(self, record: LeaderRecord, *, timeout: float) -> None:
        # Replace with the resourceVersion last seen: optimistic concurrency.
        body = copy.deepcopy(self._lease)
        body["spec"] = record.to_spec()
        self._observe_own(await self._leases.replace(namespace=self.namespace, name=self.name,
                                                     body=body, timeout=timeout))

    def _observe(self, lease: dict) -> None:
        record = LeaderRecord.from_lease(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        self._lease = lease

    def _observe_own(self, lease: dict) -> None:
        self._observed, self._observed_at, self._lease = LeaderRecord.from_lease(lease), self._clock(), lease

    def _expires_at(self) -> float:
        seen = self._observed
        duration = (seen.lease_duration_seconds if seen else 0) or self.lease_duration
        return self._observed_at + duration

    # --- transitions ------------------------------------------------------------------
    async def _start_leading(self) -> None:
        self._leading = True
        self._became_follower.clear()
        self._became_leader.set()
        log.info("leading: lease %s/%s held by %s (transitions %d)",
                 self.namespace, self.name, self.identity, self.lease_transitions)
        if self.on_started_leading is None:
            return
        try:
            result = self.on_started_leading()
        except Exception:
            log.exception("on_started_leading failed")
            return
        if inspect.isawaitable(result):
            self._leading_task = asyncio.ensure_future(result)
            self._leading_task.add_done_callback(_log_failure)

    async def _stop_leading(self, *, reason: str, graceful: bool = False) -> None:
        if not self._leading:
            return
        # State first: from here on is_leader is False and writers must stop.
        self._leading = False
        self._became_leader.clear()
        self._became_follower.set()
        log.log(logging.INFO if graceful else logging.WARNING, "stopped leading: lease %s/%s: %s",
                self.namespace, self.name, reason)
        task, self._leading_task = self._leading_task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=self.renew_deadline)
        if self.on_stopped_leading is None:
            return
        try:
            result = self.on_stopped_leading()
            if inspect.isawaitable(result):
                await asyncio.wait_for(result, self.lease_duration)
        except Exception:
            log.exception("on_stopped_leading failed")

    async def _shut_down(self) -> None:
        await self._stop_leading(reason="stopping", graceful=True)
        if self.release_on_cancel and self._lease is not None and self.holder == self.identity:
            await self._release()

    async def _release(self) -> None:
        """Hand the Lease over at once (client-go's ReleaseOnCancel): no holder, and a
        one-second duration for electors that ignore an empty holder."""
        stamp = micro_time(self._wall_clock())
        record = LeaderRecord(holder="", lease_duration_seconds=1, acquire_time=stamp, renew_time=stamp,
                              transitions=self._observed.transitions)
        try:
            await asyncio.wait_for(self._write(record, timeout=self.retry_period), self.retry_period)
            log.info("released lease %s/%s", self.namespace, self.name)
        except LeaseConflict:
            log.info("lease %s/%s changed hands already; nothing to release", self.namespace, self.name)
        except Exception as e:   # a standby then waits for the Lease to expire
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, _describe(e))


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("on_started_leading ended with an error", exc_info=task.exception())


def _describe(e: BaseException) -> str:
    if isinstance(e, ApiException):
        return f"{e.status} {(e.reason or '')[:200]}"
    return f"{type(e).__name__}: {e}"
