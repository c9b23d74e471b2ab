"""The ``slotengine`` command.

slotengine demo     start Redis (embedded unless configured), a local Ray and the host
                    pool, release a catalog of doctor-sessions, play a flash crowd through
                    the engine, audit Redis, print what happened, and stop everything
slotengine audit    check the invariants against the Redis of SLOTENGINE_REDIS_URL
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import time
from collections import Counter

import click

from .audit import audit
from .crowd import catalog, plan, play
from .outcomes import Booked
from .runtime import Runtime
from .settings import Settings
from .store import Store


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log what the engine does")
def main(verbose: bool) -> None:
    """slotengine: the booking core of an internet hospital appointment platform."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


@main.command()
@click.option("--requests", default=20_000, show_default=True, help="booking requests in the crowd")
@click.option("--patients", default=4_000, show_default=True, help="distinct patients")
@click.option("--submitters", default=256, show_default=True, help="concurrent submitters")
@click.option("--hospitals", default=5, show_default=True)
@click.option("--sessions", default=10, show_default=True, help="doctor-sessions per hospital")
@click.option("--capacity", default=30, show_default=True, help="slots per doctor-session")
@click.option("--seed", default=None, type=int, help="replay a crowd")
def demo(
    requests: int,
    patients: int,
    submitters: int,
    hospitals: int,
    sessions: int,
    capacity: int,
    seed: int | None,
) -> None:
    """Release doctor-sessions and let a flash crowd (抢号) at them."""
    settings = Settings.from_env()
    seed = seed if seed is not None else int(time.time()) % 100_000
    click.echo(
        f"starting: Redis {settings.redis_url or 'embedded (' + str(settings.data_dir) + ')'}"
        f", Ray {settings.ray_address or 'local'}, {settings.hosts} host actors"
    )
    started = time.perf_counter()
    with Runtime.start(settings) as rt:
        click.echo(
            f"ready in {time.perf_counter() - started:.1f}s; Redis at {rt.settings.redis_url}"
        )
        asyncio.run(_demo(rt, requests, patients, submitters, hospitals, sessions, capacity, seed))
    click.echo("stopped everything this command started")


async def _demo(
    rt: Runtime,
    requests: int,
    patients: int,
    submitters: int,
    hospitals: int,
    sessions: int,
    capacity: int,
    seed: int,
) -> None:
    engine = rt.engine()
    prefix = f"demo{seed}-"
    specs = catalog(hospitals, sessions, capacity, opens_at=time.time(), prefix=prefix)
    specs += catalog(1, 2, capacity, opens_at=time.time(), fee=1500, prefix=prefix + "paid-")
    created = await asyncio.gather(*(engine.create_session(s) for s in specs))
    click.echo(
        f"released {len(specs)} doctor-sessions x {capacity} slots "
        f"= {len(specs) * capacity} slots at {len({s.hospital_id for s in specs})} hospitals "
        f"({Counter(type(c).__name__ for c in created)})"
    )
    crowd = plan(specs, requests, patients, seed=seed)
    click.echo(
        f"flash crowd: {len(crowd)} requests from {patients} patients, "
        f"{submitters} concurrent submitters (seed {seed})"
    )
    t0 = time.perf_counter()
    answers = await play(engine, crowd, submitters)
    seconds = time.perf_counter() - t0
    latencies = sorted(a.answered_at - a.sent_at for a in answers)
    kinds = Counter(type(a.outcome).__name__ for a in answers)
    repeats = sum(1 for a in answers if isinstance(a.outcome, Booked) and a.outcome.repeat)
    click.echo(
        f"answered {len(answers)} in {seconds:.2f}s = {len(answers) / seconds:,.0f} req/s; "
        f"p50 {statistics.median(latencies) * 1e3:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms"
    )
    for kind, n in kinds.most_common():
        extra = (
            f" ({repeats} of them repeats answered with the first booking)"
            if kind == "Booked"
            else ""
        )
        click.echo(f"  {kind:<20} {n:>7}{extra}")
    stats = engine.batch_stats()
    click.echo(
        f"mailboxes: {stats['calls']:.0f} host calls, {stats['mean_batch']:.1f} requests per call"
    )
    report = await audit(engine.store)
    click.echo(report.summary())
    for problem in report.problems[:20]:
        click.echo(f"  PROBLEM {problem}", err=True)
    sample = next((a for a in answers if isinstance(a.outcome, Booked)), None)
    if sample is not None:
        click.echo(f"e.g. patient {sample.request.patient}: {sample.outcome}")
    await engine.close()
    if not report.ok:
        sys.exit(1)


@main.command(name="audit")
def audit_command() -> None:
    """Check every invariant against the configured Redis (SLOTENGINE_REDIS_URL)."""
    settings = Settings.from_env()
    if settings.redis_url is None:
        raise click.UsageError("set SLOTENGINE_REDIS_URL to the Redis to audit")

    async def go() -> bool:
        store = Store.from_url(settings.redis_url, settings.namespace)  # type: ignore[arg-type]
        report = await audit(store)
        await store.close()
        click.echo(report.summary())
        for problem in report.problems:
            click.echo(f"  PROBLEM {problem}")
        return report.ok

    sys.exit(0 if asyncio.run(go()) else 1)
