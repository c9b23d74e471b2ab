"""Moving stored data to a new key layout, once per installation, before anything reads it.

A step is named and recorded in ``Keys.upgrades`` when done; processes starting together take
a lock so that one runs the steps while the others wait for it. Every step is idempotent, so a
step cut off half way is run again. The engine's steps run in ``Runtime.start`` before any host,
courier or dispatcher starts, and in every API worker before it serves (``api/upgrades.py``
adds the API's own steps after them); an installation with nothing stored yet records them
without looking.

- ``one-slot-keys``: the keys a script or transaction writes together get one hash tag, so
  that each touches one Redis Cluster slot (``engine/store/keys.py``): the bans and their
  versions, a hospital's manual black- and whitelist, each patient's notices (the sent markers
  are made again from the notices kept: a replayed outbox entry of a notice trimmed away long
  ago is the only one that could be sent twice), the placement directory with its version and
  drained nodes; a payment's refunds move into the payment's own hash.
- ``outbox-slot``: the platform-wide outbox stream (its consumer group and pending entries
  with it) and the dead letters under ``{outbox}``; new entries go to the shards' own streams
  (``outbox.py``), and the courier carries what the old stream still holds.
- ``records-by-hospital``: the back office's records, numbers, marks, tallies and sales, and
  the HIS deliveries, to their hospital's slot (``Keys.records``, ``Keys.deliveries``); the
  records' indexes are made again from the records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import msgpack
import orjson
import redis.asyncio as aioredis

from engine.store.keys import Keys

log = logging.getLogger(__name__)
LOCK_SECONDS = 300
WAIT_SECONDS = 120.0
SENT_SECONDS = 30 * 86400  # as ``notices.KEEP_SENT_SECONDS``

Step = Callable[[aioredis.Redis, Keys], Awaitable[int]]


async def _old_keys(client: aioredis.Redis, pattern: str) -> list[bytes]:
    return [k async for k in client.scan_iter(match=pattern, count=1000)]


async def _move(client: aioredis.Redis, old: bytes | str, new: str) -> int:
    """Copy ``old`` to ``new`` (``DUMP``, ``RESTORE … REPLACE`` with its time to live), then
    delete it: each command on one key, so it runs on a cluster too; cut off between, the
    step run again copies the same value again. 0 when there is nothing to move."""
    if old == new.encode():
        return 0
    async with client.pipeline(transaction=False) as pipe:
        pipe.dump(old)
        pipe.pttl(old)
        value, ttl = await pipe.execute()
    if value is None:
        return 0
    await client.restore(new, max(ttl, 0), value, replace=True)
    await client.delete(old)
    return 1


async def one_slot_keys(client: aioredis.Redis, keys: Keys) -> int:
    """Each family's keys of the older layout to their one-slot names; how many moved."""
    p = keys.prefix
    moved = 0
    for old in await _old_keys(client, f"{p}:bans:*"):
        rest = old.decode()[len(p) + len(":bans:") :]
        if rest.startswith("{"):
            continue
        scope, _, suffix = rest.partition(":")
        moved += await _move(client, old, keys.bans_version(scope) if suffix else keys.bans(scope))
    for kind in ("blacklist", "whitelist"):
        for old in await _old_keys(client, f"{p}:hospital:*:{kind}"):
            hospital = old.decode()[len(p) + len(":hospital:") : -len(kind) - 1]
            if not hospital.startswith("{"):
                moved += await _move(client, old, keys.patient_list(hospital, kind))
    for old, new in (
        (f"{p}:placement", keys.placement),
        (f"{p}:placement:version", keys.placement_version),
        (f"{p}:placement:draining", keys.draining),
    ):
        moved += await _move(client, old, new)
    for old in await _old_keys(client, f"{p}:patient:*:notices"):
        patient = old.decode()[len(p) + len(":patient:") : -len(":notices")]
        if patient.startswith("{") or not patient.isdigit():
            continue
        moved += await _move(client, old, keys.patient_notices(int(patient)))
        kept = await client.lrange(keys.patient_notices(int(patient)), 0, -1)
        async with client.pipeline(transaction=False) as pipe:
            for raw in kept:
                notice_id = orjson.loads(raw)["id"]
                pipe.set(keys.sent(int(patient), notice_id), 1, ex=SENT_SECONDS)
            await pipe.execute()
    for old in await _old_keys(client, f"{p}:payment:*:refunds"):
        booking_id = old.decode()[len(p) + len(":payment:") : -len(":refunds")]
        refunds = await client.hgetall(old)
        if refunds:  # then the old hash goes: cut off between, it is copied again
            await client.hset(
                keys.payment(booking_id), mapping={b"r:" + k: v for k, v in refunds.items()}
            )
        await client.delete(old)
        moved += 1
    return moved


