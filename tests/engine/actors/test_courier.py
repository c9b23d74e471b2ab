"""The courier's rounds and the dead letters, on a real Redis (the embedded server; no Ray).

Bad outbox entries are written straight to a shard's outbox stream, as a host with a bug would; a
refund is made to fail for a while by breaking the sandbox gateway's record of that booking's
refunds (a key of the wrong type) and then repairing it; a notice provider that cannot be
reached is a sender of its own (senders are pluggable, ``notices.Sender``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from engine.actors.courier import CourierWork
from engine.core.session import DoctorSession, SessionSpec
from engine.core.shard import CodeSource
from engine.settings import Settings
from engine.store.dead_letters import DeadLetters
from engine.store.keys import Keys
from engine.store.notices import Notice, NoticeBoard, patient_notices
from engine.store.outbox import GROUP, Outbox, partition_of
from engine.store.shards import ShardWrite
from tests import helpers

POISON = [["refund", "x"]]  # a malformed event: handling it always raises
NOTICE = ["notice", "confirmed", 5, "s1.0", "s1", 1000.0, {"slot_no": 1}]
REFUND = ["refund", "s1.0", 3, 900, "cancelled"]
SHARD = "h1:2026-12-01"


@pytest.fixture
async def make_rounds(
    redis_server: Any, redis_client: aioredis.Redis, settings_for: Callable[..., Settings]
) -> AsyncIterator[Callable[..., CourierWork]]:
    """Courier rounds on the test's Redis (its own namespace), closed after the test."""
    made: list[CourierWork] = []

    def make(partition: int = 0, **kw: Any) -> CourierWork:
        made.append(CourierWork(settings_for(redis_server.url, **kw), partition))
        return made[-1]

    yield make
    for rounds in made:
        await rounds.store.close()


@pytest.fixture
def rounds(make_rounds: Callable[..., CourierWork]) -> CourierWork:
    return make_rounds(outbox_max_tries=3)


async def put(
    client: aioredis.Redis,
    keys: Keys,
    events: list[Any],
    shard: str | None = SHARD,
    couriers: int = 1,
) -> str:
    """Append one outbox entry to a shard's stream and ring, as a host's commit does (shard
    None: to the platform-wide stream, as the release before did); the entry's name."""
    payload = {"e": msgpack.packb(events)}
    if shard is None:
        return (await client.xadd(keys.outbox, payload)).decode()
    await client.sadd(keys.shards, shard)
    entry_id = (await client.xadd(keys.shard_outbox(shard), payload)).decode()
    await client.zincrby(keys.outbox_doorbell(partition_of(shard, couriers)), 1, shard)
    return f"{shard}/{entry_id}"


async def pending(client: aioredis.Redis, keys: Keys) -> int:
    """Entries delivered to the courier and not settled, in every stream."""
    total = 0
    for stream in (keys.outbox, keys.shard_outbox(SHARD)):
        if await client.exists(stream):
            total += (await client.xpending(stream, GROUP))["pending"]
    return total


async def backlog(client: aioredis.Redis, keys: Keys) -> int:
    return await Outbox(client, keys).backlog()


async def kinds(client: aioredis.Redis, keys: Keys, patient: int) -> list[str]:
    return [n["kind"] for n in await patient_notices(client, keys, patient)]


async def break_refunds(client: aioredis.Redis, keys: Keys, booking_id: str) -> None:
    """Make every refund of the booking fail until repaired: the refund script cannot find
    the amount paid (a ResponseError from Redis), the payment otherwise kept."""
    key = keys.payment(booking_id)
    await client.hset(key, "amount-aside", await client.hget(key, "amount"))
    await client.hdel(key, "amount")


async def repair_refunds(client: aioredis.Redis, keys: Keys, booking_id: str) -> None:
    key = keys.payment(booking_id)
    await client.hset(key, "amount", await client.hget(key, "amount-aside"))
    await client.hdel(key, "amount-aside")


async def refunded(client: aioredis.Redis, keys: Keys, booking_id: str) -> int:
    """What the payment's hash says was refunded (readable while the refunds are broken)."""
    return int(await client.hget(keys.payment(booking_id), "refunded"))


