"""Limits: the shared GCRA against the session's real embedded Redis server (``redis_server``,
``redis_client``: flushed per test), several real connections standing for several API
workers; the in-memory bucket, ``client_address`` and ``PasswordWork`` with no services (real
threads for the latter)."""

from __future__ import annotations

import asyncio
import random
import threading
import time

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from api.errors import retry_after_header
from api.fastpath.limits import (
    UNKNOWN,
    PasswordWork,
    Proxies,
    RateLimiter,
    SharedLimiter,
    client_address,
    subject_key,
)
from engine.errors import StoreUnavailable
from engine.settings import Limit
from engine.store.embedded import free_port
from engine.store.keys import Keys

KEYS = Keys("tl")
FIVE_PER_SECOND = Limit(count=5, seconds=1)


@pytest.fixture
def shared(redis_client) -> SharedLimiter:
    return SharedLimiter(redis_client, KEYS)


# ----- the shared GCRA ----------------------------------------------------------------------


async def test_a_fresh_subject_may_make_count_requests_at_once(shared):
    waits = [await shared.hit("login", "13800000000", FIVE_PER_SECOND) for _ in range(5)]
    assert waits == [0.0] * 5


async def test_the_next_request_is_refused_with_a_wait_of_about_one_interval(shared):
    for _ in range(5):
        await shared.hit("login", "13800000000", FIVE_PER_SECOND)
    wait = await shared.hit("login", "13800000000", FIVE_PER_SECOND)
    assert 0.15 < wait <= 0.2  # seconds / count, less the time the five took


async def test_after_waiting_that_long_one_more_request_passes(shared):
    for _ in range(5):
        await shared.hit("login", "13800000000", FIVE_PER_SECOND)
    wait = await shared.hit("login", "13800000000", FIVE_PER_SECOND)
    await asyncio.sleep(wait + 0.005)
    assert await shared.hit("login", "13800000000", FIVE_PER_SECOND) == 0.0
    assert await shared.hit("login", "13800000000", FIVE_PER_SECOND) > 0.0


async def test_refused_requests_are_not_counted(shared, redis_client):
    for _ in range(5):
        await shared.hit("login", "13800000000", FIVE_PER_SECOND)
    key = KEYS.limit("login", "13800000000")
    before = await redis_client.get(key)
    waits = [await shared.hit("login", "13800000000", FIVE_PER_SECOND) for _ in range(20)]
    assert all(w > 0.0 for w in waits)
    assert await redis_client.get(key) == before
    assert before.isdigit()  # whole microseconds
    await asyncio.sleep(waits[-1] + 0.005)
    assert await shared.hit("login", "13800000000", FIVE_PER_SECOND) == 0.0


async def test_two_subjects_are_independent(shared):
    for _ in range(5):
        await shared.hit("login", "13800000000", FIVE_PER_SECOND)
    assert await shared.hit("login", "13800000000", FIVE_PER_SECOND) > 0.0
    assert await shared.hit("login", "13900000000", FIVE_PER_SECOND) == 0.0
    assert await shared.hit("register", "13800000000", FIVE_PER_SECOND) == 0.0


async def test_a_key_expires_no_later_than_its_subject_is_fresh_again(shared, redis_client):
    for _ in range(5):
        await shared.hit("login", "13800000000", FIVE_PER_SECOND)
    assert 800 < await redis_client.pttl(KEYS.limit("login", "13800000000")) <= 1000


async def test_an_idle_subjects_key_vanishes(shared, redis_client):
    await shared.hit("login", "13800000000", Limit(count=1, seconds=0.05))
    assert await redis_client.exists(KEYS.limit("login", "13800000000")) == 1
    await asyncio.sleep(0.1)
    assert await redis_client.exists(KEYS.limit("login", "13800000000")) == 0


async def test_long_or_odd_subjects_become_bounded_hashed_keys(shared, redis_client):
    odd = ["x" * 10_000, "a b", "{tag}", "电话", "1.2.3.4\r\nDEL *"]
    for subject in odd:
        assert await shared.hit("login", subject, FIVE_PER_SECOND) == 0.0
    keys = [k.decode() for k in await redis_client.keys("tl:limit:login:*")]
    assert len(keys) == len(odd)
    assert all(len(k) <= len("tl:limit:login:#") + 32 for k in keys)
    assert subject_key("2001:db8::1") == "2001:db8::1"
    assert subject_key("a b").startswith("#")


