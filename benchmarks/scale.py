"""Scale-out benchmark: placement moves and failover on a real multi-node Ray cluster.

    python -m benchmarks.scale [--repeats 3]

(a) shards moved when 4 hosts become 5, rendezvous placement against a modulo hash (pure);
(b) seconds from a worker node killed outright (its processes with it) to every shard booking
    again, with the hosts' leases against Ray's own detection alone (leases that never lapse:
    the shard waits for Ray to notice the node's death and restart its host on a spare node),
    medians of ``--repeats``. The cluster is ``ray.cluster_utils.Cluster`` on this machine:
    a head without host places and three worker nodes of one place each (two hosts, a spare);
(c) booking throughput (requests answered per 250 ms, 64 closed-loop submitters) while a
    quarter of the shards (4 of 16) are handed over to other hosts: the deepest dip against
    the median before, and how long until it is back to 90%;
(d) requests answered per second with 1, 2 and 4 hosts on one node of this machine.
On 2 cores the driver, Redis and the hosts share the machine: (d) shows what one machine
allows, not how a cluster of machines scales (each host there has cores of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import statistics
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from benchmarks.engine import machine
from engine.core.placement import default_host
from engine.outcomes import Booked, Created
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.embedded import EmbeddedRedis
from engine.tools.crowd import catalog

PLACE = "bench_host"
SHARDS = [f"h{h}:2031-01-{d:02d}" for h in range(1000) for d in range(1, 11)]  # 10,000


def moved(place) -> float:
    return sum(place(s, 4) != place(s, 5) for s in SHARDS) / len(SHARDS)


def modulo(shard_id: str, hosts: int) -> int:
    return zlib.crc32(shard_id.encode()) % hosts  # the placement before rendezvous


async def failover(cluster: Cluster, url: str, leases: bool, run: int) -> float:
    """Seconds from the kill to the first booking on every shard after it."""
    nodes = [cluster.add_node(num_cpus=1, resources={PLACE: 1}) for _ in range(3)]
    settings = Settings.from_env(
        None,
        redis_url=url,
        hosts=2,
        host_cpus=0.5,
        host_resource=PLACE,
        namespace=f"scale{run}{'l' if leases else 'r'}",
        data_dir=Path(tempfile.mkdtemp()),
        lease_seconds=1.5 if leases else 3600.0,
    )
    rt = Runtime.start(settings)
    engine = rt.engine()
    try:
        specs = catalog(hospitals=6, sessions_per_hospital=1, capacity=1000, prefix=f"s{run}")
        specs = [dataclasses.replace(s, id=f"{s.id}-{run}") for s in specs]
        created = await asyncio.gather(*(engine.create_session(s) for s in specs))
        assert all(isinstance(c, Created) for c in created), created
        for k, s in enumerate(specs):  # warm: every shard loaded on its host
            assert isinstance(await engine.book(s.id, k, f"warm-{k}"), Booked)
        leases_now = await engine.store.leases(2)
        carried = Counter(engine.host_of(s.shard_id) for s in specs)
        index = carried.most_common(1)[0][0]  # the host with the most shards dies
        holder = leases_now[index][0]
        victim = next(n for n in nodes if n.node_id == holder["node_id"])
        killed_at = time.monotonic()
        cluster.remove_node(victim, allow_graceful=False)
        with contextlib.suppress(ProcessLookupError):
            os.kill(holder["pid"], signal.SIGKILL)

        async def back(spec) -> float:
            n = 0
            while time.monotonic() - killed_at < 120:
                n += 1
                outcome = await engine.book(spec.id, 10_000 + n, f"p-{n}")
                if isinstance(outcome, Booked):
                    return time.monotonic() - killed_at
                await asyncio.sleep(0.05)
            return float("inf")

        return max(await asyncio.gather(*(back(s) for s in specs)))
    finally:
        await engine.close()
        rt.stop()
        for node in list(cluster.worker_nodes):
            cluster.remove_node(node, allow_graceful=False)


async def crowd(engine, specs, seconds: float, submitters: int = 64, during=None) -> list[float]:
    """Closed-loop bookings for ``seconds``: each answer's time since the start. ``during``:
    a coroutine function run alongside, given the start time."""
    import random

    rng = random.Random(7)
    stamps: list[float] = []
    started = time.monotonic()
    patients = iter(range(1_000_000, 100_000_000))

    async def submitter() -> None:
        while time.monotonic() - started < seconds:
            s = rng.choice(specs)
            patient = next(patients)
            await engine.book(s.id, patient, f"r{patient}")
            stamps.append(time.monotonic() - started)

    tasks = [submitter() for _ in range(submitters)]
    if during is not None:
        tasks.append(during(started))
    await asyncio.gather(*tasks)
    return stamps


def pool_settings(url: str, hosts: int, name: str) -> Settings:
    return Settings.from_env(
        None,
        redis_url=url,
        hosts=hosts,
        host_cpus=0.25,
        host_resource=PLACE,
        namespace=name,
        data_dir=Path(tempfile.mkdtemp()),
    )


async def open_sessions(engine, run: str, hospitals: int = 16):
    specs = catalog(hospitals=hospitals, sessions_per_hospital=8, capacity=1000, prefix=run)
    created = await asyncio.gather(*(engine.create_session(s) for s in specs))
    assert all(isinstance(c, Created) for c in created), created
    for k, s in enumerate(specs[::8]):  # warm: every shard loaded on its host
        assert isinstance(await engine.book(s.id, k, f"warm-{k}"), Booked)
    return specs


BUCKET = 0.25


async def rebalance(url: str, run: int) -> tuple[float, float, float, float]:
    """(median req/s before, lowest 250 ms bucket during, dip, seconds until back to 90%)."""
    rt = Runtime.start(pool_settings(url, 4, f"rebal{run}"))
    engine = rt.engine()
    try:
        specs = await open_sessions(engine, f"rb{run}")
        shards = sorted({s.shard_id for s in specs})
        moves = shards[::4]  # a quarter of them, each to the next host
        move_at = 3.0

        async def move_quarter(started: float) -> None:
            await asyncio.sleep(move_at)
            await asyncio.gather(*(engine.move(sh, (engine.host_of(sh) + 1) % 4) for sh in moves))

        stamps = await crowd(engine, specs, 8.0, during=move_quarter)
    finally:
        await engine.close()
        rt.stop()
    buckets = Counter(int(t / BUCKET) for t in stamps)
    rate = {b: n / BUCKET for b, n in buckets.items()}
    first = int(move_at / BUCKET)
    before = statistics.median(rate.get(b, 0.0) for b in range(2, first))  # past warm-up
    after = [rate.get(b, 0.0) for b in range(first, int(8.0 / BUCKET))]
    low = min(after)
    recovered = next(
        (i for i in range(len(after)) if all(r >= 0.9 * before for r in after[i : i + 2])),
        len(after),
    )
    return before, low, 1 - low / before, recovered * BUCKET


async def hosts_rate(url: str, hosts: int, run: int) -> float:
    rt = Runtime.start(pool_settings(url, hosts, f"hosts{hosts}r{run}"))
    engine = rt.engine()
    try:
        specs = await open_sessions(engine, f"hr{hosts}{run}")
        await crowd(engine, specs, 1.0)  # warm-up
        stamps = await crowd(engine, specs, 4.0)
    finally:
        await engine.close()
        rt.stop()
    return len(stamps) / 4.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rendezvous, mod = moved(default_host), moved(modulo)

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    ray.init(address=cluster.address, log_to_driver=False)
    times: dict[bool, list[float]] = {True: [], False: []}
    with EmbeddedRedis(Path(tempfile.mkdtemp()) / "redis") as redis_server:
        for run in range(args.repeats):
            for leases in (True, False):
                seconds = asyncio.run(failover(cluster, redis_server.url, leases, run))
                times[leases].append(seconds)
                print(f"run {run + 1}: {'leases' if leases else 'Ray alone'}: {seconds:.1f} s")
        node = cluster.add_node(num_cpus=2, resources={PLACE: 4})  # (c) and (d): one node
        dips = []
        for run in range(args.repeats):
            dips.append(asyncio.run(rebalance(redis_server.url, run)))
            print(
                "run {}: rebalance: {:.0f} req/s before, {:.0f} lowest, dip {:.0%}, "
                "back in {:.2f} s".format(run + 1, *dips[-1])
            )
        rates: dict[int, list[float]] = {1: [], 2: [], 4: []}
        for run in range(args.repeats):
            for hosts in rates:
                rates[hosts].append(asyncio.run(hosts_rate(redis_server.url, hosts, run)))
                print(f"run {run + 1}: {hosts} hosts: {rates[hosts][-1]:.0f} req/s")
        cluster.remove_node(node)
    ray.shutdown()
    cluster.shutdown()

    lease_s, ray_s = statistics.median(times[True]), statistics.median(times[False])
    print(f"\nmachine: {machine()}")
    print(f"Ray {ray.__version__}; a head and 3 worker nodes of 1 host place each on this machine")
    print("\n| measure | slotengine | baseline | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| (a) shards moved, 4 hosts -> 5 (10,000 shards) | rendezvous {rendezvous:.1%} "
        f"| modulo {mod:.1%} | {mod / rendezvous:.1f}x fewer |"
    )
    print(
        f"| (b) node killed -> every shard booking again, median of {args.repeats} "
        f"| leases {lease_s:.1f} s | Ray's detection alone {ray_s:.1f} s "
        f"| {ray_s / lease_s:.1f}x sooner |"
    )
    before = statistics.median(d[0] for d in dips)
    dip = statistics.median(d[2] for d in dips)
    back = statistics.median(d[3] for d in dips)
    print(
        f"| (c) rebalance of 4 of 16 shards under 64 submitters, median of {args.repeats} "
        f"| dip {dip:.0%} of {before:,.0f} req/s, back to 90% in {back:.2f} s "
        f"| no move: 0% | - |"
    )
    one = statistics.median(rates[1])
    for hosts, values in rates.items():
        print(
            f"| (d) requests/s, {hosts} host(s) on one node, median of {args.repeats} "
            f"| {statistics.median(values):,.0f} | 1 host {one:,.0f} "
            f"| {statistics.median(values) / one:.2f}x |"
        )
    each = {k: ", ".join(f"{t:.1f}" for t in v) for k, v in times.items()}
    print(f"\n(b) each run, seconds: leases {each[True]}; Ray alone {each[False]}")


if __name__ == "__main__":
    main()