async def test_a_poison_entry_does_not_hold_up_the_notice_behind_it(rounds, redis_client):
    keys = rounds.keys
    await put(redis_client, keys, POISON)
    await put(redis_client, keys, [NOTICE])
    counters = await rounds.drain()
    assert await kinds(redis_client, keys, 5) == ["confirmed"]
    assert await pending(redis_client, keys) == 1  # only the poison waits
    assert (counters["entries"], counters["failures"], counters["dead_letters"]) == (1, 1, 0)


async def test_a_poison_entry_is_moved_to_the_dead_letters_on_its_last_delivery(
    rounds, redis_client
):
    keys = rounds.keys
    poison_id = await put(redis_client, keys, POISON)
    for _ in range(rounds.settings.outbox_max_tries - 1):
        await rounds.drain()
    assert await pending(redis_client, keys) == 1
    assert await DeadLetters(redis_client, keys).count() == 0
    counters = await rounds.drain()
    (letter,) = await DeadLetters(redis_client, keys).list()
    assert (letter["origin"], letter["events"], letter["tries"]) == (poison_id, POISON, 3)
    assert letter["error"].startswith("ValueError: not enough values to unpack")
    assert await backlog(redis_client, keys) == 0
    assert await pending(redis_client, keys) == 0
    assert (counters["failures"], counters["dead_letters"], counters["entries"]) == (3, 1, 0)


async def test_an_entry_whose_dead_letter_cannot_be_written_stays_pending(
    make_rounds, redis_client
):
    rounds = make_rounds(outbox_max_tries=1)
    keys = rounds.keys
    poison_id = await put(redis_client, keys, POISON)
    await put(redis_client, keys, [NOTICE])
    await redis_client.set(keys.outbox_dead, "not a stream")
    counters = await rounds.drain()
    assert await kinds(redis_client, keys, 5) == ["confirmed"]  # the others still flow
    assert await pending(redis_client, keys) == 1
    assert counters["dead_letters"] == 0
    await redis_client.delete(keys.outbox_dead)  # repaired
    await rounds.drain()
    (letter,) = await DeadLetters(redis_client, keys).list()
    assert letter["origin"] == poison_id
    assert letter["tries"] == 2
    assert await pending(redis_client, keys) == 0


async def test_an_entry_that_recovers_before_its_last_delivery_is_not_dead_lettered(
    rounds, redis_client
):
    keys = rounds.keys
    await rounds.gateway.charge("s1.0", 3, 900)
    await break_refunds(redis_client, keys, "s1.0")
    await put(redis_client, keys, [REFUND])
    for _ in range(rounds.settings.outbox_max_tries - 1):
        await rounds.drain()
    assert await refunded(redis_client, keys, "s1.0") == 0
    await repair_refunds(redis_client, keys, "s1.0")
    counters = await rounds.drain()
    assert (await rounds.gateway.payment("s1.0")).refunded == 900
    assert await DeadLetters(redis_client, keys).count() == 0
    assert await backlog(redis_client, keys) == 0
    assert (counters["refunded"], counters["failures"], counters["dead_letters"]) == (900, 2, 0)


class RefusingSender:
    """A notice sender whose provider refuses the connection (for everyone, or for the
    patients named): counts how often it was asked."""

    def __init__(self, patients: set[int] | None = None) -> None:
        self.patients = patients
        self.calls = 0
        self.board: NoticeBoard | None = None

    async def send(self, notices: list[Notice]) -> None:
        self.calls += 1
        if self.patients is None or any(n.patient_id in self.patients for n in notices):
            raise ConnectionRefusedError("sms provider refused the connection")
        assert self.board is not None
        await self.board.send(notices)


async def test_a_service_that_cannot_be_reached_ends_the_outbox_part_of_the_round(
    rounds, redis_client
):
    keys = rounds.keys
    await put(redis_client, keys, [NOTICE])
    await put(redis_client, keys, [NOTICE])
    rounds.sender = sender = RefusingSender()
    with pytest.raises(ConnectionRefusedError):
        await rounds.drain()
    assert sender.calls == 2  # both together, then the first alone: the second was not tried
    assert rounds.counters["failures"] == 1
    assert await pending(redis_client, keys) == 2
    rounds.sender = NoticeBoard(redis_client, keys)  # the provider is back
    await rounds.drain()
    assert await kinds(redis_client, keys, 5) == ["confirmed", "confirmed"]


