"""The Redis store against a real Redis server: round trip, fencing, corruption, pub/sub."""

import asyncio
import itertools

import msgpack
import pytest

from engine.core.policy import PLATFORM, FeeTier, Policy
from engine.core.session import SessionSpec
from engine.errors import Fenced, SnapshotError, StoreUnavailable
from engine.store.embedded import free_port
from engine.store.keys import Keys
from engine.store.shards import ShardWrite, Store, parse_stock_message
from tests import helpers

SHARD = "h1:2026-12-01"
TOKENS = itertools.count()


def spec(i: int, capacity: int = 3, fee: int = 0) -> SessionSpec:
    return helpers.spec(
        id=f"s{i}", department_id=f"d{i}", doctor_id=f"doc{i}", capacity=capacity, fee=fee
    )


@pytest.fixture
async def store(redis_server, redis_client):
    s = Store.from_url(redis_server.url, "st")
    yield s
    await s.close()


async def write_all(store, epoch, shard):
    changes = shard.take_changes()
    sessions = list(changes.sessions.values())
    stock = [(s.id, s.status(10.0), s.free, s.version) for s in sessions]
    return await store.commit(
        [
            ShardWrite(
                SHARD,
                "h1",
                epoch,
                sessions,
                changes.new_session_ids,
                changes.new_bookings,
                changes.events,
                stock,
                token=f"t{next(TOKENS)}",
            )
        ]
    )


async def outbox(redis_client) -> list[list]:
    """Every outbox event written so far, in commit order."""
    entries = await redis_client.xrange(Keys("st").shard_outbox(SHARD))
    return [event for _, fields in entries for event in msgpack.unpackb(fields[b"e"])]


async def test_round_trip_through_redis(store):
    epoch, shard = await store.activate(SHARD, "h1", "2026-12-01")
    assert epoch == 1
    assert shard.sessions == {}
    for i in range(3):
        shard.create(spec(i))
    for p in range(5):
        shard.book("s0", p, p, 10.0)
    shard.book("s1", 9, 9, 10.0)
    assert await write_all(store, epoch, shard) == [None]
    assert await store.shard_of("s1") == SHARD
    assert await store.client.smembers(store.keys.patient_bookings(9)) == {b"s1.0"}
    assert await store.shard_ids() == [SHARD]

    epoch2, again = await store.activate(SHARD, "h1", "2026-12-01")
    assert epoch2 == 2
    assert sorted(again.sessions) == ["s0", "s1", "s2"]
    for sid, s in shard.sessions.items():
        r = again.sessions[sid]
        assert (r.spec, r.bookings) == (s.spec, s.bookings)
    assert {p: [x.id for x in again.live_sessions(p)] for p in again.live} == {
        0: ["s0"],
        1: ["s0"],
        2: ["s0"],
        9: ["s1"],
    }


async def test_old_epoch_is_refused_and_leaves_data_as_it_was(store, redis_client):
    old_epoch, old = await store.activate(SHARD, "h1", "2026-12-01")
    old.create(spec(0))
    old.book("s0", 1, 1, 10.0)
    assert await write_all(store, old_epoch, old) == [None]
    before = await redis_client.get(store.keys.session(SHARD, "s0"))

    new_epoch, new = await store.activate(SHARD, "h1", "2026-12-01")  # a newer host takes over
    assert new_epoch == old_epoch + 1
    old.book("s0", 2, 2, 10.0)
    old.book("s0", 3, 3, 10.0)
    [error] = await write_all(store, old_epoch, old)
    assert isinstance(error, Fenced)
    assert await redis_client.get(store.keys.session(SHARD, "s0")) == before

    new.book("s0", 4, 4, 10.0)  # the new owner still writes
    assert await write_all(store, new_epoch, new) == [None]
    [s0] = await store.read_shard_sessions(SHARD)
    assert sorted(p for _, p, _ in s0.live_bookings()) == [1, 4]


async def test_corrupt_snapshot_gives_a_clear_error(store, redis_client):
    epoch, shard = await store.activate(SHARD, "h1", "2026-12-01")
    shard.create(spec(0))
    await write_all(store, epoch, shard)
    key = store.keys.session(SHARD, "s0")
    await redis_client.set(key, b"\x93\x01garbage")
    with pytest.raises(SnapshotError, match="s:s0"):
        await store.activate(SHARD, "h1", "2026-12-01")
    await redis_client.set(key, msgpack.packb([7, "future format"]))
    with pytest.raises(SnapshotError, match="unknown snapshot version 7"):
        await store.activate(SHARD, "h1", "2026-12-01")


