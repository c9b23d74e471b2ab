"""The host actor: a Ray actor that carries the shards placed on it (like an Orleans silo).

Thin shell around the pure core. Ray hands the host one call at a time (a synchronous actor, the
lowest-latency kind: an async actor costs ~0.4 ms more per call here); batches of bookings
mostly arrive instead over the booking channel (``channel.py``), a socket per API worker served
on threads of its own. Every entry takes the host's lock, so one thing at a time touches the
shards, whichever way it came. Each call carries a mailbox's whole batch; the host decides it in
arrival-stamp order, writes every changed doctor-session in one pipelined Redis round trip
(group commit), and only then answers. If a shard's write fails, its in-memory state is dropped
(the next request reloads it from Redis, the truth) and every request of that shard in the batch
is answered ``Unavailable``: nothing is ever confirmed from memory alone.

Timers (hold expiry and its warning, the no-show sweep, opening and closing notices) arrive as
``tick`` calls that a small thread sends to the host itself, so they queue behind bookings and
never run beside them. Their due times are in the snapshots, and ``now`` comes from the one
movable clock (engine/core/clock.py), so a restarted host fires them as if it had never stopped.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import secrets
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from engine.actors.channel import ChannelServer
from engine.actors.lease import LeaseKeeper
from engine.actors.process import set_niceness, this_node, watch_gc
from engine.actors.ticker import tick_self
from engine.core.clock import Clock, usable_offset
from engine.core.placement import owner
from engine.core.policy import PLATFORM
from engine.core.protocol import Request, decide, split_shard_id
from engine.core.shard import Shard
from engine.errors import CommitUncertain, Fenced, NotDurable, SlotEngineError, StoreUnavailable
from engine.outcomes import ACKNOWLEDGED, Moved, Outcome, OutcomeUnknown, Unavailable
from engine.settings import Settings
from engine.store.shards import Durability, ShardWrite, Store

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Waiting:
    """A batch waiting to be decided, and then its answer (or the failure that ended it)."""

    __slots__ = ("answer", "error", "requests")

    def __init__(self, requests: Sequence[Request]) -> None:
        self.requests = requests
        self.answer: bytes | None = None
        self.error: BaseException | None = None


class Host:
    """One host of the pool. Decorated with ``ray.remote`` by ``actors/pool.py``."""

    def __init__(self, index: int, settings: Settings, *, timer: bool = True) -> None:
        """``timer`` False: no ticks sent to itself (a host driven by hand, outside Ray)."""
        assert settings.redis_url is not None, "a host needs a resolved Redis URL"
        self.index = index
        self.settings = settings
        if timer:  # an actor: a process of its own, on the booking path
            set_niceness(settings.host_nice)
        self.shards: dict[str, tuple[int, Shard]] = {}  # shard id → (epoch, shard)
        self.published: dict[str, str] = {}  # session id → last published status
        self.shard_requests: dict[str, int] = {}  # shard id → requests decided here, ever
        self.clock = Clock()
        self.zone = ZoneInfo(settings.timezone)
        self._loop = asyncio.new_event_loop()  # private: drives the async Redis client
        self._store = Store.of(settings)
        self._store.durability = Durability.of(settings.durability, settings.durability_wait)
        self._store.couriers = settings.couriers
        # a commit ran but was not confirmed durable: until a later write is, every
        # acknowledgement this host gives could rest on it (``_confirmed``)
        self._unconfirmed = False
        self._timer: threading.Thread | None = None
        self._warm = False
        # the hosts holding a lease, and the placement, at the last tick (``_take_up``)
        self._leased: frozenset[int] = frozenset()
        self._placed: tuple[dict[str, int], frozenset[int] | None] = ({}, None)
        self._reload: set[str] = set()  # shards dropped after a failure, to load again
        self._clock_checked = False  # a fixed clock reads the stored offset once (to warn)
        self._tokens = itertools.count()  # commit tokens: unique to this incarnation
        self._incarnation = secrets.token_hex(6)
        self._ban_versions: dict[str, bytes | None] = {}  # scope → bans version applied
        self._lock = threading.RLock()  # Ray calls and the channel's batches, one at a time
        self._queue: list[_Waiting] = []  # batches waiting for the lock (``submit``)
        self._queue_lock = threading.Lock()
        self._channel: ChannelServer | None = None
        self.started_at = time.time()
        self.counters: dict[str, float] = {
            "calls": 0,
            "requests": 0,
            "commits": 0,
            "shard_writes": 0,
            "failed_commits": 0,
            "decide_seconds": 0.0,
            "commit_seconds": 0.0,
        }
        self._lease: LeaseKeeper | None = None
        # the pool's size the placement is computed over: fixed, or (a pool that follows the
        # nodes) as numbered in Redis, read with the leases
        self._pool_size = index + 1 if settings.follows_nodes else settings.hosts
        self.node_id = ""
        if timer:  # an actor: the process is its own
            watch_gc(self.counters)
            self._lease = self._take_lease()
            self.start_timer()

    # ----- Ray methods ---------------------------------------------------------------------

    def submit(self, requests: Sequence[Request]) -> bytes:
        """Decide a batch of requests and answer after its group commit.

        The answer is the pickled list of outcomes: one pickle for the whole batch is several
        times cheaper than Ray serializing each outcome object on its own.

        Batches that arrive while the host is busy (one per API worker's connection, and a Ray
        call) are combined: whichever caller takes the lock next decides every waiting batch in
        one group commit, and each caller answers its own part. Under a crowd from N workers
        that is one Redis round trip where there were N.
        """
        waiting = _Waiting(requests)
        with self._queue_lock:
            self._queue.append(waiting)
        with self._lock:
            if waiting.answer is None and waiting.error is None:
                with self._queue_lock:
                    batches, self._queue = self._queue, []
                self._decide_batches(batches)
        if waiting.error is not None:
            raise waiting.error
        assert waiting.answer is not None
        return waiting.answer

    def _decide_batches(self, batches: list[_Waiting]) -> None:
        """Decide the combined batches in one group commit; answer (or fail) each one."""
        self.counters["combined"] = self.counters.get("combined", 0) + len(batches) - 1
        try:
            if len(batches) == 1:
                outcomes = self._decide_and_commit(batches[0].requests)
            else:
                outcomes = self._decide_and_commit([r for b in batches for r in b.requests])
            start = 0
            for b in batches:
                end = start + len(b.requests)
                b.answer = pickle.dumps(outcomes[start:end], protocol=pickle.HIGHEST_PROTOCOL)
                start = end
        except BaseException as exc:  # a bug: every combined caller fails (sent: unknown)
            for b in batches:
                b.error = exc
            raise

    def submit_unbatched(self, request: Request) -> Outcome:
        """Baseline for the benchmark: one request per call, one Redis write per request."""
        with self._lock:
            return self._decide_and_commit([request])[0]

    def channel(self) -> tuple[str, int, bytes]:
        """(address, port, secret) of this incarnation's booking channel (``channel.py``),
        opened on the first ask, on this node's address."""
        with self._lock:
            if self._channel is None:
                import ray

                address = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
                self._channel = ChannelServer(address, self.submit)
            return self._channel.address, self._channel.port, self._channel.secret

    def refresh_rules(self, scope: str) -> int:
        """Reload a hospital's policy and bans (or the platform's bans, for ``platform``) into
        every loaded shard they concern."""
        with self._lock:
            policy, bans = self._run(self._store.read_rules(scope))
            count = 0
            for _, shard in self.shards.values():
                if scope == PLATFORM:
                    shard.platform_blacklist = bans
                    count += 1
                elif shard.hospital_id == scope:
                    shard.set_rules(policy or shard.policy, bans)
                    count += 1
            return count

    def release(self, shard_id: str) -> bool:
        """Stop carrying a shard (it was placed on another host): after any commit in flight
        (the lock), forget it; its requests are answered ``Moved`` from now on. True if it
        was carried."""
        with self._lock:
            held = self.shards.pop(shard_id, None)
            self._reload.discard(shard_id)
            if held is not None:
                for session_id in held[1].sessions:
                    self.published.pop(session_id, None)
            return held is not None

    def set_clock(self, offset: float) -> float:
        """Move this host's clock (the offset is also in Redis for restarts); only a movable
        clock moves."""
        with self._lock:
            self.clock.set_offset(usable_offset(repr(offset), self.settings.movable_clock))
            return self.clock.now()

    def tick(self) -> None:
        """Timers: expire holds past their payment window; publish opening and closing.

        The first tick of a (re)started host also loads every current shard placed on it, so
        its holds expire on time even before a request for that shard arrives.
        """
        with self._lock:
            self._tick()

    def _tick(self) -> None:
        if self.settings.movable_clock or not self._clock_checked:
            try:
                raw = self._run(self._store.client.get(self._store.keys.clock))
                self.clock.set_offset(usable_offset(raw, self.settings.movable_clock))
                self._clock_checked = True
            except Exception as exc:
                log.warning("tick could not read the clock: %s", exc)
        now = self.clock.now()
        try:
            pinned, (leased, live) = self._run(self._store.placement()), self._view()
            if not self._warm:
                self._warm_up(now, pinned, live)
            elif lost := self._leased - leased if leased else frozenset():
                self._take_up(now, pinned, live, lost)
            self._leased, self._placed = leased, (pinned, live)
            self._activate(set(self._reload))
            self._forget_moved(pinned, live)
            self._follow_bans()
        except Exception as exc:  # Redis away: expire what we hold anyway (commit may fail too)
            log.warning("tick could not refresh shards: %s", exc)
        try:
            for _, shard in list(self.shards.values()):
                shard.tick(now)
            writes = self._collect_writes(list(self.shards), now)
            written = {w.shard_id for w in writes}
            for shard_id, (epoch, shard) in self.shards.items():
                if shard_id in written:
                    continue
                stock = [
                    (s.id, status, s.free, s.version)
                    for s in shard.sessions.values()
                    if (status := s.status(now)) != self.published.get(s.id)
                ]
                if stock:
                    writes.append(ShardWrite(shard_id, shard.hospital_id, epoch, [], stock=stock))
            self._commit(writes)
            self._retire(now)
        except Exception:
            log.exception("tick failed")

    def _retire(self, now: float) -> None:
        """Forget shards of visit dates two days past whose sessions are all swept: nothing
        will happen there any more (a late request reloads one from Redis)."""
        old = time.strftime("%Y-%m-%d", time.gmtime(now - 2 * 86400))
        for shard_id, (_, shard) in list(self.shards.items()):
            if shard.date < old and all(s.swept or s.suspended for s in shard.sessions.values()):
                del self.shards[shard_id]
                for session_id in shard.sessions:
                    self.published.pop(session_id, None)

    def info(self) -> dict[str, Any]:
        with self._lock:
            return {
                "index": self.index,
                "node_id": self.node_id,
                "started_at": self.started_at,
                "shards": sorted(self.shards),
                "shard_requests": {k: self.shard_requests.get(k, 0) for k in self.shards},
                "epochs": {k: e for k, (e, _) in self.shards.items()},
                "channel_connections": self._channel.connections if self._channel else 0,
                "lease_renewals": self._lease.renewals if self._lease else 0,
                "lease_failures": self._lease.failures if self._lease else 0,
                "redirected": self._store.redirected,  # commits sent again (MOVED / ASK)
                **self.counters,
            }

    # ----- placement -----------------------------------------------------------------------

    def _take_lease(self) -> LeaseKeeper:
        import os

        import ray

        node = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        node_id = self.node_id = this_node()
        holder = {
            "incarnation": self._incarnation,
            "node": node,
            "node_id": node_id,
            "pid": os.getpid(),
            "started": self.started_at,
        }
        assert self.settings.redis_url is not None
        return LeaseKeeper(
            self.settings.redis_url,
            self._store.keys.lease(self.index),
            holder,
            self.settings.lease_seconds,
            self.settings.lease_renew_seconds,
            cluster=self.settings.redis_cluster,
        )

    def _live(self) -> frozenset[int] | None:
        """The hosts that serve (a lease, on a node not being drained), this one among them
        unless its node is being drained; None when no host holds a lease (hosts driven by
        hand, or every lease lost with Redis): then every host counts."""
        return self._view()[1]

    def _view(self) -> tuple[frozenset[int], frozenset[int] | None]:
        """The hosts holding a lease, and ``_live``."""
        leased, serving, size = self._run(self._store.host_view(self._pool_size))
        if size > self._pool_size:  # hosts started on new nodes since: count them
            self._pool_size = size
            leased, serving, size = self._run(self._store.host_view(self._pool_size))
        if not serving:
            return leased, None
        if self.index in leased and self.index not in serving:  # its own node is drained
            return leased, serving
        return leased, serving | {self.index}

    def release_all(self) -> int:
        """Release every shard placed elsewhere now (after ``ops drain``); how many."""
        with self._lock:
            before = len(self.shards)
            self._forget_moved(self._run(self._store.placement()), self._live())
            return before - len(self.shards)

    # ----- deciding and committing ---------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coroutine)

    def _current_shards(self, now: float) -> list[str]:
        yesterday = time.strftime("%Y-%m-%d", time.gmtime(now - 2 * 86400))
        return [s for s in self._run(self._store.shard_ids()) if split_shard_id(s)[1] >= yesterday]

    def _warm_up(self, now: float, pinned: dict[str, int], live: frozenset[int] | None) -> None:
        """Load every current shard placed on this host (its first tick): its holds expire on
        time even before a request for the shard arrives."""
        mine = {
            shard_id
            for shard_id in self._current_shards(now)
            if owner(shard_id, pinned, self._pool_size, live) == self.index
        }
        activated = self._activate(mine - self.shards.keys())
        failed = {s for s, why in activated.items() if isinstance(why, Unavailable)}
        self._warm = not failed
        log.info("host %d loaded %d shards", self.index, len(mine) - len(failed))

    def _take_up(
        self, now: float, pinned: dict[str, int], live: frozenset[int] | None, lost: frozenset[int]
    ) -> None:
        """Load the current shards that came to this host from hosts whose lease lapsed (dead,
        or cut off: the epoch this load bumps fences them), so that their holds expire and
        their waitlists move on time rather than at the shard's next request. Only those: a
        shard leaving a host that still holds its lease (a drained node) is handed over by
        that host answering ``Moved`` after its commit in flight — loading it here first would
        fence that commit. A shard counts as the lost host's if it was placed there at the
        last tick (the placement and the serving hosts then), whatever else moved since."""
        was_pinned, was_live = self._placed
        if live is None or was_live is None:  # no serving hosts known, then or now: no move
            return
        came = {
            shard_id
            for shard_id in self._current_shards(now)
            if shard_id not in self.shards
            and owner(shard_id, pinned, self._pool_size, live) == self.index
            and owner(shard_id, was_pinned, self._pool_size, was_live) in lost
        }
        failed = self._activate(came)
        self._reload |= {s for s, why in failed.items() if isinstance(why, Unavailable)}
        if came:
            log.info(
                "host %d took up %d shards of lost hosts %s",
                self.index,
                len(came) - len(failed),
                sorted(lost),
            )

    def _follow_bans(self) -> None:
        """Reload the bans of a scope whose version moved (the courier also pushes them at
        once; this catches a push that did not arrive)."""
        scopes = sorted({shard.hospital_id for _, shard in self.shards.values()} | {PLATFORM})
        versions = self._run(self._store.ban_versions(scopes))
        for scope, version in zip(scopes, versions, strict=True):
            if self._ban_versions.get(scope, b"") != version:
                self.refresh_rules(scope)  # the lock is reentrant
                self._ban_versions[scope] = version

    def _forget_moved(self, pinned: dict[str, int], live: frozenset[int] | None) -> None:
        """Drop shards pinned to another host since we loaded them (their new host bumped the
        epoch, so we could not write them anyway; this stops us answering reads for them)."""
        for shard_id in list(self.shards):
            if owner(shard_id, pinned, self._pool_size, live) != self.index:
                self.release(shard_id)

    def start_timer(self) -> None:
        """Start the thread that sends this host its ticks (once per incarnation)."""
        if self._timer is not None:
            return
        self._timer = tick_self("tick", self.settings.tick_seconds, "host-timer")

    def _decide_and_commit(self, requests: Sequence[Request]) -> list[Outcome]:
        """Group commit: decide in stamp order, write once, answer. The heart of invariant 3."""
        started = time.perf_counter()
        self.counters["calls"] += 1
        self.counters["requests"] += len(requests)
        now = self.clock.now()
        order = sorted(range(len(requests)), key=lambda i: requests[i][0])
        outcomes: list[Outcome] = [None] * len(requests)  # type: ignore[list-item]
        failed = self._activate({r[2] for r in requests} - self.shards.keys())
        touched: dict[str, list[int]] = {}
        for i in order:
            _, kind, shard_id, a, b, c = requests[i]
            touched.setdefault(shard_id, []).append(i)
            if shard_id in failed:
                continue
            try:
                outcomes[i] = decide(self.shards[shard_id][1], kind, shard_id, a, b, c, now)
            except Exception as exc:  # a bug: forget the half-changed shard, Redis has the truth
                log.exception("deciding %r failed", requests[i])
                failed[shard_id] = Unavailable(f"internal: {type(exc).__name__}")
                self._drop(shard_id)
        load = self.shard_requests
        for shard_id, indexes in touched.items():  # per shard, for ``ops hot`` and rebalance
            load[shard_id] = load.get(shard_id, 0) + len(indexes)
        writes = self._collect_writes([s for s in touched if s not in failed], now)
        decided = time.perf_counter()
        self.counters["decide_seconds"] += decided - started
        failed.update(self._commit(writes))
        self.counters["commit_seconds"] += time.perf_counter() - decided
        for shard_id, reason in failed.items():
            for i in touched.get(shard_id, ()):
                outcomes[i] = reason
        if self._unconfirmed and not self._confirmed(bool(writes)):
            unknown = OutcomeUnknown("not confirmed durable yet: retry with the same request id")
            outcomes = [unknown if isinstance(o, ACKNOWLEDGED) else o for o in outcomes]
        return outcomes

    def _confirmed(self, wrote: bool) -> bool:
        """After a commit that was not confirmed durable: whether it is now. A batch that
        wrote and was still not confirmed is not; one that wrote nothing asks Redis with a
        write of its own (Redis replicates in order: a later write confirmed confirms every
        earlier one)."""
        if not wrote:
            probe = f"{self._store.keys.prefix}:durability:probe:{self.index}"
            self._unconfirmed = not self._run(self._store.confirm(probe))
        return not self._unconfirmed

    def _activate(self, shard_ids: set[str]) -> dict[str, Unavailable | Moved]:
        """Load shards met for the first time (or again after a failed commit), if they are
        this host's: the directory is read first, and a shard placed on another host is
        answered ``Moved`` — never loaded here, its epoch untouched (loading it would fence
        the host that owns it)."""
        failed: dict[str, Unavailable | Moved] = {}
        if not shard_ids:
            return failed
        try:
            pins, live = self._run(self._store.pins(sorted(shard_ids))), self._live()
        except SlotEngineError as exc:
            log.warning("cannot read the directory: %s", exc)
            return {shard_id: Unavailable(str(exc)) for shard_id in shard_ids}
        for shard_id in shard_ids:
            placed = owner(shard_id, pins, self._pool_size, live)
            if placed != self.index:
                failed[shard_id] = Moved(placed)
                self._reload.discard(shard_id)
                continue
            hospital_id, date = split_shard_id(shard_id)
            try:
                self.shards[shard_id] = self._run(
                    self._store.activate(
                        shard_id,
                        hospital_id,
                        date,
                        self.zone,
                        keep=(self.settings.ended_kept, self.settings.idempotency_kept),
                    )
                )
                self._reload.discard(shard_id)
            except SlotEngineError as exc:  # unreachable store, or a corrupt snapshot
                log.warning("cannot load shard %s: %s", shard_id, exc)
                failed[shard_id] = Unavailable(str(exc))
        return failed

    def _drop(self, shard_id: str) -> None:
        """Forget a shard's memory; the timer reloads it from Redis (its holds still expire)."""
        self.shards.pop(shard_id, None)
        self._reload.add(shard_id)

    def _collect_writes(self, shard_ids: Sequence[str], now: float) -> list[ShardWrite]:
        writes = []
        for shard_id in shard_ids:
            epoch, shard = self.shards[shard_id]
            changes = shard.take_changes()
            if not changes:
                continue
            sessions = list(changes.sessions.values())
            stock = [(s.id, s.status(now), s.free, s.version) for s in sessions]
            writes.append(
                ShardWrite(
                    shard_id,
                    shard.hospital_id,
                    epoch,
                    sessions,
                    new_session_ids=changes.new_session_ids,
                    new_bookings=changes.new_bookings,
                    events=changes.events,
                    stock=stock,
                    token=f"{self._incarnation}-{next(self._tokens)}",
                )
            )
        return writes

    def _commit(self, writes: list[ShardWrite]) -> dict[str, Unavailable | OutcomeUnknown]:
        """Write; answer a shard's requests only with what is known (invariant 3).

        A commit known not to have run (refused by the script, fenced, or never sent) answers
        ``Unavailable``: nothing was booked. One whose round trip failed after it may have been
        sent is settled first (``Store.settle`` fences the shard and reads its commit token
        back): if it ran, the answers stand; if not, ``Unavailable``; if Redis cannot say,
        ``OutcomeUnknown``. Any failure drops the shard from memory so it reloads from Redis,
        except a commit settled as run (memory is then exactly what Redis holds)."""
        if not writes:
            return {}
        self.counters["commits"] += 1
        self.counters["shard_writes"] += len(writes)
        results = self._run(self._store.commit(writes))
        failures: dict[str, Unavailable | OutcomeUnknown] = {}
        for w, error in zip(writes, results, strict=True):
            if isinstance(error, CommitUncertain):
                error = self._settle(w)
            if error is None or isinstance(error, NotDurable):
                for session_id, status, _, _ in w.stock:
                    self.published[session_id] = status
            if error is None:
                self._unconfirmed = False  # this one confirmed confirms every earlier one
                continue
            if isinstance(error, NotDurable):  # it ran: memory is what the master holds
                self._unconfirmed = True
                self.counters["undurable_commits"] = self.counters.get("undurable_commits", 0) + 1
                log.warning("commit of %s: %s", w.shard_id, error)
                failures[w.shard_id] = OutcomeUnknown(str(error))
                continue
            self.counters["failed_commits"] += 1
            self._drop(w.shard_id)
            if isinstance(error, CommitUncertain):
                log.warning("commit of %s: outcome unknown: %s", w.shard_id, error)
                failures[w.shard_id] = OutcomeUnknown(str(error))
                continue
            kind = "fenced" if isinstance(error, Fenced) else "store"
            log.warning("commit of %s failed (%s): %s", w.shard_id, kind, error)
            failures[w.shard_id] = Unavailable(f"{kind}: {error}")
        return failures

    def _settle(self, w: ShardWrite) -> BaseException | None:
        """Did the uncertain commit ``w`` run? None: yes (the shard stays, under its new
        epoch); ``StoreUnavailable``: no, and it never will; ``CommitUncertain``: unknown."""
        try:
            epoch, committed = self._run(self._store.settle(w.shard_id, w.token))
        except StoreUnavailable as exc:
            self.counters["unknown_commits"] = self.counters.get("unknown_commits", 0) + 1
            return CommitUncertain(f"{w.shard_id}: not settled: {exc}")
        held = self.shards.get(w.shard_id)
        if committed and held is not None:
            self.shards[w.shard_id] = (epoch, held[1])
            log.info("commit of %s settled: it ran", w.shard_id)
            return None
        return StoreUnavailable(f"{w.shard_id}: settled: it did not run (now fenced)")