async def test_an_entry_that_always_finds_a_service_unreachable_holds_up_the_others_briefly(
    rounds, redis_client
):
    keys = rounds.keys
    timeouts = await put(redis_client, keys, [[*NOTICE[:2], 6, *NOTICE[3:]]])  # patient 6
    await put(redis_client, keys, [NOTICE])
    rounds.sender = sender = RefusingSender({6})
    sender.board = NoticeBoard(redis_client, keys)
    for _ in range(rounds.settings.outbox_max_tries):
        with pytest.raises(ConnectionRefusedError):
            await rounds.drain()
    (letter,) = await DeadLetters(redis_client, keys).list()
    assert letter["origin"] == timeouts
    assert letter["error"] == "ConnectionRefusedError: sms provider refused the connection"
    await rounds.drain()
    assert await kinds(redis_client, keys, 5) == ["confirmed"]
    assert await pending(redis_client, keys) == 0


async def test_retry_puts_a_dead_letter_back_and_the_next_round_handles_it(
    make_rounds, redis_client
):
    rounds = make_rounds(outbox_max_tries=1)
    keys = rounds.keys
    await rounds.gateway.charge("s1.0", 3, 900)
    await break_refunds(redis_client, keys, "s1.0")
    await put(redis_client, keys, [REFUND])
    await rounds.drain()
    dead = DeadLetters(redis_client, keys)
    (letter,) = await dead.list()
    assert letter["error"].startswith("StoreUnavailable: ")
    await repair_refunds(redis_client, keys, "s1.0")  # what made it fail is fixed
    assert await dead.retry(letter["id"]) is True
    assert await dead.count() == 0
    assert await redis_client.xlen(keys.outbox) == 1  # back, into the platform-wide stream
    await rounds.drain()
    assert (await rounds.gateway.payment("s1.0")).refunded == 900
    assert await backlog(redis_client, keys) == 0
    assert await dead.count() == 0


async def test_a_retried_dead_letter_names_its_notices_after_the_first_entry(
    make_rounds, redis_client
):
    """So a notice delivered before the entry failed is not delivered again on a retry."""
    rounds = make_rounds(outbox_max_tries=1)
    keys = rounds.keys
    await rounds.gateway.charge("s1.0", 3, 900)
    await break_refunds(redis_client, keys, "s1.0")
    first = await put(redis_client, keys, [REFUND, NOTICE])
    await rounds.drain()
    await repair_refunds(redis_client, keys, "s1.0")
    dead = DeadLetters(redis_client, keys)
    (letter,) = await dead.list()
    await dead.retry(letter["id"])
    await rounds.drain()
    assert [n["id"] for n in await patient_notices(redis_client, keys, 5)] == [f"{first}:1"]


async def test_drop_removes_a_dead_letter_for_good(make_rounds, redis_client):
    rounds = make_rounds(outbox_max_tries=1)
    await put(redis_client, rounds.keys, POISON)
    await rounds.drain()
    dead = DeadLetters(redis_client, rounds.keys)
    (letter,) = await dead.list()
    assert await dead.drop(letter["id"]) is True
    assert await dead.count() == 0
    assert await dead.list() == []
    assert await backlog(redis_client, rounds.keys) == 0


@pytest.mark.parametrize("dead_id", ["1-0", "garbage", ""])
async def test_retry_and_drop_answer_false_for_an_unknown_dead_letter(redis_client, dead_id):
    dead = DeadLetters(redis_client, Keys("dl"))
    assert await dead.retry(dead_id) is False
    assert await dead.drop(dead_id) is False
    assert await redis_client.xlen(Keys("dl").outbox) == 0


async def test_dead_letters_are_listed_newest_first(make_rounds, redis_client):
    rounds = make_rounds(outbox_max_tries=1)
    older = await put(redis_client, rounds.keys, POISON)
    await rounds.drain()
    newer = await put(redis_client, rounds.keys, [["violation"]])
    await rounds.drain()
    dead = DeadLetters(redis_client, rounds.keys)
    assert [d["origin"] for d in await dead.list()] == [newer, older]
    assert [d["origin"] for d in await dead.list(limit=1)] == [newer]


