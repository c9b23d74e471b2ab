"""Scale-out benchmark: placement moves and failover on a real multi-node Ray cluster.

    python -m benchmarks.scale [--repeats 3]

(a) shards moved when 4 hosts become 5, rendezvous placement against a modulo hash (pure);
(b) seconds from a worker node killed outright (its processes with it) to every shard booking
    again, with the hosts' leases against Ray's own detection alone (leases that never lapse:
    the shard waits for Ray to notice the node's death and restart its host on a spare node),
    medians of ``--repeats``. The cluster is ``ray.cluster_utils.Cluster`` on this machine:
    a head without host places and three worker nodes of one place each (two hosts, a spare).
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
    each = {k: ", ".join(f"{t:.1f}" for t in v) for k, v in times.items()}
    print(f"\n(b) each run, seconds: leases {each[True]}; Ray alone {each[False]}")


if __name__ == "__main__":
    main()
