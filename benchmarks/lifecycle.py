"""Lifecycle benchmark: one command, one table (README "Benchmarks").

    python -m benchmarks.lifecycle [--repeats 3] [--quick]

Everything runs on the real stack (``Runtime.start``: an embedded Redis with AOF in a temp
folder, a local Ray, 2 host actors and the courier) and the one movable clock:

(a) the no-show sweep of 10,000 paid bookings (334 doctor-sessions x 30 slots over 4 shards):
    the clock moves past the sessions' end + the grace; timed apart are the hosts' ticks (sweep
    and group commit: when they return, every booking is ``no_show`` in Redis) and the courier
    carrying out the outbox (violations, bans, refunds, notices);
(b) the suspension (停诊) of the same shape: ``Engine.suspend`` on every session at once, timed
    until every answer is back (each answer follows its commit), then the courier's refunds and
    notices;
(c) a flash crowd on sessions with a fee and a 60 s payment window, against the same crowd
    without a fee (the baseline, same run): every loser joins the waitlist, 90% of the winners
    pay, 10% let the hold expire; then the clock moves past the window and we time the tick that
    expires the holds and promotes the waitlist, and when the courier delivered each
    ``waitlist_promoted`` notice.

The hosts' and the courier's own timers are set to fire once an hour, so the benchmark fires
every tick itself (the way ``Engine.advance_clock`` does) and each step is timed alone. Every
run is checked by the auditor and by exact counts of the stored states.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from itertools import zip_longest
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import msgpack
import ray
import redis

from benchmarks.engine import machine, median, percentile, publish
from engine.client import Engine
from engine.core.placement import default_host
from engine.core.policy import Policy
from engine.core.session import SessionSpec
from engine.outcomes import Booked, Created, Paid, SoldOut, SuspendDone, Waitlisted
from engine.runtime import Runtime
from engine.settings import Settings
from engine.tools.audit import AuditReport, audit
from engine.tools.crowd import CrowdRequest, catalog, plan, play

T = TypeVar("T")
CAPACITY = 30
FEE = 1000  # fen (10 yuan)
HOLD_SECONDS = 60
SUBMITTERS = 256
HOSTS = 2
TIMER_SECONDS = 3600.0  # the pool's own timers stay quiet: the benchmark fires every tick


# ----- driving the stack ---------------------------------------------------------------------


async def each(items: Sequence[T], call: Callable[[T], Awaitable[Any]]) -> list[Any]:
    """``call`` on every item from ``SUBMITTERS`` closed-loop submitters; answers in order."""
    answers: list[Any] = [None] * len(items)

    async def submitter(first: int) -> None:
        for i in range(first, len(items), SUBMITTERS):
            answers[i] = await call(items[i])

    await asyncio.gather(*(submitter(k) for k in range(min(SUBMITTERS, len(items)))))
    return answers


@dataclass(frozen=True, slots=True)
class Moved:
    """What moving the clock cost: the hosts' ticks, then the courier's round."""

    wall: float  # time.time() when the clock moved
    tick: float  # seconds until every host's tick (timers + group commit) returned
    courier: float  # seconds the courier took to carry the outbox out
    counters: Counter[str]  # what the courier did in that round


async def move_clock(engine: Engine, seconds: float) -> Moved:
    """``Engine.advance_clock`` step by step (same calls, same order), timing the hosts'
    ticks and the courier's round apart."""
    client, keys = engine.store.client, engine.store.keys
    before = Counter(await engine.drain_outbox())  # nothing pending: only reads the counters
    wall = time.time()
    offset = float(await client.incrbyfloat(keys.clock, seconds))
    engine.clock.set_offset(offset)
    await client.publish(keys.clock_channel, repr(offset))
    await asyncio.gather(*(h.set_clock.remote(offset) for h in engine.hosts))
    started = time.perf_counter()
    await asyncio.gather(*(h.tick.remote() for h in engine.hosts))
    ticked = time.perf_counter()
    after = Counter(await engine.drain_outbox())
    drained = time.perf_counter()
    return Moved(wall, ticked - started, drained - ticked, after - before)


async def settle(engine: Engine) -> None:
    """Fire every timer at the current time and empty the outbox (untimed: after a setup)."""
    await asyncio.gather(*(h.tick.remote() for h in engine.hosts))
    await engine.drain_outbox()