async def test_an_unreadable_entry_is_dead_lettered_with_its_payload_unchanged(
    make_rounds, redis_client
):
    rounds = make_rounds(outbox_max_tries=1)
    await redis_client.xadd(rounds.keys.shard_outbox(SHARD), {"e": b"\xc1 not msgpack"})
    await redis_client.zincrby(rounds.keys.outbox_doorbell(), 1, SHARD)
    await rounds.drain()
    (letter,) = await DeadLetters(redis_client, rounds.keys).list()
    assert letter["events"] is None
    (_, fields), *_ = await redis_client.xrange(rounds.keys.outbox_dead)
    assert fields[b"e"] == b"\xc1 not msgpack"


def spec() -> SessionSpec:
    return helpers.spec(department_id="dep1", capacity=2)


async def test_reconciliation_and_the_indexer_run_in_a_round_whose_outbox_part_fails(
    rounds, redis_client
):
    store, keys = rounds.store, rounds.keys
    session = DoctorSession(spec())
    session.take(7, 1, 100.0, 0, CodeSource()())
    epoch = await redis_client.incr(keys.epoch("h1:2026-12-01"))
    write = ShardWrite("h1:2026-12-01", "h1", epoch, [session], new_session_ids=["s1"])
    assert await store.commit([write]) == [None]
    await rounds.gateway.charge("ghost.0", 4, 700)  # no such booking: stranded
    await redis_client.zadd(keys.pending_payments, {"ghost.0": time.time() - 3600})
    await redis_client.delete(keys.outbox)
    await redis_client.set(keys.outbox, "not a stream")  # every read of that stream fails
    await put(redis_client, keys, [NOTICE])  # a shard's stream beside it
    with pytest.raises(Exception, match="WRONGTYPE"):
        await rounds.drain()
    assert await kinds(redis_client, keys, 5) == ["confirmed"], "the readable one is carried"
    assert (await rounds.records.get("h1", "s1.0")).patient_id == 7
    assert (await rounds.gateway.payment("ghost.0")).refunded == 700


async def test_a_failing_indexer_is_counted_and_the_round_goes_on(rounds, redis_client):
    keys = rounds.keys
    await put(redis_client, keys, [NOTICE])
    await redis_client.set(keys.changed_sessions, "not a set")
    counters = await rounds.drain()
    assert await kinds(redis_client, keys, 5) == ["confirmed"]
    assert counters["failures"] == 1


def niceness_of(comm: str) -> list[int]:
    """The CPU niceness of every process named ``comm`` (as the kernel shows it: Ray names an
    actor's process ``ray::Class`` when idle and ``ray::Class.method`` while it runs one, cut
    to 15 characters)."""
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        try:
            name = (proc / "comm").read_text().strip() if proc.name.isdigit() else ""
            if name == comm or name.startswith(comm + "."):
                stat = (proc / "stat").read_text()
                found.append(int(stat[stat.rindex(")") + 2 :].split()[16]))  # field 19
        except OSError:
            continue
    return found


def test_the_back_office_actors_run_below_the_booking_path(runtime):
    from engine.actors.names import find_courier, find_dispatcher

    ray = pytest.importorskip("ray")
    ray.get(find_courier(runtime.settings).info.remote(), timeout=60)
    ray.get(find_dispatcher(runtime.settings).info.remote(), timeout=60)
    assert (runtime.settings.host_nice, runtime.settings.background_nice) == (0, 19)
    couriers, dispatchers = niceness_of("ray::Courier"), niceness_of("ray::Dispatcher")
    assert couriers and set(couriers) == {19}
    assert dispatchers and set(dispatchers) == {19}
    hosts = niceness_of("ray::Host")
    assert hosts and max(hosts) < 19, "a host always runs above the back office"
    if os.geteuid() == 0:  # may raise its priority (CAP_SYS_NICE): it has the default
        assert set(hosts) == {0}


# ----- the shards' streams and the doorbell ------------------------------------------------