async def test_commit_publishes_stock(store, redis_client):
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(store.keys.stock_channel)
    await pubsub.get_message(timeout=1.0)  # the subscribe confirmation
    epoch, shard = await store.activate(SHARD, "h1", "2026-12-01")
    shard.create(spec(0, capacity=1))
    await write_all(store, epoch, shard)
    shard.book("s0", 1, 1, 10.0)
    await write_all(store, epoch, shard)
    seen = []
    for _ in range(20):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if message:
            seen.extend(parse_stock_message(message["data"]))
        if len(seen) == 2:
            break
    assert seen == [("s0", "open", 1, 0), ("s0", "sold_out", 0, 1)]
    await pubsub.aclose()


async def test_policy_and_bans_round_trip_and_reach_an_activated_shard(store):
    assert await store.read_rules("h1") == (Policy(), {})
    policy = Policy(3, 1, 60, fee_tiers=(FeeTier(120, 0), FeeTier(0, 50)))
    await store.write_policy("h1", policy)
    await store.set_ban("h1", 5, 123.5)
    await store.set_ban(PLATFORM, 6, 456.0)
    assert await store.read_rules("h1") == (policy, {5: 123.5})
    assert await store.read_rules(PLATFORM) == (None, {6: 456.0})
    assert await store.policy("h1") == policy
    assert await store.policy("h2") == Policy()
    _, shard = await store.activate(SHARD, "h1", "2026-12-01")
    assert (shard.policy, shard.blacklist, shard.platform_blacklist) == (
        policy,
        {5: 123.5},
        {6: 456.0},
    )
    await store.set_ban("h1", 5, None)  # lifted by hand
    assert await store.read_rules("h1") == (policy, {})


async def test_a_hand_set_ban_replaces_but_a_judged_ban_only_extends(store):
    await store.set_ban("h1", 5, 500.0)
    await store.set_ban("h1", 5, 100.0)  # the operator may shorten
    assert (await store.read_rules("h1"))[1] == {5: 100.0}
    assert await store.extend_ban("h1", 5, 50.0) is False
    assert await store.extend_ban("h1", 5, 100.0) is False
    assert await store.extend_ban("h1", 5, 100.5) is True
    assert (await store.read_rules("h1"))[1] == {5: 100.5}


async def test_bans_are_extended_atomically(store):
    untils = [1_800_000_000.0 + 86400 * ((7 * k) % 20) + 0.25 for k in range(20)]
    changed = await asyncio.gather(*(store.extend_ban("h1", 9, u) for u in untils))
    assert any(changed)
    await asyncio.gather(*(store.extend_ban("h1", p, 99.0) for p in range(20)))
    _, bans = await store.read_rules("h1")
    assert bans == {9: max(untils), **{p: 99.0 for p in range(20) if p != 9}}


async def test_outbox_events_are_written_with_their_snapshots_or_not_at_all(store, redis_client):
    epoch, shard = await store.activate(SHARD, "h1", "2026-12-01")
    shard.create(spec(0, capacity=2, fee=500))
    shard.book("s0", 1, 1, 10.0)
    shard.pay("s0", 0, 1, 11.0)
    shard.release("s0", 0, None, 12.0)  # the hospital cancels: full refund
    assert await write_all(store, epoch, shard) == [None]
    written = await outbox(redis_client)
    assert written == [
        ["notice", "confirmed", 1, "s0.0", "s0", 11.0, {"slot_no": 1, "slot_time": "08:00"}],
        ["refund", "s0.0", 1, 500, "cancelled"],
        ["notice", "cancelled", 1, "s0.0", "s0", 12.0, {"refund": 500, "by": "hospital"}],
    ]
    [s0] = await store.read_shard_sessions(SHARD)
    assert s0.info(0).refunded == 500

    await store.activate(SHARD, "h1", "2026-12-01")  # a newer host takes over
    shard.book("s0", 2, 2, 13.0)
    [error] = await write_all(store, epoch, shard)
    assert isinstance(error, Fenced)
    assert await outbox(redis_client) == written, "a fenced commit adds no events"


async def test_unreachable_redis_is_store_unavailable():
    store = Store.from_url(f"redis://127.0.0.1:{free_port()}/0", "st", timeout=0.5)
    with pytest.raises(StoreUnavailable):
        await store.activate(SHARD, "h1", "2026-12-01")
    [error] = await store.commit([ShardWrite(SHARD, "h1", 1, [])])
    assert isinstance(error, StoreUnavailable)
    await store.close()