async def test_the_script_is_loaded_again_after_redis_forgets_it(shared, redis_client):
    assert await shared.hit("login", "13800000000", FIVE_PER_SECOND) == 0.0
    await redis_client.script_flush()  # as after a restart of the server
    assert await shared.hit("login", "13800000000", FIVE_PER_SECOND) == 0.0


async def test_an_unreachable_redis_surfaces_as_store_unavailable():
    no_retry = Retry(NoBackoff(), 0)  # redis-py would retry with backoff for seconds
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), retry=no_retry)
    try:
        with pytest.raises(StoreUnavailable):
            await SharedLimiter(client, KEYS).hit("login", "13800000000", FIVE_PER_SECOND)
    finally:
        await client.aclose()


async def test_every_worker_shares_one_limit_whatever_the_interleaving(redis_server, redis_client):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    limit = Limit(count=20, seconds=60)
    workers = [aioredis.Redis.from_url(redis_server.url) for _ in range(4)]  # 4 connection pools
    try:
        limiters = [SharedLimiter(w, KEYS) for w in workers]

        async def one(limiter: SharedLimiter, delay: float) -> float:
            await asyncio.sleep(delay)
            return await limiter.hit("pay", "patient-7", limit)

        calls = [(limiter, rng.random() * 0.01) for limiter in limiters for _ in range(50)]
        rng.shuffle(calls)
        waits = await asyncio.gather(*(one(limiter, delay) for limiter, delay in calls))
    finally:
        for w in workers:
            await w.aclose()
    assert sum(1 for w in waits if w == 0.0) == 20
    assert all(0.0 < w <= 3.0 for w in waits if w != 0.0)  # one interval is 60 / 20 s


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one():
    assert [retry_after_header(s) for s in (0.001, 1.0, 1.2, 59.9)] == ["1", "1", "2", "60"]


# ----- who is asking ------------------------------------------------------------------------

PROXIES = Proxies(["10.0.0.0/8", "fd00::/8"])


def scope(peer: str | None, *forwarded: str) -> dict:
    headers = [(b"host", b"api.example")] + [(b"x-forwarded-for", f.encode()) for f in forwarded]
    return {"client": None if peer is None else (peer, 50000), "headers": headers}


@pytest.mark.parametrize(
    ("request_scope", "proxies", "expected"),
    [
        (scope("203.0.113.9", "1.1.1.1"), Proxies(), "203.0.113.9"),  # no proxies: XFF ignored
        (scope("10.0.0.2", "1.1.1.1"), Proxies(), "10.0.0.2"),
        (scope("10.0.0.2", "1.1.1.1"), PROXIES, "1.1.1.1"),  # trusted peer
        (scope("10.0.0.2", "6.6.6.6, 1.1.1.1"), PROXIES, "1.1.1.1"),  # the client's own lie
        (scope("10.0.0.2", "6.6.6.6, 1.1.1.1, 10.0.0.7, 10.1.2.3"), PROXIES, "1.1.1.1"),
        (scope("10.0.0.2", "6.6.6.6, 1.1.1.1", "10.0.0.7"), PROXIES, "1.1.1.1"),  # two headers
        (scope("10.0.0.2"), PROXIES, "10.0.0.2"),  # a trusted peer without XFF
        (scope("10.0.0.2", "10.0.0.9, 10.0.0.8"), PROXIES, "10.0.0.9"),  # every hop is ours
        (scope("203.0.113.9", "10.0.0.1"), PROXIES, "203.0.113.9"),  # untrusted peer: ignored
        (scope("10.0.0.2", "1.1.1.1, garbage"), PROXIES, "garbage"),  # stops the walk
        (scope("10.0.0.2", "1.1.1.1, " + "z" * 500), PROXIES, "z" * 64),
        (scope("10.0.0.2", "1.1.1.1,, "), PROXIES, UNKNOWN),
        (scope("10.0.0.2", "1.1.1.1:4711"), PROXIES, "1.1.1.1"),  # with a port
        (scope("fd00::1", "2001:DB8::5, fd00::2"), PROXIES, "2001:db8::5"),  # IPv6
        (scope("fd00::1", "[2001:db8::5]:443"), PROXIES, "2001:db8::5"),
        (scope("::ffff:10.0.0.2", "1.1.1.1"), PROXIES, "1.1.1.1"),  # IPv4-mapped peer
        (scope("2001:db8::9", "1.1.1.1"), PROXIES, "2001:db8::9"),
        (scope("testclient", "1.1.1.1"), PROXIES, "testclient"),  # not an address
        (scope(None, "1.1.1.1"), PROXIES, UNKNOWN),  # no client
        (scope(None), Proxies(), UNKNOWN),
    ],
)
def test_client_address_believes_forwarding_only_from_trusted_proxies(
    request_scope, proxies, expected
):
    assert client_address(request_scope, proxies) == expected


