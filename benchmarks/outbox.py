"""How fast the couriers carry the outbox out, with 1 and with 3 couriers
(``SLOTENGINE_COURIERS``), as a ratio in the same run. ``python -m benchmarks.outbox
[--repeats 3] [--quick]``.

Each run writes a backlog into the shards' own outbox streams as commits leave it — one entry
a commit, each with a "confirmed" notice and a refund of a payment the sandbox gateway took —
spread over 64 shards and rung in each shard's courier's doorbell, then asks every courier to
drain at once (``Engine.drain_outbox``) until nothing is left. Every run is checked: each
notice delivered once, each refund paid once.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import tempfile
import time
from pathlib import Path

import msgpack
import ray
import redis

from benchmarks.engine import machine, median, publish
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.embedded import EmbeddedRedis
from engine.store.outbox import Outbox, partition_of
from engine.store.payments import SandboxGateway

SHARDS = 64
COURIERS = (1, 3)


async def fill(rt: Runtime, entries: int, run: int) -> list[str]:
    """The backlog of ``entries`` commits; the booking ids refunded."""
    engine = rt.engine()
    client, keys = engine.store.client, engine.store.keys
    gateway = SandboxGateway(client, keys)
    bookings = [f"r{run}x{i}.0" for i in range(entries)]
    for at in range(0, entries, 1000):
        await asyncio.gather(*(gateway.charge(b, 1, 500) for b in bookings[at : at + 1000]))
        await client.zrem(keys.pending_payments, *bookings[at : at + 1000])  # not reconciled
    couriers = rt.settings.couriers
    async with client.pipeline(transaction=False) as pipe:
        for i, booking_id in enumerate(bookings):
            shard = f"bench{run}-{i % SHARDS}:2031-01-01"
            events = [
                ["notice", "confirmed", 1, booking_id, booking_id[:-2], 1000.0, {}],
                ["refund", booking_id, 1, 500, "cancelled"],
            ]
            pipe.sadd(keys.shards, shard)
            pipe.xadd(keys.shard_outbox(shard), {"e": msgpack.packb(events)})
            pipe.zincrby(keys.outbox_doorbell(partition_of(shard, couriers)), 1, shard)
        await pipe.execute()
    await engine.close()
    return bookings


async def drain(rt: Runtime, bookings: list[str]) -> float:
    engine = rt.engine()
    outbox = Outbox(engine.store.client, engine.store.keys, 0, rt.settings.couriers)
    started = time.perf_counter()
    while True:
        await engine.drain_outbox()
        if await outbox.backlog(everywhere=False) == 0:
            break
    seconds = time.perf_counter() - started
    gateway = SandboxGateway(engine.store.client, engine.store.keys)
    for at in range(0, len(bookings), 1000):
        payments = await asyncio.gather(*(gateway.payment(b) for b in bookings[at : at + 1000]))
        wrong = [p for p in payments if p is None or p.refunded != 500]
        assert not wrong, f"refunds not paid exactly once: {wrong[:3]}"
    await engine.close()
    return seconds


def drain_rates(
    url: str, data: Path, repeats: int, entries: int, cluster: bool = False
) -> dict[int, list[float]]:
    """Entries drained per second, by the number of couriers (``COURIERS``), one run a
    repeat, each on a fresh backlog."""
    rates: dict[int, list[float]] = {n: [] for n in COURIERS}
    runs = iter(range(1000))
    for n in COURIERS:
        settings = Settings.from_env(
            None,
            redis_url=url,
            redis_cluster=cluster,
            hosts=1,
            host_cpus=0.5,
            couriers=n,
            data_dir=data / f"c{n}",
            namespace=f"outbox-{n}",
            tick_seconds=3600.0,  # the benchmark drains; the couriers' timers stay out
        )
        rt = Runtime.start(settings)
        try:
            for _ in range(repeats):
                bookings = asyncio.run(fill(rt, entries, next(runs)))
                seconds = asyncio.run(drain(rt, bookings))
                rates[n].append(entries / seconds)
                print(f"  {n} couriers: {entries / seconds:>9,.0f} entries/s")
        finally:
            rt.stop()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the entries")
    args = parser.parse_args()
    entries = 2_000 if args.quick else 20_000
    data = Path(tempfile.mkdtemp(prefix="slotengine-outbox-"))
    server = EmbeddedRedis(data / "redis").start()
    try:
        info = redis.Redis.from_url(server.url).info("server")
        rates = drain_rates(server.url, data, args.repeats, entries)
    finally:
        server.stop()
    base = median(rates[COURIERS[0]])
    out = [
        f"machine: {machine()}",
        f"versions: Python {platform.python_version()}, Ray {ray.__version__}, "
        f"{info.get('server_name', 'redis')} {info.get('valkey_version', info['redis_version'])}"
        f", redis-py {redis.__version__}",
        f"medians of {args.repeats} runs; {entries:,} outbox entries (a notice and a refund "
        f"each) over {SHARDS} shards; every notice delivered once, every refund paid once",
        "",
        "| couriers | entries/s | vs 1 courier |",
        "| ---: | ---: | ---: |",
    ]
    for n in COURIERS:
        out.append(f"| {n} | {median(rates[n]):,.0f} | {median(rates[n]) / base:.2f}x |")
    publish("outbox", "\n".join(out))


if __name__ == "__main__":
    main()
