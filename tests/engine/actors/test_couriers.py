"""Two couriers on the session's real local Ray and Redis (``SLOTENGINE_COURIERS=2``): the
pool starts both, each carries its own shards' outbox, and one killed while it drains is
restarted by Ray and finishes its part; every refund is paid once, money conserved."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import ray

from engine.actors.names import find_courier
from engine.backoffice.record_book import RecordBook
from engine.core.session import SessionSpec
from engine.outcomes import Booked, Created, Paid, Released
from engine.runtime import Runtime
from engine.store.outbox import Outbox, partition_of
from engine.tools.audit import audit

HOSPITALS = [f"hc{i}" for i in range(6)]
DAY = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 5 * 86400))


def spec(hospital: str) -> SessionSpec:
    return SessionSpec(
        id=f"{hospital}s",
        hospital_id=hospital,
        department_id="d1",
        doctor_id="doc1",
        date=DAY,
        period="AM",
        capacity=20,
        first_slot_minute=8 * 60,
        slot_minutes=10,
        fee=900,
    )


@pytest.mark.on_cluster
@pytest.mark.timeout(300)
async def test_a_courier_killed_mid_drain_is_restarted_and_every_refund_is_paid_once(
    ray_local, redis_client, store_url, settings_for
):
    settings = settings_for(**store_url, hosts=1, couriers=2, tick_seconds=30.0)
    specs = [spec(h) for h in HOSPITALS]
    assert {partition_of(s.shard_id, 2) for s in specs} == {0, 1}, "shards for both couriers"
    rt = await asyncio.to_thread(Runtime.start, settings)
    engine = rt.engine()
    try:
        assert len(rt.couriers) == 2
        refunds: list[str] = []
        for s in specs:
            assert isinstance(await engine.create_session(s), Created)

        async def patient(s: SessionSpec, n: int) -> None:
            who = 1000 * HOSPITALS.index(s.hospital_id) + n
            booked = await engine.book(s.id, who, f"r{n}")
            assert isinstance(booked, Booked), booked
            assert isinstance(await engine.pay(booked.booking_id, who), Paid)
            assert isinstance(await engine.release(booked.booking_id, who), Released)
            refunds.append(booked.booking_id)

        await asyncio.gather(*(patient(s, n) for s in specs for n in range(15)))
        second = find_courier(settings, 1)
        draining = asyncio.ensure_future(engine.drain_outbox())
        await asyncio.sleep(0.05)
        ray.kill(second, no_restart=False)  # Ray restarts it
        with contextlib.suppress(ray.exceptions.RayActorError):  # unless it was done already
            await asyncio.wait_for(draining, 60)
        outbox = Outbox(engine.store.client, engine.store.keys, 0, 2)
        for _ in range(120):  # until the restarted courier answers and both have drained
            try:
                await asyncio.wait_for(engine.drain_outbox(), 30)
            except ray.exceptions.RayActorError:
                await asyncio.sleep(0.5)
                continue
            if await outbox.backlog() == 0:
                break
        assert await outbox.backlog() == 0
        for booking_id in refunds:
            payment = await engine.gateway.payment(booking_id)
            assert payment is not None and payment.refunded == payment.amount == 900, booking_id
        report = await audit(engine.store)
        assert report.ok, report.problems
        assert report.outbox_pending == 0
        # each courier indexed its own hospitals' records, and only those
        keys = engine.store.keys
        for part in (0, 1):
            assert not await engine.store.client.scard(keys.changed_sessions_of(part))
            assert not await engine.store.client.scard(keys.changed_claimed_of(part))
        book = RecordBook(engine.store.client, keys)
        for booking_id in refunds:
            hospital = booking_id.rpartition(".")[0][:-1]  # "<hospital>s.<n>"
            record = await book.get(hospital, booking_id)
            assert record is not None and record.state == "cancelled", (booking_id, record)
    finally:
        await engine.close()
        await asyncio.to_thread(rt.stop)
