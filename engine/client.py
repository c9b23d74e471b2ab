"""The client side of the engine: what an API worker (a Ray driver) calls.

One mailbox per host. While a call to a host is in flight, new requests for it queue; when it
returns, everything queued goes in the next call: no fixed delay, the batch grows with the
load. Every request is stamped on arrival so the host can decide in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import pickle
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ray.actor import ActorHandle
from ray.exceptions import RayError

from engine.actors.channel import ChannelClient, ChannelError, flat
from engine.actors.names import find_couriers, find_dispatcher, find_host
from engine.core.clock import Clock, usable_offset
from engine.core.placement import owner
from engine.core.policy import PLATFORM, Conduct, Policy, judge, parse_conduct
from engine.core.protocol import (
    BOOK,
    CHECK_IN,
    CREATE,
    JOIN,
    LEAVE,
    LIST,
    LOOKUP,
    PAY,
    RELEASE,
    STATE,
    SUSPEND,
    Request,
)
from engine.core.session import SessionSpec
from engine.errors import StoreUnavailable
from engine.outcomes import (
    BookingInfo,
    Bookings,
    BookOutcome,
    CheckInOutcome,
    Conflict,
    Created,
    Done,
    Forbidden,
    JoinOutcome,
    LeaveOutcome,
    Moved,
    NotFound,
    NotPayable,
    Outcome,
    OutcomeUnknown,
    Paid,
    PayOutcome,
    ReleaseOutcome,
    SessionState,
    Stored,
    SuspendOutcome,
    Unavailable,
)
from engine.settings import Settings
from engine.store.payments import SandboxGateway
from engine.store.shards import Store, parse_stock_message

log = logging.getLogger(__name__)


def request_key(request_id: str) -> int:
    """64-bit key of a client's request id (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def parse_booking_id(booking_id: str) -> tuple[str, int] | None:
    """(session id, booking number) of a canonical booking id; None for anything else (also
    ``s1.01``: one booking has exactly one id, which the payment records are keyed by)."""
    session_id, sep, number = booking_id.rpartition(".")
    if not sep or not session_id or not (number.isascii() and number.isdigit()) or len(number) > 12:
        return None
    if number != str(int(number)):
        return None
    return session_id, int(number)


READS = frozenset({STATE, LOOKUP, LIST})  # request kinds that change nothing
WATCH_STOP_SECONDS = 1.0  # the longest ``close`` waits for the lease watcher to end
MOVED_RESENDS = 3  # a request answered ``Moved`` follows the directory this many times


def lost(batch: list[tuple[Request, Any]], reason: str) -> list[Outcome]:
    """The answers of a batch whose host call failed once sent: it may have reached the host
    and been committed, so a request that changes something is ``OutcomeUnknown`` (retrying
    with the same request id tells); a read is merely ``Unavailable``."""
    unknown, unavailable = OutcomeUnknown(reason), Unavailable(reason)
    return [unavailable if request[1] in READS else unknown for request, _ in batch]


def unsent(batch: list[tuple[Request, Any]], reason: str) -> list[Outcome]:
    """The answers of a batch that surely never reached its host: nothing changed."""
    unavailable = Unavailable(reason)
    return [unavailable for _ in batch]


class Mailbox:
    """Batches requests for one host: at most one call in flight, the rest queue behind it."""

    __slots__ = ("busy", "calls", "max_batch", "observe", "queue", "send", "sizes")

    def __init__(
        self,
        send: Callable[[list[Request]], Any],
        max_batch: int,
        observe: Callable[[int, float], None] | None = None,
    ) -> None:
        self.send = send
        self.max_batch = max_batch
        self.observe = observe
        self.queue: list[tuple[Request, asyncio.Future[Outcome]]] = []
        self.busy = False
        self.calls = 0
        self.sizes = 0

    def put(self, request: Request) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self.queue.append((request, future))
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().create_task(self._drain())
        return future

    async def _drain(self) -> None:
        try:
            while self.queue:
                batch = self.queue[: self.max_batch]
                del self.queue[: self.max_batch]
                self.calls += 1
                self.sizes += len(batch)
                started = time.perf_counter()
                try:
                    outcomes = pickle.loads(await self.send([request for request, _ in batch]))
                    if self.observe is not None:
                        self.observe(len(batch), time.perf_counter() - started)
                except ChannelError as exc:
                    log.warning("host call failed: %s", exc)
                    reason = f"host: {exc}"
                    outcomes = lost(batch, reason) if exc.sent else unsent(batch, reason)
                except (RayError, TimeoutError) as exc:
                    log.warning("host call failed: %s", exc)
                    outcomes = lost(batch, f"host: {type(exc).__name__}")
                except Exception as exc:  # never leave a caller waiting
                    log.exception("host call failed")
                    outcomes = lost(batch, f"host: {type(exc).__name__}")
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        finally:
            self.busy = False


