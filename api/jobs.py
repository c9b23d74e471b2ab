"""An API worker's background work: following the engine's pub/sub (stock, new sessions, the
clock, revoked tokens), resyncing its view, learning sessions' holders, releasing rota sessions,
pulling the HIS, and keeping the health state and the courier's figures for the probes.

``start`` runs once the worker's ``Services`` exist (the app's lifespan); every task goes into
``Services.tasks``, which ``Services.stop`` cancels within a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from functools import partial
from typing import Any

import orjson

from api.catalog.his_import import PULL_SECONDS, pull_all
from api.catalog.rotas import release_due
from api.services import (
    FIGURES_SECONDS,
    HEALTH_SECONDS,
    HOLDERS_SECONDS,
    RESYNC_CHUNK,
    RESYNC_SECONDS,
    ROTA_SECONDS,
    Services,
)
from engine.client import stop_requested
from engine.core.clock import usable_offset
from engine.outcomes import Bookings, SessionState
from engine.store.outbox import Outbox
from engine.store.shards import parse_stock_message

log = logging.getLogger(__name__)


async def start(s: Services) -> None:
    """Subscribe, catch up, and start every loop (before the worker takes requests)."""
    ready = asyncio.Event()
    s.tasks.append(asyncio.create_task(listen(s, ready)))
    await asyncio.wait_for(ready.wait(), 10)
    await s.load_token_versions()  # after subscribing: no revocation falls between
    await resync(s)
    s.tasks.append(asyncio.create_task(resync_forever(s)))
    s.tasks.append(asyncio.create_task(fetch_holders_forever(s)))
    s.tasks.append(asyncio.create_task(release_rotas_forever(s)))
    s.tasks.append(asyncio.create_task(pull_his_forever(s)))
    await check_health(s)
    s.tasks.append(asyncio.create_task(every(HEALTH_SECONDS, partial(check_health, s))))
    s.tasks.append(asyncio.create_task(every(FIGURES_SECONDS, partial(read_figures, s))))


async def check_health(s: Services) -> None:
    """Is Redis reachable, does every host answer? Kept for /readyz, which never sends a
    call of its own (a scrape storm must not queue behind bookings in the hosts)."""
    health: dict[str, Any] = {}
    try:
        await asyncio.wait_for(s.engine.store.client.ping(), 2)
        health["redis"] = "ok"
    except Exception as exc:
        health["redis"] = f"unreachable: {type(exc).__name__}"
    serving = [(i, h) for i, h in enumerate(s.engine.hosts) if h is not None]  # not retired
    calls = [asyncio.ensure_future(h.info.remote()) for _, h in serving]
    done, pending = await asyncio.wait(calls, timeout=5)
    for call in pending:
        call.cancel()
    failed = [c.exception() for c in done if c.exception() is not None]
    if pending or failed:
        reason = type(failed[0]).__name__ if failed else "TimeoutError"
        health["ray"] = f"unreachable: {reason}"
    else:
        health["ray"] = "ok"
    try:
        leases = await s.engine.store.leases(len(s.engine.hosts))
    except Exception:  # Redis away: no lease is known to be held
        leases = {}
    hosts = {}
    for (index, _), call in zip(serving, calls, strict=True):
        info = call.result() if call in done and call.exception() is None else None
        hosts[index] = host_figures(info, leases.get(index))
    health["hosts"] = hosts
    health["checked_at"] = time.time()
    s.health = health


def host_figures(info: dict[str, Any] | None, lease: tuple[dict, float] | None) -> dict:
    """One host's figures for /metrics, from its counters (None: it did not answer) and its
    lease (None: it holds none)."""
    figures: dict[str, float] = {
        "up": 0.0 if info is None else 1.0,
        "lease_seconds_left": 0.0 if lease is None else lease[1],
    }
    if info is not None:
        figures.update(
            shards=len(info["shards"]),
            requests=info["requests"],
            calls=info["calls"],
            commits=info["commits"],
            failed_commits=info["failed_commits"],
        )
    return figures


async def read_figures(s: Services) -> None:
    """The outbox's backlog, the dead letters and the courier's counters, for /metrics."""
    client, keys = s.engine.store.client, s.engine.store.keys
    figures: dict[str, float] = {}
    try:
        outbox = Outbox(client, keys, partitions=s.settings.couriers)
        figures["outbox_pending"] = await outbox.backlog(everywhere=False)
        figures["unsettled_payments"] = await client.zcard(keys.pending_payments)
        figures["dead_letters_waiting"] = await s.dead_letters.count()
        call = asyncio.ensure_future(s.engine.courier_info())
        done, _ = await asyncio.wait([call], timeout=2)
        if not done:
            call.cancel()
            raise TimeoutError("the courier did not answer within 2 s")
        figures.update({k: float(v) for k, v in call.result().items()})
    except Exception as exc:  # metrics never fail the scrape: the last figures stay
        log.warning("courier figures unavailable: %s", exc)
        return
    s.figures = figures


async def every(seconds: float, job: Any) -> None:
    """Run ``job`` every ``seconds`` until cancelled, even when the job (or redis-py under
    it) swallowed the cancellation and turned it into an error or a quiet return."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception as exc:
            if stop_requested():
                raise asyncio.CancelledError from exc
            log.warning("%s failed: %s", getattr(job, "__name__", job), exc)
        if stop_requested():
            raise asyncio.CancelledError


