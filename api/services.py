"""What one API worker holds: its engine client, catalog, availability view, tokens, limits.

Each uvicorn worker is a Ray driver: it joins the running cluster, finds the host pool by name
and talks to it through its own mailboxes (never Ray Client or Ray Serve on the booking path).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import ray

from engine.actors.names import find_pool
from engine.backoffice.deliveries import Deliveries
from engine.backoffice.record_book import RecordBook
from engine.client import Engine
from engine.core.clock import usable_offset
from engine.outcomes import Bookings, SessionState
from engine.runtime import init_ray
from engine.settings import Settings
from engine.store.dead_letters import DeadLetters
from engine.store.keys import Keys
from engine.store.shards import parse_stock_message

from . import metrics
from .admins import Admins
from .answers import Clock
from .auth import Tokens, new_secret
from .availability import Availability
from .catalog import Catalog
from .limits import PasswordWork, Proxies, RateLimiter, SharedLimiter
from .upgrades import run_upgrades

log = logging.getLogger(__name__)
ROTA_SECONDS = 60.0  # how often each worker releases rota sessions that came due
RESYNC_SECONDS = 60.0  # a safety net: pub/sub keeps the view fresh
RESYNC_CHUNK = 256  # state requests per step, so a resync never stalls the booking path
HOLDERS_SECONDS = 0.05
HEALTH_SECONDS = 1.0  # /readyz answers from a state refreshed this often
STOP_SECONDS = 5.0  # a worker's background work and client get this long to stop
FIGURES_SECONDS = 2.0  # /metrics' courier and outbox figures, likewise


async def shared_secret(settings: Settings, client: Any, keys: Keys) -> str:
    """The token-signing key: SLOTENGINE_SECRET, else one made once and kept in Redis so that
    every worker (and ``slotengine seed``) signs and checks with the same key."""
    if settings.secret is not None:
        return settings.secret
    await client.set(keys.api_secret, new_secret(), nx=True)
    return (await client.get(keys.api_secret)).decode()


def _observe(size: int, seconds: float) -> None:
    metrics.BATCH.observe(size)
    metrics.HOST_CALL.observe(seconds)


@dataclass
class Services:
    settings: Settings
    engine: Engine
    catalog: Catalog
    availability: Availability
    tokens: Tokens
    admins: Admins
    clock: Clock
    limiter: RateLimiter  # booking requests per patient, in this worker's memory
    addresses: RateLimiter  # booking requests per client address, likewise
    shared: SharedLimiter  # the other limits, shared by every worker (Redis)
    passwords: PasswordWork  # Argon2, on a few threads of its own
    proxies: Proxies  # whose X-Forwarded-For is believed
    records: RecordBook
    deliveries: Deliveries
    dead_letters: DeadLetters
    health: dict[str, Any] = field(default_factory=lambda: {"redis": "unknown", "ray": "unknown"})
    figures: dict[str, float] = field(default_factory=dict)  # the courier's, for /metrics
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings) -> Services:
        if settings.admin_token is None:
            raise RuntimeError("SLOTENGINE_ADMIN_TOKEN must be set (slotengine up makes one)")
        if not ray.is_initialized():
            init_ray(settings)
        engine = Engine(settings, find_pool(settings), observe=_observe)
        client, keys = engine.store.client, engine.store.keys
        secret = await shared_secret(settings, client, keys)
        clock = Clock(settings.timezone)
        services = cls(
            settings=settings,
            engine=engine,
            catalog=Catalog(client, keys),
            availability=Availability(clock),
            tokens=Tokens(secret, settings.admin_token, settings.token_days * 86400),
            admins=Admins(client, keys, secret, settings.token_days * 86400),
            clock=clock,
            limiter=RateLimiter(settings.rate_per_second, settings.rate_burst),
            addresses=RateLimiter.of(settings.limit_book_address),
            shared=SharedLimiter(client, keys),
            passwords=PasswordWork(settings.argon2_concurrency),
            proxies=Proxies(settings.trusted_proxies),
            records=RecordBook(client, keys),
            deliveries=Deliveries.from_settings(client, keys, settings),
            dead_letters=DeadLetters(client, keys),
        )
        await run_upgrades(client, keys)
        await engine.load_clock()
        ready = asyncio.Event()
        services.tasks.append(asyncio.create_task(services._listen(ready)))
        await asyncio.wait_for(ready.wait(), 10)
        await services.load_token_versions()  # after subscribing: no revocation falls between
        await services.resync()
        services.tasks.append(asyncio.create_task(services._resync_forever()))
        services.tasks.append(asyncio.create_task(services._fetch_holders_forever()))
        services.tasks.append(asyncio.create_task(services._release_rotas_forever()))
        services.tasks.append(asyncio.create_task(services._pull_his_forever()))
        await services.check_health()
        services.tasks.append(
            asyncio.create_task(services._every(HEALTH_SECONDS, services.check_health))
        )
        services.tasks.append(
            asyncio.create_task(services._every(FIGURES_SECONDS, services.read_figures))
        )
        return services

    async def load_token_versions(self) -> None:
        """Every revoked patient's token version (pub/sub keeps them current afterwards)."""
        raw = await self.engine.store.client.hgetall(self.engine.store.keys.token_versions)
        for patient, revoked in raw.items():
            self.tokens.set_version(int(patient), int(revoked) + 1)

    async def revoke_tokens(self, patient_id: int) -> int:
        """Void every token the patient holds (logout, new password); the new version, which
        every worker learns by pub/sub."""
        client, keys = self.engine.store.client, self.engine.store.keys
        version = int(await client.hincrby(keys.token_versions, str(patient_id), 1)) + 1
        self.tokens.set_version(patient_id, version)
        await client.publish(keys.token_channel, f"{patient_id}:{version}")
        return version

    async def token_version(self, patient_id: int) -> int:
        """The patient's current token version, from Redis (for issuing a token)."""
        client, keys = self.engine.store.client, self.engine.store.keys
        revoked = await client.hget(keys.token_versions, str(patient_id))
        version = 1 if revoked is None else int(revoked) + 1
        self.tokens.set_version(patient_id, version)
        return version

    async def check_health(self) -> None:
        """Is Redis reachable, does every host answer? Kept for /readyz, which never sends a
        call of its own (a scrape storm must not queue behind bookings in the hosts)."""
        health: dict[str, Any] = {}
        try:
            await asyncio.wait_for(self.engine.store.client.ping(), 2)
            health["redis"] = "ok"
        except Exception as exc:
            health["redis"] = f"unreachable: {type(exc).__name__}"
        calls = [asyncio.ensure_future(h.info.remote()) for h in self.engine.hosts]
        done, pending = await asyncio.wait(calls, timeout=5)
        for call in pending:
            call.cancel()
        failed = [c.exception() for c in done if c.exception() is not None]
        if pending or failed:
            reason = type(failed[0]).__name__ if failed else "TimeoutError"
            health["ray"] = f"unreachable: {reason}"
        else:
            health["ray"] = "ok"
        health["checked_at"] = time.time()
        self.health = health

    async def read_figures(self) -> None:
        """The outbox's backlog, the dead letters and the courier's counters, for /metrics."""
        client, keys = self.engine.store.client, self.engine.store.keys
        figures: dict[str, float] = {}
        try:
            figures["outbox_pending"] = await client.xlen(keys.outbox)
            figures["unsettled_payments"] = await client.zcard(keys.pending_payments)
            figures["dead_letters_waiting"] = await self.dead_letters.count()
            call = asyncio.ensure_future(self.engine.courier_info())
            done, _ = await asyncio.wait([call], timeout=2)
            if not done:
                call.cancel()
                raise TimeoutError("the courier did not answer within 2 s")
            figures.update({k: float(v) for k, v in call.result().items()})
        except Exception as exc:  # metrics never fail the scrape: the last figures stay
            log.warning("courier figures unavailable: %s", exc)
            return
        self.figures = figures

    async def _every(self, seconds: float, job: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception as exc:
                log.warning("%s failed: %s", getattr(job, "__name__", job), exc)

    def now(self) -> float:
        """The one clock (wall time unless a test or demo moved it)."""
        return self.engine.clock.now()

    async def stop(self) -> None:
        """Stop the background work and close the engine client, within a deadline each: a
        worker shutting down never hangs on a task or a connection that will not finish
        (``asyncio.wait`` does not wait for a cancelled task to agree)."""
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            done, pending = await asyncio.wait(self.tasks, timeout=STOP_SECONDS)
            for task in done:  # retrieve what each ended with, so nothing is logged as lost
                if not task.cancelled():
                    task.exception()
            if pending:
                log.warning("background work still running at stop: %s", sorted(map(str, pending)))
        self.passwords.close()
        closing = asyncio.ensure_future(self.engine.close())
        done, _ = await asyncio.wait([closing], timeout=STOP_SECONDS)
        if not done:
            log.warning("the engine client did not close within %s s", STOP_SECONDS)

    async def resync(self) -> None:
        """Load every doctor-session of the catalog and ask the engine how each stands."""
        yesterday = (datetime.date.today() - datetime.timedelta(days=1)).isoformat()
        docs = [d for d in await self.catalog.sessions() if d["date"] >= yesterday]
        for doc in docs:
            self.availability.add(doc)
        for i in range(0, len(docs), RESYNC_CHUNK):
            chunk = docs[i : i + RESYNC_CHUNK]
            states = await asyncio.gather(*(self.engine.session_state(d["id"]) for d in chunk))
            for state in states:
                if isinstance(state, SessionState):
                    self.availability.update(
                        state.session_id, state.status, state.remaining, state.version
                    )

    async def _resync_once(self) -> None:
        try:
            await self.resync()
        except Exception as exc:
            log.warning("availability resync failed: %s", exc)

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(RESYNC_SECONDS)
            try:
                await self.resync()
            except Exception as exc:  # keep serving from the view; try again later
                log.warning("availability resync failed: %s", exc)

    async def _release_rotas_forever(self) -> None:
        """Release the sessions of doctors' rotas as their time comes (every worker does it;
        the ids are deterministic, so a session is made once)."""
        from .rotas import release_due

        while True:
            try:
                await release_due(self)
            except Exception as exc:
                log.warning("rota release failed: %s", exc)
            await asyncio.sleep(ROTA_SECONDS)

    async def _pull_his_forever(self) -> None:
        """Import schedules and suspensions from every configured HIS (idempotent, so every
        worker may do it)."""
        from .his_import import PULL_SECONDS, pull_all

        while True:
            await asyncio.sleep(PULL_SECONDS)
            try:
                await pull_all(self)
            except Exception as exc:
                log.warning("HIS pull failed: %s", exc)

    async def _fetch_holders_forever(self) -> None:
        """Learn who holds bookings in sessions that can no longer be booked (see the view)."""
        while True:
            await asyncio.sleep(HOLDERS_SECONDS)
            wanted = self.availability.missing_holders
            if not wanted:
                continue
            self.availability.missing_holders = set()
            try:
                for session_id in wanted:
                    listed = await self.engine.session_bookings(session_id)
                    if isinstance(listed, Bookings):
                        patients = frozenset(b.patient_id for b in listed.bookings)
                        self.availability.set_holders(session_id, listed.version, patients)
            except Exception as exc:  # keep the loop alive; the fast path waits meanwhile
                log.warning("fetching holders failed: %s", exc)
                self.availability.missing_holders |= wanted

    async def _listen(self, ready: asyncio.Event) -> None:
        """Follow stock changes and new doctor-sessions; resubscribe after a Redis outage."""
        keys = self.engine.store.keys
        first = True
        while True:
            pubsub = self.engine.store.client.pubsub()
            try:
                await pubsub.subscribe(
                    keys.stock_channel, keys.catalog_channel, keys.clock_channel, keys.token_channel
                )
                ready.set()
                if not first:  # subscribed again: now catch up on what was missed meanwhile
                    self.tasks.append(asyncio.create_task(self._resync_once()))
                    self.tasks.append(asyncio.create_task(self.load_token_versions()))
                first = False
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    channel = message["channel"].decode()
                    if channel == keys.catalog_channel:
                        self.availability.add(orjson.loads(message["data"]))
                    elif channel == keys.clock_channel:
                        offset = usable_offset(message["data"], self.settings.movable_clock)
                        self.engine.clock.set_offset(offset)
                    elif channel == keys.token_channel:
                        patient, _, version = message["data"].decode().partition(":")
                        self.tokens.set_version(int(patient), int(version))
                    else:
                        for session_id, status, left, version in parse_stock_message(
                            message["data"]
                        ):
                            self.availability.update(session_id, status, left, version)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("pub/sub lost (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