def stop_requested() -> bool:
    """The running task was asked to stop, even if a library swallowed the CancelledError
    (the request stays counted until ``uncancel``)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Engine:
    """``await engine.book(session_id, patient_id, request_id)`` and friends.

    Build it inside a running event loop with the pool's handles; it holds its own Redis
    connection for routing (the session → shard catalog) and for rule changes.
    """

    def __init__(
        self,
        settings: Settings,
        hosts: Sequence[ActorHandle | None],
        *,
        batched: bool = True,
        observe: Callable[[int, float], None] | None = None,
    ) -> None:
        """``observe(batch_size, seconds)`` is called after every host call (for metrics)."""
        assert settings.redis_url is not None, "resolve the Redis URL first (see runtime.py)"
        self.settings = settings
        self.hosts = list(hosts)  # by index; None: a host retired with its node
        self.batched = batched
        self.store = Store.of(settings)
        self._observe = observe
        self.channels: list[ChannelClient | None] = []
        self.mailboxes: list[Mailbox] = []
        self._present: frozenset[int] | None = None  # hosts not retired (None: every host)
        for index in range(len(self.hosts)):
            self._add_host(index)
        self.gateway = SandboxGateway(self.store.client, self.store.keys)
        self.clock = Clock()
        self._shard_of: dict[str, str] = {}
        self._pinned: dict[str, int] = {}
        self._host_of: dict[str, int] = {}
        self._lookups: dict[str, asyncio.Future[str | None]] = {}
        self.resends = 0  # requests resent after a ``Moved`` answer
        self.rerouted = 0  # queued requests sent elsewhere when their host lost its lease
        self._live: frozenset[int] | None = None  # hosts holding a lease (None: all count)
        self._watch: asyncio.Task[None] | None = None
        self._closed = False
        with contextlib.suppress(RuntimeError):  # no loop: the leases are not followed
            self._watch = asyncio.get_running_loop().create_task(self._watch_leases())

    def _add_host(self, index: int) -> None:
        """Give host ``index`` (``self.hosts[index]``) its channel and its mailbox."""
        host = self.hosts[index]
        self.channels.append(
            ChannelClient(host.channel.remote, self.settings.host_call_seconds)
            if self.settings.host_channel and host is not None
            else None
        )
        self.mailboxes.append(Mailbox(self._sender(index), self.settings.max_batch, self._observe))
        if None in self.hosts:  # before any lease is seen, a retired host is never placed on
            self._present = frozenset(i for i, h in enumerate(self.hosts) if h is not None)

    def _sender(self, index: int) -> Callable[[list[Request]], Any]:
        """How a mailbox sends a batch to host ``index``: over its channel when every request
        can cross it, else (and without a channel) as a Ray call; each with the deadline."""
        host, channel = self.hosts[index], self.channels[index]
        deadline = self.settings.host_call_seconds

        async def send(batch: list[Request]) -> bytes:
            if host is None:  # retired with its node: nothing was sent
                raise ChannelError(f"host {index} is retired", sent=False)
            if channel is not None and all(flat(r) for r in batch):
                return await channel.call(batch)
            return await asyncio.wait_for(host.submit.remote(batch), deadline)

        return send

    async def _tell_serving(self, call: Callable[[ActorHandle], Any]) -> None:
        """Make ``call`` on every host to tell about rules, the clock and timers — those holding
        a lease (every host not retired when none is known to) — within one deadline.

        The leases are read now, not taken from the watcher's view: that view lags by up to a
        renewal period, and a host restarted within it (its lease lapsed and taken again) would
        miss the call — a timer run right after a restart would not reach the shards it loaded."""
        try:
            live: frozenset[int] | None = (
                await self.store.host_view(len(self.hosts))
            ).serving or None
        except StoreUnavailable:  # the calls need Redis less than the hosts do: the last view
            live = self._live
        serving = [h for i, h in enumerate(self.hosts) if h is not None and (not live or i in live)]
        await asyncio.wait_for(
            asyncio.gather(*(call(h) for h in serving)), self.settings.host_call_seconds
        )

    async def follow_pool(self) -> None:
        """Take in the hosts a pool that follows the nodes has started since (numbered in
        Redis; found by name); also done by the lease watcher every renewal period."""
        if self.settings.follows_nodes:
            await self._grow((await self.store.host_view(0)).size)

    async def _grow(self, size: int) -> None:
        if size <= len(self.hosts):
            return
        found = await asyncio.to_thread(
            lambda: [find_host(self.settings, i) for i in range(len(self.hosts), size)]
        )
        for host in found:
            self.hosts.append(host)
            self._add_host(len(self.hosts) - 1)
        log.info("pool: %d hosts numbered", len(self.hosts))

    async def close(self) -> None:
        self._closed = True
        if self._watch is not None:  # bounded: a Redis client may turn the cancellation of
            self._watch.cancel()  # a command into an error, which the loop would survive
            await asyncio.wait([self._watch], timeout=WATCH_STOP_SECONDS)
        for channel in self.channels:
            if channel is not None:
                channel.close()
        await self.store.close()

    # ----- routing -------------------------------------------------------------------------

    async def refresh_placement(self) -> None:
        """Re-read the directory (pinned and moved shards)."""
        self._pinned = await self.store.placement()
        self._host_of.clear()

    def host_of(self, shard_id: str) -> int:
        index = self._host_of.get(shard_id)
        if index is None:
            index = owner(shard_id, self._pinned, len(self.hosts), self._live or self._present)
            self._host_of[shard_id] = index
        return index

    async def _watch_leases(self) -> None:
        """Follow the hosts' leases (one read every renewal period).

        A host whose lease lapsed is lost: its shards go at once to the hosts that score them
        next, and the requests still queued for it (never sent) go there too; if it was only
        cut off, the epoch the new host bumps fences it. A host that still holds its lease
        (drained, or alive while another comes back) is never gone around: it keeps being
        sent its shards until it answers ``Moved`` — after its commit in flight — so no
        handoff fences a commit."""
        period = self.settings.lease_renew_seconds
        while not self._closed:
            try:
                leased, serving, size = await self.store.host_view(len(self.hosts))
                if self.settings.follows_nodes and size > len(self.hosts):
                    await self._grow(size)  # hosts started on new nodes: known before used
                    leased, serving, size = await self.store.host_view(len(self.hosts))
            except StoreUnavailable:  # keep the last view; the hosts' epochs fence any mistake
                if self._closed or stop_requested():  # redis-py may turn a cancellation into this
                    return
                await asyncio.sleep(period)
                continue
            except Exception:  # a bug: keep following
                if self._closed or stop_requested():
                    return
                log.exception("reading the leases failed")
                await asyncio.sleep(period)
                continue
            live = serving or None
            if live != self._live:
                everyone = set(range(len(self.hosts)))
                lost = set(self._live or everyone) - (set(leased) if leased else everyone)
                log.info("serving hosts: %s (lost %s)", sorted(live or everyone), sorted(lost))
                self._live = live
                for shard_id, index in list(self._host_of.items()):
                    if index in lost:
                        del self._host_of[shard_id]
                for index in lost:
                    self._reroute(index)
            await asyncio.sleep(period)

    def _reroute(self, index: int) -> None:
        """Send the requests queued for host ``index`` (not yet sent) to their shards' hosts
        now; its batch in flight, if any, is answered when its call ends (or its deadline)."""
        queued = self.mailboxes[index].queue[:]
        del self.mailboxes[index].queue[:]
        for request, future in queued:
            self.rerouted += 1
            asyncio.get_running_loop().create_task(self._send_to(request, future))

    async def _send_to(self, request: Request, future: asyncio.Future[Outcome]) -> None:
        try:
            outcome = await self._send(request)
        except Exception as exc:  # never leave a caller waiting; it was not sent
            outcome = Unavailable(f"rerouting failed: {type(exc).__name__}")
        if not future.done():
            future.set_result(outcome)

    async def move(self, shard_id: str, host: int | None) -> int:
        """Hand a shard over to ``host`` (None: its default host); the directory's new version.

        The directory changes first; then the old host is told to release the shard, which it
        does after its commit in flight, answering ``Moved`` from then on; only then does this
        client send to the new host, which loads the shard (bumping its epoch) with the first
        request that reaches it — by then the old host writes it no more, so no commit of
        either is fenced. Other clients learn the move from a ``Moved`` answer and resend:
        no request is lost or decided twice. If the old host cannot be told (dead, cut off),
        the new host's epoch fences it instead.
        """
        pins = await self.store.placement()
        old = owner(shard_id, pins, len(self.hosts), self._live)
        version = await self.store.place(shard_id, host)
        pins = {k: v for k, v in pins.items() if k != shard_id}  # the directory as written
        if host is not None:
            pins[shard_id] = host
        new = owner(shard_id, pins, len(self.hosts), self._live)
        if new != old and self.hosts[old] is not None:
            try:
                await asyncio.wait_for(
                    self.hosts[old].release.remote(shard_id), self.settings.host_call_seconds
                )
            except (RayError, TimeoutError) as exc:  # fenced by the new host's epoch instead
                log.warning("host %d did not release %s: %s", old, shard_id, exc)
        await self.refresh_placement()
        return version

    async def _resend(self, request: Request, moved: Moved) -> Outcome:
        """Follow ``Moved`` answers to the shard's host, a bounded number of times; the
        request was not decided by any host that answered ``Moved``."""
        shard_id = request[2]
        for _ in range(MOVED_RESENDS):
            if moved.host >= len(self.hosts) and self.settings.follows_nodes:
                with contextlib.suppress(StoreUnavailable, TimeoutError):
                    await asyncio.wait_for(self.follow_pool(), self.settings.host_call_seconds)
            if not 0 <= moved.host < len(self.hosts) or self.hosts[moved.host] is None:
                break
            self._host_of[shard_id] = moved.host
            self.resends += 1
            outcome = await self._send_once(request, moved.host)
            if not isinstance(outcome, Moved):
                return outcome
            moved = outcome
        return Unavailable(f"shard {shard_id} is moving (last placed on host {moved.host})")

    async def _shard(self, session_id: str) -> str | None:
        shard_id = self._shard_of.get(session_id)
        if shard_id is not None:
            return shard_id
        lookup = self._lookups.get(session_id)
        if lookup is None:  # one Redis read per unknown session, however many ask at once
            lookup = asyncio.ensure_future(self.store.shard_of(session_id))
            self._lookups[session_id] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(session_id, None))
        shard_id = await asyncio.shield(lookup)
        if shard_id is not None:
            self._shard_of[session_id] = shard_id
        return shard_id

    async def _send(self, request: Request) -> Outcome:
        outcome = await self._send_once(request, self.host_of(request[2]))
        if isinstance(outcome, Moved):
            return await self._resend(request, outcome)
        return outcome

    async def _send_once(self, request: Request, index: int) -> Outcome:
        if self.batched:
            return await self.mailboxes[index].put(request)
        host = self.hosts[index]
        if host is None:
            return Unavailable(f"host {index} is retired")
        try:
            return await host.submit_unbatched.remote(request)
        except RayError as exc:
            return lost([(request, None)], f"host: {type(exc).__name__}")[0]

    async def _routed(self, kind: int, session_id: str, b: Any, c: Any, stamp: int) -> Outcome:
        try:
            shard_id = await self._shard(session_id)
        except StoreUnavailable as exc:
            return Unavailable(str(exc))
        if shard_id is None:
            return NotFound("session")
        return await self._send((stamp, kind, shard_id, session_id, b, c))

    # ----- the interface -------------------------------------------------------------------

    async def book(self, session_id: str, patient_id: int, request_id: str) -> BookOutcome:
        """Take the next free slot of a doctor-session for a patient (idempotent per request)."""
        stamp = time.time_ns()
        if not 0 <= patient_id < 1 << 63:
            raise ValueError("patient_id must be a non-negative int64")
        key = request_key(request_id)
        shard_id = self._shard_of.get(session_id)
        if shard_id is not None and self.batched:  # the hot path: no extra coroutine frames
            request = (stamp, BOOK, shard_id, session_id, patient_id, key)
            outcome = await self.mailboxes[self.host_of(shard_id)].put(request)
            if type(outcome) is Moved:
                outcome = await self._resend(request, outcome)
            return outcome  # type: ignore[return-value]
        return await self._routed(BOOK, session_id, patient_id, key, stamp)  # type: ignore[return-value]

    async def release(
        self, booking_id: str, patient_id: int | None = None
    ) -> ReleaseOutcome | Stored:
        """Give a booking's slot back; ``patient_id`` None acts for the hospital."""
        stamp = time.time_ns()
        parsed = parse_booking_id(booking_id)
        if parsed is None:
            return NotFound("booking")
        session_id, booking_no = parsed
        return await self._routed(RELEASE, session_id, booking_no, patient_id, stamp)  # type: ignore[return-value]

    async def create_session(self, spec: SessionSpec) -> Created | Conflict | Unavailable:
        stamp = time.time_ns()
        try:
            holder = await self.store.claim_session(spec.id, spec.shard_id)
        except StoreUnavailable as exc:
            return Unavailable(str(exc))
        if holder != spec.shard_id:  # the id is taken by a session of another hospital-day
            return Conflict("session")
        outcome = await self._send((stamp, CREATE, spec.shard_id, spec, None, None))
        if isinstance(outcome, Created):
            self._shard_of[spec.id] = spec.shard_id
        return outcome  # type: ignore[return-value]

    async def session_state(self, session_id: str) -> SessionState | NotFound | Unavailable:
        return await self._routed(STATE, session_id, None, None, time.time_ns())  # type: ignore[return-value]

    async def booking(self, booking_id: str) -> BookingInfo | NotFound | Unavailable:
        """One booking as it stands (the caller checks whose it is)."""
        parsed = parse_booking_id(booking_id)
        if parsed is None:
            return NotFound("booking")
        session_id, booking_no = parsed
        return await self._routed(LOOKUP, session_id, booking_no, None, time.time_ns())  # type: ignore[return-value]

    async def session_bookings(self, session_id: str) -> Bookings | NotFound | Unavailable:
        """Every booking of a doctor-session, with its state."""
        return await self._routed(LIST, session_id, None, None, time.time_ns())  # type: ignore[return-value]

    async def pay(self, booking_id: str, patient_id: int) -> PayOutcome | Stored:
        """Pay a held booking through the gateway, then book it.

        The gateway charge is idempotent per booking, so a retried payment never takes the
        money twice. If the engine will not take the payment (the hold expired or was
        cancelled meanwhile) the payment is refunded in full at once: a late payment never
        becomes a booking.
        """
        info = await self.booking(booking_id)
        if not isinstance(info, BookingInfo):
            return info
        if info.patient_id != patient_id:
            return Forbidden(booking_id)
        parsed = parse_booking_id(booking_id)
        assert parsed is not None
        if info.status == "held":
            try:
                await self.gateway.charge(booking_id, patient_id, info.fee)
            except StoreUnavailable as exc:
                return Unavailable(str(exc))
        outcome = await self._routed(PAY, parsed[0], parsed[1], patient_id, time.time_ns())
        try:
            if isinstance(outcome, NotPayable) and not outcome.paid:  # the engine never took it
                await self.gateway.refund(booking_id, None, f"{booking_id}:void")
            if isinstance(outcome, Paid | NotPayable):
                await self.gateway.settled(booking_id)
        except StoreUnavailable as exc:  # the courier reconciles it later
            log.warning("payment of %s left to reconcile: %s", booking_id, exc)
        return outcome  # type: ignore[return-value]

    async def check_in(self, booking_id: str, code: str) -> CheckInOutcome | Stored:
        """取号 with the patient's verification code (the hospital acts, not the patient)."""
        parsed = parse_booking_id(booking_id)
        if parsed is None:
            return NotFound("booking")
        return await self._routed(CHECK_IN, parsed[0], parsed[1], code, time.time_ns())  # type: ignore[return-value]

    async def suspend(self, session_id: str) -> SuspendOutcome | Stored:
        """停诊: revoke and refund every booking of the session."""
        return await self._routed(SUSPEND, session_id, None, None, time.time_ns())  # type: ignore[return-value]

    async def join_waitlist(
        self, session_id: str, patient_id: int, request_id: str
    ) -> JoinOutcome | Stored:
        key = request_key(request_id)
        return await self._routed(JOIN, session_id, patient_id, key, time.time_ns())  # type: ignore[return-value]

    async def leave_waitlist(self, session_id: str, patient_id: int) -> LeaveOutcome | Stored:
        return await self._routed(LEAVE, session_id, patient_id, None, time.time_ns())  # type: ignore[return-value]

    # ----- rules ---------------------------------------------------------------------------

    async def policy(self, hospital_id: str) -> Policy:
        return await self.store.policy(hospital_id)

    async def set_policy(self, hospital_id: str, policy: Policy) -> Done | Unavailable:
        try:
            await self.store.write_policy(hospital_id, policy)
        except StoreUnavailable as exc:
            return Unavailable(str(exc))
        return await self._refresh(hospital_id)

    async def set_blacklist(
        self, hospital_id: str, patient_id: int, until: float | None
    ) -> Done | Unavailable:
        """Bar a patient from booking at a hospital (or with ``platform``, anywhere) until
        ``until``; None lifts the bar."""
        try:
            await self.store.set_ban(hospital_id, patient_id, until)
        except StoreUnavailable as exc:
            return Unavailable(str(exc))
        return await self._refresh(hospital_id)

    async def _refresh(self, scope: str) -> Done | Unavailable:
        try:
            await self._tell_serving(lambda h: h.refresh_rules.remote(scope))
        except (RayError, TimeoutError) as exc:
            return Unavailable(str(exc) or "a host did not answer in time")
        return Done()

    async def conduct(self, patient_id: int) -> dict[str, Conduct]:
        """A patient's violations and bans, per scope (hospital id or ``platform``)."""
        client, keys = self.store.client, self.store.keys
        scopes = sorted(m.decode() for m in await client.smembers(keys.conduct_scopes(patient_id)))
        out = {}
        for scope in scopes:
            record = await client.hgetall(keys.conduct(scope, patient_id))
            violations = parse_conduct(record)
            if scope == PLATFORM:  # judged by the rules of the hospitals that reported them
                policy = await self.store.policy(await self._any_hospital(violations))
            else:
                policy = await self.store.policy(scope)
            out[scope] = judge(violations, policy)
        return out

    async def _any_hospital(self, violations: list) -> str:
        for v in violations:
            info = await self.booking(v.booking_id)
            if isinstance(info, BookingInfo):
                state = await self.session_state(info.session_id)
                if isinstance(state, SessionState):
                    return state.hospital_id
        return PLATFORM

    async def bans(self, scope: str, patient_id: int) -> float | None:
        raw = await self.store.client.hget(self.store.keys.bans(scope), str(patient_id))
        return float(raw) if raw else None

    # ----- time ----------------------------------------------------------------------------

    async def load_clock(self) -> Clock:
        raw = await self.store.client.get(self.store.keys.clock)
        self.clock.set_offset(usable_offset(raw, self.settings.movable_clock))
        return self.clock

    async def advance_clock(self, seconds: float) -> float:
        """Move the one clock forward (tests and demos, ``movable_clock`` only), then run every
        timer at the new time and carry the outbox out. Returns the new ``now``."""
        if not self.settings.movable_clock:
            raise RuntimeError("the clock is not movable here (SLOTENGINE_MOVABLE_CLOCK is off)")
        keys = self.store.keys
        offset = float(await self.store.client.incrbyfloat(keys.clock, seconds))
        self.clock.set_offset(offset)
        await self.store.client.publish(keys.clock_channel, repr(offset))
        await self._tell_serving(lambda h: h.set_clock.remote(offset))
        await self.run_timers()
        return self.clock.now()

    async def run_timers(self) -> dict[str, int]:
        """Fire every host's timers now and wait for the courier to carry the outbox out."""
        await self._tell_serving(lambda h: h.tick.remote())
        return await self.drain_outbox()

    async def courier_info(self) -> dict[str, int]:
        """The couriers' counters, summed: entries, notices, refunds, refunded, violations,
        bans, failures, dead letters, records."""
        return _summed(await asyncio.gather(*(c.info.remote() for c in self._couriers())))

    async def drain_outbox(self) -> dict[str, int]:
        """Carry the outbox out now (every courier at once), and bring the booking records up
        to date; the couriers' counters, summed."""
        return _summed(await asyncio.gather(*(c.drain.remote() for c in self._couriers())))

    def _couriers(self) -> list[Any]:
        return find_couriers(self.settings)

    async def deliver(self) -> dict[str, int]:
        """Carry out the HIS deliveries due now (the dispatcher also does every tick)."""
        return await find_dispatcher(self.settings).run.remote()

    async def dispatcher_info(self) -> dict[str, int]:
        return await find_dispatcher(self.settings).info.remote()

    async def stock_updates(self) -> AsyncIterator[tuple[str, str, int, int]]:
        """(session_id, status, remaining, version) for every stock change, as published."""
        pubsub = self.store.client.pubsub()
        await pubsub.subscribe(self.store.keys.stock_channel)
        try:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    for item in parse_stock_message(message["data"]):
                        yield item
        finally:
            await pubsub.aclose()

    def batch_stats(self) -> dict[str, float]:
        calls = sum(m.calls for m in self.mailboxes)
        sizes = sum(m.sizes for m in self.mailboxes)
        return {"calls": calls, "requests": sizes, "mean_batch": sizes / calls if calls else 0.0}


def _summed(counters: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for one in counters:
        for name, value in one.items():
            out[name] = out.get(name, 0) + value
    return out
