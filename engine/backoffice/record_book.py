"""The record book: booking records and session sales kept in Redis for the back office.

Every commit marks the snapshots it wrote as changed (``store.COMMIT_SCRIPT``). The courier
calls ``RecordBook.sync`` each round: it claims changed snapshots (moved to a claimed set, so a
crash half-way is redone by the next round), rebuilds the records of the rows that moved since
it last wrote them (``record.changed_rows``: each session's rows are marked beside its records,
in the same transaction, so the work is what changed, not the session's size) and writes
what changed, with its indexes, in one pipeline. ``sync`` also returns the records
whose state changed, for the HIS deliveries (``backoffice/deliveries.py``).

Layout, per hospital (one Redis Cluster slot each, ``Keys.records``): a hash of packed
records by booking id, and sorted sets of booking ids scored by slot time — all, per
department, doctor, patient and state. A query picks the narrowest kind of index its filters
allow (by ``ZCOUNT`` over the date range, summed over the hospitals it reads) and reads it in
slot-time order, checking the other filters on the records themselves. A query names one
hospital, or reads every hospital a patient has records at (``Keys.patient_record_hospitals``),
or every hospital with records: then each step reads that many entries from each hospital's
index after the cursor's position and merges them in (slot time, booking id) order — the
order one index would have — keeping the first; the cursor stays one position, so pages
neither skip nor repeat.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

import msgpack
import orjson

from engine.backoffice.analytics import Tally, tally_delta
from engine.backoffice.record import (
    Record,
    SessionSale,
    changed_rows,
    marks_of,
    records_of,
    sale_of,
)
from engine.core.session import WORDS
from engine.core.snapshot import decode_session
from engine.errors import SnapshotError, StoreUnavailable
from engine.store.connect import REDIS_ERRORS
from engine.store.keys import Keys
from engine.store.outbox import partition_of
from engine.store.slots import mget

# KEYS: changed set, claimed set. ARGV: how many. Moves up to that many snapshot keys from
# changed to claimed and returns the claimed set (older claims first come back too).
CLAIM_SCRIPT = """
local taken = redis.call('SPOP', KEYS[1], ARGV[1])
for _, key in ipairs(taken) do
  redis.call('SADD', KEYS[2], key)
end
return redis.call('SRANDMEMBER', KEYS[2], tonumber(ARGV[1]) * 2)
"""

log = logging.getLogger(__name__)
Kind = tuple[str, str]  # a kind of index and its value (``Keys.record_index``)
Change = tuple[Record | None, Record]  # a record before (None: new) and after
Follow = Callable[[list[Change]], Awaitable[Callable[[Any], None]]]

# KEYS: index. ARGV: score and member of the last entry read, the upper bound (ZRANGE BYSCORE
# syntax), how many. The entries after (score, member) in one step, so the index cannot move
# between finding the place and reading on: by rank while the member is still there at that
# score, else after what sorts before it at its score (members compared byte by byte, as
# Redis orders equal scores).
ENTRIES_SCRIPT = """
local count = tonumber(ARGV[4])
local rank = redis.call('ZRANK', KEYS[1], ARGV[2])
if rank and tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2])) == tonumber(ARGV[1]) then
  return redis.call('ZRANGE', KEYS[1], rank + 1, rank + count, 'WITHSCORES')
end
local function not_after(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a <= #b
end
local skip = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[1], 'BYSCORE')) do
  if not_after(m, ARGV[2]) then
    skip = skip + 1
  else
    break
  end
end
return redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[3], 'BYSCORE', 'LIMIT', skip, count,
  'WITHSCORES')