async def create(engine: Engine, specs: list[SessionSpec]) -> None:
    outcomes = await each(specs, engine.create_session)
    assert all(isinstance(o, Created) for o in outcomes), outcomes[:3]


def balanced_prefixes(tag: str, count: int, date: str) -> list[str]:
    """``count`` catalog prefixes whose hospitals' shards on ``date`` split evenly over the
    hosts (a shard's host is a hash of its id)."""
    per_host = -(-count // HOSTS)
    chosen: dict[int, list[str]] = {i: [] for i in range(HOSTS)}
    n = 0
    while sum(map(len, chosen.values())) < count:
        prefix = f"{tag}{n}-"
        mine = chosen[default_host(f"{prefix}h0:{date}", HOSTS)]
        if len(mine) < per_host:
            mine.append(prefix)
        n += 1
    return [p for group in zip_longest(*chosen.values()) for p in group if p is not None]


def local(day: dt.date, minute: int, zone: dt.tzinfo) -> float:
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=zone)
    return (midnight + dt.timedelta(minutes=minute)).timestamp()


def sessions(
    tag: str, count: int, shards: int, day: dt.date, now: float, zone: dt.tzinfo, fee: int
) -> list[SessionSpec]:
    """``count`` doctor-sessions of ``CAPACITY`` slots on ``day`` over ``shards`` hospitals, in
    ``engine.tools.crowd.catalog``'s shape (two doctors a department, AM from 08:00, PM from 13:30,
    8-minute slots) but with their real visit times: open from ``now`` until the first slot."""
    per = -(-count // shards)
    out = []
    for index, prefix in enumerate(balanced_prefixes(tag, shards, day.isoformat())):
        size = min(per, count - index * per)
        for s in catalog(1, size, CAPACITY, day.isoformat(), fee=fee, prefix=prefix):
            starts = local(day, s.first_slot_minute, zone)
            out.append(replace(s, opens_at=now - 60, closes_at=starts, starts_at=starts))
    assert len(out) == count
    return out


async def book_and_pay(
    engine: Engine, specs: list[SessionSpec], bookings: int, first_patient: int, tag: str
) -> list[str]:
    """``bookings`` fresh patients take a slot each, filling the sessions in order, and pay."""
    requests = [
        CrowdRequest(specs[i // CAPACITY].id, first_patient + i, f"{tag}-{i}")
        for i in range(bookings)
    ]
    held = await each(requests, lambda r: engine.book(r.session_id, r.patient, r.request_id))
    assert all(isinstance(o, Booked) and o.status == "held" for o in held), Counter(
        type(o).__name__ for o in held
    )
    paid = await each(
        list(zip(held, requests, strict=True)),
        lambda hr: engine.pay(hr[0].booking_id, hr[1].patient),
    )
    assert all(isinstance(o, Paid) for o in paid), Counter(type(o).__name__ for o in paid)
    return [o.booking_id for o in held]


async def checked(engine: Engine) -> AuditReport:
    report = await audit(engine.store)
    assert report.ok, report.problems[:10]
    return report


def states(report: AuditReport, session_ids: set[str]) -> Counter[str]:
    return Counter(b.state for b in report.bookings.values() if b.session_id in session_ids)


async def visit_day(engine: Engine, zone: dt.tzinfo, days: int) -> tuple[float, dt.date]:
    now = (await engine.load_clock()).now()
    return now, dt.datetime.fromtimestamp(now, zone).date() + dt.timedelta(days=days)


# ----- (a) the no-show sweep -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sweep:
    hosts: float
    courier: float
    counters: Counter[str]


async def run_sweep(engine: Engine, zone: dt.tzinfo, n: int, rep: int, shards: int) -> Sweep:
    now, day = await visit_day(engine, zone, 1)
    specs = sessions(f"a{rep}-", -(-n // CAPACITY), shards, day, now, zone, FEE)
    await create(engine, specs)
    await book_and_pay(engine, specs, n, 10_000_000 * (rep + 1), f"a{rep}")
    await settle(engine)
    grace = 60 * (await engine.policy(specs[0].hospital_id)).no_show_grace_minutes
    cutoff = max(s.ends_at for s in specs) + grace
    moved = await move_clock(engine, cutoff + 60 - engine.clock.now())
    found = states(await checked(engine), {s.id for s in specs})
    assert found == Counter(no_show=n), found
    c = moved.counters  # fresh patients: each no-show is a first offence, a 30-day ban
    assert (c["violations"], c["bans"], c["refunds"], c["notices"]) == (n, n, n, 2 * n), c
    assert c["refunded"] == n * FEE, c
    return Sweep(moved.tick, moved.courier, c)


# ----- (b) suspension --------------------------------------------------------------------------


async def run_suspend(engine: Engine, zone: dt.tzinfo, n: int, rep: int, shards: int) -> Sweep:
    now, day = await visit_day(engine, zone, 1)
    specs = sessions(f"b{rep}-", -(-n // CAPACITY), shards, day, now, zone, FEE)
    await create(engine, specs)
    await book_and_pay(engine, specs, n, 20_000_000 * (rep + 1), f"b{rep}")
    await settle(engine)
    before = Counter(await engine.drain_outbox())
    started = time.perf_counter()
    done = await asyncio.gather(*(engine.suspend(s.id) for s in specs))
    hosts = time.perf_counter() - started
    drained = Counter(await engine.drain_outbox())
    courier = time.perf_counter() - started - hosts
    assert all(isinstance(d, SuspendDone) and not d.repeat for d in done), done[:3]
    assert sum(d.cancelled for d in done) == n and sum(d.refunded for d in done) == n * FEE
    found = states(await checked(engine), {s.id for s in specs})
    assert found == Counter(cancelled=n), found
    c = drained - before
    assert c["refunds"] == n and c["refunded"] == n * FEE and c["notices"] == n, c
    return Sweep(hosts, courier, c)


# ----- (c) a flash crowd with holds, payments and the waitlist -------------------------------


@dataclass(frozen=True, slots=True)
class Crowd:
    rate: float  # booking requests/s of the crowd phase
    winners: int = 0
    paid: int = 0
    waitlisted: int = 0
    expired: int = 0
    promoted: int = 0
    tick: float = 0.0  # the tick that expires the holds, promotes and commits
    notice_p50: float = 0.0  # clock moved → 'waitlist_promoted' delivered by the courier
    notice_max: float = 0.0


def crowd_hospitals(requests: int) -> int:
    return max(1, requests // 4000)  # 10 sessions of 30 slots each


def crowd_plan(
    tag: str, requests: int, now: float, day: dt.date, zone: dt.tzinfo, fee: int, patients: int
) -> tuple[list[SessionSpec], list[CrowdRequest]]:
    """``benchmarks.engine``'s crowd: 7.5% as many slots as requests, 8 requests a patient."""
    hospitals = crowd_hospitals(requests)
    specs = sessions(tag, 10 * hospitals, hospitals, day, now, zone, fee)
    crowd = plan(specs, requests, patients=requests // 8, seed=7)
    return specs, [replace(r, patient=r.patient + patients) for r in crowd]


async def run_crowd(engine: Engine, zone: dt.tzinfo, n: int, rep: int, holds: bool) -> Crowd:
    tag = f"c{rep}{'f' if holds else 'z'}-"
    now, day = await visit_day(engine, zone, 14)
    patients = (30 + 2 * rep + holds) * 10_000_000
    specs, requests = crowd_plan(tag, n, now, day, zone, FEE if holds else 0, patients)
    for hospital in {s.hospital_id for s in specs}:
        await engine.set_policy(hospital, Policy(hold_seconds=HOLD_SECONDS))
    await create(engine, specs)
    await settle(engine)
    started = time.perf_counter()
    answers = await play(engine, requests, SUBMITTERS)
    rate = len(requests) / (time.perf_counter() - started)
    won = {
        a.outcome.booking_id: a.request.patient for a in answers if isinstance(a.outcome, Booked)
    }
    ids = {s.id for s in specs}
    assert len(won) == CAPACITY * len(specs), (len(won), len(specs))  # every session sold out
    if not holds:
        assert states(await checked(engine), ids) == Counter(booked=len(won))
        return Crowd(rate, winners=len(won))

    lost = sorted(
        {
            (a.request.session_id, a.request.patient)
            for a in answers
            if isinstance(a.outcome, SoldOut)
        }
    )
    joined = await each(lost, lambda sp: engine.join_waitlist(sp[0], sp[1], f"w-{sp[0]}-{sp[1]}"))
    waitlisted = sum(isinstance(j, Waitlisted) for j in joined)
    winners = sorted(won.items())
    payers = [w for i, w in enumerate(winners) if i % 10 != 9]
    paid = await each(payers, lambda w: engine.pay(w[0], w[1]))
    assert all(isinstance(p, Paid) for p in paid), Counter(type(p).__name__ for p in paid)
    await engine.drain_outbox()

    moved = await move_clock(engine, HOLD_SECONDS + 1)
    report = await checked(engine)
    found = states(report, ids)
    expired, promoted = found["expired"], found["held"]
    assert expired == len(winners) - len(payers) and found["booked"] == len(payers), found
    notices = await engine.store.client.xrange(
        engine.store.keys.notices, min=f"{int(moved.wall * 1000)}", max="+"
    )
    delays = []
    for entry_id, fields in notices:
        notice = json.loads(fields[b"n"])
        if notice["kind"] == "waitlist_promoted" and notice["session_id"] in ids:
            delays.append(int(entry_id.split(b"-")[0]) / 1000 - moved.wall)
    assert len(delays) == promoted, (len(delays), promoted)
    # the promoted patients pay too, so no hold of this run is left to expire in the next one
    again = [
        (b.booking_id, b.patient)
        for b in report.bookings.values()
        if b.session_id in ids and b.state == "held"
    ]
    assert all(isinstance(p, Paid) for p in await each(again, lambda w: engine.pay(w[0], w[1])))
    await engine.drain_outbox()
    return Crowd(
        rate,
        winners=len(winners),
        paid=len(payers),
        waitlisted=waitlisted,
        expired=expired,
        promoted=promoted,
        tick=moved.tick,
        notice_p50=percentile(delays, 0.5) if delays else 0.0,
        notice_max=max(delays, default=0.0),
    )


# ----- the run and the table -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sizes:
    bookings: int  # (a) and (b)
    shards: int  # (a) and (b)
    crowd: int  # (c) booking requests

    @property
    def sessions(self) -> int:
        return -(-self.bookings // CAPACITY)

    @property
    def slots(self) -> int:
        return 10 * crowd_hospitals(self.crowd) * CAPACITY


@dataclass(slots=True)
class Results:
    sweeps: list[Sweep]
    suspensions: list[Sweep]
    plain: list[Crowd]  # the baseline: the same crowd without a fee
    held: list[Crowd]


def run(rt: Runtime, repeats: int, sizes: Sizes) -> Results:
    zone = ZoneInfo(rt.settings.timezone)
    n, shards = sizes.bookings, sizes.shards
    results = Results([], [], [], [])

    async def go() -> None:
        engine = rt.engine()
        try:
            await settle(engine)
            # smallest first: every audit reads the gateway's whole ledger, one payment at a
            # time. (c)'s sessions are a fortnight ahead, out of reach of (a)'s clock moves.
            for rep in range(repeats):  # alternate which goes first, against drift
                for holds in (False, True) if rep % 2 == 0 else (True, False):
                    c = await run_crowd(engine, zone, sizes.crowd, rep, holds)
                    (results.held if holds else results.plain).append(c)
                    line = f"  (c) crowd    {'holds' if holds else 'fee 0'} {c.rate:9,.0f} req/s"
                    if holds:
                        line += (
                            f"   re-sold {c.promoted}/{c.expired}   tick {c.tick:.3f} s"
                            f"   last notice {c.notice_max:.3f} s"
                        )
                    print(line, flush=True)
            for rep in range(repeats):
                s = await run_suspend(engine, zone, n, rep, shards)
                results.suspensions.append(s)
                print(
                    f"  (b) suspend  hosts {s.hosts:6.2f} s   courier {s.courier:6.2f} s",
                    flush=True,
                )
            for rep in range(repeats):
                s = await run_sweep(engine, zone, n, rep, shards)
                results.sweeps.append(s)
                print(
                    f"  (a) sweep    hosts {s.hosts:6.2f} s   courier {s.courier:6.2f} s",
                    flush=True,
                )
        finally:
            await engine.close()

    asyncio.run(go())
    return results


def table(repeats: int, settings: Settings, server: dict[str, Any], r: Results, z: Sizes) -> str:
    def mid(values: list[float]) -> float:
        return median(values)

    def did(c: Counter[str], kinds: Sequence[str]) -> str:
        return ", ".join(f"{c[k]:,} {k}" for k in kinds)

    out = [
        f"machine: {machine()}",
        f"versions: Python {platform.python_version()}, Ray {ray.__version__}, "
        f"{server.get('server_name', 'redis')} "
        f"{server.get('valkey_version', server['redis_version'])} "
        f"(AOF appendfsync {settings.redis_appendfsync}), redis-py {redis.__version__}, "
        f"msgpack {'.'.join(map(str, msgpack.version))}",
        f"medians of {repeats} runs; {HOSTS} host actors and the courier; the benchmark fires "
        "the timers itself (Engine.advance_clock's steps, timed apart); every run audited clean",
        "",
        f"| (a) no-show sweep of {z.bookings:,} paid bookings ({z.sessions} sessions x "
        f"{CAPACITY}, fee {FEE / 100:.2f} yuan, {z.shards} shards) | seconds | target |",
        "| --- | ---: | ---: |",
        f"| hosts' tick: sweep + group commit (all {z.bookings:,} no_show in Redis) "
        f"| {mid([s.hosts for s in r.sweeps]):.2f} | < 2 |",
        "| courier: carries the outbox out "
        f"({did(r.sweeps[-1].counters, ('violations', 'bans', 'refunds', 'notices'))}) "
        f"| {mid([s.courier for s in r.sweeps]):.2f} | |",
        "",
        f"| (b) suspension of {z.sessions} sessions at once ({z.bookings:,} paid bookings, "
        f"{z.shards} shards) | seconds | target |",
        "| --- | ---: | ---: |",
        f"| hosts: until every Engine.suspend answered (all {z.bookings:,} revoked, committed) "
        f"| {mid([s.hosts for s in r.suspensions]):.2f} | < 2 |",
        "| courier: carries the outbox out "
        f"({did(r.suspensions[-1].counters, ('refunds', 'notices'))}) "
        f"| {mid([s.courier for s in r.suspensions]):.2f} | |",
        "",
    ]
    plain, rate = mid([c.rate for c in r.plain]), mid([c.rate for c in r.held])
    notice_p50, notice_last = (
        mid([c.notice_p50 for c in r.held]),
        mid([c.notice_max for c in r.held]),
    )
    last = r.held[-1]
    out += [
        f"| (c) flash crowd: {z.crowd:,} booking requests on {z.slots:,} slots, "
        f"{SUBMITTERS} submitters | req/s | vs no fee |",
        "| --- | ---: | ---: |",
        f"| no fee: booked at once (baseline) | {plain:,.0f} | 1.00x |",
        f"| fee {FEE / 100:.2f} yuan: held for a {HOLD_SECONDS} s payment window "
        f"| {rate:,.0f} | {rate / plain:.2f}x |",
        "",
        "| (c) then every loser joins the waitlist, 90% of the winners pay, "
        "the clock moves past the window | |",
        "| --- | ---: |",
        f"| winners / paid / let the hold expire (last run) "
        f"| {last.winners:,} / {last.paid:,} / {last.expired:,} |",
        f"| losers put on a waitlist (last run) | {last.waitlisted:,} |",
        "| released slots re-sold to the waitlist (promoted holds / expired holds) "
        f"| {mid([c.promoted / c.expired for c in r.held]):.0%} "
        f"({last.promoted:,} / {last.expired:,}) |",
        "| expiry to re-sale: the hosts' tick that expires, promotes and commits, s "
        f"| {mid([c.tick for c in r.held]):.3f} |",
        "| expiry to notice: courier delivered 'waitlist_promoted', s (median / last one) "
        f"| {notice_p50:.3f} / {notice_last:.3f} |",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tenth of the bookings, 2 shards")
    args = parser.parse_args()
    if args.quick:
        sizes = Sizes(bookings=1_000, shards=2, crowd=4_000)
    else:
        sizes = Sizes(bookings=10_000, shards=4, crowd=20_000)

    with tempfile.TemporaryDirectory(prefix="slotengine-lifecycle-") as folder:
        settings = Settings.from_env(
            None,
            redis_url=None,  # always a private embedded Redis, in a temp folder
            ray_address=None,
            hosts=HOSTS,
            host_cpus=1,
            data_dir=Path(folder),
            namespace="bench-lifecycle",
            tick_seconds=TIMER_SECONDS,
        )
        rt = Runtime.start(settings)
        try:
            assert rt.settings.redis_url is not None
            server = redis.Redis.from_url(rt.settings.redis_url).info("server")
            results = run(rt, args.repeats, sizes)
        finally:
            rt.stop()

    publish("lifecycle", table(args.repeats, settings, server, results, sizes))


if __name__ == "__main__":
    main()