async def outbox_slot(client: aioredis.Redis, keys: Keys) -> int:
    """The platform-wide outbox (with its consumer group and the entries pending in it) and
    the dead letters under one tag, ``{outbox}``; how many moved. The courier reads on where
    the old stream's group was."""
    p = keys.prefix
    moved = await _move(client, f"{p}:outbox", keys.outbox)
    return moved + await _move(client, f"{p}:outbox:dead", keys.outbox_dead)


async def _hscan(client: aioredis.Redis, key: str) -> list[tuple[bytes, bytes]]:
    return [pair async for pair in client.hscan_iter(key, count=1000)]


async def records_by_hospital(client: aioredis.Redis, keys: Keys) -> int:
    """The back office's read model per hospital (``Keys.records``): each record, its HIS and
    insurance numbers, its session's marks, tallies and sales to its hospital's slot, the
    indexes made again from the records, the changed and claimed sets under ``{records}``;
    and each delivery, with its place in the due, pending and failed sets, to its hospital's
    keys. How many keys moved or were made. Cut off half way, it is run again: what it writes
    is the same each time, and the old keys go last."""
    from engine.backoffice.record import Record, SessionSale
    from engine.backoffice.record_book import RecordBook

    p = keys.prefix
    moved = 0
    for name, new in (
        ("changed", keys.changed_sessions),
        ("claimed", keys.changed_claimed),
        ("unreadable", keys.changed_unreadable),
    ):
        old = f"{p}:records:{name}"
        members = await client.smembers(old)
        if members:
            await client.sadd(new, *members)
            moved += 1
        await client.delete(old)
    # records, with their indexes made again; numbers and marks follow their records
    book = RecordBook(client, keys)
    where: dict[str, str] = {}  # booking id → hospital
    sessions: dict[str, str] = {}  # session id → hospital
    pairs = await _hscan(client, f"{p}:records")
    for start in range(0, len(pairs), 1000):
        records = [Record.unpack(msgpack.unpackb(raw)) for _, raw in pairs[start : start + 1000]]
        await book.put([(None, r) for r in records], tallies=False)  # theirs move below
        for r in records:
            where[r.booking_id] = r.hospital_id
            sessions[r.session_id] = r.hospital_id
        moved += len(records)
    for system in ("his", "insurance"):
        numbers = await _hscan(client, f"{p}:records:numbers:{system}")
        await _hset_by(
            client,
            numbers,
            lambda b: where.get(b.decode()),
            lambda h, system=system: keys.record_numbers(h, system),
        )
    # marks follow their sessions' records (a session without records is looked at anew)
    marks = await _hscan(client, f"{p}:records:marks")
    await _hset_by(client, marks, lambda s: sessions.get(s.decode()), keys.record_marks)
    for old in await _old_keys(client, f"{p}:records:tally:*"):
        rest = old.decode()[len(f"{p}:records:tally:") :]
        hospital_id, date = rest[:-11], rest[-10:]
        if rest == "hospitals" or rest[-11:-10] != ":" or not hospital_id:
            continue
        moved += await _move(client, old, keys.record_tally(hospital_id, date))
    sales = await _hscan(client, f"{p}:sales")
    hospital_of = {sid: SessionSale.unpack(msgpack.unpackb(raw)).hospital_id for sid, raw in sales}
    await _hset_by(client, sales, hospital_of.get, keys.sales)
    moved += len(sales)
    for old in await _old_keys(client, f"{p}:sales:by:h:*"):
        hospital_id = old.decode()[len(f"{p}:sales:by:h:") :]
        moved += await _move(client, old, keys.sales_index(hospital_id))
    moved += await _deliveries_by_hospital(client, keys)
    gone = [f"{p}:records", f"{p}:records:marks", f"{p}:sales", f"{p}:records:tally:hospitals"]
    gone += [f"{p}:records:numbers:{system}" for system in ("his", "insurance")]
    gone += [k.decode() for k in await _old_keys(client, f"{p}:records:by:*")]
    for key in gone:
        await client.delete(key)
    return moved


async def _hset_by(
    client: aioredis.Redis,
    pairs: list[tuple[bytes, bytes]],
    hospital_of: Callable[[bytes], str | None],
    key_of: Callable[[str], str],
) -> None:
    """Write each (field, value) into its hospital's hash (none: left out), 1,000 fields a
    command, pipelined."""
    by: dict[str, dict[bytes, bytes]] = {}
    for name, value in pairs:
        hospital_id = hospital_of(name)
        if hospital_id is not None:
            by.setdefault(hospital_id, {})[name] = value
    async with client.pipeline(transaction=False) as pipe:
        for hospital_id, fields in by.items():
            items = list(fields.items())
            for start in range(0, len(items), 1000):
                pipe.hset(key_of(hospital_id), mapping=dict(items[start : start + 1000]))
        await pipe.execute()


