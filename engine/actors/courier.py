"""The courier: a Ray actor that carries the outbox out — refunds to the payment gateway,
notices to the sender, violations to the patients' conduct records and bans — and then keeps
the booking records up to date (``backoffice/record_book.py``), asking for HIS deliveries
(``backoffice/deliveries.py``).

Hosts never wait for any of this: their commit only appends one outbox entry to its shard's
stream (atomically with the snapshots that caused it) and rings the doorbell. The courier reads
the streams rung (``store/outbox.py``) through consumer groups, handles each entry, then
acknowledges and deletes it. Every step is idempotent (refunds are keyed,
notices carry stable ids, violations are keyed by booking and kind, bans only grow), so an entry
replayed after a crash or a Redis outage does nothing twice.

One bad entry holds up nothing behind it: a read of the outbox is handled together, and if that
fails, one entry at a time, so the good ones go through. A failed entry stays pending and is
retried on the next round (every ``tick_seconds``); once it has failed on its
``outbox_max_tries``-th delivery (the stream's own count, which every read of it raises by one)
it is moved to the dead letters (``dead_letters.py``) for the platform admin. An entry that
finds a service unreachable (Redis, the payment gateway, a notice provider) ends the outbox part
of the round, rather than have every entry behind it wait for the same timeout; it is counted
all the same, so not even an entry that always times out holds the others up for long.
Reconciliation and the records indexer run every round, whatever became of the outbox part.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import msgpack
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.actors.process import set_niceness, this_node
from engine.actors.ticker import tick_self
from engine.backoffice.deliveries import Deliveries
from engine.backoffice.record_book import RecordBook
from engine.core.clock import Clock, usable_offset
from engine.core.policy import HOLD_ABUSE, PLATFORM, Policy, judge, parse_conduct
from engine.core.session import HELD_STATE
from engine.errors import HisUnavailable, SlotEngineError
from engine.settings import Settings
from engine.store.dead_letters import DeadLetters, describe
from engine.store.keys import Keys
from engine.store.notices import Notice, Sender, load_sender
from engine.store.outbox import Entry, Outbox, Stream
from engine.store.payments import SandboxGateway
from engine.store.shards import Store

log = logging.getLogger(__name__)
BATCH = 256  # entries read from each stream at once
STREAMS_PER_READ = 64  # streams read in one round trip
SWEEP_SECONDS = 60.0  # every shard's stream is looked at this often (``Outbox.sweep``)
SETTLE_SECONDS = 60.0  # a charge the engine has not answered by then is looked at
RECONCILE_LIMIT = 1000  # waiting holds looked past per round
INDEX_ROUNDS = 20  # times 500 changed sessions indexed per round at most
# failures that say a service could not be reached (most likely not the entry's fault)
UNREACHABLE: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,  # asyncio's too
    RedisConnectionError,
    RedisTimeoutError,
    HisUnavailable,
)
Read = tuple[Stream, bytes, dict[bytes, bytes]]  # an outbox entry as read: stream, id, fields
Failed = tuple[Stream, bytes, dict[bytes, bytes], Exception]  # ... and why its handling failed
Exhausted = tuple[Stream, bytes, dict[bytes, bytes], Exception, int]  # ... on its last try


class Courier:
    """The Ray actor (decorated by ``pool.py``; one per namespace): a synchronous shell that
    runs ``CourierWork`` on its private event loop, one call at a time."""

    def __init__(self, settings: Settings, partition: int = 0) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        set_niceness(settings.background_nice)
        self._loop = asyncio.new_event_loop()
        self.rounds = CourierWork(settings, partition)
        self._timer: threading.Thread | None = None
        self.start_timer()

    def drain(self) -> dict[str, int]:
        """Handle everything in the outbox now (also sent to itself every tick)."""
        counters = self.rounds.counters
        try:
            return self._loop.run_until_complete(self.rounds.drain())
        except Exception as exc:  # Redis away: the entries stay pending for the next round
            counters["failures"] += 1
            log.warning("courier round failed: %s", exc)
            return dict(counters)

    def info(self) -> dict[str, int]:
        return dict(self.rounds.counters)

    def node(self) -> str:
        """The Ray node this actor runs on (``ops status``)."""
        return this_node()

    def start_timer(self) -> None:
        if self._timer is not None:
            return
        self._timer = tick_self("drain", self.settings.tick_seconds, "courier-timer")


class CourierWork:
    """What the courier does, round by round (async; kept apart from the actor because Ray
    makes any actor with an ``async def`` method an async actor)."""

    def __init__(self, settings: Settings, partition: int = 0) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.partition = partition  # its part of the shards' outbox (``outbox.py``)
        self.store = Store.of(settings)
        self.keys: Keys = self.store.keys
        self.gateway = SandboxGateway(self.store.client, self.keys)
        self.sender: Sender = load_sender(settings.notice_sender, self.store.client, self.keys)
        self.clock = Clock()
        self.counters: dict[str, int] = dict.fromkeys(
            (
                "entries",
                "notices",
                "refunds",
                "refunded",
                "violations",
                "bans",
                "records",
                "failures",  # parts of rounds, and outbox entries, that failed
                "dead_letters",  # outbox entries moved to the dead letters
            ),
            0,
        )
        # the records of its part of the hospitals (``partition_of`` the hospital)
        self.records = RecordBook(self.store.client, self.keys, partition, settings.couriers)
        self.deliveries = Deliveries(self.store.client, self.keys)
        self.dead_letters = DeadLetters(self.store.client, self.keys)
        self.outbox = Outbox(self.store.client, self.keys, partition, settings.couriers)
        self._next_sweep = 0.0  # the first round sweeps
        self._tallied = False
        self._hosts: list | None = None

    async def drain(self) -> dict[str, int]:
        """One round: carry the outbox out, then reconcile the payments and index the records.
        Each part runs whatever became of the one before; a failure of reconciliation or of
        the indexer is counted and logged here, a failure of the outbox part (Redis or a
        service away: its entries wait) is raised once the others have run."""
        outbox_failure: Exception | None = None
        try:
            await self.carry()
        except Exception as exc:
            outbox_failure = exc
        # after the outbox (its voids settle most); the payments courier 0's alone, the
        # records each courier's own hospitals'
        for part in (self.reconcile, self.index) if self.partition == 0 else (self.index,):
            try:
                await part()
            except Exception as exc:
                self.counters["failures"] += 1
                log.warning(
                    "courier: %s failed: %s",
                    part.__name__,
                    describe(exc),
                    exc_info=not isinstance(exc, SlotEngineError),  # a bug: show where
                )
        if outbox_failure is not None:
            raise outbox_failure
        return dict(self.counters)

    async def carry(self) -> None:
        """Carry the outbox out (``outbox.py``): of every stream rung, first what earlier
        rounds left pending (reading on past each read, so an entry that fails again is
        delivered once a round), then new entries; every stream's reads go in one round trip
        and its entries are handled together. A shard's stream with nothing left answers its
        doorbell; one whose entry failed stays rung, for the next round."""
        client = self.store.client
        self.clock.set_offset(
            usable_offset(await client.get(self.keys.clock), self.settings.movable_clock)
        )
        now = time.monotonic()
        if self.partition == 0 and now >= self._next_sweep:
            self._next_sweep = now + SWEEP_SECONDS
            if found := await self.outbox.sweep():
                log.warning("courier: %d shards' outbox entries were never rung for", found)
        streams = await self.outbox.rung()
        unreadable: list[Exception] = []
        for at in range(0, len(streams), STREAMS_PER_READ):
            unreadable += await self._carry_streams(streams[at : at + STREAMS_PER_READ])
        if unreadable:  # the others were carried: raised for the round to count
            raise unreadable[0]

    async def _carry_streams(self, streams: list[Stream]) -> list[Exception]:
        """Carry these streams out; why each that Redis could not read could not be."""
        waiting = set(streams)  # not answered: read to the end, or an entry failed
        failed: set[Stream] = set()  # with an entry that failed and stays pending
        unreadable: list[Exception] = []
        for start in ("0", ">"):  # what earlier rounds left pending, read on; then new ones
            starts = [(stream, start) for stream in streams]
            while starts:
                reads = await self.outbox.read(starts, BATCH)
                got: list[list[Entry]] = []
                for (stream, _), read in zip(starts, reads, strict=True):
                    if isinstance(read, Exception):
                        failed.add(stream)
                        unreadable.append(read)
                        log.warning("courier: %s cannot be read: %s", stream.key, read)
                    got.append([] if isinstance(read, Exception) else read)
                failed |= await self._carry(starts, got)
                if start == ">":
                    for (stream, _), entries in zip(starts, got, strict=True):
                        if len(entries) < BATCH and stream not in failed:
                            waiting.discard(stream)
                starts = [
                    (stream, ">" if start == ">" else entries[-1][0].decode())
                    for (stream, _), entries in zip(starts, got, strict=True)
                    if len(entries) == BATCH
                ]
        await self.outbox.answer([stream for stream in streams if stream not in waiting])
        return unreadable

    async def _carry(
        self, starts: list[tuple[Stream, str]], reads: list[list[Entry]]
    ) -> set[Stream]:
        """Handle one read of the outbox (any number of streams) and settle it (``_settle``);
        the streams with a failed entry left pending. The entries are handled together; if
        that fails, one at a time, so that no bad entry holds up a good one. An entry that
        finds a service unreachable ends that (the others would most likely find it so too,
        each after a timeout) and is raised once the rest is settled; it is counted like any
        failure, so an entry that always times out still reaches the dead letters, and the
        entries behind it flow on."""
        done: list[Read] = []
        failed: list[Failed] = []
        readable: list[tuple[Read, str, list[list[Any]]]] = []
        for (stream, _), entries in zip(starts, reads, strict=True):
            for entry_id, fields in entries:
                entry = (stream, entry_id, fields)
                if not fields:  # deleted while pending
                    done.append(entry)
                    continue
                try:
                    readable.append((entry, _origin(stream, entry_id, fields), _events(fields)))
                except Exception as exc:
                    failed.append((*entry, exc))
        outage: Exception | None = None
        error = (
            await self._attempt([(origin, events) for _, origin, events in readable])
            if readable
            else None
        )
        if error is None:
            done += [entry for entry, _, _ in readable]
        else:
            for entry, origin, events in readable:
                one = error if len(readable) == 1 else await self._attempt([(origin, events)])
                if one is None:
                    done.append(entry)
                    continue
                failed.append((*entry, one))
                if unreachable(one):  # likely away for all: the others wait for the next round
                    outage = one
                    break
        pending = await self._settle(done, failed)
        if outage is not None:
            raise outage
        return pending

    async def _attempt(self, batch: list[tuple[str, list[list[Any]]]]) -> Exception | None:
        """``_handle_batch``, answering its failure instead of raising it."""
        try:
            await self._handle_batch(batch)
        except Exception as exc:
            return exc
        return None

    async def _settle(self, done: list[Read], failed: list[Failed]) -> set[Stream]:
        """Acknowledge and delete the entries done, and the failed ones whose delivery count
        has reached ``outbox_max_tries`` once they are in the dead letters (``_bury``); the
        other failed entries stay pending for the next round (their streams are answered)."""
        last: list[Exhausted] = []
        pending: set[Stream] = set()
        if failed:
            counts = await self.outbox.deliveries([(stream, i) for stream, i, _, _ in failed])
            limit = self.settings.outbox_max_tries
            for (stream, entry_id, fields, exc), tries in zip(failed, counts, strict=True):
                self.counters["failures"] += 1
                if tries >= limit:
                    last.append((stream, entry_id, fields, exc, tries))
                else:
                    pending.add(stream)
                    log.warning(
                        "outbox entry %s failed (delivery %d of %d): %s",
                        _origin(stream, entry_id, fields),
                        tries,
                        limit,
                        describe(exc),
                    )
        await self._settled(done)  # first: a failure to bury keeps none of them pending
        self.counters["entries"] += len(done)
        buried = await self._bury(last) if last else []
        moved = set(buried)
        pending |= {stream for stream, entry_id, *_ in last if (stream, entry_id) not in moved}
        await self._settled(buried)
        self.counters["dead_letters"] += len(buried)
        return pending

    async def _settled(self, entries: list[Any]) -> None:
        """Acknowledge and delete entries (each ``(stream, id, ...)``), one script a stream."""
        by_stream: dict[Stream, list[bytes]] = {}
        for stream, entry_id, *_ in entries:
            by_stream.setdefault(stream, []).append(entry_id)
        if by_stream:
            await self.outbox.settle(by_stream)

    async def _bury(self, last: list[Exhausted]) -> list[tuple[Stream, bytes]]:
        """Move to the dead letters the entries that failed their last delivery; those moved.
        Their dead letters are written, and confirmed, before the entries are acknowledged: a
        crash in between at worst writes one twice, and an entry whose dead letter could not
        be written stays pending."""
        origins = [_origin(stream, entry_id, fields) for stream, entry_id, fields, _, _ in last]
        dead_ids = await self.dead_letters.bury(
            [
                (origin, fields.get(b"e", b""), exc, tries)
                for origin, (_, _, fields, exc, tries) in zip(origins, last, strict=True)
            ]
        )
        buried = []
        for origin, (stream, entry_id, _, exc, tries), dead_id in zip(
            origins, last, dead_ids, strict=True
        ):
            if dead_id is None:
                log.error(
                    "outbox entry %s failed %d times but could not be moved to the dead "
                    "letters: it stays pending",
                    origin,
                    tries,
                )
                continue
            buried.append((stream, entry_id))
            log.error(
                "outbox entry %s failed %d times, moved to the dead letters as %s: %s",
                origin,
                tries,
                dead_id,
                describe(exc),
                exc_info=exc,
            )
        return buried

    async def index(self) -> int:
        """Bring the booking records up to date with every committed session, and ask for the
        HIS deliveries their changes call for; how many records changed."""
        changed = 0
        if not self._tallied:  # once: records from before the tallies get theirs
            await self.records.ensure_tallies()
            if self.partition == 0:  # sessions left to indexers there are no more
                await self.records.rehome()
            self._tallied = True
        for _ in range(INDEX_ROUNDS):
            now = self.clock.now()
            changes = await self.records.sync(
                now, follow=lambda changed, now=now: self.deliveries.plan(changed, now)
            )
            changed += len(changes)
            self.counters["records"] += len(changes)
            if not await self.store.client.scard(self.records.changed):
                break
        return changed

    async def reconcile(self, settle_seconds: float = SETTLE_SECONDS) -> int:
        """Refund payments the engine never took: charged over ``settle_seconds`` ago, never
        answered (the API worker died between the charge and the engine), and whose booking has
        since ended unpaid. A hold still waiting is left alone: it is paid or voided later."""
        refunded = 0
        offset = 0
        while offset < RECONCILE_LIMIT:  # page past holds that are still waiting
            page = await self.gateway.unsettled(time.time() - settle_seconds, offset=offset)
            if not page:
                break
            for booking_id in page:
                try:
                    outcome = await self._reconcile_one(booking_id)
                except SlotEngineError as exc:  # e.g. a corrupt snapshot: fail only this one
                    log.warning("cannot reconcile the payment of %s: %s", booking_id, exc)
                    outcome = "skipped"
                if outcome == "skipped":
                    offset += 1
                elif outcome == "refunded":
                    refunded += 1
        return refunded

    async def _reconcile_one(self, booking_id: str) -> str:
        session_id, _, number = booking_id.rpartition(".")
        session = await self.store.read_session(session_id)
        row = session.row_of(int(number)) if session is not None and number.isdigit() else -1
        if row >= 0:
            _, _, state, _ = session.booking(row)  # type: ignore[union-attr]
            if state == HELD_STATE:
                return "skipped"
            if session.extra(row).paid:  # type: ignore[union-attr]
                await self.gateway.settled(booking_id)
                return "settled"
        refund = await self.gateway.refund(booking_id, None, f"{booking_id}:void")
        await self.gateway.settled(booking_id)
        if refund is not None and refund.amount:
            self.counters["refunds"] += 1
            self.counters["refunded"] += refund.amount
            return "refunded"
        return "settled"

    async def _handle(self, entry_id: str, events: list[list[Any]]) -> None:
        await self._handle_batch([(entry_id, events)])

    async def _handle_batch(self, batch: list[tuple[str, list[list[Any]]]]) -> None:
        """Several outbox entries (named by their origin) at once, each kind of work in one
        pipelined round trip; raises (and every entry is retried, idempotently) if any part
        fails. Counted only once it all went through."""
        tally: dict[str, int] = dict.fromkeys(self.counters, 0)
        notices: list[Notice] = []
        refunds: list[tuple[str, int | None, str]] = []
        violations: list[tuple[str, str, int, str, str, float, str]] = []
        releases: list[tuple[str, str, int, str, float, str, str]] = []
        follows: list[list[Any]] = []
        for entry_id, events in batch:
            for index, event in enumerate(events):
                kind = event[0]
                if kind == "notice":
                    _, what, patient, booking_id, session_id, at, details = event
                    notices.append(
                        Notice(
                            f"{entry_id}:{index}",
                            what,
                            patient,
                            booking_id,
                            session_id,
                            at,
                            details,
                        )
                    )
                elif kind == "refund":
                    _, booking_id, _, amount, reason = event
                    refunds.append((booking_id, amount, f"{booking_id}:{reason}"))
                elif kind == "void":  # a hold ended unpaid: give back any payment that came late
                    refunds.append((event[1], None, f"{event[1]}:void"))
                elif kind == "violation":
                    violations.append((*event[1:], f"{entry_id}:{index}:ban"))
                elif kind == "hold_release":
                    _, scope, hospital_id, patient, booking_id, at, day = event
                    releases.append(
                        (scope, hospital_id, patient, booking_id, at, day, f"{entry_id}:{index}")
                    )
                elif kind == "follow":
                    follows.append(event)
                else:
                    log.error("unknown outbox event %r", event)
        if follows:
            await self._follow_up(follows)
        if refunds:
            for refund in await self.gateway.refund_many(refunds):
                if refund is not None and refund.amount:
                    tally["refunds"] += 1
                    tally["refunded"] += refund.amount
        if releases:
            abuse, warnings = await self._hold_releases(releases)
            violations += abuse
            notices += warnings
        if violations:
            notices += await self._violations(violations, tally)
        if notices:
            await self.sender.send(notices)
            tally["notices"] += len(notices)
        for name, count in tally.items():
            self.counters[name] += count

    async def _follow_up(self, follows: list[list[Any]]) -> None:
        """Apply again what commits sent after their scripts (each idempotent): a follow-up
        lost on its way with a failed round trip or a cluster node away is made good here."""
        keys = self.keys
        async with self.store.client.pipeline(transaction=False) as pipe:
            for _, shard_id, bookings, sessions, new_sessions in follows:
                for patient, booking_id in bookings:
                    pipe.sadd(keys.patient_bookings(patient), booking_id)
                if sessions:
                    changed = keys.changed_sessions_of(self.records.indexer_of(shard_id))
                    pipe.sadd(changed, *[keys.session(shard_id, s) for s in sessions])
                for session_id in new_sessions:
                    pipe.hsetnx(keys.catalog, session_id, shard_id)
                if new_sessions:
                    pipe.sadd(keys.shards, shard_id)
            await pipe.execute()

    async def _hold_releases(
        self, releases: list[tuple[str, str, int, str, float, str, str]]
    ) -> tuple[list[tuple[str, str, int, str, str, float, str]], list[Notice]]:
        """Count the holds each patient let go per scope and local day; past the hospital's
        ``free_hold_releases``, each is a ``hold_abuse`` violation (the ban rules count them)
        and the patient is told. Replay-safe: a release is a member of the day's sorted set,
        its place in the day decided by when it happened."""
        client, keys = self.store.client, self.keys
        async with client.pipeline(transaction=False) as pipe:
            for scope, _, patient, booking_id, at, day, _ in releases:
                key = keys.hold_releases(scope, patient, day)
                pipe.zadd(key, {booking_id: at}, nx=True)
                pipe.expire(key, 3 * 86400)
            await pipe.execute()
            for scope, _, patient, booking_id, _, day, _ in releases:
                pipe.zrank(keys.hold_releases(scope, patient, day), booking_id)
            ranks = await pipe.execute()
        policies: dict[str, Policy] = {}
        abuse, warnings = [], []
        for release, rank in zip(releases, ranks, strict=True):
            scope, hospital_id, patient, booking_id, at, _, notice_id = release
            if hospital_id not in policies:
                policies[hospital_id] = await self.store.policy(hospital_id)
            free = policies[hospital_id].free_hold_releases
            if rank is None or rank < free:
                continue
            abuse.append((scope, hospital_id, patient, HOLD_ABUSE, booking_id, at, notice_id))
            warnings.append(
                Notice(
                    f"{notice_id}:abuse",
                    "hold_abuse",
                    patient,
                    booking_id,
                    booking_id.rpartition(".")[0],
                    at,
                    {"released_today": rank + 1, "free": free},
                )
            )
        return abuse, warnings

    async def _violations(
        self, violations: list[tuple[str, str, int, str, str, float, str]], tally: dict[str, int]
    ) -> list[Notice]:
        """Record violations and apply each hospital's blacklist rules to the patients' whole
        records (counted in ``tally``); one refresh of the hosts per scope whose bans changed."""
        client, keys = self.store.client, self.keys
        async with client.pipeline(transaction=False) as pipe:
            for scope, _, patient, kind, booking_id, at, _ in violations:
                pipe.hsetnx(keys.conduct(scope, patient), f"{booking_id}:{kind}", repr(at))
                pipe.sadd(keys.conduct_scopes(patient), scope)
            await pipe.execute()
        tally["violations"] += len(violations)
        last: dict[tuple[str, int], tuple[str, str, float, str]] = {}
        for scope, hospital_id, patient, _, booking_id, at, notice_id in violations:
            last[scope, patient] = (hospital_id, booking_id, at, notice_id)
        people = list(last)
        async with client.pipeline(transaction=False) as pipe:
            for scope, patient in people:
                pipe.hgetall(keys.conduct(scope, patient))
            records = await pipe.execute()
        policies: dict[str, Policy] = {}
        for hospital_id, *_ in last.values():
            if hospital_id not in policies:
                policies[hospital_id] = await self.store.policy(hospital_id)
        now = self.clock.now()
        causes: dict[tuple[str, int], set[str]] = {}
        for scope, _, patient, _, booking_id, _, _ in violations:
            causes.setdefault((scope, patient), set()).add(booking_id)
        async with client.pipeline(transaction=False) as pipe:
            for scope, patient in people:  # a hospital's whitelist spares its patients
                pipe.hget(keys.patient_list(last[scope, patient][0], "whitelist"), str(patient))
            spared = [_spared(raw, now) for raw in await pipe.execute()]
        bans: list[tuple[str, int, float]] = []
        new_bans: set[tuple[str, int]] = set()  # bans this batch's violations earned
        for (scope, patient), record, skip in zip(people, records, spared, strict=True):
            if skip:
                continue
            hospital_id = last[scope, patient][0]
            conduct = judge(parse_conduct(record), policies[hospital_id])
            until = conduct.banned_until(now)
            if until is not None and conduct.bans[-1].cause in causes[scope, patient]:
                bans.append((scope, patient, until))  # only a ban this batch earned: one
                new_bans.add((scope, patient))  # lifted by hand does not come back
        if not bans:
            return []
        changed = await self.store.extend_bans(bans)
        notices = []
        refresh: set[str] = set()
        for (scope, patient, until), grew in zip(bans, changed, strict=True):
            hospital_id, booking_id, at, notice_id = last[scope, patient]
            if grew:
                tally["bans"] += 1
                refresh.add(scope if scope == PLATFORM else hospital_id)
            if (scope, patient) in new_bans:  # also on a replay: the notice id is stable
                notices.append(
                    Notice(
                        notice_id,
                        "banned",
                        patient,
                        booking_id,
                        "",
                        at,
                        {"scope": scope, "until": until},
                    )
                )
        for scope in sorted(refresh):
            self._refresh_hosts(scope)
        return notices

    def _refresh_hosts(self, scope: str) -> None:
        """Tell every host to reload the bans now, and wait a little for them to have done it
        (a host that is restarting loads the bans with its shards anyway)."""
        import ray

        from engine.actors.names import find_pool

        if not ray.is_initialized():  # used outside Ray (tests of the rounds alone)
            return
        try:
            if self._hosts is None or self.settings.follows_nodes:  # a pool that grows
                self._hosts = find_pool(self.settings)
            ray.get(
                [h.refresh_rules.remote(scope) for h in self._hosts if h is not None], timeout=5
            )
        except Exception as exc:
            self._hosts = None
            log.warning("could not reach every host to refresh bans: %s", exc)


def unreachable(exc: BaseException) -> bool:
    """True when a failure, or one that caused it, says a service could not be reached."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, UNREACHABLE):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    return False


def _origin(stream: Stream, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
    """The name an outbox entry was first written under (a retried dead letter keeps it): its
    notices are named after it, so a notice already delivered is not delivered again."""
    if b"origin" in fields:
        return fields[b"origin"].decode(errors="replace")
    return stream.origin(entry_id)


def _events(fields: dict[bytes, bytes]) -> list[list[Any]]:
    """The events of an outbox entry, its commit's follow-ups last (as one ``follow`` event:
    ``Store.follow_ups``); raises on one that is not readable."""
    raw = fields.get(b"e", b"")
    events = msgpack.unpackb(raw, raw=False) if raw else []
    if not isinstance(events, list):
        raise TypeError(f"an outbox entry holds a list of events, not {type(events).__name__}")
    if follow := fields.get(b"f"):
        events = [*events, ["follow", *msgpack.unpackb(follow, raw=False)]]
    return events


def _spared(raw: bytes | None, now: float) -> bool:
    """A whitelist entry that is still in force (``until`` None: for good)."""
    if raw is None:
        return False
    until = json.loads(raw).get("until")
    return until is None or until > now
