"""What each durability promise costs: the engine API (full design) at 64 and 256 submitters on
one master with one replica (two embedded Valkey servers on this machine), at
``SLOTENGINE_DURABILITY`` = local, replica-received and replica, as ratios against local in
the same run. ``python -m benchmarks.durability [--repeats 3] [--quick]``.

Every level's row is audited: oversold counts slots given twice and acknowledged bookings
missing from Redis (it must be 0).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import ray
import redis

from benchmarks.engine import machine, publish, variant_rows
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.embedded import EmbeddedRedis

LEVELS = ("local", "replica-received", "replica")


def linked(replica: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(replica.url)
    deadline = time.monotonic() + 30
    while client.info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            raise RuntimeError("the replica never linked to its master")
        time.sleep(0.1)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests")
    parser.add_argument("--concurrency", default="64,256")
    args = parser.parse_args()
    requests = 2_000 if args.quick else 20_000
    concurrency = [int(c) for c in args.concurrency.split(",")]
    data = Path(tempfile.mkdtemp(prefix="slotengine-durability-"))
    master = EmbeddedRedis(data / "master").start()
    replica = EmbeddedRedis(data / "replica", replica_of=master).start()
    dates = iter(range(10_000))
    rows: dict[tuple[str, int], tuple[float, float, float, int]] = {}
    try:
        linked(replica)
        server = redis.Redis.from_url(master.url).info("server")
        for level in LEVELS:
            settings = Settings.from_env(
                None,
                redis_url=master.url,
                hosts=1,
                host_cpus=1,
                data_dir=data / level,
                namespace=f"dur-{level}",
                durability=level,
                durability_wait_ms=2500,
                redis_timeout=5.0,
            )
            rt = Runtime.start(settings)
            try:
                found = variant_rows(rt, level, concurrency, args.repeats, requests, dates)
                rows.update({(level, c): row for c, row in found.items()})
            finally:
                rt.stop()
    finally:
        replica.stop()
        master.stop()

    out = [
        f"machine: {machine()}",
        f"versions: Python {platform.python_version()}, Ray {ray.__version__}, "
        f"{server.get('server_name', 'redis')} "
        f"{server.get('valkey_version', server['redis_version'])} (master and one replica, "
        f"both AOF appendfsync always, on this machine), redis-py {redis.__version__}",
        f"medians of {args.repeats} runs of {requests:,} requests; 1 host actor; the full design",
        "",
        "| durability | submitters | req/s | p50 ms | p99 ms | oversold or lost | vs local |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level in LEVELS:
        for c in concurrency:
            rate, p50, p99, bad = rows[level, c]
            out.append(
                f"| {level} | {c} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {bad} | "
                f"{rate / rows['local', c][0]:.2f}x |"
            )
    publish("durability", "\n".join(out))


if __name__ == "__main__":
    main()
