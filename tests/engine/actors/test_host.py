"""Host actors on a real local Ray and a real Redis: flash crowds, crashes, outages, fencing.

Every run is checked against the truth in Redis by the auditor. Randomised crowds print their
seed; set SLOTENGINE_SEED to replay one.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import random
import time
from collections import Counter, defaultdict

import pytest
import ray

from engine.client import Engine, request_key
from engine.core.session import SessionSpec
from engine.core.shard import Policy
from engine.outcomes import (
    Blacklisted,
    Booked,
    Conflict,
    Created,
    DepartmentDayLimit,
    Done,
    HospitalDayLimit,
    NotFound,
    NotOpen,
    OutcomeUnknown,
    SoldOut,
    Unavailable,
)
from engine.runtime import Runtime
from engine.store.embedded import EmbeddedRedis, free_port
from engine.store.shards import Store
from engine.tools.audit import AuditReport, audit
from engine.tools.crowd import Answer, CrowdDriver, CrowdRequest, catalog, plan, play
from tests import helpers

REFUSED_BY_RULES = (HospitalDayLimit, DepartmentDayLimit)


def seed() -> int:
    value = int(os.environ.get("SLOTENGINE_SEED", random.randrange(1 << 30)))
    print(f"crowd seed: {value} (replay with SLOTENGINE_SEED={value})")
    return value


async def create_all(engine: Engine, specs: list[SessionSpec]) -> None:
    outcomes = await asyncio.gather(*(engine.create_session(s) for s in specs))
    assert all(isinstance(o, Created) for o in outcomes), outcomes


async def play_in_drivers(rt: Runtime, requests: list[CrowdRequest], drivers: int, each: int):
    """Play a crowd from ``drivers`` separate processes with ``each`` submitters apiece."""
    actors = [CrowdDriver.remote(rt.settings, rt.hosts) for _ in range(drivers)]
    try:
        shares = await asyncio.gather(
            *(a.play.remote(requests[i::drivers], each) for i, a in enumerate(actors))
        )
    finally:
        for a in actors:
            ray.kill(a)
    return [answer for share in shares for answer in share]


def check_against_truth(answers: list[Answer], report: AuditReport) -> None:
    """Every success a caller saw is in Redis, identical; one booking per (patient, request);
    and an ``Unavailable`` ("nothing was booked") never hides a booking."""
    assert report.ok, report.problems
    by_request: dict[tuple[int, str], set[str]] = defaultdict(set)
    stored_requests = {(b.patient, b.request) for b in report.bookings.values()}
    told = defaultdict(set)  # (patient, request key) → the kinds of answer it got
    for a in answers:
        told[a.request.patient, request_key(a.request.request_id)].add(type(a.outcome))
    for key, kinds in told.items():  # booked, yet only ever told "unavailable: nothing booked"
        if key in stored_requests and kinds & {Booked, OutcomeUnknown} == set():
            raise AssertionError(f"request {key} was booked but answered only {kinds}")
    for a in answers:
        if isinstance(a.outcome, Booked):
            stored = report.bookings.get(a.outcome.booking_id)
            assert stored is not None, f"acknowledged {a.outcome.booking_id} missing from Redis"
            assert (stored.patient, stored.slot_no, stored.request) == (
                a.request.patient,
                a.outcome.slot_no,
                request_key(a.request.request_id),
            )
            by_request[(a.request.patient, a.request.request_id)].add(a.outcome.booking_id)
    assert all(len(ids) == 1 for ids in by_request.values()), "one request, two bookings"


@pytest.mark.on_cluster
@pytest.mark.timeout(600)
async def test_flash_crowd_from_concurrent_drivers(runtime):
    specs = catalog(hospitals=5, sessions_per_hospital=10, capacity=30)
    cold = {specs[9].id: 12, specs[19].id: 1, specs[29].id: 29}
    requests = plan(specs, 21_000, patients=2_500, seed=seed(), cold=cold)
    engine = runtime.engine()
    await create_all(engine, specs)

    answers = await play_in_drivers(runtime, requests, drivers=2, each=8)
    assert len(answers) == len(requests)
    kinds = Counter(type(a.outcome).__name__ for a in answers)
    print("outcomes:", dict(kinds))
    assert kinds["Unavailable"] == 0
    assert kinds["SoldOut"] > 10_000
    assert kinds["HospitalDayLimit"] + kinds["DepartmentDayLimit"] > 0
    assert sum(1 for a in answers if isinstance(a.outcome, Booked) and a.outcome.repeat) > 0

    report = await audit(engine.store)
    print(report.summary())
    check_against_truth(answers, report)
    for s in specs:  # exactly min(demand, capacity): hot sessions fill, cold get their demand
        assert report.live_per_session[s.id] == cold.get(s.id, s.capacity), s.id
    fresh = {a.outcome.booking_id for a in answers if isinstance(a.outcome, Booked)}
    assert len(fresh) == report.booked == sum(cold.values()) + 30 * (len(specs) - len(cold))

    # the state a host answers from memory is the state in Redis
    state = await engine.session_state(specs[0].id)
    assert (state.remaining, state.booked, state.status) == (0, 30, "sold_out")
    await engine.close()


@pytest.mark.on_cluster
@pytest.mark.timeout(600)
async def test_host_killed_mid_crowd_loses_nothing_acknowledged(runtime):
    specs = catalog(hospitals=5, sessions_per_hospital=10, capacity=30)
    requests = plan(specs, 20_000, patients=2_500, seed=seed())
    engine = runtime.engine()
    await create_all(engine, specs)
    victim = runtime.hosts[0]
    before = await victim.info.remote()

    async def kill_soon():
        await asyncio.sleep(1.5)
        ray.kill(victim, no_restart=False)

    answers, _ = await asyncio.gather(play(engine, requests, submitters=32), kill_soon())
    for _ in range(100):  # ray.kill does not wait: the old incarnation may still answer once
        after = await victim.info.remote()
        if after["started_at"] > before["started_at"]:
            break
        await asyncio.sleep(0.1)
    assert after["started_at"] > before["started_at"], "the host should have been restarted"
    await asyncio.sleep(3 * runtime.settings.tick_seconds)  # the new incarnation warms up
    assert (await victim.info.remote())["shards"] == before["shards"]
    kinds = Counter(type(a.outcome).__name__ for a in answers)
    print("outcomes with a kill:", dict(kinds))

    report = await audit(engine.store)
    print(report.summary())
    check_against_truth(answers, report)

    # retry every request (same request ids): nothing is booked twice, every ack stays put
    retried = await play(engine, requests, submitters=32)
    first = {
        (a.request.patient, a.request.request_id): a.outcome.booking_id
        for a in answers
        if isinstance(a.outcome, Booked)
    }
    for a in retried:
        key = (a.request.patient, a.request.request_id)
        if key in first:
            assert isinstance(a.outcome, Booked)
            assert a.outcome.booking_id == first[key]
            assert a.outcome.repeat
    report = await audit(engine.store)
    check_against_truth(answers + retried, report)
    assert report.booked == 30 * len(specs)
    await engine.close()


@pytest.mark.timeout(600)
async def test_redis_down_mid_run_confirms_nothing_then_resumes(ray_local, settings_for, tmp_path):
    server = EmbeddedRedis(tmp_path / "outage", port=free_port()).start()
    rt = Runtime.start(settings_for(server.url, redis_timeout=0.5))
    engine = rt.engine()
    try:
        specs = catalog(hospitals=4, sessions_per_hospital=10, capacity=400)  # stock outlasts
        await create_all(engine, specs)
        requests = plan(specs, 12_000, patients=6_000, seed=seed(), repeat_rate=0.05)
        down_at = up_at = 0.0

        async def outage():
            nonlocal down_at, up_at
            await asyncio.sleep(1.0)
            down_at = time.time()
            server.stop()
            await asyncio.sleep(2.0)
            server.start()
            up_at = time.time()

        answers, _ = await asyncio.gather(play(engine, requests, submitters=16), outage())
        during = [a for a in answers if a.sent_at > down_at + 0.1 and a.answered_at < up_at]
        print("answers while down:", Counter(type(a.outcome).__name__ for a in during))
        assert during
        assert any(isinstance(a.outcome, Unavailable) for a in during)
        assert not any(isinstance(a.outcome, Booked) and not a.outcome.repeat for a in during)

        # booking resumes once Redis is back (some sessions still have stock)
        spare = helpers.spec(
            id="spare",
            hospital_id="h0",
            department_id="elsewhere",
            doctor_id="x",
            capacity=5,
            slot_minutes=5,
        )
        for _ in range(50):
            if isinstance(await engine.create_session(spare), Created):
                break
            await asyncio.sleep(0.2)
        resumed = await engine.book("spare", 77_000_001, "after-outage")
        assert isinstance(resumed, Booked), resumed

        report = await audit(engine.store)
        print(report.summary())
        check_against_truth(answers, report)
        assert resumed.booking_id in report.bookings
    finally:
        await engine.close()
        rt.stop()
        server.stop()


async def test_rules_change_reaches_loaded_shards(runtime):
    engine = runtime.engine()
    [s0, s1, s2, *_] = catalog(hospitals=1, sessions_per_hospital=6, capacity=5)
    await create_all(engine, [s0, s1, s2])
    assert isinstance(await engine.book(s0.id, 1, "a"), Booked)
    assert isinstance(await engine.set_blacklist("h0", 2, time.time() + 3600), Done)
    barred = await engine.book(s0.id, 2, "b")
    assert isinstance(barred, Blacklisted)
    assert barred.hospital_id == "h0"
    assert isinstance(await engine.set_blacklist("h0", 2, None), Done)
    assert isinstance(await engine.book(s0.id, 2, "b"), Booked)
    assert isinstance(await engine.set_policy("h0", Policy(hospital_day_limit=1)), Done)
    assert isinstance(await engine.book(s2.id, 1, "c"), HospitalDayLimit)
    assert isinstance(await engine.book("no-such-session", 1, "d"), NotFound)
    await engine.close()


async def test_moving_a_shard_fences_the_old_host(slow_timers):
    runtime = slow_timers
    engine = runtime.engine()
    [spec] = catalog(hospitals=1, sessions_per_hospital=1, capacity=3)
    await create_all(engine, [spec])
    assert isinstance(await engine.book(spec.id, 1, "a"), Booked)
    old = engine.host_of(spec.shard_id)
    new = 1 - old
    await engine.store.place(spec.shard_id, new)
    await engine.refresh_placement()
    assert engine.host_of(spec.shard_id) == new
    assert isinstance(await engine.book(spec.id, 2, "b"), Booked)  # new host loads, epoch + 1

    # the old host still has the shard in memory: its write must be refused
    stale = pickle.loads(
        await runtime.hosts[old].submit.remote(
            [(time.time_ns(), 1, spec.shard_id, spec.id, 3, request_key("c"))]
        )
    )
    assert isinstance(stale[0], Unavailable)
    assert "fenced" in stale[0].reason
    report = await audit(Store.from_url(runtime.settings.redis_url, runtime.settings.namespace))
    assert sorted(b.patient for b in report.bookings.values()) == [1, 2]
    third = await engine.book(spec.id, 3, "c")
    assert isinstance(third, Booked)
    assert third.slot_no == 3
    assert isinstance(await engine.book(spec.id, 4, "d"), SoldOut)
    await engine.close()


async def test_timers_expire_holds_and_announce_opening(runtime):
    engine = runtime.engine()
    policy = Policy(hold_seconds=1, return_jitter_seconds=0)  # the slot returns at once
    assert isinstance(await engine.set_policy("tm", policy), Done)
    opens_at = time.time() + 1.0
    spec = helpers.spec(
        id="tm-1",
        hospital_id="tm",
        department_id="tm-d",
        doctor_id="x",
        date=time.strftime("%Y-%m-%d", time.gmtime(time.time() + 7 * 86400)),  # ahead of now
        capacity=1,
        fee=500,
        opens_at=opens_at,
    )
    updates: list[tuple[str, str, int, int]] = []

    async def listen():
        async for update in engine.stock_updates():
            updates.append(update)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    await create_all(engine, [spec])
    early = await engine.book(spec.id, 1, "a")
    assert early == NotOpen(spec.id, opens_at)
    await asyncio.sleep(opens_at - time.time() + 2 * runtime.settings.tick_seconds + 0.1)
    assert ("tm-1", "open", 1, 0) in updates, "the timer announces the opening"
    held = await engine.book(spec.id, 1, "b")
    assert isinstance(held, Booked)
    assert held.status == "held"
    assert held.hold_expires_at is not None
    assert isinstance(await engine.book(spec.id, 2, "c"), SoldOut)

    await asyncio.sleep(
        held.hold_expires_at - time.time() + 2 * runtime.settings.tick_seconds + 0.3
    )
    state = await engine.session_state(spec.id)
    assert (state.remaining, state.held, state.ended, state.status) == (1, 0, 1, "open")
    # the returned slot sells again, held long enough not to expire before the test ends
    # (a 1 s hold may last ~0 s: expiry is counted in whole seconds)
    assert isinstance(
        await engine.set_policy("tm", Policy(hold_seconds=60, return_jitter_seconds=0)), Done
    )
    again = await engine.book(spec.id, 2, "c")
    assert isinstance(again, Booked)
    assert again.slot_no == 1
    assert not again.repeat
    await asyncio.sleep(0.3)
    listener.cancel()
    seen = [(status, left) for sid, status, left, _ in updates if sid == spec.id]
    versions = [v for sid, _, _, v in updates if sid == spec.id]
    assert versions == sorted(versions)
    assert versions[-1] == 3  # 2 bookings + 1 expiry
    print("published:", seen)
    expected = [("scheduled", 1), ("open", 1), ("sold_out", 0), ("open", 1), ("sold_out", 0)]
    assert seen == expected
    report = await audit(engine.store)
    assert report.ok
    assert report.held == 1
    assert report.ended == 1
    await engine.close()


async def test_reused_session_id_in_another_shard_is_a_conflict(runtime):
    engine = runtime.engine()
    [spec] = catalog(hospitals=1, sessions_per_hospital=1, capacity=2)
    await create_all(engine, [spec])
    elsewhere = helpers.spec(
        id=spec.id,
        hospital_id="other",
        department_id="x",
        doctor_id="y",
        date="2026-12-09",
        capacity=50,
        slot_minutes=5,
    )
    assert await engine.create_session(elsewhere) == Conflict("session")
    assert isinstance(await engine.create_session(spec), Created)  # the same again: fine
    assert isinstance(await engine.book(spec.id, 1, "a"), Booked)
    report = await audit(engine.store)
    assert report.sessions == 1
    assert report.capacity == 2
    await engine.close()


async def test_corrupt_snapshot_fails_only_its_shard(runtime, redis_client):
    engine = runtime.engine()
    specs = catalog(hospitals=2, sessions_per_hospital=1, capacity=2)
    await create_all(engine, specs)
    bad, good = specs
    # a restarted host meets the corrupt snapshot when it reloads
    await redis_client.set(engine.store.keys.session(bad.shard_id, bad.id), b"\x93garbage")
    host = runtime.hosts[engine.host_of(bad.shard_id)]
    before = (await host.info.remote())["started_at"]
    ray.kill(host, no_restart=False)
    for _ in range(200):  # until the restarted host answers (ray.kill does not wait)
        try:
            if (await host.info.remote())["started_at"] != before:
                break
        except ray.exceptions.RayError:
            pass
        await asyncio.sleep(0.1)
    refused = await engine.book(bad.id, 1, "a")
    assert isinstance(refused, Unavailable)
    assert "corrupt" in refused.reason
    assert isinstance(await engine.book(good.id, 1, "a"), Booked)
    await engine.close()
