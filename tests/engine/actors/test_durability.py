"""Durable acknowledgements (``SLOTENGINE_DURABILITY``) on a real master and a real replica
(two embedded Valkey servers) with the real host pool: the replica levels refuse to start
without a replica; with one, every booking acknowledged is on the replica (its AOF for
``replica``, its memory for ``replica-received``) — a master killed outright and the replica
promoted keeps every one, no slot twice; a replica that stops answering turns
acknowledgements into ``outcome_unknown``, and the same request ids learn the outcome once it
is back."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis

from engine.errors import DurabilityError
from engine.outcomes import Booked, OutcomeUnknown, SoldOut, Unavailable
from engine.runtime import Runtime
from engine.store.embedded import EmbeddedRedis
from engine.store.shards import Store
from engine.tools.audit import audit
from engine.tools.crowd import catalog
from tests.engine.actors.test_host import create_all


def wait_for_link(replica: EmbeddedRedis, timeout: float = 20.0) -> None:
    client = redis.Redis.from_url(replica.url)
    deadline = time.monotonic() + timeout
    while client.info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica never linked to its master"
        time.sleep(0.1)
    client.close()


@pytest.fixture
def pair(tmp_path):
    master = EmbeddedRedis(tmp_path / "master").start()
    replica = EmbeddedRedis(tmp_path / "replica", replica_of=master).start()
    wait_for_link(replica)
    yield master, replica
    for server in (replica, master):
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)  # a test may leave it stopped
        server.stop()


@pytest.mark.parametrize("level", ["replica", "replica-received"])
def test_replica_durability_refuses_to_start_without_a_replica(
    ray_local, settings_for, tmp_path, level
):
    with (
        EmbeddedRedis(tmp_path / "alone") as alone,
        pytest.raises(DurabilityError, match="needs a replica connected"),
    ):
        Runtime.start(settings_for(alone.url, durability=level))


# ``replica`` waits for the replica's fsync, which Valkey reports about once a second
LEVELS = {"replica": dict(redis_timeout=4.0, durability_wait_ms=2500), "replica-received": {}}


@pytest.mark.parametrize("level", LEVELS)
async def test_every_acknowledged_booking_survives_the_master_killed_outright(
    ray_local, settings_for, pair, level
):
    master, replica = pair
    rt = Runtime.start(settings_for(master.url, durability=level, **LEVELS[level]))
    engine = rt.engine()
    acknowledged: dict[str, Booked] = {}
    try:
        specs = catalog(hospitals=2, sessions_per_hospital=4, capacity=400, prefix="dur")
        await create_all(engine, specs)
        killed = asyncio.Event()

        async def patient(n: int) -> None:
            spec = specs[n % len(specs)]
            for attempt in range(130):  # 24 × 130 < the 3,200 slots: never sold out
                if killed.is_set():
                    return
                outcome = await engine.book(spec.id, 10_000 + n * 100 + attempt, f"p{n}-{attempt}")
                if isinstance(outcome, Booked):
                    acknowledged[outcome.booking_id] = outcome

        async def kill_master() -> None:
            await asyncio.sleep(2.0)
            master.process.kill()  # SIGKILL: no AOF flush, no goodbye to the replica
            master.process.wait()
            killed.set()

        await asyncio.gather(kill_master(), *(patient(n) for n in range(24)))
    finally:
        await engine.close()
        rt.stop()
    assert 20 <= len(acknowledged) < 24 * 130, "the kill must come in the middle of the crowd"
    promoted = redis.Redis.from_url(replica.url)
    promoted.replicaof("NO", "ONE")
    promoted.close()
    store = Store.from_url(replica.url, rt.settings.namespace)
    try:
        report = await audit(store)
    finally:
        await store.close()
    print(f"{len(acknowledged)} acknowledged before the kill;", report.summary())
    missing = set(acknowledged) - set(report.bookings)
    assert not missing, f"acknowledged but lost in the failover: {sorted(missing)[:5]}"
    assert report.ok, report.problems  # no slot twice, stock conserved
    assert report.booked == len(report.bookings) >= len(acknowledged)


async def test_a_replica_that_stops_answering_makes_answers_unknown_until_it_is_back(
    ray_local, settings_for, pair
):
    master, replica = pair
    settings = settings_for(master.url, durability="replica-received", durability_wait_ms=300)
    rt = Runtime.start(settings)
    engine = rt.engine()
    try:
        [spec] = catalog(hospitals=1, sessions_per_hospital=1, capacity=3, prefix="stall")
        await create_all(engine, [spec])
        first = await engine.book(spec.id, 1, "r1")
        assert isinstance(first, Booked)

        os.kill(replica.process.pid, signal.SIGSTOP)  # alive, linked, but never acknowledges
        stalled = await engine.book(spec.id, 2, "r2")
        assert isinstance(stalled, OutcomeUnknown), stalled
        again = await engine.book(spec.id, 2, "r2")  # nothing new to write: still unknown
        assert isinstance(again, OutcomeUnknown), again
        refused = await engine.book(spec.id, 3, "r3")
        assert isinstance(refused, OutcomeUnknown | Unavailable), refused

        os.kill(replica.process.pid, signal.SIGCONT)
        learned = None
        for _ in range(50):  # the same request id learns the outcome once a write is confirmed
            learned = await engine.book(spec.id, 2, "r2")
            if not isinstance(learned, OutcomeUnknown):
                break
            await asyncio.sleep(0.1)
        assert isinstance(learned, Booked) and learned.repeat, learned
        assert isinstance(await engine.book(spec.id, 4, "r4"), Booked | SoldOut)
        report = await audit(engine.store)
        assert report.ok, report.problems
        assert {b.patient for b in report.bookings.values()} >= {1, 2}
        assert report.booked <= 3
    finally:
        await engine.close()
        rt.stop()
