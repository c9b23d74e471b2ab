"""One Redis against a Redis Cluster, and what each durability promise costs there: the engine
API (the full design) at 64 and 256 submitters on one embedded Redis and on a local cluster
of 3 masters and 3 replicas (``SLOTENGINE_REDIS_CLUSTER``), at ``durability`` local and
replica, as ratios against one Redis in the same run; then the outbox drain on the cluster
with 1 and with 3 couriers. ``python -m benchmarks.cluster [--repeats 3] [--quick]``.

Every node runs on this one 2-core machine (the cluster's six servers share the cores with
Ray and the benchmark), so the cluster rows measure the cost of the cluster's code path and
its extra round trips, not what separate machines would add. Every row is audited: oversold
counts slots given twice and acknowledged bookings missing from Redis (it must be 0); every
outbox run checks each notice delivered once and each refund paid once.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import ray
import redis

from benchmarks.engine import machine, median, publish, variant_rows
from benchmarks.outbox import COURIERS, SHARDS, drain_rates
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.embedded import EmbeddedRedis
from engine.store.local_cluster import LocalCluster

# (label, on the cluster, durability)
ROWS = (
    ("one Redis, local", False, "local"),
    ("cluster 3+3, local", True, "local"),
    ("cluster 3+3, replica", True, "replica"),
)


def requests_of(args) -> int:
    return 2_000 if args.quick else 20_000


def engine_rows(args, single_url: str, cluster_url: str, data: Path) -> dict:
    requests = requests_of(args)
    dates = iter(range(10_000))
    rows: dict[tuple[str, int], tuple[float, float, float, int]] = {}
    for label, on_cluster, level in ROWS:
        settings = Settings.from_env(
            None,
            redis_url=cluster_url if on_cluster else single_url,
            redis_cluster=on_cluster,
            hosts=1,
            host_cpus=1,
            data_dir=data / label.replace(" ", "").replace(",", "-"),
            namespace=f"cl-{next(dates)}",
            durability=level,
            durability_wait_ms=2500,
            redis_timeout=5.0,
        )
        rt = Runtime.start(settings)
        try:
            found = variant_rows(rt, label, args.concurrency, args.repeats, requests, dates)
            rows.update({(label, c): row for c, row in found.items()})
        finally:
            rt.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests")
    parser.add_argument(
        "--concurrency", default="64,256", type=lambda s: [int(c) for c in s.split(",")]
    )
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="slotengine-cluster-bench-"))
    with (
        EmbeddedRedis(data / "single") as single,
        LocalCluster(data / "cluster") as cluster,
    ):
        server = redis.Redis.from_url(single.url).info("server")
        rows = engine_rows(args, single.url, cluster.url, data)
        rates = drain_rates(cluster.url, data / "outbox", args.repeats, requests_of(args), True)

    requests = requests_of(args)
    out = [
        f"machine: {machine()}",
        f"versions: Python {platform.python_version()}, Ray {ray.__version__}, "
        f"{server.get('server_name', 'redis')} "
        f"{server.get('valkey_version', server['redis_version'])} (every node AOF appendfsync "
        f"always, all on this machine), redis-py {redis.__version__}",
        f"medians of {args.repeats} runs of {requests:,} requests; 1 host actor; the full design",
        "",
        "| store, durability | submitters | req/s | p50 ms | p99 ms | oversold or lost "
        "| vs one Redis |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, _, _ in ROWS:
        for c in args.concurrency:
            rate, p50, p99, bad = rows[label, c]
            base = rows[ROWS[0][0], c][0]
            out.append(
                f"| {label} | {c} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {bad} | "
                f"{rate / base:.2f}x |"
            )
    base = median(rates[COURIERS[0]])
    out += [
        "",
        f"outbox drain on the cluster: {requests:,} entries (a notice and a refund each) over "
        f"{SHARDS} shards, medians of {args.repeats}; each notice once, each refund once",
        "",
        "| couriers | entries/s | vs 1 courier |",
        "| ---: | ---: | ---: |",
    ]
    for n in COURIERS:
        out.append(f"| {n} | {median(rates[n]):,.0f} | {median(rates[n]) / base:.2f}x |")
    publish("cluster", "\n".join(out))


if __name__ == "__main__":
    main()
