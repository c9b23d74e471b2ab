"""Back-office benchmark: record queries and CSV export over a million stored bookings, and the
HIS delivery drain rate (README "Benchmarks").

    python -m benchmarks.records [--records 1000000] [--repeats 15] [--deliveries 5000]

On a real embedded Redis (AOF ``everysec``: reads do not care) in a temp folder:

(a) loads ``--records`` booking records through ``RecordBook.put`` (the indexer's own write
    path) for 20 hospitals over 60 days, one hospital a quarter of them (a big 三甲 hospital:
    ~4,000 bookings a day); reports the load rate and Redis memory per record;
(b) times record pages (50 rows) of typical back-office filters, medians and p95 of
    ``--repeats``; the baseline, measured in the same run, is the obvious design without
    indexes: scan every record and filter (timed once);
(c) times the full-day CSV export of the big hospital through the API's own CSV writer, and
    the analytics report of its 60 days from the daily tallies (as the API does), against
    reading and summarising every record (the baseline; both give the same figures);
(d) the HIS drain rate: ``--deliveries`` bookings asked of a simulated HIS (its own HTTP
    process, ``api/his_sim.py``) and carried out by ``Deliveries.run`` with 32 calls in flight,
    against one call at a time (the baseline), with the HIS answering at once and with 20 ms
    of latency.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import httpx
import msgpack
import redis.asyncio as aioredis
from redis import __version__ as redis_version

from api.answers import LocalTime
from api.routers.back_office import csv_rows
from benchmarks.engine import machine, percentile
from engine.backoffice import deliveries as delivery
from engine.backoffice.analytics import summarize
from engine.backoffice.deliveries import Deliveries
from engine.backoffice.egress import Egress
from engine.backoffice.record import Record
from engine.backoffice.record_book import RecordBook, RecordQuery
from engine.store.embedded import EmbeddedRedis, free_port
from engine.store.keys import Keys

ZONE = ZoneInfo("Asia/Shanghai")
HOSPITALS = 20
DAYS = 60
STATES = ["checked_in"] * 70 + ["no_show"] * 15 + ["cancelled"] * 10 + ["booked"] * 5


def generate(n: int, seed: int = 7) -> list[Record]:
    """``n`` records: hospital h0 has a quarter, the rest share the others; 12 departments of 6
    doctors per hospital, AM and PM sessions of 30 slots, 300,000 patients."""
    rng = random.Random(seed)
    start = datetime(2026, 9, 1, tzinfo=ZONE)
    out = []
    for i in range(n):
        hospital = "h0" if rng.random() < 0.25 else f"h{rng.randrange(1, HOSPITALS)}"
        dep = rng.randrange(12)
        doctor = rng.randrange(6)
        day = rng.randrange(DAYS)
        period = rng.choice(("AM", "PM"))
        slot = rng.randrange(1, 31)
        visit = start + timedelta(days=day, hours=8 if period == "AM" else 13, minutes=slot * 8)
        session = f"{hospital}-d{dep}-doc{doctor}-{day}-{period}"
        state = rng.choice(STATES)
        out.append(
            Record(
                booking_id=f"{session}.{i}",
                session_id=session,
                hospital_id=hospital,
                department_id=f"{hospital}-d{dep}",
                doctor_id=f"{hospital}-d{dep}-doc{doctor}",
                date=visit.date().isoformat(),
                period=period,
                slot_no=slot,
                slot_at=visit.timestamp(),
                patient_id=rng.randrange(300_000),
                state=state,
                cancelled_by="patient" if state == "cancelled" else "",
                fee=500,
                paid=True,
                made_at=visit.timestamp() - rng.randrange(3600, 7 * 86400),
                changed_at=visit.timestamp(),
                age=rng.randrange(1, 90),
                was_confirmed=True,
            )
        )
    return out


def day_bounds(day: date) -> tuple[float, float]:
    low = datetime(day.year, day.month, day.day, tzinfo=ZONE).timestamp()
    return low, low + 86400


async def timed(coro_factory, repeats: int) -> tuple[float, float, int]:
    times, size = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        size = await coro_factory()
        times.append(time.perf_counter() - t)
    return statistics.median(times), percentile(times, 95), size


async def full_scan(client: aioredis.Redis, keys: Keys, query: RecordQuery) -> int:
    """The baseline: no indexes, read every record and filter."""
    found = []
    for hospital in sorted(m.decode() for m in await client.smembers(keys.record_hospitals)):
        async for _, raw in client.hscan_iter(keys.records(hospital), count=5000):
            r = Record.unpack(msgpack.unpackb(raw))
            if query.accepts(r) and query.start <= r.slot_at < query.end:
                found.append(r)
    found.sort(key=lambda r: (r.slot_at, r.booking_id))
    return len(found[:50])


async def bench_queries(args, client, keys, book) -> list[tuple[str, str, str, str]]:
    week = day_bounds(date(2026, 10, 1))[0], day_bounds(date(2026, 10, 7))[1]
    month = day_bounds(date(2026, 10, 1))[0], day_bounds(date(2026, 10, 31))[1]
    queries = {
        "hospital, one week": RecordQuery(hospital_id="h0", start=week[0], end=week[1]),
        "hospital + no_show, one month": RecordQuery(
            hospital_id="h0", state="no_show", start=month[0], end=month[1]
        ),
        "hospital + department + no_show, 60 days": RecordQuery(
            hospital_id="h0", department_id="h0-d3", state="no_show"
        ),
        "doctor, one month": RecordQuery(doctor_id="h0-d3-doc2", start=month[0], end=month[1]),
        "patient, all time": RecordQuery(patient_id=4242),
        "platform, one day, cancelled": RecordQuery(
            state="cancelled", start=week[0], end=week[0] + 86400
        ),
    }
    rows = []
    for name, query in queries.items():

        async def one(q=query) -> int:
            return len((await book.page(q, 50)).records)

        med, p95, size = await timed(one, args.repeats)
        rows.append((f"page of 50: {name}", f"{med * 1000:.1f} ms", f"{p95 * 1000:.1f} ms", size))

    async def deep() -> int:
        cursor = None
        for _ in range(20):
            page = await book.page(queries["hospital, one week"], 50, cursor)
            cursor = page.next_cursor
        return len(page.records)

    med, p95, size = await timed(deep, max(3, args.repeats // 3))
    rows.append(
        (
            "pages 1-20 in turn (hospital, one week)",
            f"{med * 1000:.1f} ms",
            f"{p95 * 1000:.1f} ms",
            size,
        )
    )
    t = time.perf_counter()
    await full_scan(client, keys, queries["hospital + no_show, one month"])
    baseline = time.perf_counter() - t
    rows.append(("baseline: scan every record, filter (once)", f"{baseline * 1000:.0f} ms", "", 50))
    return rows, baseline, statistics.median([float(r[1].split()[0]) / 1000 for r in rows[:6]])


async def bench_export(book) -> tuple[float, int, int]:
    low, high = day_bounds(date(2026, 10, 8))
    services = SimpleNamespace(records=book, clock=LocalTime("Asia/Shanghai"))
    query = RecordQuery(hospital_id="h0", start=low, end=high)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        size = 0
        async for part in csv_rows(services, query):  # type: ignore[arg-type]
            size += len(part.encode())
        times.append(time.perf_counter() - t)
    last = "".join([p async for p in csv_rows(services, query)])  # type: ignore[arg-type]
    rows = len(list(csv.reader(io.StringIO(last.lstrip("\ufeff"))))) - 1
    return statistics.median(times), rows, size


async def bench_report(book) -> tuple[float, float, int]:
    """The analytics report of the big hospital over all 60 days, as the API builds it (from
    the daily tallies; median of 5), and the baseline: read every record and summarize."""
    dates = [(date(2026, 9, 1) + timedelta(days=n)).isoformat() for n in range(DAYS)]
    times = []
    for _ in range(5):
        t = time.perf_counter()
        report = (await book.tally("h0", dates)).report([])
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    records = [r async for chunk in book.scan(RecordQuery(hospital_id="h0")) for r in chunk]
    baseline = summarize(records, [])
    scan = time.perf_counter() - t
    assert report == baseline, "the tallies disagree with the records"
    return statistics.median(times), scan, len(records)


async def bench_drain(url: str, client, keys, n: int, parallel: int, delay_ms: int) -> float:
    async with httpx.AsyncClient(base_url=url) as sim:
        await sim.post("/his/admin/outage", json={"down": False, "delay_ms": delay_ms})
    deliveries = Deliveries(client, keys, timeout=5.0, egress=Egress(("127.0.0.0/8",)))
    await deliveries.configure("h0", {"his_url": url, "insurance_url": ""})
    book = RecordBook(client, keys)
    run = random.randrange(1 << 30)
    records = [
        Record(
            booking_id=f"d{run}-{i}.0",
            session_id=f"d{run}-{i}",
            hospital_id="h0",
            department_id="h0-d1",
            doctor_id="h0-d1-doc1",
            date="2026-12-01",
            period="AM",
            slot_no=1,
            slot_at=1.0e9,
            patient_id=i,
            state="booked",
            was_confirmed=True,
        )
        for i in range(n)
    ]
    await book.put([(None, r) for r in records])
    now = time.time()
    asked = await deliveries.ask([(None, r) for r in records], now)
    assert asked == n
    delivery.PARALLEL = parallel
    t = time.perf_counter()
    hospitals = {r.hospital_id for r in records}
    while sum([await client.zcard(keys.deliveries_due(h)) for h in hospitals]):
        await deliveries.run(time.time() + 3600)
    elapsed = time.perf_counter() - t
    assert deliveries.counters["booked"] == n, deliveries.counters
    await deliveries.close()
    return n / elapsed


async def main_async(args) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedRedis(Path(tmp) / "redis", appendfsync="everysec") as server,
    ):
        client = aioredis.Redis.from_url(server.url)
        keys = Keys("bench")
        book = RecordBook(client, keys)
        t = time.perf_counter()
        records = generate(args.records)
        made = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(0, len(records), 5000):
            await book.put([(None, r) for r in records[i : i + 5000]])
        loaded = time.perf_counter() - t
        info = {**await client.info("memory"), **await client.info("server")}
        per_record = info["used_memory"] / len(records)
        del records
        rows, baseline, typical = await bench_queries(args, client, keys, book)
        export, export_rows, export_bytes = await bench_export(book)
        report_seconds, report_scan, report_rows = await bench_report(book)

        port = free_port()
        sim = subprocess.Popen(
            [sys.executable, "-m", "api.his_sim", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    httpx.get(f"{url}/his/stats", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            drains = {}
            for delay in (0, 20):
                for parallel in (1, 32):
                    n = args.deliveries if parallel > 1 or delay == 0 else args.deliveries // 10
                    drains[delay, parallel] = await bench_drain(
                        url, client, keys, n, parallel, delay
                    )
        finally:
            sim.terminate()
            sim.wait(10)
        await client.aclose()

    print()
    print(f"machine: {machine()}")
    print(
        f"versions: Python {platform.python_version()}, Redis server "
        f"{info.get('redis_version', '?')}, redis-py {redis_version}, httpx {httpx.__version__}"
    )
    print(
        f"records: {args.records:,} made in {made:.1f} s, loaded in {loaded:.1f} s "
        f"({args.records / loaded:,.0f}/s); Redis {per_record:,.0f} B per record with indexes"
    )
    print()
    print("| query | median | p95 | rows |")
    print("| --- | --- | --- | --- |")
    for name, med, p95, size in rows:
        print(f"| {name} | {med} | {p95} | {size} |")
    print(
        f"\nmedian of the six pages: {typical * 1000:.1f} ms, {baseline / typical:,.0f}x faster "
        "than the scan baseline (target: a filtered page < 200 ms)"
    )
    print(
        f"full-day CSV export of the big hospital: {export:.2f} s for {export_rows:,} rows "
        f"({export_bytes / 1e6:.1f} MB), median of 3 (target < 5 s)"
    )
    print(
        f"analytics report of the big hospital, 60 days ({report_rows:,} records): "
        f"{report_seconds * 1000:.1f} ms from the daily tallies (median of 5) against "
        f"{report_scan:.1f} s reading every record (baseline, once): "
        f"{report_scan / report_seconds:,.0f}x, the same figures"
    )
    print()
    print("| HIS drain | 1 call at a time (baseline) | 32 in flight | ratio |")
    print("| --- | --- | --- | --- |")
    for delay in (0, 20):
        one, many = drains[delay, 1], drains[delay, 32]
        print(f"| HIS answers in ~{delay} ms | {one:,.0f}/s | {many:,.0f}/s | {many / one:.1f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--deliveries", type=int, default=5000)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
