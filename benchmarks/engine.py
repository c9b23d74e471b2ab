"""Engine benchmark: one command, one table (README "Benchmarks").

    python -m benchmarks.engine [--repeats 3] [--quick]

(a) core decisions/s in-process; (b) booking requests/s and p50/p99 from concurrent asyncio
submitters through the engine API, three ways side by side: the full design (mailboxes + group
commit), one Ray call and one Redis write per request, and the seed's Redis answer (one EVALSHA
"decrement stock if positive, push the patient" per request); (c) bytes per 30-slot
doctor-session in memory and in Redis over 10,000 sessions; (d) seconds for a host to reload a
shard of 500 sessions. Every variant's result is audited for oversell.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import platform
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import msgpack
import ray
import redis
import redis.asyncio as aioredis

from benchmarks.apps import LUA as LUA_BOOK
from engine.core.session import SessionSpec
from engine.core.shard import Shard
from engine.outcomes import Blacklisted, Booked
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.shards import ShardWrite, Store
from engine.tools.audit import audit
from engine.tools.crowd import Answer, CrowdRequest, catalog, plan, play


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


# ----- (a) the core in-process -------------------------------------------------------------


def shard_with(specs: list[SessionSpec]) -> Shard:
    shard = Shard(specs[0].shard_id, specs[0].hospital_id, specs[0].date)
    for s in specs:
        shard.create(s)
    shard.take_changes()
    return shard


def core_rate(specs: list[SessionSpec], requests: list[CrowdRequest]) -> float:
    from engine.client import request_key

    shard = shard_with(specs)
    items = [(r.session_id, r.patient, request_key(r.request_id)) for r in requests]
    book, now = shard.book, time.time()
    started = time.perf_counter()
    for session_id, patient, key in items:
        book(session_id, patient, key, now)
    return len(items) / (time.perf_counter() - started)


def bench_core(repeats: int, scale: float) -> list[tuple[str, float]]:
    crowd_specs = catalog(hospitals=1, sessions_per_hospital=50, capacity=30)
    n = int(200_000 * scale)
    crowd = plan(crowd_specs, n, patients=n // 8, seed=1)
    n = int(100_000 * scale)
    open_specs = catalog(hospitals=1, sessions_per_hospital=n // 30 + 1, capacity=30)
    fresh = [  # every request a new patient on a session with stock: every decision books
        CrowdRequest(open_specs[i // 30].id, i, f"o{i}") for i in range(n)
    ]
    return [
        (
            "flash crowd mix (50 sessions x 30, 8 requests/patient)",
            median([core_rate(crowd_specs, crowd) for _ in range(repeats)]),
        ),
        (
            "every decision takes a slot (new patients, sessions x 30)",
            median([core_rate(open_specs, fresh) for _ in range(repeats)]),
        ),
    ]


# ----- (b) through the engine API ----------------------------------------------------------


def crowd_for(requests: int, date: str) -> tuple[list[SessionSpec], list[CrowdRequest]]:
    """A flash crowd with the same shape at any size: 7.5% as many slots as requests."""
    hospitals = max(1, requests // 4000)
    specs = catalog(hospitals=hospitals, sessions_per_hospital=10, capacity=30, date=date)
    return specs, plan(specs, requests, patients=requests // 8, seed=hash(date) & 0xFFFF)


def latency_row(answers: list[Answer], seconds: float) -> tuple[float, float, float]:
    lat = [a.answered_at - a.sent_at for a in answers]
    return len(answers) / seconds, percentile(lat, 0.5) * 1e3, percentile(lat, 0.99) * 1e3


async def run_engine_variant(rt: Runtime, batched: bool, submitters: int, n: int, date: str):
    engine = rt.engine(batched=batched)
    specs, requests = crowd_for(n, date)
    await asyncio.gather(*(engine.create_session(s) for s in specs))
    started = time.perf_counter()
    answers = await play(engine, requests, submitters)
    seconds = time.perf_counter() - started
    report = await audit(engine.store)
    oversold = len(report.problems) + sum(
        max(0, report.live_per_session.get(s.id, 0) - s.capacity) for s in specs
    )
    booked = {a.outcome.booking_id for a in answers if isinstance(a.outcome, Booked)}
    assert not any(isinstance(a.outcome, Blacklisted) for a in answers), "a crowd was banned"
    missing = sum(1 for b in booked if b not in report.bookings)
    await engine.close()
    return (*latency_row(answers, seconds), oversold + missing)


def variant_rows(
    rt: Runtime, label: str, concurrency: list[int], repeats: int, requests: int, dates
) -> dict[int, tuple[float, float, float, int]]:
    """``run_engine_variant`` (the full design) ``repeats`` times at each concurrency, each run
    on a fresh date from ``dates``: by submitters, the medians (req/s, p50, p99) and the
    oversold or lost bookings of all runs."""
    rows = {}
    for c in concurrency:
        results = []
        for _ in range(repeats):
            day = datetime.date(2030, 1, 1) + datetime.timedelta(days=next(dates))
            results.append(asyncio.run(run_engine_variant(rt, True, c, requests, day.isoformat())))
        rows[c] = (
            median([r[0] for r in results]),
            median([r[1] for r in results]),
            median([r[2] for r in results]),
            sum(r[3] for r in results),
        )
        print(f"  {label:<22} {c:>4} submitters {rows[c][0]:>9,.0f} req/s")
    return rows


async def run_lua_variant(url: str, submitters: int, n: int, date: str):
    client = aioredis.Redis.from_url(url, max_connections=submitters + 4)
    sha = await client.script_load(LUA_BOOK)
    specs, requests = crowd_for(n, date)
    for s in specs:
        await client.set(f"lua:{s.id}:stock", s.capacity)
    answers: list[Answer] = []

    async def submitter(share: list[CrowdRequest]) -> None:
        for r in share:
            sent = time.time()
            left = await client.evalsha(
                sha, 2, f"lua:{r.session_id}:stock", f"lua:{r.session_id}:patients", r.patient
            )
            answers.append(Answer(r, left, sent, time.time()))

    started = time.perf_counter()
    await asyncio.gather(*(submitter(requests[i::submitters]) for i in range(submitters)))
    seconds = time.perf_counter() - started
    oversold = 0
    for s in specs:
        left = int(await client.get(f"lua:{s.id}:stock"))
        pushed = await client.llen(f"lua:{s.id}:patients")
        oversold += max(0, pushed - s.capacity) + (left < 0) + (left + pushed != s.capacity)
    await client.aclose()
    return (*latency_row(answers, seconds), oversold)


def bench_api(rt: Runtime, repeats: int, scale: float, concurrency: list[int]):
    rows = []
    counter = iter(range(10_000))

    def date() -> str:  # a fresh visit date (so fresh shards) for every run
        return (datetime.date(2030, 1, 1) + datetime.timedelta(days=next(counter))).isoformat()

    async def go():
        for c in concurrency:
            variants: dict[str, Callable[[], object]] = {
                "full design (mailboxes + group commit)": lambda c=c: run_engine_variant(
                    rt, True, c, int(20_000 * scale), date()
                ),
                "one Ray call + one Redis write per request": lambda c=c: run_engine_variant(
                    rt, False, c, int(4_000 * scale), date()
                ),
                "Redis Lua script per request (seed)": lambda c=c: run_lua_variant(
                    rt.settings.redis_url, c, int(20_000 * scale), date()
                ),
            }
            for name, make in variants.items():
                results = [await make() for _ in range(repeats)]
                rows.append(
                    (
                        c,
                        name,
                        median([r[0] for r in results]),
                        median([r[1] for r in results]),
                        median([r[2] for r in results]),
                        sum(r[3] for r in results),
                    )
                )
                print(f"  {c:>4} submitters  {name:<44} {rows[-1][2]:>9,.0f} req/s", flush=True)

    asyncio.run(go())
    return rows


# ----- (c) memory and (d) reload -----------------------------------------------------------


def full_sessions(count: int, per_shard: int, date: str = "2031-01-01") -> list[Shard]:
    shards = []
    for h in range(count // per_shard):
        specs = catalog(hospitals=1, sessions_per_hospital=per_shard, capacity=30, date=date)
        specs = [
            SessionSpec(**{**_spec_fields(s), "id": f"m{h}-{s.id}", "hospital_id": f"m{h}"})
            for s in specs
        ]
        shard = Shard(specs[0].shard_id, f"m{h}", date)  # every patient books once: no limit
        for s in specs:
            shard.create(s)
        shards.append(shard)
    return shards


def _spec_fields(spec: SessionSpec) -> dict:
    return {f: getattr(spec, f) for f in SessionSpec.__dataclass_fields__}


def fill(shards: list[Shard]) -> None:
    patient = 10_000_000
    for shard in shards:
        for s in shard.sessions.values():
            for _ in range(s.spec.capacity):
                patient += 7
                shard.book(s.id, patient, patient * 31, time.time())
            shard.take_changes()  # as the host does after every batch


async def redis_bytes(store: Store, shards: list[Shard]) -> float:
    writes = []
    for shard in shards:
        epoch, _ = await store.activate(shard.id, shard.hospital_id, shard.date)
        shard.take_changes()
        writes.append(
            ShardWrite(
                shard.id,
                shard.hospital_id,
                epoch,
                list(shard.sessions.values()),
                list(shard.sessions),
            )
        )
    for i in range(0, len(writes), 20):
        assert await store.commit(writes[i : i + 20]) == [None] * len(writes[i : i + 20])
    keys = [store.keys.session(sh.id, sid) for sh in shards for sid in sh.sessions]
    total = 0
    async with store.client.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.memory_usage(k, samples=0)
        total = sum(await pipe.execute())
    return total / len(keys)


def bench_memory(url: str, sessions: int) -> list[tuple[str, float, float]]:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    shards = full_sessions(sessions, 50)
    empty = (tracemalloc.get_traced_memory()[0] - base) / sessions
    fill(shards)
    full = (tracemalloc.get_traced_memory()[0] - base) / sessions
    tracemalloc.stop()

    async def go():
        results = []
        for label, shard_set in (
            ("empty", full_sessions(sessions, 50, "2031-02-01")),
            ("full", shards),
        ):
            store = Store.from_url(url, f"mem-{label}")
            results.append(await redis_bytes(store, shard_set))
            await store.client.flushdb()
            await store.close()
        return results

    redis_empty, redis_full = asyncio.run(go())
    return [
        ("empty (just released)", empty, redis_empty),
        ("full (30 of 30 booked)", full, redis_full),
    ]


def bench_reload(url: str, repeats: int) -> float:
    async def go():
        store = Store.from_url(url, "reload")
        [shard] = full_sessions(500, 500, "2031-03-01")
        fill([shard])
        await redis_bytes(store, [shard])
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            _, loaded = await store.activate(shard.id, shard.hospital_id, shard.date)
            times.append(time.perf_counter() - started)
            assert (
                len(loaded.sessions) == 500
                and sum(s.booked for s in loaded.sessions.values()) == 15_000
            )
        await store.close()
        return median(times)

    return asyncio.run(go())


# ----- the table ---------------------------------------------------------------------------


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    system = f"{platform.system()} {platform.release()}"
    return f"{platform.machine()} {cpu}, {os.cpu_count()} cores, {system}"


def publish(name: str, table: str) -> None:
    """Print a benchmark's table and keep it in ``benchmarks/results/<name>.md``."""
    print()
    print(table)
    results = Path("benchmarks/results")
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.md").write_text(table + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests")
    parser.add_argument("--concurrency", default="8,64,256")
    args = parser.parse_args()
    scale = 0.1 if args.quick else 1.0
    concurrency = [int(c) for c in args.concurrency.split(",")]

    settings = Settings.from_env(
        None,
        hosts=1,
        host_cpus=1,
        data_dir=Path(tempfile.mkdtemp(prefix="slotengine-bench-")),
        namespace="bench",
    )
    print("(a) core ...", flush=True)
    core = bench_core(args.repeats, scale)
    rt = Runtime.start(settings)
    try:
        url = rt.settings.redis_url
        server = redis.Redis.from_url(url).info("server")
        print("(b) engine API ...", flush=True)
        api = bench_api(rt, args.repeats, scale, concurrency)
        print("(c) memory ...", flush=True)
        sessions = int(10_000 * scale)
        memory = bench_memory(url, sessions)
        print("(d) reload ...", flush=True)
        reload_seconds = bench_reload(url, max(3, args.repeats))
    finally:
        rt.stop()

    out = []
    out.append(f"machine: {machine()}")
    out.append(
        f"versions: Python {platform.python_version()}, Ray {ray.__version__}, "
        f"{server.get('server_name', 'redis')} "
        f"{server.get('valkey_version', server['redis_version'])} "
        f"(AOF appendfsync {settings.redis_appendfsync}), redis-py {redis.__version__}, "
        f"msgpack {'.'.join(map(str, msgpack.version))}"
    )
    out.append(
        f"medians of {args.repeats} runs; 1 host actor; "
        "submitters are closed-loop asyncio tasks in one driver"
    )
    out.append("")
    out.append("| (a) core, in-process | decisions/s |")
    out.append("| --- | ---: |")
    out.extend(f"| {name} | {rate:,.0f} |" for name, rate in core)
    out.append("")
    out.append(
        "| (b) submitters | variant | req/s | p50 ms | p99 ms | oversold | vs one-call | vs Lua |"
    )
    out.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in concurrency:
        mine = [r for r in api if r[0] == c]
        full, single, lua = mine[0][2], mine[1][2], mine[2][2]
        for _, name, rate, p50, p99, bad in mine:
            out.append(
                f"| {c} | {name} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {bad} | "
                f"{rate / single:.1f}x | {rate / lua:.2f}x |"
            )
        del full
    out.append("")
    out.append(
        f"| (c) bytes per 30-slot doctor-session, {sessions:,} sessions | in memory | in Redis |"
    )
    out.append("| --- | ---: | ---: |")
    out.extend(f"| {label} | {mem:,.0f} | {red:,.0f} |" for label, mem, red in memory)
    out.append("")
    out.append(
        f"(d) reload of a 500-session shard (15,000 bookings) by a host: {reload_seconds:.3f} s"
    )
    publish("engine", "\n".join(out))


if __name__ == "__main__":
    main()