async def test_a_commit_writes_its_entry_to_its_shards_stream_and_rings(rounds, redis_client):
    store, keys = rounds.store, rounds.keys
    epoch = await redis_client.incr(keys.epoch(SHARD))
    session = DoctorSession(spec())
    write = ShardWrite(SHARD, "h1", epoch, [session], new_session_ids=["s1"], events=[NOTICE])
    assert await store.commit([write]) == [None]
    assert await redis_client.xlen(keys.shard_outbox(SHARD)) == 1
    assert await redis_client.exists(keys.outbox) == 0  # nothing platform-wide
    assert await redis_client.zscore(keys.outbox_doorbell(), SHARD) == 1
    counters = await rounds.drain()
    assert counters["entries"] == 1
    assert await kinds(redis_client, keys, 5) == ["confirmed"]
    # answered: out of the doorbell, and the empty stream is gone with its group
    assert await redis_client.zcard(keys.outbox_doorbell()) == 0
    assert await redis_client.exists(keys.shard_outbox(SHARD)) == 0
    # the next commit makes the stream again; the courier makes the group again and reads it
    assert await store.commit([ShardWrite(SHARD, "h1", epoch, [session], events=[NOTICE])]) == [
        None
    ]
    assert (await rounds.drain())["entries"] == 2
    assert await kinds(redis_client, keys, 5) == ["confirmed", "confirmed"]
    assert await backlog(redis_client, keys) == 0


async def test_entries_of_two_shards_with_the_same_id_are_two_notices(rounds, redis_client):
    """Stream ids are unique within a stream only: the notices are named by shard and id."""
    keys = rounds.keys
    for shard in ("h1:2026-12-01", "h2:2026-12-01"):
        await redis_client.sadd(keys.shards, shard)
        await redis_client.xadd(keys.shard_outbox(shard), {"e": msgpack.packb([NOTICE])}, id="5-0")
        await redis_client.zincrby(keys.outbox_doorbell(), 1, shard)
    await rounds.drain()
    ids = sorted(n["id"] for n in await patient_notices(redis_client, keys, 5))
    assert ids == ["h1:2026-12-01/5-0:0", "h2:2026-12-01/5-0:0"]


async def test_an_entry_whose_ring_was_lost_is_found_by_the_sweep(rounds, redis_client):
    keys = rounds.keys
    await redis_client.sadd(keys.shards, SHARD)
    await redis_client.xadd(keys.shard_outbox(SHARD), {"e": msgpack.packb([NOTICE])})  # no ring
    await rounds.drain()  # a courier's first round sweeps
    assert await kinds(redis_client, keys, 5) == ["confirmed"]
    assert await backlog(redis_client, keys) == 0


async def test_a_shard_that_rang_again_after_its_stream_was_read_stays_rung(redis_client):
    keys = Keys("bell")
    outbox = Outbox(redis_client, keys)
    await put(redis_client, keys, [NOTICE])
    streams = await outbox.rung()
    reads = await outbox.read([(s, ">") for s in streams], 10)
    assert [len(r) for r in reads] == [0, 1]
    await outbox.settle({streams[1]: [reads[1][0][0]]})
    await put(redis_client, keys, [NOTICE])  # a commit after the read
    await outbox.answer(streams)
    assert await redis_client.zscore(keys.outbox_doorbell(), SHARD) == 2  # still rung
    assert await redis_client.xlen(keys.shard_outbox(SHARD)) == 1  # and not deleted
    streams = await outbox.rung()
    reads = await outbox.read([(s, ">") for s in streams], 10)
    await outbox.settle({streams[1]: [reads[1][0][0]]})
    await outbox.answer(streams)
    assert await redis_client.zcard(keys.outbox_doorbell()) == 0
    assert await outbox.backlog() == 0


async def test_entries_a_previous_release_left_in_the_platform_wide_stream_are_carried(
    rounds, redis_client
):
    keys = rounds.keys
    old = await put(redis_client, keys, [NOTICE], shard=None)
    await put(redis_client, keys, [NOTICE])
    assert (await rounds.drain())["entries"] == 2
    notices = await patient_notices(redis_client, keys, 5)
    assert sorted(n["id"] for n in notices)[0] == f"{old}:0"
    assert len(notices) == 2 and await backlog(redis_client, keys) == 0


