"""Write a data folder with a release's own code (run with that release first on the path):

    git worktree add /tmp/prev <commit>
    PYTHONPATH=/tmp/prev python tests/data/make_previous_release.py OUT

It starts that release's runtime on an embedded Redis in OUT, books, pays, cancels (a refund),
bans, blacklists and pins a shard, lets its courier deliver the notices and the refund, and
stops; OUT/redis/appendonlydir is what ``tests/engine/store/test_layout.py`` upgrades. The
visit date is fixed in the past's future: nothing is decided again when it is read.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import ray

from engine.core.session import SessionSpec
from engine.outcomes import Booked, Created, Done, Paid, Released
from engine.runtime import Runtime
from engine.settings import Settings


async def fill(rt: Runtime) -> None:
    engine = rt.engine()
    spec = SessionSpec(
        id="prev1",
        hospital_id="h1",
        department_id="d1",
        doctor_id="doc1",
        date=time.strftime("%Y-%m-%d", time.gmtime(time.time() + 3 * 86400)),
        period="AM",
        capacity=5,
        first_slot_minute=8 * 60,
        slot_minutes=10,
        fee=1500,
    )
    assert isinstance(await engine.create_session(spec), Created)
    paid = []
    for patient in (1, 2, 3):
        booked = await engine.book(spec.id, patient, f"r{patient}")
        assert isinstance(booked, Booked), booked
        if patient < 3:
            assert isinstance(await engine.pay(booked.booking_id, patient), Paid)
            paid.append(booked.booking_id)
    assert isinstance(await engine.release(paid[1], 2), Released)  # a refund through the outbox
    assert isinstance(await engine.set_blacklist("h1", 9, time.time() + 30 * 86400), Done)
    assert isinstance(await engine.set_blacklist("platform", 8, time.time() + 30 * 86400), Done)
    keys = engine.store.keys
    await engine.store.client.hset(keys.patient_list("h1", "blacklist"), "9", b'{"reason":"x"}')
    await engine.store.place(spec.shard_id, 0)
    for _ in range(20):  # the courier: notices, the refund, the records
        await asyncio.to_thread(ray.get, rt.courier.drain.remote())
        if not await engine.store.client.xlen(keys.outbox):
            break
        await asyncio.sleep(0.2)
    await engine.close()


def main(out: str) -> None:
    settings = Settings.from_env({}, data_dir=Path(out), namespace="prev", hosts=1, host_cpus=0.5)
    rt = Runtime.start(settings)
    try:
        asyncio.run(fill(rt))
    finally:
        rt.stop()


if __name__ == "__main__":
    main(sys.argv[1])
