"""Limits against scripted clients (黄牛) and floods: who is asking, and how often they may.

- ``RateLimiter``: a token bucket in one worker's memory. Cheap (no Redis), so it guards the
  booking path; with N workers a subject gets at most N times the rate.
- ``SharedLimiter``: a GCRA in Redis, shared by every worker, for the rarer and costlier
  routes (register, login, pay, cancel) where N times the rate would be too much.
- ``client_address``: the client's address of an ASGI request, believing ``X-Forwarded-For``
  only from trusted proxies (``Proxies``).
- ``PasswordWork``: Argon2 on its own few threads, so a login flood cannot take every thread
  of the shared pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar, TypeVarTuple

import redis.asyncio as aioredis

from engine.errors import StoreUnavailable
from engine.settings import Limit
from engine.store.connect import REDIS_ERRORS
from engine.store.keys import Keys

__all__ = [
    "UNKNOWN",
    "PasswordWork",
    "Proxies",
    "RateLimiter",
    "SharedLimiter",
    "client_address",
    "subject_key",
]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

UNKNOWN = "unknown"  # the client address when the server does not know the peer


# ----- per worker, in memory ----------------------------------------------------------------


class RateLimiter:
    """A token bucket per subject (a patient id, a phone's hash, a client address), in this
    worker's memory: ``burst`` requests at once, then ``rate`` per second."""

    __slots__ = ("buckets", "burst", "rate", "sweep_at")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.buckets: dict[int | str, tuple[float, float]] = {}  # subject → (tokens, at)
        self.sweep_at = 200_000  # forget the full buckets when there are more than this

    @classmethod
    def of(cls, limit: Limit) -> RateLimiter:
        """The bucket for a ``Limit``: ``count`` at once, ``count`` per ``seconds`` sustained."""
        return cls(limit.rate, limit.count)

    def hit(self, subject: int | str, now: float) -> float:
        """0.0 if the subject may go on (the request is counted), else the seconds until it
        may (for ``Retry-After``). ``now`` is a monotonic clock's."""
        tokens, at = self.buckets.get(subject, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self.buckets[subject] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self.buckets[subject] = (tokens - 1.0, now)
        if len(self.buckets) > self.sweep_at:
            self._forget_full(now)
        return 0.0

    def allow(self, subject: int | str, now: float) -> bool:
        """Whether the subject may go on (``hit`` without the wait)."""
        return self.hit(subject, now) == 0.0

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: they hold no information.

        If most buckets are still live, the next sweep waits until there are twice as many,
        so that sweeping stays amortised O(1) a request under a crowd of distinct subjects.
        """
        full = self.burst / self.rate
        self.buckets = {s: (t, at) for s, (t, at) in self.buckets.items() if now - at < full}
        self.sweep_at = max(200_000, 2 * len(self.buckets))


# ----- shared by every worker, in Redis -----------------------------------------------------

# KEYS[1]: the subject's theoretical arrival time (TAT), in microseconds of the server's clock.
# ARGV[1]: the emission interval T (µs); ARGV[2]: the burst tolerance (µs).
# Returns 0 (allowed, and counted) or the µs to wait before the next request would be allowed.
# Whole microseconds keep the arithmetic exact in Lua's doubles (well below 2^53).
GCRA = """
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then tat = now end
local next_tat = tat + interval
local wait = next_tat - tolerance - now
if wait > 0 then return wait end
redis.call('SET', KEYS[1], string.format('%d', next_tat),
    'PX', math.ceil((next_tat - now) / 1000))
return 0
"""

_PLAIN_SUBJECT = re.compile(r"[0-9A-Za-z_.:@+-]{1,64}")


def subject_key(subject: str) -> str:
    """A subject as it appears in a key: as is when short and plain (phones, addresses, ids),
    else ``#`` and a 128-bit BLAKE2b of it (bounded, no braces or spaces; ``#`` keeps the two
    forms apart)."""
    if _PLAIN_SUBJECT.fullmatch(subject):
        return subject
    digest = hashlib.blake2b(subject.encode("utf-8", "surrogatepass"), digest_size=16)
    return "#" + digest.hexdigest()


class SharedLimiter:
    """Limits shared by every API worker: a GCRA per (limit name, subject) in Redis.

    A ``Limit(count, seconds)`` lets a fresh subject make ``count`` requests at once, then one
    every ``seconds / count``. One Lua script reads and writes the subject's key atomically
    on the Redis server's clock, so workers agree whatever their own clocks say; a key
    expires once its subject is back to fresh.
    """

    __slots__ = ("keys", "script")

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.keys = keys
        # loaded by SHA; reloaded by redis-py when the server answers NOSCRIPT (a restart)
        self.script = client.register_script(GCRA)

    async def hit(self, name: str, subject: str, limit: Limit) -> float:
        """0.0 if the subject may go on (the request is counted), else the seconds to wait
        before the next would be allowed (a refused request is not counted).

        Raises ``StoreUnavailable`` if Redis cannot be reached (the API answers 503).
        """
        interval = max(1, round(limit.seconds * 1_000_000 / limit.count))
        key = self.keys.limit(name, subject_key(subject))
        try:
            wait = await self.script(keys=[key], args=[interval, interval * limit.count])
        except REDIS_ERRORS as exc:
            raise StoreUnavailable(f"rate limit {name} unavailable: {exc}") from exc
        return int(wait) / 1_000_000


# ----- who is asking ------------------------------------------------------------------------

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_MAX_TEXT = 64  # an unparsable X-Forwarded-For entry is kept to this many characters
_SEEN_MAX = 4096  # address texts Proxies remembers


class Proxies:
    """The networks whose ``X-Forwarded-For`` is believed, parsed once (e.g. from
    ``settings.trusted_proxies``). False when there are none.

    What an address text is (its canonical form, ours or not) is remembered for the next
    request, a few thousand texts at most: parsing costs microseconds, a look-up does not.
    """

    __slots__ = ("_seen", "networks")

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)
        self._seen: dict[str, tuple[str, bool] | None] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: Address) -> bool:
        """Whether ``address`` is one of our proxies (IPv4-mapped IPv6 counts as IPv4)."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def classify(self, text: str) -> tuple[str, bool] | None:
        """(canonical address, whether it is ours) of an address text; None if it is not an
        address (a port written after it is dropped)."""
        try:
            return self._seen[text]
        except KeyError:
            pass
        address = _parse(text)
        result = None if address is None else (str(address), self.trusts(address))
        if len(self._seen) >= _SEEN_MAX:
            self._seen.clear()  # a crowd of distinct texts: start over rather than grow
        self._seen[text] = result
        return result


def _parse(text: str) -> Address | None:
    """An address, also when a proxy wrote it with a port (``1.2.3.4:80``, ``[::1]:80``)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if text.startswith("["):
        host = text[1 : text.find("]")]
    elif text.count(":") == 1:
        host = text.partition(":")[0]
    else:
        return None
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def client_address(scope: dict[str, Any], proxies: Proxies) -> str:
    """The client's address of an ASGI request.

    The socket's peer, unless the peer is a trusted proxy: then ``X-Forwarded-For`` is read
    from the right, past our own proxies, and the first address that is not ours is the
    client (what is further left was written by the client and proves nothing). An entry
    that does not parse stops the walk and counts as the client; if every entry is ours,
    the leftmost is. ``X-Forwarded-For`` from an untrusted peer is never believed. Without
    trusted proxies this is the peer, at once.
    """
    client = scope.get("client")
    if client is None:
        return UNKNOWN
    peer: str = client[0]
    if not proxies:
        return peer
    known = proxies.classify(peer)
    if known is None or not known[1]:
        return peer
    values = [v for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
    if not values:
        return peer
    address = peer
    for hop in reversed(b",".join(values).decode("latin-1").split(",")):
        text = hop.strip()
        known = proxies.classify(text)
        if known is None:
            return text[:_MAX_TEXT] or UNKNOWN
        address, ours = known
        if not ours:
            break
    return address


# ----- password hashing ---------------------------------------------------------------------


class PasswordWork:
    """Argon2 (or any CPU-heavy call) on ``concurrency`` threads of its own, at most
    ``concurrency`` calls at once; the others wait their turn in the event loop, where a
    cancelled wait costs nothing.

    ``busy`` and ``waiting`` let a route shed load (answer 503 with ``Retry-After`` at once)
    rather than queue a flood of logins behind each other.
    """

    __slots__ = ("_concurrency", "_pool", "_slots", "_waiting")

    def __init__(self, concurrency: int) -> None:
        self._concurrency = concurrency
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="argon2")
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting = 0

    @property
    def busy(self) -> bool:
        """Whether every slot is taken (a new call would wait)."""
        return self._slots.locked()

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot."""
        return self._waiting

    async def run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """``fn(*args)`` on a thread of this pool, once a slot is free.

        The slot is held until ``fn`` returns, even if the caller is cancelled meanwhile, so
        no more than ``concurrency`` calls ever run at once.
        """
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        loop = asyncio.get_running_loop()
        try:
            future = self._pool.submit(fn, *args)
        except BaseException:
            self._slots.release()
            raise

        def release(_: Future[T]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing waits any more
                loop.call_soon_threadsafe(self._slots.release)

        future.add_done_callback(release)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        """Stop the threads (calls not started are cancelled); for the worker's shutdown."""
        self._pool.shutdown(wait=False, cancel_futures=True)