async def test_commits_racing_the_courier_are_each_carried_out_once(rounds, redis_client):
    """Eight writers ring while the courier drains round after round: every entry of every
    shard is carried, each notice once, and the doorbell ends empty."""

    keys = rounds.keys
    shards = [f"h{i}:2026-12-01" for i in range(4)]
    writers, each = 8, 40

    async def writer(w: int) -> None:
        for n in range(each):
            notice = ["notice", "confirmed", 100 + w, f"s{w}.{n}", f"s{w}", 1000.0, {}]
            await put(redis_client, keys, [notice], shard=shards[(w + n) % len(shards)])
            await asyncio.sleep(0)

    done = asyncio.Event()

    async def courier() -> None:
        while not done.is_set():
            await rounds.drain()
            await asyncio.sleep(0.001)

    running = asyncio.create_task(courier())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    done.set()
    await running
    await rounds.drain()
    assert rounds.counters["entries"] == writers * each
    for w in range(writers):
        notices = await patient_notices(redis_client, keys, 100 + w)
        assert sorted(n["booking_id"] for n in notices) == sorted(f"s{w}.{n}" for n in range(each))
    assert await redis_client.zcard(keys.outbox_doorbell()) == 0
    assert await backlog(redis_client, keys) == 0


async def test_two_couriers_each_carry_their_own_shards_once(make_rounds, redis_client):
    """``SLOTENGINE_COURIERS=2``: the shards are shared out by hash; both couriers drain at
    once while eight writers ring; each entry is carried by its shard's courier, once, and
    only courier 0 reads the platform-wide stream."""
    first = make_rounds(couriers=2, namespace="two")
    second = make_rounds(1, couriers=2, namespace="two")
    keys = first.keys
    shards = [f"h{i}:2026-12-01" for i in range(8)]
    assert {partition_of(s, 2) for s in shards} == {0, 1}
    mine = {p: [s for s in shards if partition_of(s, 2) == p] for p in (0, 1)}
    writers, each = 8, 30
    written = {0: 0, 1: 0}
    await put(redis_client, keys, [NOTICE], shard=None)  # an older release's entry

    async def writer(w: int) -> None:
        for n in range(each):
            shard = shards[(w * each + n) % len(shards)]
            written[partition_of(shard, 2)] += 1
            notice = ["notice", "confirmed", 200 + w, f"s{w}.{n}", f"s{w}", 1000.0, {}]
            await put(redis_client, keys, [notice], shard=shard, couriers=2)
            await asyncio.sleep(0)

    done = asyncio.Event()

    async def courier(rounds: CourierWork) -> None:
        while not done.is_set():
            await rounds.drain()
            await asyncio.sleep(0.001)

    running = [asyncio.create_task(courier(r)) for r in (first, second)]
    await asyncio.gather(*(writer(w) for w in range(writers)))
    done.set()
    await asyncio.gather(*running)
    await asyncio.gather(first.drain(), second.drain())
    assert first.counters["entries"] == written[0] + 1  # and the platform-wide entry
    assert second.counters["entries"] == written[1]
    for w in range(writers):
        notices = await patient_notices(redis_client, keys, 200 + w)
        assert sorted(n["booking_id"] for n in notices) == sorted(f"s{w}.{n}" for n in range(each))
    assert await patient_notices(redis_client, keys, 5)  # the platform-wide one, by courier 0
    for p in (0, 1):
        assert await redis_client.zcard(keys.outbox_doorbell(p)) == 0
        assert mine[p], "each courier had shards of its own"
    assert await backlog(redis_client, keys) == 0


async def test_a_shard_rung_for_another_courier_is_passed_on_to_it(make_rounds, redis_client):
    """The number of couriers went from 1 to 2: what rang in doorbell 0 for a shard that is
    courier 1's now is passed on, and carried by courier 1 (pending entries too)."""
    first = make_rounds(couriers=2, namespace="moved")
    second = make_rounds(1, couriers=2, namespace="moved")
    keys = first.keys
    shard = next(f"h{i}:2026-12-01" for i in range(50) if partition_of(f"h{i}:2026-12-01", 2))
    await put(redis_client, keys, [POISON[0]], shard=shard)  # rung for courier 0, as before
    await put(redis_client, keys, [NOTICE], shard=shard)
    old = Outbox(redis_client, keys)  # the one courier there was read it, and failed once
    streams = await old.rung()
    await old.read([(s, ">") for s in streams], 10)
    await first.drain()
    assert await redis_client.zcard(keys.outbox_doorbell(0)) == 0
    assert await redis_client.zscore(keys.outbox_doorbell(1), shard)  # swept, and passed on
    assert first.counters["entries"] == 0
    await second.drain()
    assert second.counters["entries"] == 1 and second.counters["failures"] == 1
    assert await kinds(redis_client, keys, 5) == ["confirmed"]
