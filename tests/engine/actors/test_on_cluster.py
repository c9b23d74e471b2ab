"""The engine on a real local Redis Cluster (3 masters, 3 replicas of the wheel's
``valkey-server``) with the real host pool, through what a cluster does to its clients: a
master killed outright in the middle of a crowd (its replica takes over; ``durability=replica``
keeps every acknowledged booking), and a hot shard's slot moved to another master while it
sells (``CLUSTER MIGRATESLOTS``: the commit answered ``MOVED`` goes again to the new owner).
The lifecycle, records and flash-crowd tests run on the cluster too (``on_cluster``)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
import redis

from engine.outcomes import Booked, OutcomeUnknown, Unavailable
from engine.runtime import Runtime
from engine.store.connect import REDIS_ERRORS
from engine.store.local_cluster import LocalCluster
from engine.store.shards import Store
from engine.tools.audit import audit
from engine.tools.crowd import catalog
from tests.engine.actors.test_host import create_all

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


def owner(cluster: LocalCluster, key: str) -> tuple[redis.Redis, bytes]:
    """The master serving ``key`` now: a client of it and its node id."""
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        node = client.get_node_from_key(key)
    finally:
        client.close()
    direct = redis.Redis(host=node.host, port=node.port, password=cluster.password)
    return direct, direct.execute_command("CLUSTER MYID")


async def owner_when(cluster: LocalCluster, key: str, wanted, seconds: float = 20.0):
    """The node id of the master serving ``key`` once ``wanted(node id)`` (asked every 0.1 s;
    a cluster that cannot answer meanwhile is asked again); None if it never was."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        try:
            client, node_id = owner(cluster, key)
            client.close()
        except REDIS_ERRORS:  # no answer in the middle of the failover
            continue
        if wanted(node_id):
            return node_id
    return None


def masters_of(cluster: LocalCluster) -> list[tuple[redis.Redis, bytes]]:
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        nodes = client.get_primaries()
    finally:
        client.close()
    out = []
    for node in nodes:
        direct = redis.Redis(host=node.host, port=node.port, password=cluster.password)
        out.append((direct, direct.execute_command("CLUSTER MYID")))
    return out


async def crowd(engine, specs, stop: asyncio.Event, acknowledged: dict, told: Counter, n: int):
    """Patient ``n`` books again and again (a fresh request each time) until ``stop``."""
    attempt = 0
    while not stop.is_set():
        spec = specs[(n + attempt) % len(specs)]
        outcome = await engine.book(spec.id, 10_000 + n * 1000 + attempt, f"p{n}-{attempt}")
        told[type(outcome).__name__] += 1
        if isinstance(outcome, Booked):
            acknowledged[outcome.booking_id] = (spec.shard_id, time.monotonic())
        elif isinstance(outcome, OutcomeUnknown | Unavailable):
            await asyncio.sleep(0.05)
        attempt += 1


async def check_stored(settings, acknowledged: dict) -> None:
    store = Store.of(settings)
    try:
        report = await audit(store)
    finally:
        await store.close()
    print(f"{len(acknowledged)} acknowledged;", report.summary())
    missing = set(acknowledged) - set(report.bookings)
    assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
    assert report.ok, report.problems  # no slot twice, stock conserved
    assert report.booked == len(report.bookings) >= len(acknowledged)


@pytest.fixture
def own_cluster(tmp_path):
    """A cluster of the test's own: the test kills one of its masters."""
    with LocalCluster(tmp_path / "redis-cluster") as cluster:
        yield cluster