def test_proxies_are_false_when_there_are_none():
    assert not Proxies()
    assert Proxies(["127.0.0.1"])


def test_proxies_remember_a_bounded_number_of_address_texts():
    proxies = Proxies(["10.0.0.0/8"])
    for i in range(10_000):
        client_address(scope("10.0.0.2", f"1.1.{i // 256}.{i % 256}"), proxies)
    assert len(proxies._seen) <= 4096
    assert proxies.classify("10.9.9.9") == ("10.9.9.9", True)


# ----- the per-worker bucket ----------------------------------------------------------------


def test_the_memory_limiter_keeps_string_subjects_apart():
    limiter = RateLimiter(rate=1.0, burst=2)
    assert limiter.allow("1.1.1.1", 0.0)
    assert limiter.allow("1.1.1.1", 0.0)
    assert not limiter.allow("1.1.1.1", 0.0)
    assert limiter.allow("2001:db8::1", 0.0)
    assert limiter.allow(7, 0.0)


def test_the_memory_limiter_tells_how_long_to_wait():
    limiter = RateLimiter.of(Limit(count=2, seconds=1))  # 2 at once, one every 0.5 s
    assert limiter.hit("1.1.1.1", 10.0) == 0.0
    assert limiter.hit("1.1.1.1", 10.0) == 0.0
    assert limiter.hit("1.1.1.1", 10.0) == pytest.approx(0.5)
    assert limiter.hit("1.1.1.1", 10.2) == pytest.approx(0.3)
    assert limiter.hit("1.1.1.1", 10.5) == 0.0


def test_the_memory_limiter_forgets_full_buckets_and_keeps_live_ones():
    limiter = RateLimiter(rate=1.0, burst=1)
    limiter.sweep_at = 2
    limiter.hit("old", 0.0)
    limiter.hit("new", 5.0)
    limiter.hit("newer", 5.0)
    assert set(limiter.buckets) == {"new", "newer"}


# ----- password work ------------------------------------------------------------------------


async def test_password_work_runs_at_most_concurrency_calls_at_once():
    work = PasswordWork(2)
    lock = threading.Lock()
    running, most = 0, 0

    def slow(x: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return x * 2

    try:
        assert await asyncio.gather(*(work.run(slow, i) for i in range(8))) == [
            i * 2 for i in range(8)
        ]
    finally:
        work.close()
    assert most == 2


async def test_password_work_says_when_it_is_busy_and_how_many_wait():
    work = PasswordWork(1)
    go = threading.Event()
    try:
        assert not work.busy
        first = asyncio.ensure_future(work.run(go.wait, 5))
        second = asyncio.ensure_future(work.run(go.wait, 5))
        await asyncio.sleep(0.02)
        assert work.busy
        assert work.waiting == 1
        go.set()
        assert await asyncio.gather(first, second) == [True, True]
        assert not work.busy
        assert work.waiting == 0
    finally:
        go.set()
        work.close()


async def test_a_cancelled_caller_keeps_its_slot_until_its_work_ends():
    work = PasswordWork(1)
    go = threading.Event()
    try:
        first = asyncio.ensure_future(work.run(go.wait, 5))
        await asyncio.sleep(0.02)
        first.cancel()
        await asyncio.sleep(0.02)
        assert work.busy  # the thread still hashes
        go.set()
        assert await work.run(lambda: "next") == "next"
    finally:
        go.set()
        work.close()