async def test_a_commit_after_redis_forgot_its_scripts_loads_it_again_and_writes_once(
    store, redis_client
):
    epoch, shard = await store.activate(SHARD, "h1", "2026-12-01")
    shard.create(spec(0))
    shard.book("s0", 1, 1, 10.0)
    assert await write_all(store, epoch, shard) == [None]
    await redis_client.script_flush()  # as after a restart without persistence of scripts
    shard.book("s0", 2, 2, 10.0)
    assert await write_all(store, epoch, shard) == [None]
    [s0] = await store.read_shard_sessions(SHARD)
    assert sorted(p for _, p, _ in s0.live_bookings()) == [1, 2]
    assert await redis_client.smembers(store.keys.patient_bookings(2)) == {b"s0.1"}
    assert await redis_client.xlen(store.keys.shard_outbox(SHARD)) == 2, "one entry a commit"


async def test_my_bookings_are_written_by_the_commit_itself_for_every_patient(store, redis_client):
    epoch, shard = await store.activate(SHARD, "h1", "2026-12-01")
    shard.create(spec(0, capacity=5))
    shard.create(spec(1, capacity=5))
    for p in range(4):
        shard.book("s0", p, p, 10.0)
    shard.book("s1", 2, 9, 10.0)
    assert await write_all(store, epoch, shard) == [None]
    mine = {p: await redis_client.smembers(store.keys.patient_bookings(p)) for p in range(4)}
    assert mine == {0: {b"s0.0"}, 1: {b"s0.1"}, 2: {b"s0.2", b"s1.0"}, 3: {b"s0.3"}}


async def test_a_follow_up_that_failed_is_made_good_by_the_courier(
    store, redis_client, settings_for, redis_server
):
    """The commit's script ran (the booking is the patient's) and its follow-ups failed (a key
    of the wrong type here; a cluster node away, or the round trip lost, there): the commit
    counts, and the courier, carrying the entry, lists the booking and marks the session."""
    from engine.actors.courier import CourierWork

    epoch, shard = await store.activate(SHARD, "h1", "2026-12-01")
    shard.create(spec(0, capacity=5, fee=500))
    assert await write_all(store, epoch, shard) == [None]
    await redis_client.delete(store.keys.changed_sessions)  # as if those follow-ups were lost
    await redis_client.hdel(store.keys.catalog, "s0")
    mine = store.keys.patient_bookings(7)
    await redis_client.set(mine, "not a set")
    shard.book("s0", 7, 1, 10.0)  # a paid hold: no event of its own, the entry all the same
    assert await write_all(store, epoch, shard) == [None]
    [s0] = await store.read_shard_sessions(SHARD)
    assert [p for _, p, _ in s0.live_bookings()] == [7]
    await redis_client.delete(mine)  # the node is back
    (_, fields), *_ = await redis_client.xrevrange(store.keys.shard_outbox(SHARD), count=1)
    assert fields[b"origin"].startswith(SHARD.encode() + b"/")  # named by its commit token
    rounds = CourierWork(settings_for(redis_server.url, namespace="st"))
    try:
        await rounds.carry()
    finally:
        await rounds.store.close()
    assert await redis_client.smembers(mine) == {b"s0.0"}
    assert await redis_client.sismember(
        store.keys.changed_sessions, store.keys.session(SHARD, "s0")
    )
    assert await redis_client.hget(store.keys.catalog, "s0") == SHARD.encode()


async def test_commands_packed_by_hiredis_round_trip_and_refuse_what_redis_py_refuses(store):
    from redis.exceptions import DataError

    assert store.client.connection_pool.connection_class.__name__ == "PackedConnection"
    await store.client.set("st:packed", "价格 1.5")  # str, spaces, UTF-8
    assert await store.client.get("st:packed") == "价格 1.5".encode()
    assert await store.client.execute_command("CONFIG GET", "maxmemory")  # two words
    await store.client.hset("st:h", mapping={"a": 1, "b": 2.5, "c": b"\x00\xff"})
    assert await store.client.hgetall("st:h") == {b"a": b"1", b"b": b"2.5", b"c": b"\x00\xff"}
    with pytest.raises(DataError):
        await store.client.execute_command("SET", "st:x", None)
    assert await store.client.get("st:x") is None