"""

# KEYS: a day's tally. ARGV: field, increment, field, increment ...
TALLY_SCRIPT = """
for i = 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 0
"""

TALLY_VERSION = "1"  # the daily tallies' layout (``analytics.tally_delta``)
SYNC_BATCH = 500  # snapshots per round trip
TX_SESSIONS = 200  # at most this many sessions' records (and deliveries) in one transaction,
TX_RECORDS = 200  # and this many records (a session's own are never split)
SCAN_CHUNK = 1000  # index entries read per step of a filtered query
SCAN_LIMIT = 200_000  # index entries one query page may look past before it answers


@dataclass(frozen=True, slots=True)
class RecordQuery:
    """Filters of a records query; None = any. ``start``/``end`` bound the slot time."""

    hospital_id: str | None = None
    department_id: str | None = None
    doctor_id: str | None = None
    patient_id: int | None = None
    state: str | None = None
    start: float | None = None
    end: float | None = None

    def indexes(self) -> list[Kind]:
        """Every kind of index that alone covers one filter (the query reads one of them, in
        each hospital it reads)."""
        out = []
        if self.patient_id is not None:
            out.append(("p", str(self.patient_id)))
        if self.doctor_id is not None:
            out.append(("doc", self.doctor_id))
        if self.department_id is not None:
            out.append(("dep", self.department_id))
        if self.state is not None:
            out.append(("s", self.state))
        out.append(("all", ""))
        return out

    def accepts(self, r: Record) -> bool:
        return (
            (self.hospital_id is None or r.hospital_id == self.hospital_id)
            and (self.department_id is None or r.department_id == self.department_id)
            and (self.doctor_id is None or r.doctor_id == self.doctor_id)
            and (self.patient_id is None or r.patient_id == self.patient_id)
            and (self.state is None or r.state == self.state)
        )


@dataclass(frozen=True, slots=True)
class Page:
    records: list[Record]
    next_cursor: str | None  # None: nothing more
    total: int | None  # None when counting would mean reading every candidate


def _score(value: float | None, low: bool) -> str:
    """A ZRANGE bound: ``start`` inclusive, ``end`` exclusive."""
    if value is None:
        return "-inf" if low else "+inf"
    return repr(float(value)) if low else f"({float(value)!r}"


Position = tuple[float, str]  # (slot time, booking id) of the last entry a page read
Entry = tuple[str, float, str]  # booking id, slot time, hospital


def _filters(query: RecordQuery) -> list[Any]:
    q = query
    return [q.hospital_id, q.department_id, q.doctor_id, q.patient_id, q.state, q.start, q.end]


def encode_cursor(query: RecordQuery, kind: Kind, after: Position) -> str:
    """The query, the kind of index it reads and where it stopped."""
    return base64.urlsafe_b64encode(
        orjson.dumps([list(kind), _filters(query), after[0], after[1]])
    ).decode()


def decode_cursor(query: RecordQuery, cursor: str) -> tuple[Kind, Position]:
    """(kind of index, position) for ``query``; ValueError for anything we did not make for
    it."""
    try:
        kind, filters, score, member = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except Exception as exc:
        raise ValueError("bad cursor") from exc
    if (
        not isinstance(kind, list)
        or len(kind) != 2
        or not all(isinstance(k, str) for k in kind)
        or isinstance(score, bool)
        or not isinstance(score, int | float)
        or not isinstance(member, str)
        or len(member) > 200
    ):
        raise ValueError("bad cursor")
    if (kind[0], kind[1]) not in query.indexes() or filters != _filters(query):
        raise ValueError("the cursor belongs to another query")
    return (kind[0], kind[1]), (float(score), member)


def age_on(birth_date: str | None, visit_date: str) -> int:
    if not birth_date:
        return -1
    try:
        born, day = dt.date.fromisoformat(birth_date), dt.date.fromisoformat(visit_date)
    except ValueError:
        return -1
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def transactions(made: list[Any]) -> list[list[Any]]:
    """Sessions (each with its changed records) grouped for one transaction each: one
    hospital's (one slot), up to ``TX_SESSIONS`` sessions and ``TX_RECORDS`` records (a
    session with more goes alone), so a round of sessions that took one booking each costs a
    few transactions, not one per 25."""
    groups: list[list[Any]] = []
    records = 0
    for item in sorted(made, key=lambda item: item[1].spec.hospital_id):
        group = groups[-1] if groups else []
        if not groups or (
            len(group) >= TX_SESSIONS
            or records + len(item[2]) > TX_RECORDS
            or group[0][1].spec.hospital_id != item[1].spec.hospital_id
        ):
            groups.append(group := [])
            records = 0
        group.append(item)
        records += len(item[2])
    return groups


class RecordBook:
    """The records read model. With several couriers each indexes its part of the hospitals
    (``partition``: ``partition_of(hospital, partitions)``, as commits mark their sessions
    changed in that part's set), so no two indexers ever write one hospital's records."""

    def __init__(self, client: Any, keys: Keys, partition: int = 0, partitions: int = 1) -> None:
        self.client = client
        self.keys = keys
        self.partition = partition
        self.partitions = partitions
        self.changed = keys.changed_sessions_of(partition)
        self.claimed = keys.changed_claimed_of(partition)
        self.unreadable = keys.changed_unreadable_of(partition)

    def indexer_of(self, shard_id: str) -> int:
        """The part whose indexer carries a shard's records (by its hospital)."""
        return partition_of(shard_id.rpartition(":")[0], self.partitions)

    async def rehome(self, most: int = 64) -> int:
        """Sessions marked changed (or claimed and not finished) in the sets of parts that no
        indexer reads any more (there were more couriers) go to their hospital's part now;
        how many. Copied before they are deleted: one indexed twice changes nothing."""
        moved = 0
        for part in range(self.partitions, most):
            for key in (self.keys.changed_sessions_of(part), self.keys.changed_claimed_of(part)):
                members = list(await self.client.smembers(key))
                by_part: dict[int, list[bytes]] = {}
                for member in members:  # a snapshot key: <prefix>:{hospital:date}:session:<id>
                    shard = member.decode().partition("{")[2].partition("}")[0]
                    by_part.setdefault(self.indexer_of(shard), []).append(member)
                for target, found in by_part.items():
                    await self.client.sadd(self.keys.changed_sessions_of(target), *found)
                if members:
                    await self.client.srem(key, *members)
                    moved += len(members)
        return moved

    # ----- writing ---------------------------------------------------------------------------

    async def sync(
        self, now: float, limit: int = SYNC_BATCH, follow: Follow | None = None
    ) -> list[Change]:
        """Index changed sessions (up to ``limit`` snapshots); (before, after) of every record
        that is new or changed. ``follow`` is given the changes and answers what else to write
        with them (the HIS deliveries they call for): a session's records, their indexes, that
        and the end of its claim are one transaction, so a crash redoes all of it or none."""
        keys = self.keys
        try:
            claimed = await self.client.eval(CLAIM_SCRIPT, 2, self.changed, self.claimed, limit)
            if not claimed:
                return []
            raws = await mget(self.client, claimed)
            readable, unreadable, gone = [], [], []
            for key, raw in zip(claimed, raws, strict=True):
                if not raw:
                    gone.append(key)
                    continue
                try:
                    readable.append((key, decode_session(raw, key.decode())))
                except SnapshotError as exc:  # never blocks the others: set aside, logged
                    log.error("records: cannot read %s, set aside: %s", key.decode(), exc)
                    unreadable.append(key)
            sessions = [session for _, session in readable]
            marks = await self._marks(sessions)
            looks = [changed_rows(s, mark) for s, mark in zip(sessions, marks, strict=True)]
            found = iter(
                await self.get_entries(
                    [
                        (f"{s.id}.{n}", s.spec.hospital_id)
                        for s, (_, had) in zip(sessions, looks, strict=True)
                        for n in had
                    ]
                )
            )
            old_sales = iter(await self._sales_of(sessions))
            every: list[Change] = []
            known = [{r.booking_id: r for r in islice(found, len(had)) if r} for _, had in looks]
            ages = await self._ages(sessions, looks, known)
            made = []  # (snapshot key, session, its changes, its sale)
            for (key, session), (rows, _), mine in zip(readable, looks, known, strict=True):
                changes = [
                    (mine.get(r.booking_id), r)
                    for r in records_of(session, mine, now, rows, ages.get(session.spec.date))
                ]
                made.append((key, session, changes, sale_of(session, next(old_sales), now)))
            # a transaction per group of one hospital's sessions: all of a session's writes or
            # none, without holding Redis (and the bookings behind it) for one huge EXEC. The
            # claims end after (another slot): a crash between redoes the group, which finds
            # its marks written and so nothing left to change
            for group in transactions(made):
                hospital_id = group[0][1].spec.hospital_id
                changes = [c for _, _, mine, _ in group for c in mine]
                extra = await follow(changes) if follow is not None and changes else None
                async with self.client.pipeline(transaction=False) as pipe:
                    self._list(pipe, [hospital_id], changes)
                    await pipe.execute()
                async with self.client.pipeline(transaction=True) as pipe:
                    self._write(pipe, changes, [sale for *_, sale in group])
                    pipe.hset(  # what the rows were when these records were made
                        keys.record_marks(hospital_id),
                        mapping={session.id: marks_of(session) for _, session, *_ in group},
                    )
                    if extra is not None:
                        extra(pipe)
                    await pipe.execute()
                every.extend(changes)
            done = [key for key, *_ in made] + gone + unreadable
            async with self.client.pipeline(transaction=True) as pipe:  # one slot: {records}
                if unreadable:
                    pipe.sadd(self.unreadable, *unreadable)
                if done:
                    pipe.srem(self.claimed, *done)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"records sync failed: {exc}") from exc
        return every

    async def _marks(self, sessions: Sequence[Any]) -> list[bytes | None]:
        """Each session's marks (``marks_of``)."""
        return await self._per_session(self.keys.record_marks, sessions)

    async def _per_session(
        self, key_of: Callable[[str], str], sessions: Sequence[Any]
    ) -> list[bytes | None]:
        """Each session's field of its hospital's hash ``key_of(hospital)``: one ``HMGET`` a
        hospital, in one round trip."""
        by = _by_hospital([(s.id, s.spec.hospital_id) for s in sessions])
        async with self.client.pipeline(transaction=False) as pipe:
            for hospital_id, ids in by.items():
                pipe.hmget(key_of(hospital_id), [i for i, _ in ids])
            answers = await pipe.execute()
        out: list[bytes | None] = [None] * len(sessions)
        for ids, values in zip(by.values(), answers, strict=True):
            for (_, at), value in zip(ids, values, strict=True):
                out[at] = value
        return out

    def _list(self, pipe: Any, hospitals: Iterable[str], changes: Iterable[Change]) -> None:
        """Before records are written: which hospitals have records, and where each patient
        has (sets, each its own slot; written again harmlessly when a crash redoes a group)."""
        pipe.sadd(self.keys.record_hospitals, *sorted(set(hospitals)))
        for patient_id, hospital_id in sorted({(n.patient_id, n.hospital_id) for _, n in changes}):
            pipe.sadd(self.keys.patient_record_hospitals(patient_id), hospital_id)

    async def _ages(
        self,
        sessions: list[Any],
        looks: list[tuple[list[int], set[int]]],
        known: list[dict[str, Record]],
    ) -> dict[str, dict[int, int]]:
        """visit date → patient → age on it, for the patients of the rows looked at that have
        no record yet (one read of their birth dates for the whole round)."""
        fresh: dict[str, set[int]] = {}
        for session, (rows, _), mine in zip(sessions, looks, known, strict=True):
            words = session.bookings
            patients = {
                int(words[row * WORDS]) for row in rows if session.booking_id(row) not in mine
            }
            if patients:
                fresh.setdefault(session.spec.date, set()).update(patients)
        everyone = sorted(set().union(*fresh.values())) if fresh else []
        if not everyone:
            return {}
        raws = await mget(self.client, [self.keys.entity("patient", p) for p in everyone])
        births = {
            p: orjson.loads(raw).get("birth_date") if raw else None
            for p, raw in zip(everyone, raws, strict=True)
        }
        return {
            date: {p: age_on(births[p], date) for p in patients} for date, patients in fresh.items()
        }

    async def put(
        self, changes: Iterable[Change], sales: Iterable[SessionSale] = (), tallies: bool = True
    ) -> None:
        """Write records (with their indexes and, unless not ``tallies``, what they add to the
        daily tallies) and sales in one round trip."""
        changes, sales = list(changes), list(sales)
        hospitals = {new.hospital_id for _, new in changes} | {s.hospital_id for s in sales}
        async with self.client.pipeline(transaction=False) as pipe:
            if hospitals:
                self._list(pipe, hospitals, changes)
            self._write(pipe, changes, sales, tallies)
            await pipe.execute()

    def _write(
        self,
        pipe: Any,
        changes: Iterable[Change],
        sales: Iterable[SessionSale],
        tallies: bool = True,
    ) -> None:
        """Records, their indexes, the daily analytics tallies and sales: one command a key
        (a hospital's records in one HSET, each index's new members in one ZADD), not one a
        record and index, since the commands' count is what the indexer's time goes to."""
        keys = self.keys
        changes = list(changes)
        records: dict[str, dict[str, bytes]] = {}
        added: dict[str, dict[str, float]] = {}
        removed: dict[str, list[str]] = {}
        for old, new in changes:
            h = new.hospital_id
            records.setdefault(h, {})[new.booking_id] = msgpack.packb(new.pack())
            into: list[str] = []
            if old is None:
                into += [
                    keys.record_index(h, "all"),
                    keys.record_index(h, "dep", new.department_id),
                    keys.record_index(h, "doc", new.doctor_id),
                    keys.record_index(h, "p", str(new.patient_id)),
                ]
            elif old.state != new.state:
                was = keys.record_index(h, "s", old.state)
                removed.setdefault(was, []).append(old.booking_id)
            if old is None or old.state != new.state:
                into.append(keys.record_index(h, "s", new.state))
            for key in into:
                added.setdefault(key, {})[new.booking_id] = new.slot_at
        for hospital_id, packed in records.items():
            pipe.hset(keys.records(hospital_id), mapping=packed)
        for key, members in removed.items():  # a record leaves its old state's index ...
            pipe.zrem(key, *members)
        for key, scored in added.items():  # ... and joins its new one (another key)
            pipe.zadd(key, scored)
        if tallies:
            self._write_tallies(pipe, changes)
        by_hospital: dict[str, list[SessionSale]] = {}
        for sale in sales:
            by_hospital.setdefault(sale.hospital_id, []).append(sale)
        for hospital_id, mine in by_hospital.items():
            pipe.hset(
                keys.sales(hospital_id),
                mapping={s.session_id: msgpack.packb(s.pack()) for s in mine},
            )
            pipe.zadd(keys.sales_index(hospital_id), {s.session_id: s.starts_at for s in mine})

    def _write_tallies(self, pipe: Any, changes: Iterable[Change]) -> None:
        """The daily analytics tallies: one command per hospital and day, the changes'
        increments summed. Exact because one indexer writes (the courier), and a round's writes
        commit with the marks of the rows they came from (never twice, never half). The only
        writes here that must not be repeated: never let the Redis client re-send a
        transaction on a timeout."""
        keys = self.keys
        tallies: dict[tuple[str, str], dict[str, int]] = {}
        for old, new in changes:
            day = tallies.setdefault((new.hospital_id, new.date), {})
            for name, value in tally_delta(old, new).items():
                day[name] = day.get(name, 0) + value
        for (hospital_id, date), fields in tallies.items():
            pairs = [x for name, value in fields.items() if value for x in (name, value)]
            if pairs:
                pipe.eval(TALLY_SCRIPT, 1, keys.record_tally(hospital_id, date), *pairs)

    async def hospitals(self) -> list[str]:
        """Every hospital with records."""
        return sorted(m.decode() for m in await self.client.smembers(self.keys.record_hospitals))

    async def tallies_ready(self) -> bool:
        """True when the daily tallies hold every record (else read the records themselves)."""
        return await self.client.get(self.keys.tally_version) == TALLY_VERSION.encode()

    async def ensure_tallies(self, chunk: int = 5000) -> int:
        """Make the daily tallies from the records if they were not kept (records written by a
        version without them), once; how many records were tallied (0: nothing to do). Run by
        the indexer (the courier) before it writes, so nothing else writes meanwhile."""
        client, keys = self.client, self.keys
        if await self.tallies_ready():
            return 0
        lock = f"{keys.tally_version}:lock"
        while not await client.set(lock, "1", nx=True, px=600_000):
            await asyncio.sleep(0.2)  # another is making them: wait for it, write nothing
            if await self.tallies_ready():
                return 0
        done = 0
        try:
            for hospital_id in await self.hospitals():
                stale = [
                    k async for k in client.scan_iter(match=keys.record_tally(hospital_id, "*"))
                ]
                for start in range(0, len(stale), 1000):
                    for key in stale[start : start + 1000]:
                        await client.delete(key)  # each its own command: one slot each
                index, at = keys.record_index(hospital_id, "all"), 0
                while ids := [i.decode() for i in await client.zrange(index, at, at + chunk - 1)]:
                    records = [r for r in await self.get_many(hospital_id, ids) if r is not None]
                    async with client.pipeline(transaction=False) as pipe:
                        self._write_tallies(pipe, [(None, r) for r in records])
                        await pipe.execute()
                    at += len(ids)
                done += at
            await client.set(keys.tally_version, TALLY_VERSION)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"analytics tallies not made: {exc}") from exc
        finally:
            with contextlib.suppress(*REDIS_ERRORS):
                await client.delete(lock)
        if done:
            log.warning("records: made the analytics tallies of %d records", done)
        return done

    async def set_numbers(
        self,
        hospital_id: str,
        booking_id: str,
        his_no: str | None = None,
        insurance_no: str | None = None,
    ) -> None:
        """Store what the HIS or the insurance answered. Kept beside the record, not in it:
        the indexer rewrites records, and the two answers arrive concurrently."""
        async with self.client.pipeline(transaction=False) as pipe:
            if his_no is not None:
                pipe.hset(self.keys.record_numbers(hospital_id, "his"), booking_id, his_no)
            if insurance_no is not None:
                pipe.hset(
                    self.keys.record_numbers(hospital_id, "insurance"), booking_id, insurance_no
                )
            await pipe.execute()

    # ----- reading ---------------------------------------------------------------------------

    async def get(self, hospital_id: str, booking_id: str) -> Record | None:
        return (await self.get_many(hospital_id, [booking_id]))[0]

    async def get_many(self, hospital_id: str, ids: Sequence[str]) -> list[Record | None]:
        """One hospital's records of these booking ids (None where there is none)."""
        return await self.get_entries([(i, hospital_id) for i in ids])

    async def get_entries(self, wanted: Sequence[tuple[str, str]]) -> list[Record | None]:
        """The records of (booking id, hospital) pairs, in order: one round trip, three reads
        per hospital."""
        if not wanted:
            return []
        by = _by_hospital(wanted)
        async with self.client.pipeline(transaction=False) as pipe:
            for hospital_id, ids in by.items():
                names = [i for i, _ in ids]
                pipe.hmget(self.keys.records(hospital_id), names)
                pipe.hmget(self.keys.record_numbers(hospital_id, "his"), names)
                pipe.hmget(self.keys.record_numbers(hospital_id, "insurance"), names)
            answers = await pipe.execute()
        out: list[Record | None] = [None] * len(wanted)
        for n, ids in enumerate(by.values()):
            raws, his, insurance = answers[3 * n : 3 * n + 3]
            for (_, at), raw, his_no, insurance_no in zip(ids, raws, his, insurance, strict=True):
                if raw is None:
                    continue
                record = Record.unpack(msgpack.unpackb(raw))
                if his_no or insurance_no:
                    record = replace(
                        record,
                        his_no=(his_no or b"").decode(),
                        insurance_no=(insurance_no or b"").decode(),
                    )
                out[at] = record
        return out

    async def _sales_of(self, sessions: Sequence[Any]) -> list[SessionSale | None]:
        raws = await self._per_session(self.keys.sales, sessions)
        return [None if raw is None else SessionSale.unpack(msgpack.unpackb(raw)) for raw in raws]

    async def tally(self, hospital_id: str | None, dates: Sequence[str]) -> Tally:
        """The analytics counts of a hospital (None: every hospital) over visit ``dates``,
        from the daily tallies: a read per hospital and day, whatever the bookings."""
        hospitals = await self.hospitals() if hospital_id is None else [hospital_id]
        tally = Tally()
        pairs = [(h, d) for h in hospitals for d in dates]
        try:
            for start in range(0, len(pairs), 1000):
                async with self.client.pipeline(transaction=False) as pipe:
                    for h, d in pairs[start : start + 1000]:
                        pipe.hgetall(self.keys.record_tally(h, d))
                    for day in await pipe.execute():
                        tally.add_tally({k.decode(): int(v) for k, v in day.items()})
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"analytics read failed: {exc}") from exc
        return tally

    async def sales(
        self, hospital_id: str, start: float | None, end: float | None
    ) -> list[SessionSale]:
        ids = await self.client.zrange(
            self.keys.sales_index(hospital_id),
            _score(start, True),
            _score(end, False),
            byscore=True,
        )
        if not ids:
            return []
        raws = await self.client.hmget(self.keys.sales(hospital_id), [i.decode() for i in ids])
        return [SessionSale.unpack(msgpack.unpackb(raw)) for raw in raws if raw is not None]

    async def _hospitals_of(self, query: RecordQuery) -> list[str]:
        """The hospitals a query reads: its own, the patient's, or every one with records."""
        if query.hospital_id is not None:
            return [query.hospital_id]
        if query.patient_id is not None:
            key = self.keys.patient_record_hospitals(query.patient_id)
            return sorted(m.decode() for m in await self.client.smembers(key))
        return await self.hospitals()

    async def _count(self, kind: Kind, hospitals: Sequence[str], query: RecordQuery) -> int:
        return (await self._counts([kind], hospitals, query))[0]

    async def _counts(
        self, kinds: Sequence[Kind], hospitals: Sequence[str], query: RecordQuery
    ) -> list[int]:
        """Each kind's entries in the query's range, summed over the hospitals."""
        low, high = _score(query.start, True), _score(query.end, False)
        async with self.client.pipeline(transaction=False) as pipe:
            for kind in kinds:
                for h in hospitals:
                    pipe.zcount(self.keys.record_index(h, *kind), low, high)
            counts = await pipe.execute() if kinds and hospitals else []
        n = len(hospitals)
        return [sum(counts[i * n : (i + 1) * n]) for i in range(len(kinds))]

    async def _plan(self, query: RecordQuery, hospitals: Sequence[str]) -> tuple[Kind, int]:
        """The narrowest kind of index for the query, and how many entries it has in the
        range (over the hospitals read)."""
        candidates = query.indexes()
        counts = await self._counts(candidates, hospitals, query)
        best = min(range(len(candidates)), key=lambda i: counts[i])
        return candidates[best], counts[best]

    async def page(self, query: RecordQuery, limit: int, cursor: str | None = None) -> Page:
        """One page of matching records in slot-time order. ValueError: a bad cursor.

        The cursor is the position (slot time, booking id) of the last entry read, not an
        offset: records added or leaving an index between pages never make a page skip or
        repeat what is still there."""
        try:
            after: Position | None = None
            hospitals = await self._hospitals_of(query)
            if cursor is None:
                kind, size = await self._plan(query, hospitals)
            else:
                kind, after = decode_cursor(query, cursor)
                size = None
            exact = self._exact(query, kind)
            found: list[Record] = []
            scanned, more = 0, True
            while more and len(found) < limit and scanned < SCAN_LIMIT:
                want = limit - len(found)
                step = want + 1 if exact else max(SCAN_CHUNK, limit)  # +1: is there more?
                entries = await self._entries(kind, hospitals, query, after, step)
                scanned += len(entries)
                reading = entries[:want] if exact else entries
                consumed = 0
                records = await self.get_entries([(m, h) for m, _, h in reading])
                for (member, score, _), record in zip(reading, records, strict=True):
                    consumed += 1
                    after = (score, member)
                    if record is not None and query.accepts(record):
                        found.append(record)
                        if len(found) == limit:
                            break
                more = len(entries) == step or consumed < len(entries)
            if size is None and exact:
                size = await self._count(kind, hospitals, query)
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"records query failed: {exc}") from exc
        return Page(
            found,
            encode_cursor(query, kind, after) if more and after is not None else None,
            size if exact else None,
        )

    def _exact(self, query: RecordQuery, kind: Kind) -> bool:
        """True when every record of this kind of index (in the range, in the hospitals the
        query reads) matches the query: the hospital is matched by which hospitals are read."""
        given = {
            "p": query.patient_id is not None,
            "doc": query.doctor_id is not None,
            "dep": query.department_id is not None,
            "s": query.state is not None,
        }
        covered = set() if kind[0] == "all" else {kind[0]}
        return {k for k, v in given.items() if v} == covered

    async def _entries(
        self,
        kind: Kind,
        hospitals: Sequence[str],
        query: RecordQuery,
        after: Position | None,
        count: int,
    ) -> list[Entry]:
        """Up to ``count`` entries of the hospitals' indexes of ``kind`` in the query's range,
        after ``after`` in (slot time, booking id) order (Redis orders equal scores by member,
        byte by byte): up to ``count`` from each, merged, the first ``count`` kept."""
        if not hospitals:
            return []
        high = _score(query.end, False)
        async with self.client.pipeline(transaction=False) as pipe:
            for h in hospitals:
                index = self.keys.record_index(h, *kind)
                if after is None:
                    pipe.zrange(
                        index,
                        _score(query.start, True),
                        high,
                        byscore=True,
                        offset=0,
                        num=count,
                        withscores=True,
                    )
                else:
                    pipe.eval(ENTRIES_SCRIPT, 1, index, repr(after[0]), after[1], high, count)
            answers = await pipe.execute()
        end = math.inf if query.end is None else float(query.end)
        merged: list[tuple[float, bytes, str]] = []
        for h, raw in zip(hospitals, answers, strict=True):
            if after is None:
                merged.extend((float(score), member, h) for member, score in raw)
            else:
                pairs = zip(raw[::2], raw[1::2], strict=True)
                merged.extend((float(score), member, h) for member, score in pairs)
        if len(hospitals) > 1:
            merged.sort(key=lambda e: (e[0], e[1]))
        return [(m.decode(), score, h) for score, m, h in merged[:count] if score < end]

    async def scan(self, query: RecordQuery, chunk: int = 5000) -> AsyncIterator[list[Record]]:
        """Every matching record, in slot-time order, a chunk at a time (for exports)."""
        try:
            hospitals = await self._hospitals_of(query)
            kind, _ = await self._plan(query, hospitals)
            after: Position | None = None
            while True:
                entries = await self._entries(kind, hospitals, query, after, chunk)
                if not entries:
                    return
                member, score, _ = entries[-1]
                after = (score, member)
                records = await self.get_entries([(m, h) for m, _, h in entries])
                yield [r for r in records if r is not None and query.accepts(r)]
                if len(entries) < chunk:
                    return
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"records export failed: {exc}") from exc


def _by_hospital(wanted: Sequence[tuple[str, str]]) -> dict[str, list[tuple[str, int]]]:
    """(id, hospital) pairs grouped by hospital, each id with its place in ``wanted``."""
    by: dict[str, list[tuple[str, int]]] = {}
    for at, (name, hospital_id) in enumerate(wanted):
        by.setdefault(hospital_id, []).append((name, at))
    return by
