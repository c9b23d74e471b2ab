"""Deliveries to the hospitals' systems: each booking and cancellation to the HIS (which
answers its own booking number), and each booking filed with social insurance (社保备案).

An outbox of its own, kept apart from booking: the records indexer
(``backoffice/record_book.py``, run by the courier) asks for a delivery when a record becomes
booked or cancelled, and the dispatcher (a Ray actor of its own, so a slow or dead HIS never
delays refunds or notices) carries them out:

- one Redis hash per delivery (``target:booking id``): what is *wanted* (``book`` or
  ``cancel``, written only by the indexer) apart from what was *done* (written only by the
  dispatcher), so a cancellation asked for while the booking is on the wire is never lost: the
  dispatcher removes a delivery from the due set only if what it did is still what is wanted
  (``FINISH_SCRIPT``);
- retried with exponential backoff and jitter while the HIS is unavailable, up to
  ``MAX_ATTEMPTS``, then kept as failed for an admin to look at and retry (or drop); a refusal
  (4xx) fails at once, and so does a link to an address the egress policy refuses
  (``egress.py``: no call is made, and none would succeed until an admin changes the link);
- idempotent: every call carries the booking id as its key, and a cancel of a booking whose
  number never came back first re-sends the booking (the HIS answers the same number);
- a cancellation of a booking never sent sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from engine.backoffice.egress import Egress
from engine.backoffice.his import MAX_BYTES, His, HttpHis, HttpInsurance, Insurance
from engine.backoffice.record import CONFIRMED, Record
from engine.backoffice.record_book import Change, RecordBook
from engine.errors import EgressRefused, HisRejected, HisUnavailable
from engine.settings import Settings
from engine.store.keys import Keys
from engine.store.slots import mget

log = logging.getLogger(__name__)
HIS, INSURANCE = "his", "insurance"
BOOK, CANCEL = "book", "cancel"
MAX_ATTEMPTS = 12  # 1 s, 2 s, 4 s ... 5 min: about half an hour of trying
BASE_DELAY, MAX_DELAY = 1.0, 300.0
ROUND = 256  # deliveries read per step
PARALLEL = 32  # calls in flight

# KEYS: delivery hash, due set, pending set, failed set. ARGV: wanted, hospital, now.
# A cancellation is final: a booking id is never booked again (a re-sold slot gets a new one).
WANT_SCRIPT = """
local old = redis.call('HGET', KEYS[1], 'wanted')
if old == ARGV[1] or old == 'cancel' then
  return 0
end
redis.call('HSET', KEYS[1], 'wanted', ARGV[1], 'hospital', ARGV[2], 'attempts', 0, 'error', '')
redis.call('PERSIST', KEYS[1])
redis.call('HSETNX', KEYS[1], 'made_at', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[3], KEYS[1])
redis.call('ZREM', KEYS[4], KEYS[1])
return 1
"""

# KEYS: delivery hash, due set, pending set, failed set. ARGV: the wanted action acted on,
# outcome (done | retry | failed), next time, now, keep until (epoch seconds: a delivery done
# is forgotten then), then field/value pairs to set.
FINISH_SCRIPT = """
if redis.call('HGET', KEYS[1], 'wanted') ~= ARGV[1] then
  -- asked for something else meanwhile: keep only the number answered (the next action,
  -- a cancel, needs it) and carry that out next, from its own first attempt
  for i = 6, #ARGV, 2 do
    if ARGV[i] == 'number' then
      redis.call('HSET', KEYS[1], 'number', ARGV[i + 1])
    end
  end
  redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
  return 0
end
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
if ARGV[2] == 'retry' then
  redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
else
  redis.call('ZREM', KEYS[2], KEYS[1])
  redis.call('ZREM', KEYS[3], KEYS[1])
  if ARGV[2] == 'failed' then
    redis.call('ZADD', KEYS[4], ARGV[4], KEYS[1])
  else
    redis.call('EXPIREAT', KEYS[1], math.floor(tonumber(ARGV[5])))
  end
end
return 1
"""
KEEP_DONE = 2 * 86400.0  # a delivery done is kept this long after the visit (or from now)

# KEYS: delivery hash, the hospital's failed set. Only a failed delivery is forgotten: one
# pending may be on the wire, and one asked for again meanwhile has left the failed set.
DROP_SCRIPT = """
if not redis.call('ZSCORE', KEYS[2], KEYS[1]) then
  return 0
