"""What one API worker holds: its engine client, catalog, availability view, tokens, limits;
the container every route reaches through ``ServicesDep``. Its background work is ``jobs.py``.

Each uvicorn worker is a Ray driver: it joins the running cluster, finds the host pool by name
and talks to it through its own mailboxes (never Ray Client or Ray Serve on the booking path).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import ray

from api import metrics
from api.accounts.admins import Admins
from api.accounts.auth import Tokens, new_secret
from api.answers import LocalTime
from api.catalog.catalog import Catalog
from api.fastpath.availability import Availability
from api.fastpath.limits import PasswordWork, Proxies, RateLimiter, SharedLimiter
from api.upgrades import run_upgrades
from engine.actors.names import find_pool
from engine.backoffice.deliveries import Deliveries
from engine.backoffice.record_book import RecordBook
from engine.client import Engine
from engine.runtime import init_ray
from engine.settings import Settings
from engine.store.dead_letters import DeadLetters
from engine.store.keys import Keys

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
    clock: LocalTime
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
        clock = LocalTime(settings.timezone)
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