async def _deliveries_by_hospital(client: aioredis.Redis, keys: Keys) -> int:
    p = keys.prefix
    moved = 0
    renamed: dict[bytes, tuple[str, str]] = {}  # old key → (new key, hospital)
    for old in await _old_keys(client, f"{p}:deliveries:*"):
        rest = old.decode()[len(f"{p}:deliveries:") :]
        target, _, booking_id = rest.partition(":")
        if rest.startswith("{") or rest in ("due", "hospitals") or target in ("pending", "failed"):
            continue
        hospital_id = (await client.hget(old, "hospital") or b"").decode()
        if not hospital_id or not booking_id:
            continue
        new = keys.delivery(hospital_id, target, booking_id)
        renamed[old] = (new, hospital_id)
        moved += await _move(client, old, new)
    hospitals = {h for _, h in renamed.values()}
    for old in await _old_keys(client, f"{p}:deliveries:pending:*"):
        hospitals.add(old.decode()[len(f"{p}:deliveries:pending:") :])
    for old in await _old_keys(client, f"{p}:deliveries:failed:*"):
        hospitals.add(old.decode()[len(f"{p}:deliveries:failed:") :])
    hospitals.discard("")

    def new_name(member: bytes, hospital_id: str | None = None) -> tuple[str, str] | None:
        if member in renamed:
            return renamed[member]
        if hospital_id is None:  # not found above: moved by a run cut off, or gone
            return None
        rest = member.decode()[len(f"{p}:deliveries:") :]
        target, _, booking_id = rest.partition(":")
        return keys.delivery(hospital_id, target, booking_id), hospital_id

    for member, at in await client.zrange(f"{p}:deliveries:due", 0, -1, withscores=True):
        found = new_name(member)
        if found is not None:
            await client.zadd(keys.deliveries_due(found[1]), {found[0]: at})
    if hospitals:  # listed before their old sets go: a run cut off after finds them listed
        await client.sadd(keys.delivery_hospitals, *sorted(hospitals))
    for hospital_id in sorted(hospitals):
        for which, new_set in (
            ("pending", keys.deliveries_pending(hospital_id)),
            ("failed", keys.deliveries_failed(hospital_id)),
        ):
            old_set = f"{p}:deliveries:{which}:{hospital_id}"
            for member, at in await client.zrange(old_set, 0, -1, withscores=True):
                found = new_name(member, hospital_id)
                if found is not None:
                    await client.zadd(new_set, {found[0]: at})
                    if which == "pending":  # a pending one cut off from the due set: due now
                        await client.zadd(keys.deliveries_due(hospital_id), {found[0]: at}, nx=True)
            await client.delete(old_set)
    await client.delete(f"{p}:deliveries:due")
    return moved


ENGINE_STEPS: tuple[tuple[str, Step], ...] = (
    ("one-slot-keys", one_slot_keys),
    ("outbox-slot", outbox_slot),
    ("records-by-hospital", records_by_hospital),
)


async def run_steps(
    client: aioredis.Redis, keys: Keys, steps: Sequence[tuple[str, Step]] = ENGINE_STEPS
) -> dict[str, int]:
    """Run every step not yet recorded (one process at a time); what each changed."""
    done = {k.decode() for k in await client.hkeys(keys.upgrades)}
    if all(name in done for name, _ in steps):
        return {}
    lock = f"{keys.upgrades}:lock"
    deadline = time.monotonic() + WAIT_SECONDS
    while not await client.set(lock, "1", nx=True, ex=LOCK_SECONDS):
        if time.monotonic() > deadline:
            raise TimeoutError("another process has held the upgrade lock too long")
        await asyncio.sleep(0.2)  # another process runs them: wait, then find them done
    try:
        done = {k.decode() for k in await client.hkeys(keys.upgrades)}
        fresh = await _fresh_but_lock(client, keys, lock)
        out = {}
        for name, step in steps:
            if name in done:
                continue
            out[name] = 0 if fresh else await step(client, keys)
            await client.hset(keys.upgrades, name, repr(time.time()))
            if out[name]:
                log.info("upgrade %s: %d changed", name, out[name])
        return out
    finally:
        await client.delete(lock)


async def _fresh_but_lock(client: aioredis.Redis, keys: Keys, lock: str) -> bool:
    """Nothing stored under the namespace but the upgrade records and their lock."""
    ours = {lock.encode(), keys.upgrades.encode()}
    async for key in client.scan_iter(match=f"{keys.prefix}:*", count=1000):
        if key not in ours:
            return False
    return True