async def resync(s: Services) -> None:
    """Load every doctor-session of the catalog and ask the engine how each stands."""
    yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
    docs = [d for d in await s.catalog.sessions() if d["date"] >= yesterday]
    for doc in docs:
        s.availability.add(doc)
    for i in range(0, len(docs), RESYNC_CHUNK):
        chunk = docs[i : i + RESYNC_CHUNK]
        states = await asyncio.gather(*(s.engine.session_state(d["id"]) for d in chunk))
        for state in states:
            if isinstance(state, SessionState):
                s.availability.update(
                    state.session_id, state.status, state.remaining, state.version
                )


async def resync_once(s: Services) -> None:
    try:
        await resync(s)
    except Exception as exc:
        log.warning("availability resync failed: %s", exc)


async def resync_forever(s: Services) -> None:
    while True:
        await asyncio.sleep(RESYNC_SECONDS)
        try:
            await resync(s)
        except Exception as exc:  # keep serving from the view; try again later
            log.warning("availability resync failed: %s", exc)


async def release_rotas_forever(s: Services) -> None:
    """Release the sessions of doctors' rotas as their time comes (every worker does it;
    the ids are deterministic, so a session is made once)."""
    while True:
        try:
            await release_due(s)
        except Exception as exc:
            log.warning("rota release failed: %s", exc)
        await asyncio.sleep(ROTA_SECONDS)


async def pull_his_forever(s: Services) -> None:
    """Import schedules and suspensions from every configured HIS (idempotent, so every
    worker may do it)."""
    while True:
        await asyncio.sleep(PULL_SECONDS)
        try:
            await pull_all(s)
        except Exception as exc:
            log.warning("HIS pull failed: %s", exc)


async def fetch_holders_forever(s: Services) -> None:
    """Learn who holds bookings in sessions that can no longer be booked (see the view)."""
    while True:
        await asyncio.sleep(HOLDERS_SECONDS)
        wanted = s.availability.missing_holders
        if not wanted:
            continue
        s.availability.missing_holders = set()
        try:
            for session_id in wanted:
                listed = await s.engine.session_bookings(session_id)
                if isinstance(listed, Bookings):
                    patients = frozenset(b.patient_id for b in listed.bookings)
                    s.availability.set_holders(session_id, listed.version, patients)
        except Exception as exc:  # keep the loop alive; the fast path waits meanwhile
            log.warning("fetching holders failed: %s", exc)
            s.availability.missing_holders |= wanted


async def listen(s: Services, ready: asyncio.Event) -> None:
    """Follow stock changes and new doctor-sessions; resubscribe after a Redis outage."""
    keys = s.engine.store.keys
    first = True
    while True:
        pubsub = s.engine.store.client.pubsub()
        try:
            await pubsub.subscribe(
                keys.stock_channel, keys.catalog_channel, keys.clock_channel, keys.token_channel
            )
            ready.set()
            if not first:  # subscribed again: now catch up on what was missed meanwhile
                s.tasks.append(asyncio.create_task(resync_once(s)))
                s.tasks.append(asyncio.create_task(s.load_token_versions()))
            first = False
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                channel = message["channel"].decode()
                if channel == keys.catalog_channel:
                    s.availability.add(orjson.loads(message["data"]))
                elif channel == keys.clock_channel:
                    offset = usable_offset(message["data"], s.settings.movable_clock)
                    s.engine.clock.set_offset(offset)
                elif channel == keys.token_channel:
                    patient, _, version = message["data"].decode().partition(":")
                    s.tokens.set_version(int(patient), int(version))
                else:
                    for session_id, status, left, version in parse_stock_message(message["data"]):
                        s.availability.update(session_id, status, left, version)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("pub/sub lost (%s); resubscribing", exc)
            await asyncio.sleep(0.5)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
