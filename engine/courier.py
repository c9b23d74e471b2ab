"""The courier: a Ray actor that carries the outbox out — refunds to the payment gateway,
notices to the sender, violations to the patients' conduct records and bans — and then keeps
the booking records up to date (``records.py``), asking for HIS deliveries (``delivery.py``).

Hosts never wait for any of this: their commit only appends one outbox entry (atomically with
the snapshots that caused it). The courier reads the stream through a consumer group, handles
each entry, then acknowledges and deletes it. Every step is idempotent (refunds are keyed,
notices carry stable ids, violations are keyed by booking and kind, bans only grow), so an entry
replayed after a crash or a Redis outage does nothing twice. A failed entry stays pending and is
retried on the next round (every ``tick_seconds``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any

import msgpack
from redis.exceptions import ResponseError

from .clock import Clock, parse_offset
from .delivery import Deliveries
from .errors import SlotEngineError
from .keys import Keys
from .notices import Notice, Sender, load_sender
from .payments import SandboxGateway
from .policy import PLATFORM, Policy, Violation, judge
from .records import RecordBook
from .session import HELD_STATE
from .settings import Settings
from .store import Store
from .ticker import tick_self

log = logging.getLogger(__name__)
GROUP = "couriers"
CONSUMER = "courier"
BATCH = 256
SETTLE_SECONDS = 60.0  # a charge the engine has not answered by then is looked at
RECONCILE_LIMIT = 1000  # waiting holds looked past per round
INDEX_ROUNDS = 20  # times 500 changed sessions indexed per round at most


class Courier:
    """The Ray actor (decorated by ``pool.py``; one per namespace): a synchronous shell that
    runs ``Rounds`` on its private event loop, one call at a time."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self.rounds = Rounds(settings)
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

    def start_timer(self) -> None:
        if self._timer is not None:
            return
        self._timer = tick_self("drain", self.settings.tick_seconds, "courier-timer")


class Rounds:
    """What the courier does, round by round (async; kept apart from the actor because Ray
    makes any actor with an ``async def`` method an async actor)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.store = Store.from_url(settings.redis_url, settings.namespace, settings.redis_timeout)
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
                "failures",
            ),
            0,
        )
        self.records = RecordBook(self.store.client, self.keys)
        self.deliveries = Deliveries(self.store.client, self.keys)
        self._grouped = False
        self._tallied = False
        self._hosts: list | None = None

    async def drain(self) -> dict[str, int]:
        client = self.store.client
        if not self._grouped:
            try:
                await client.xgroup_create(self.keys.outbox, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._grouped = True
        self.clock.set_offset(parse_offset(await client.get(self.keys.clock)))
        for start in ("0", ">"):  # first what an earlier round left pending, then new entries
            while True:
                reply = await client.xreadgroup(
                    GROUP, CONSUMER, {self.keys.outbox: start}, count=BATCH
                )
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                batch = [
                    (entry_id.decode(), msgpack.unpackb(fields[b"e"], raw=False))
                    for entry_id, fields in entries
                    if fields  # an entry deleted while pending has no fields
                ]
                await self._handle_batch(batch)
                done = [entry_id for entry_id, _ in entries]
                async with client.pipeline(transaction=False) as pipe:
                    pipe.xack(self.keys.outbox, GROUP, *done)
                    pipe.xdel(self.keys.outbox, *done)
                    await pipe.execute()
                self.counters["entries"] += len(done)
                if start == "0" and len(entries) < BATCH:
                    break
        await self.reconcile()  # after the outbox: its voids settle most of them first
        await self.index()
        return dict(self.counters)

    async def index(self) -> int:
        """Bring the booking records up to date with every committed session, and ask for the
        HIS deliveries their changes call for; how many records changed."""
        changed = 0
        if not self._tallied:  # once: records from before the tallies get theirs
            await self.records.ensure_tallies()
            self._tallied = True
        for _ in range(INDEX_ROUNDS):
            now = self.clock.now()
            changes = await self.records.sync(
                now, follow=lambda changed, now=now: self.deliveries.plan(changed, now)
            )
            changed += len(changes)
            self.counters["records"] += len(changes)
            if not await self.store.client.scard(self.keys.changed_sessions):
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
        if session is not None and number.isdigit() and int(number) < session.count:
            _, _, state, _ = session.booking(int(number))
            if state == HELD_STATE:
                return "skipped"
            if session.extra(int(number)).paid:
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
        """Several outbox entries at once, each kind of work in one pipelined round trip;
        raises (and the whole batch is retried, idempotently) if any part fails."""
        notices: list[Notice] = []
        refunds: list[tuple[str, int | None, str]] = []
        violations: list[tuple[str, str, int, str, str, float, str]] = []
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
                else:
                    log.error("unknown outbox event %r", event)
        if refunds:
            for refund in await self.gateway.refund_many(refunds):
                if refund is not None and refund.amount:
                    self.counters["refunds"] += 1
                    self.counters["refunded"] += refund.amount
        if violations:
            notices += await self._violations(violations)
        if notices:
            await self.sender.send(notices)
            self.counters["notices"] += len(notices)

    async def _violations(
        self, violations: list[tuple[str, str, int, str, str, float, str]]
    ) -> list[Notice]:
        """Record violations and apply each hospital's blacklist rules to the patients' whole
        records; one refresh of the hosts per scope whose bans changed."""
        client, keys = self.store.client, self.keys
        async with client.pipeline(transaction=False) as pipe:
            for scope, _, patient, kind, booking_id, at, _ in violations:
                pipe.hsetnx(keys.conduct(scope, patient), f"{booking_id}:{kind}", repr(at))
                pipe.sadd(keys.conduct_scopes(patient), scope)
            await pipe.execute()
        self.counters["violations"] += len(violations)
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
                self.counters["bans"] += 1
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

        from .pool import find_pool

        if not ray.is_initialized():  # used outside Ray (tests of the rounds alone)
            return
        try:
            if self._hosts is None:
                self._hosts = find_pool(self.settings)
            ray.get([h.refresh_rules.remote(scope) for h in self._hosts], timeout=5)
        except Exception as exc:
            self._hosts = None
            log.warning("could not reach every host to refresh bans: %s", exc)


def _spared(raw: bytes | None, now: float) -> bool:
    """A whitelist entry that is still in force (``until`` None: for good)."""
    if raw is None:
        return False
    until = json.loads(raw).get("until")
    return until is None or until > now


def parse_conduct(record: dict[bytes, bytes]) -> list[Violation]:
    out = []
    for field, at in record.items():
        booking_id, _, kind = field.decode().rpartition(":")
        out.append(Violation(float(at), kind, booking_id))
    return out
