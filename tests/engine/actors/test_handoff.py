"""Placement as data: a host answers ``Moved`` for a shard that is not its own (never loading
it, never touching its epoch), clients follow the directory, and a shard handed over under load
loses and doubles nothing. Real hosts on the local Ray, real Redis, audited."""

from __future__ import annotations

import asyncio
import pickle
import random
import time
from collections import Counter

import pytest

from engine.client import request_key
from engine.core.protocol import BOOK
from engine.outcomes import Booked, Moved
from engine.tools.audit import audit
from engine.tools.crowd import catalog, plan, play
from tests.engine.actors.test_host import check_against_truth, create_all, seed


async def epoch_of(engine, shard_id: str) -> int:
    return int(await engine.store.client.get(engine.store.keys.epoch(shard_id)))


async def test_a_stale_driver_is_answered_after_a_moved_and_a_resend(runtime):
    mover, stale = runtime.engine(), runtime.engine()
    [spec] = catalog(hospitals=1, sessions_per_hospital=1, capacity=5, prefix="st")
    await create_all(mover, [spec])
    shard = spec.shard_id
    assert isinstance(await stale.book(spec.id, 1, "a"), Booked)
    old = stale.host_of(shard)
    new = 1 - old
    epoch = await epoch_of(mover, shard)

    await mover.move(shard, new)
    assert mover.host_of(shard) == new
    assert shard not in (await runtime.hosts[old].info.remote())["shards"], "released"
    direct = (time.time_ns(), BOOK, shard, spec.id, 2, request_key("b"))
    [answer] = pickle.loads(await runtime.hosts[old].submit.remote([direct]))
    assert answer == Moved(new), "the old host neither decides nor loads it"
    assert await epoch_of(mover, shard) == epoch, "its epoch did not move"

    assert stale.host_of(shard) == old, "this driver still has the old directory"
    booked = await stale.book(spec.id, 2, "b")
    assert isinstance(booked, Booked)
    assert stale.resends == 1
    assert stale.host_of(shard) == new
    assert await epoch_of(mover, shard) == epoch + 1, "the new host took it, once"
    assert isinstance(await stale.book(spec.id, 3, "c"), Booked)
    assert stale.resends == 1, "straight to the new host now"
    report = await audit(mover.store)
    assert report.ok, report.problems
    assert sorted(b.patient for b in report.bookings.values()) == [1, 2, 3]
    await mover.close()
    await stale.close()


@pytest.mark.timeout(600)
async def test_shards_handed_over_under_load_lose_and_double_nothing(slow_timers):
    """The operator also books (its directory is fresh at once, the others' only after a
    ``Moved``): a handoff must stop the old host before anyone sends to the new one."""
    runtime = slow_timers
    specs = catalog(hospitals=4, sessions_per_hospital=6, capacity=30, prefix="ho")
    requests = plan(specs, 20_000, patients=3_000, seed=seed())  # long enough for many moves
    first, second = runtime.engine(), runtime.engine()
    operator = first
    await create_all(operator, specs)
    shards = sorted({s.shard_id for s in specs})
    moves = 0

    async def move_around() -> None:
        nonlocal moves
        rng = random.Random(7)
        while not crowd.done():
            shard = rng.choice(shards)
            await operator.move(shard, 1 - operator.host_of(shard))
            moves += 1
            await asyncio.sleep(0.05)

    crowd = asyncio.ensure_future(
        asyncio.gather(play(first, requests[::2], 8), play(second, requests[1::2], 8))
    )
    await asyncio.gather(crowd, move_around())
    answers = [a for share in crowd.result() for a in share]
    kinds = Counter(type(a.outcome).__name__ for a in answers)
    print("outcomes:", dict(kinds), "moves:", moves, "resends:", first.resends + second.resends)
    assert moves >= 5
    assert first.resends + second.resends > 0, "the drivers met moved shards"
    assert kinds["Unavailable"] == kinds["OutcomeUnknown"] == 0, "no failed booking"
    assert kinds["Moved"] == 0, "a Moved never reaches the caller"
    report = await audit(operator.store)
    check_against_truth(answers, report)
    assert report.booked == 30 * len(specs), "every session filled, none oversold"
    # a retried request id gets the very same booking, wherever its shard now lives
    for a in answers[:300]:
        if isinstance(a.outcome, Booked):
            again = await first.book(a.request.session_id, a.request.patient, a.request.request_id)
            assert (again.booking_id, again.repeat) == (a.outcome.booking_id, True)
    for engine in (first, second):
        await engine.close()


async def test_a_pin_written_before_the_start_is_honoured(
    ray_local, redis_server, redis_client, settings_for
):
    """Pins an earlier version wrote (its ``<ns>:placement`` hash, shard → host index, moved
    to the one-slot name by the upgrade at the start) are directory entries from the first
    start: the shard is served by its pinned host, not by its rendezvous default, and booking
    there works."""
    from engine.core.placement import default_host
    from engine.runtime import Runtime
    from engine.store.keys import Keys

    settings = settings_for(redis_server.url, hosts=2)
    spec = catalog(hospitals=1, sessions_per_hospital=1, capacity=5, prefix="pin")[0]
    pinned = 1 - default_host(spec.shard_id, 2)
    await redis_client.hset(f"{settings.namespace}:placement", spec.shard_id, pinned)
    rt = Runtime.start(settings)
    assert (
        await redis_client.hget(Keys(settings.namespace).placement, spec.shard_id) == b"%d" % pinned
    )
    try:
        engine = rt.engine()
        await create_all(engine, [spec])
        assert isinstance(await engine.book(spec.id, 1, "pin-1"), Booked)
        loaded = [spec.shard_id in (await h.info.remote())["shards"] for h in rt.hosts]
        assert loaded[pinned] and not loaded[1 - pinned], loaded
        assert (await audit(engine.store)).ok
        await engine.close()
    finally:
        rt.stop()