end
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('DEL', KEYS[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class Wanted:
    target: str  # HIS or INSURANCE
    action: str  # BOOK or CANCEL
    booking_id: str
    hospital_id: str


@dataclass(slots=True)
class Finish:
    """What came of one delivery, written with the rest of its round (``Deliveries._finish``)."""

    key: str
    hospital: str
    action: str  # the wanted action acted on
    outcome: str  # done | retry | failed
    at: float  # when to try again (retry)
    keep: float = 0.0  # done: kept until this (the visit) + KEEP_DONE
    fields: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, str] = field(default_factory=dict)  # HIS / INSURANCE → number answered
    booking_id: str = ""  # whose record the numbers go with


@dataclass(frozen=True, slots=True)
class DeliveryRun:
    """What the deliveries of one ``Deliveries.run`` share."""

    configs: dict[str, dict[str, str]]
    down: set[str]  # endpoints that failed this round: the rest of theirs wait
    now: float
    install: str


def wanted(
    changes: Iterable[tuple[Record | None, Record]], his: set[str], insurance: set[str]
) -> list[Wanted]:
    """What the record changes ask of the hospitals' systems (pure). ``his``/``insurance``:
    the hospitals that have one configured."""
    out = []
    for old, new in changes:
        was = old is not None and old.state in CONFIRMED
        if new.state in CONFIRMED and not was:
            if new.hospital_id in his:
                out.append(Wanted(HIS, BOOK, new.booking_id, new.hospital_id))
            if new.hospital_id in insurance:
                out.append(Wanted(INSURANCE, BOOK, new.booking_id, new.hospital_id))
        elif (
            new.state == "cancelled"
            and (was or (old is None and new.was_confirmed))
            and new.hospital_id in his
        ):
            out.append(Wanted(HIS, CANCEL, new.booking_id, new.hospital_id))
    return out


@dataclass(frozen=True, slots=True)
class Asks:
    """Deliveries asked for, not yet written: called with a pipeline, adds the writes to it."""

    keys: Keys
    wants: list[Wanted]
    now: float

    def __call__(self, pipe: Any) -> None:
        for w in self.wants:
            pipe.eval(
                WANT_SCRIPT,
                4,
                self.keys.delivery(w.hospital_id, w.target, w.booking_id),
                self.keys.deliveries_due(w.hospital_id),
                self.keys.deliveries_pending(w.hospital_id),
                self.keys.deliveries_failed(w.hospital_id),
                w.action,
                w.hospital_id,
                repr(self.now),
            )


def backoff(attempts: int, rng: random.Random) -> float:
    """Seconds before the next try: doubling from ``BASE_DELAY``, capped, with ±20% jitter."""
    delay = min(MAX_DELAY, BASE_DELAY * 2 ** max(0, attempts - 1))
    return delay * rng.uniform(0.8, 1.2)


def his_session_id(hospital_id: str, schedule_id: str) -> str:
    """The doctor-session made from an HIS schedule (``api/his_import.py``)."""
    return f"his-{hospital_id}-{schedule_id}"


def schedule_of(hospital_id: str, session_id: str) -> str:
    """The HIS schedule id of a session imported from it ("" for any other session)."""
    prefix = his_session_id(hospital_id, "")
    return session_id[len(prefix) :] if session_id.startswith(prefix) else ""


def booking_of(record: Record, install: str = "") -> dict[str, Any]:
    """What the HIS and the insurance are sent. The idempotency key is the booking id under
    this installation's id: another platform sending to the same HIS, or this one after its
    data was reset, never meets an old booking's number."""
    his_schedule_id = schedule_of(record.hospital_id, record.session_id)
    return {
        "key": f"{install}:{record.booking_id}" if install else record.booking_id,
        "booking_id": record.booking_id,
        "hospital_id": record.hospital_id,
        "department_id": record.department_id,
        "doctor_id": record.doctor_id,
        "session_id": record.session_id,
        "his_schedule_id": his_schedule_id,
        "date": record.date,
        "period": record.period,
        "slot_no": record.slot_no,
        "slot_at": record.slot_at,
        "patient_id": record.patient_id,
        "fee": record.fee,
    }


class Deliveries:
    """The delivery outbox in Redis: asking (``want``), carrying out (``run``), looking.

    Calls go only where ``egress`` allows (default: public addresses only) and read at most
    ``max_bytes`` of an answer; ``from_settings`` takes both from the settings."""

    def __init__(
        self,
        client: Any,
        keys: Keys,
        timeout: float = 2.0,
        egress: Egress | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.client = client
        self.keys = keys
        self.records = RecordBook(client, keys)
        self.timeout = timeout
        self.egress = Egress() if egress is None else egress
        self.max_bytes = max_bytes
        self.rng = random.Random()
        self._his: dict[str, His] = {}
        self._install: str | None = None
        self._insurance: dict[str, Insurance] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            ("sent", "booked", "cancelled", "filed", "retries", "failed"), 0
        )

    @classmethod
    def from_settings(cls, client: Any, keys: Keys, settings: Settings) -> Deliveries:
        """The outbox with the settings' timeout, egress policy and answer size limit."""
        return cls(
            client,
            keys,
            settings.redis_timeout,
            Egress.from_settings(settings),
            settings.his_max_bytes,
        )

    def key(self, hospital_id: str, target: str, booking_id: str) -> str:
        return self.keys.delivery(hospital_id, target, booking_id)

    def _parts(self, hospital_id: str, key: str) -> tuple[str, str]:
        """(target, booking id) of one of a hospital's delivery keys."""
        target, _, booking_id = key[len(self.keys.deliveries(hospital_id)) + 1 :].partition(":")
        return target, booking_id

    # ----- configuration ---------------------------------------------------------------------

    async def configure(self, hospital_id: str, config: dict[str, str] | None) -> None:
        """Set (or with None, remove) a hospital's endpoints: ``his_url``, ``insurance_url``."""
        keys = self.keys  # the config before it is listed, unlisted before it goes (two slots)
        if config:
            await self.client.set(keys.his_config(hospital_id), orjson.dumps(config))
            await self.client.sadd(keys.his_hospitals, hospital_id)
        else:  # a new link later pulls from the start
            await self.client.srem(keys.his_hospitals, hospital_id)
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(keys.his_config(hospital_id))
                pipe.delete(keys.his_cursor(hospital_id))
                await pipe.execute()

    async def configs(self) -> dict[str, dict[str, str]]:
        ids = sorted(m.decode() for m in await self.client.smembers(self.keys.his_hospitals))
        if not ids:
            return {}
        raws = await mget(self.client, [self.keys.his_config(i) for i in ids])
        return {i: orjson.loads(raw) for i, raw in zip(ids, raws, strict=True) if raw}

    async def config(self, hospital_id: str) -> dict[str, str] | None:
        raw = await self.client.get(self.keys.his_config(hospital_id))
        return None if raw is None else orjson.loads(raw)

    async def install_id(self) -> str:
        """This installation's id, made once (it prefixes the keys the HIS is sent)."""
        if self._install is None:
            await self.client.set(self.keys.install_id, secrets.token_hex(6), nx=True)
            self._install = (await self.client.get(self.keys.install_id)).decode()
        return self._install

    # ----- asking ------------------------------------------------------------------------------

    async def plan(self, changes: list[Change], now: float) -> Asks:
        """What the record changes ask for, to be written with them (the records indexer adds
        it to the transaction that writes the records, so neither is lost without the other)."""
        configs = await self.configs() if changes else {}
        his = {h for h, c in configs.items() if c.get("his_url")}
        insurance = {h for h, c in configs.items() if c.get("insurance_url")}
        wants = wanted(changes, his, insurance)
        if wants:  # listed first (its own slot): the dispatcher reads these hospitals' due sets
            await self.client.sadd(self.keys.delivery_hospitals, *{w.hospital_id for w in wants})
        return Asks(self.keys, wants, now)

    async def ask(self, changes: list[Change], now: float) -> int:
        """Turn record changes into deliveries at once; how many were asked for (each
        delivery one script, one slot)."""
        asks = await self.plan(changes, now)
        async with self.client.pipeline(transaction=False) as pipe:
            asks(pipe)
            await pipe.execute()
        return len(asks.wants)

    # ----- carrying out -------------------------------------------------------------------------

    async def run(self, now: float, limit: int = 10_000) -> int:
        """Carry out every delivery due by ``now`` (up to ``limit``); how many were tried.

        A round reads its deliveries and their records at once, makes the calls (``PARALLEL``
        in flight) and writes what came of them at once; a crash in between redoes the round's
        calls, which the HIS answers as before (the same idempotency keys)."""
        tried = 0
        context = DeliveryRun(await self.configs(), set(), now, await self.install_id())
        gate = asyncio.Semaphore(PARALLEL)
        members = await self.client.smembers(self.keys.delivery_hospitals)
        hospitals = sorted(m.decode() for m in members)
        while tried < limit and hospitals:
            async with self.client.pipeline(transaction=False) as pipe:
                for hospital_id in hospitals:
                    pipe.zrangebyscore(
                        self.keys.deliveries_due(hospital_id),
                        "-inf",
                        repr(now),
                        start=0,
                        num=ROUND,
                        withscores=True,
                    )
                answers = await pipe.execute()
            waiting = [(h, ks) for h, ks in zip(hospitals, answers, strict=True) if ks]
            hospitals = [h for h, _ in waiting]
            earliest = sorted(  # the earliest due of every hospital: no backlog starves another
                (at, k.decode(), h) for h, ks in waiting for k, at in ks
            )[:ROUND]
            if not earliest:
                break
            async with self.client.pipeline(transaction=False) as pipe:
                for _, key, _ in earliest:
                    pipe.hgetall(key)
                states = await pipe.execute()
            due = [(key, h, st) for (_, key, h), st in zip(earliest, states, strict=True) if st]
            if len(due) < len(earliest):  # due, but its state is gone (expired, dropped)
                log.warning("deliveries: %d due without a state, dropped", len(earliest) - len(due))
                async with self.client.pipeline(transaction=False) as pipe:
                    for (_, key, h), st in zip(earliest, states, strict=True):
                        if not st:
                            pipe.zrem(self.keys.deliveries_due(h), key)
                            pipe.zrem(self.keys.deliveries_pending(h), key)
                    await pipe.execute()
                tried += len(earliest) - len(due)
            if not due:
                continue
            records = await self.records.get_entries(
                [(self._parts(h, key)[1], h) for key, h, _ in due]
            )

            async def one(key: str, state: dict[bytes, bytes], record: Record | None) -> Finish:
                async with gate:
                    return await self._decide_safely(key, state, record, context)

            finishes = await asyncio.gather(
                *(one(key, st, r) for (key, _, st), r in zip(due, records, strict=True))
            )
            tried += len(due)
            try:
                await self._finish(finishes, now)
            except Exception:  # Redis itself: they stay due, tried again next round
                log.exception("cannot record %d deliveries; they are tried again", len(due))
                break
        return tried

    async def _decide_safely(
        self, key: str, state: dict[bytes, bytes], record: Record | None, context: DeliveryRun
    ) -> Finish:
        """``_decide``, with anything unexpected retried later like an HIS outage (never
        lost, never stopping the others)."""
        try:
            return await self._decide(key, state, record, context)
        except Exception as exc:
            log.exception("delivery %s failed unexpectedly", key)
            try:
                attempts = int(state.get(b"attempts", b"0")) + 1
            except ValueError:
                attempts = 1
            return Finish(
                key,
                state.get(b"hospital", b"").decode(),
                state.get(b"wanted", b"").decode(),
                "failed" if attempts >= MAX_ATTEMPTS else "retry",
                context.now + backoff(attempts, self.rng),
                fields={"attempts": str(attempts), "error": f"{type(exc).__name__}: {exc}"[:300]},
            )

    async def _decide(
        self, key: str, state: dict[bytes, bytes], record: Record | None, context: DeliveryRun
    ) -> Finish:
        """Make the call a delivery wants; what came of it (written by ``_finish``)."""
        configs, down, now, install = context.configs, context.down, context.now, context.install
        fields = {k.decode(): v.decode() for k, v in state.items()}
        action, hospital_id = fields.get("wanted", ""), fields.get("hospital", "")
        target = self._parts(hospital_id, key)[0]
        attempts = int(fields.get("attempts", "0")) + 1
        config = configs.get(hospital_id, {})
        url = config.get("his_url" if target == HIS else "insurance_url", "")
        updates: dict[str, str] = {"attempts": str(attempts), "tried_at": repr(now)}
        if not url:
            return Finish(key, hospital_id, action, "failed", now, fields={"error": "no endpoint"})
        if url in down:
            updates["attempts"] = str(attempts - 1)  # not tried: its endpoint is down right now
            return Finish(
                key, hospital_id, action, "retry", now + backoff(1, self.rng), fields=updates
            )
        if record is None:
            return Finish(
                key, hospital_id, action, "failed", now, fields={"error": "no such booking"}
            )
        numbers: dict[str, str] = {}
        try:
            self.counters["sent"] += 1
            if target == INSURANCE:
                number = await self._insurer(url).file(booking_of(record, install))
                updates.update(number=number, done=BOOK)
                numbers[INSURANCE] = number
                self.counters["filed"] += 1
            elif action == BOOK:
                booking = booking_of(record, install)
                # before the call: a cancel must follow, with the key the HIS was given
                await self.client.hset(key, mapping={"sent": "1", "idem": booking["key"]})
                number = await self._his_for(url).book(booking)
                updates.update(number=number, done=BOOK)
                numbers[HIS] = number
                self.counters["booked"] += 1
            else:
                number = fields.get("number", "") or record.his_no  # (a delivery done expires)
                if not number and fields.get("sent") != "1":
                    updates.update(done="skipped")  # never sent: nothing to cancel
                else:
                    booking = booking_of(record, install)
                    booking["key"] = fields.get("idem") or booking["key"]
                    if not number:  # sent, answer lost: the same key gives the same number
                        number = await self._his_for(url).book(booking)
                        numbers[HIS] = number
                    await self._his_for(url).cancel(number, booking["key"], record.cancelled_by)
                    updates.update(number=number, done=CANCEL)
                    self.counters["cancelled"] += 1
        except HisUnavailable as exc:
            down.add(url)
            self.counters["retries"] += 1
            updates["error"] = str(exc)
            if attempts >= MAX_ATTEMPTS:
                self.counters["failed"] += 1
                return Finish(key, hospital_id, action, "failed", now, fields=updates)
            later = now + backoff(attempts, self.rng)
            return Finish(key, hospital_id, action, "retry", later, fields=updates)
        except (HisRejected, EgressRefused) as exc:  # final: sending again will not help
            self.counters["failed"] += 1
            updates["error"] = str(exc)
            return Finish(key, hospital_id, action, "failed", now, fields=updates)
        updates["error"] = ""
        return Finish(
            key,
            hospital_id,
            action,
            "done",
            now,
            keep=record.slot_at,
            fields=updates,
            numbers=numbers,
            booking_id=record.booking_id,
        )

    async def _finish(self, finishes: Iterable[Finish], now: float) -> None:
        """Write what came of a round's deliveries in one round trip: the numbers answered
        (beside the records), then each delivery's state (``FINISH_SCRIPT``). A delivery done
        is forgotten ``KEEP_DONE`` after the visit, or from now (Redis expires by its own
        clock, not the engine's)."""
        floor = time.time()
        async with self.client.pipeline(transaction=False) as pipe:
            for f in finishes:
                for system, number in f.numbers.items():
                    pipe.hset(self.keys.record_numbers(f.hospital, system), f.booking_id, number)
                pairs = [x for item in f.fields.items() for x in item]
                pipe.eval(
                    FINISH_SCRIPT,
                    4,
                    f.key,
                    self.keys.deliveries_due(f.hospital),
                    self.keys.deliveries_pending(f.hospital),
                    self.keys.deliveries_failed(f.hospital),
                    f.action,
                    f.outcome,
                    repr(f.at),
                    repr(now),
                    repr(max(f.keep, floor) + KEEP_DONE),
                    *pairs,
                    "outcome",
                    f.outcome,
                )
            await pipe.execute()

    def _his_for(self, url: str) -> His:
        if url not in self._his:
            self._his[url] = HttpHis(
                url, timeout=self.timeout, egress=self.egress, max_bytes=self.max_bytes
            )
        return self._his[url]

    def _insurer(self, url: str) -> Insurance:
        if url not in self._insurance:
            self._insurance[url] = HttpInsurance(
                url, timeout=self.timeout, egress=self.egress, max_bytes=self.max_bytes
            )
        return self._insurance[url]

    async def close(self) -> None:
        for adapter in [*self._his.values(), *self._insurance.values()]:
            await adapter.close()

    # ----- looking -------------------------------------------------------------------------------

    async def listing(self, hospital_id: str, which: str, limit: int = 100) -> list[dict[str, Any]]:
        """A hospital's ``pending`` or ``failed`` deliveries, oldest first."""
        index = (
            self.keys.deliveries_pending(hospital_id)
            if which == "pending"
            else self.keys.deliveries_failed(hospital_id)
        )
        keys = [k.decode() for k in await self.client.zrange(index, 0, limit - 1)]
        return await self._items([(key, hospital_id) for key in keys])

    async def failed_everywhere(self, limit: int = 100) -> list[dict[str, Any]]:
        """The failed deliveries of every hospital (those of the catalog and those linked to
        an HIS), newest failure first, up to ``limit``: the items of ``listing`` and each's
        ``hospital_id``."""
        members = [self.keys.all("hospital"), self.keys.his_hospitals]
        async with self.client.pipeline(transaction=False) as pipe:
            for key in members:
                pipe.smembers(key)
            found = await pipe.execute()
        hospitals = sorted({m.decode() for ids in found for m in ids})
        if not hospitals or limit < 1:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for hospital_id in hospitals:
                pipe.zrevrange(
                    self.keys.deliveries_failed(hospital_id), 0, limit - 1, withscores=True
                )
            newest = await pipe.execute()
        failed = sorted(
            (
                (at, key.decode(), h)
                for h, pairs in zip(hospitals, newest, strict=True)
                for key, at in pairs
            ),
            reverse=True,
        )[:limit]
        items = await self._items([(key, h) for _, key, h in failed])
        return [{**item, "hospital_id": h} for (_, _, h), item in zip(failed, items, strict=True)]

    async def _items(self, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """What ``listing`` shows of each (delivery key, hospital), in order."""
        async with self.client.pipeline(transaction=False) as pipe:
            for key, _ in keys:
                pipe.hgetall(key)
            states = await pipe.execute()
        out = []
        for (key, hospital_id), state in zip(keys, states, strict=True):
            fields = {k.decode(): v.decode() for k, v in state.items()}
            target, booking_id = self._parts(hospital_id, key)
            out.append(
                {
                    "target": target,
                    "booking_id": booking_id,
                    "action": fields.get("wanted"),
                    "attempts": int(fields.get("attempts", "0")),
                    "error": fields.get("error") or None,
                    "made_at": float(fields.get("made_at", "0")),
                    "tried_at": float(fields["tried_at"]) if "tried_at" in fields else None,
                }
            )
        return out

    async def counts(self, hospital_id: str) -> dict[str, int]:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zcard(self.keys.deliveries_pending(hospital_id))
            pipe.zcard(self.keys.deliveries_failed(hospital_id))
            pending, failed = await pipe.execute()
        return {"pending": pending, "failed": failed}

    async def retry_failed(self, hospital_id: str, now: float) -> int:
        """Put a hospital's failed deliveries back in line; how many."""
        failed = self.keys.deliveries_failed(hospital_id)
        keys = await self.client.zrange(failed, 0, -1)
        if not keys:
            return 0
        async with self.client.pipeline(transaction=True) as pipe:
            for key in keys:
                pipe.hset(key, mapping={"attempts": 0, "outcome": "retry"})
                pipe.zadd(self.keys.deliveries_due(hospital_id), {key: now})
                pipe.zadd(self.keys.deliveries_pending(hospital_id), {key: now})
            pipe.zrem(failed, *keys)
            await pipe.execute()
        return len(keys)

    async def drop(self, hospital_id: str, target: str, booking_id: str) -> bool:
        """Forget one failed delivery of a hospital (out of the failed set, deleted): whether
        it was one. A delivery that is not failed (pending, done, unknown, or asked for again
        meanwhile) is left as it is (False)."""
        key = self.key(hospital_id, target, booking_id)
        return bool(
            await self.client.eval(DROP_SCRIPT, 2, key, self.keys.deliveries_failed(hospital_id))
        )