async def test_a_master_killed_mid_crowd_loses_no_acknowledged_booking(
    ray_local, settings_for, own_cluster
):
    cluster = own_cluster
    settings = settings_for(
        cluster.url,
        redis_cluster=True,
        durability="replica",  # WAITAOF 1 1: a replica's AOF has every acknowledged booking
        redis_timeout=4.0,
        durability_wait_ms=2500,
    )
    rt = Runtime.start(settings)
    engine = rt.engine()
    acknowledged: dict[str, tuple[str, float]] = {}
    told: Counter = Counter()
    try:
        specs = catalog(hospitals=3, sessions_per_hospital=8, capacity=1000, prefix="fo")
        await create_all(engine, specs)
        busy = specs[0].shard_id
        victim_client, victim_id = owner(cluster, engine.store.keys.epoch(busy))
        victim = next(
            n
            for n in cluster.nodes
            if n.port == victim_client.connection_pool.connection_kwargs["port"]
        )
        victim_client.close()
        stop = asyncio.Event()
        patients = [
            asyncio.create_task(crowd(engine, specs, stop, acknowledged, told, n))
            for n in range(24)
        ]
        await asyncio.sleep(2.0)
        before = len(acknowledged)
        victim.process.kill()  # SIGKILL: no AOF flush, no goodbye to its replica
        victim.process.wait()
        killed_at = time.monotonic()
        # its replica takes over (cluster-node-timeout 2 s); then the old master comes back
        # as the new one's replica, so durability=replica can be kept again
        promoted = await owner_when(cluster, engine.store.keys.epoch(busy), victim_id.__ne__)
        assert promoted is not None, "no replica took over the killed master's slots"
        victim.start()
        await asyncio.sleep(8.0)  # booking goes on through the failover and the rejoin
        stop.set()
        await asyncio.gather(*patients)
    finally:
        await engine.close()
        rt.stop()
    print("answers:", dict(told), f"{before} acknowledged before the kill")
    assert before >= 20, "the kill must come in the middle of the crowd"
    on_busy_after = [
        b for b, (shard, at) in acknowledged.items() if shard == busy and at > killed_at
    ]
    assert on_busy_after, "booking on the killed master's shard never resumed"
    await check_stored(settings, acknowledged)


async def test_a_hot_shard_s_slot_moves_to_another_master_while_it_sells(
    ray_local, settings_for, redis_cluster
):
    cluster = redis_cluster
    settings = settings_for(cluster.url, redis_cluster=True)
    rt = Runtime.start(settings)
    engine = rt.engine()
    acknowledged: dict[str, tuple[str, float]] = {}
    told: Counter = Counter()
    try:
        specs = catalog(hospitals=3, sessions_per_hospital=8, capacity=1000, prefix="mv")
        await create_all(engine, specs)
        hot = specs[0].shard_id
        keys = engine.store.keys
        from redis.crc import key_slot

        slot = key_slot(keys.epoch(hot).encode())
        stop = asyncio.Event()
        patients = [
            asyncio.create_task(crowd(engine, specs, stop, acknowledged, told, n))
            for n in range(16)
        ]
        moves = []
        for _ in range(3):  # to the next master, three times, while it sells
            await asyncio.sleep(1.0)
            source, source_id = owner(cluster, keys.epoch(hot))
            targets = [m for m in masters_of(cluster) if m[1] != source_id]
            target_id = targets[0][1]
            sold = sum(1 for s, _ in acknowledged.values() if s == hot)
            source.execute_command(
                "CLUSTER MIGRATESLOTS", "SLOTSRANGE", slot, slot, "NODE", target_id
            )
            moved = await owner_when(cluster, keys.epoch(hot), target_id.__eq__)
            assert moved == target_id, "the slot did not move"
            moves.append((sold, time.monotonic()))
            for client, _ in targets:
                client.close()
            source.close()
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*patients)
        redirected = sum([(await h.info.remote())["redirected"] for h in rt.hosts])
    finally:
        await engine.close()
        rt.stop()
    print("answers:", dict(told), "moves:", moves, f"commits sent again: {redirected}")
    assert redirected >= 3, "each move must have turned a commit away (MOVED)"
    assert told["Unavailable"] == 0 and told["OutcomeUnknown"] == 0, told  # MOVED is no failure
    last_move = moves[-1][1]
    assert any(s == hot and at > last_move for s, at in acknowledged.values()), "sold on after"
    await check_stored(settings, acknowledged)
