"""A commit whose round trip failed is answered only with what is known (invariant 3).

Real Redis (the session's embedded server, and a private one that is paused with SIGSTOP); the
host is the real ``Host`` class, driven in this process (no timer) for the injected failures, and
a real host pool on the local Ray for the paused server and for a dead host.

- known not to have run (the connection could not be made, or the settle read-back shows the
  commit never ran and fences it) → ``Unavailable``: "nothing was booked" is true;
- it ran, though the round trip failed → the booking is answered (read back and confirmed);
- cannot be known (Redis does not answer the read-back either) → ``OutcomeUnknown``, and the
  same request id later tells what happened, never making a second booking.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import time

import pytest
import ray
from ray.exceptions import RayActorError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.actors.channel import ChannelError
from engine.actors.host import Host
from engine.client import Engine, Mailbox, request_key
from engine.core.protocol import BOOK, LOOKUP
from engine.core.session import SessionSpec
from engine.outcomes import Booked, OutcomeUnknown, Unavailable
from engine.runtime import Runtime
from engine.store.embedded import EmbeddedRedis
from engine.store.shards import Store
from tests import helpers

NOW = time.time()


def spec(session_id: str = "c1", capacity: int = 3) -> SessionSpec:
    date = time.strftime("%Y-%m-%d", time.gmtime(NOW + 5 * 86400))
    return helpers.spec(
        id=session_id, hospital_id="hc", date=date, capacity=capacity, opens_at=NOW - 60
    )


class Faulty(Store):
    """The real store with one seam: how a commit's pipeline is sent."""

    mode = "ok"  # ok | refused (never sent) | lost (sent, answer lost) | dropped (not sent)
    settle_fails = False

    async def _execute(self, pipe):
        if self.mode == "refused":
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
        if self.mode == "dropped":  # the write never reached Redis, but we cannot tell
            raise RedisTimeoutError("Timeout reading from socket")
        results = await super()._execute(pipe)
        if self.mode == "lost":
            raise RedisTimeoutError("Timeout reading from socket")
        return results

    async def settle(self, shard_id, token):
        if self.settle_fails:
            from engine.errors import StoreUnavailable

            raise StoreUnavailable("Redis does not answer")
        return await super().settle(shard_id, token)


@pytest.fixture
def host(redis_server, redis_client, settings_for):
    settings = settings_for(redis_server.url, hosts=1)  # a pool of one: every shard its own
    made = Host(0, settings, timer=False)
    store = made._store
    made._store = Faulty(store.client, store.keys)
    yield made


def book(host: Host, patient: int, request: str, session_id: str = "c1"):
    shard_id = spec(session_id).shard_id
    request_tuple = (time.time_ns(), BOOK, shard_id, session_id, patient, request_key(request))
    return pickle.loads(host.submit([request_tuple]))[0]


def create(host: Host, session: SessionSpec) -> None:
    from engine.core.protocol import CREATE

    host._run(host._store.claim_session(session.id, session.shard_id))
    outcome = pickle.loads(host.submit([(time.time_ns(), CREATE, session.shard_id, session, 0, 0)]))
    assert outcome[0].session_id == session.id


def stored_bookings(host: Host, session_id: str = "c1") -> int:
    session = host._run(host._store.read_session(session_id))
    return session.made


def test_a_commit_that_could_not_be_sent_is_unavailable_and_booked_nothing(host):
    create(host, spec())
    host._store.mode = "refused"
    assert isinstance(book(host, 1, "r1"), Unavailable)
    host._store.mode = "ok"
    assert stored_bookings(host) == 0


def test_a_commit_that_ran_but_lost_its_answer_is_settled_and_answered_booked(host):
    create(host, spec())
    host._store.mode = "lost"
    got = book(host, 1, "r1")
    assert isinstance(got, Booked)
    assert not got.repeat
    host._store.mode = "ok"
    assert stored_bookings(host) == 1
    again = book(host, 1, "r1")
    assert (again.booking_id, again.repeat) == (got.booking_id, True)


def test_a_commit_that_never_arrived_is_settled_as_not_run_and_fenced(host):
    create(host, spec())
    epoch_before = host.shards[spec().shard_id][0]
    host._store.mode = "dropped"
    assert isinstance(book(host, 1, "r1"), Unavailable)
    host._store.mode = "ok"
    assert stored_bookings(host) == 0
    epoch = int(host._run(host._store.client.get(host._store.keys.epoch(spec().shard_id))))
    assert epoch > epoch_before, "the settle read-back fenced the old epoch"
    assert isinstance(book(host, 2, "r2"), Booked), "the shard reloads and books again"


def test_a_commit_that_cannot_be_settled_is_outcome_unknown_never_unavailable(host):
    create(host, spec())
    host._store.mode = "lost"
    host._store.settle_fails = True
    assert isinstance(book(host, 1, "r1"), OutcomeUnknown)
    host._store.mode, host._store.settle_fails = "ok", False
    assert stored_bookings(host) == 1, "it was in fact booked"
    again = book(host, 1, "r1")
    assert isinstance(again, Booked), "the same request id tells the outcome"
    assert again.repeat, "the same request id tells the outcome"


# ----- the client's mailbox ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "write_answer"),
    [
        (RayActorError(), OutcomeUnknown),  # a Ray call that failed once sent
        (ChannelError("connection reset", sent=True), OutcomeUnknown),  # lost on the way back
        (ChannelError("connection refused", sent=False), Unavailable),  # surely never left
    ],
    ids=["ray", "channel-sent", "channel-unsent"],
)
async def test_a_failed_host_call_is_unknown_for_writes_only_once_it_may_have_arrived(
    failure, write_answer
):
    async def send(batch):
        raise failure

    mailbox = Mailbox(send, max_batch=10)
    write = mailbox.put((1, BOOK, "h:d", "s", 1, 1))
    read = mailbox.put((2, LOOKUP, "h:d", "s", 0, None))
    assert isinstance(await write, write_answer)
    assert isinstance(await read, Unavailable), "a read changed nothing either way"


async def killed(host) -> None:
    """``ray.kill`` is asynchronous: a call right after it may still be served. Wait until
    the host is gone."""
    ray.kill(host, no_restart=True)
    for _ in range(100):
        try:
            await asyncio.wait_for(host.info.remote(), 1)
        except (RayActorError, TimeoutError):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the killed host still answers")


async def test_a_booking_for_a_dead_host_is_unavailable_when_it_never_left(runtime):
    engine = runtime.engine()
    session = spec("dead1")
    assert (await engine.create_session(session)).session_id == "dead1"
    index = engine.host_of(session.shard_id)
    await killed(runtime.hosts[index])
    got = await engine.book("dead1", 1, "r1")  # the channel cannot be found: nothing sent
    assert isinstance(got, Unavailable), got
    [stored] = await engine.store.read_shard_sessions(session.shard_id)
    assert stored.count == 0, "and indeed nothing was booked"
    await engine.close()


async def test_a_booking_sent_over_ray_to_a_dead_host_is_outcome_unknown(runtime):
    engine = Engine(runtime.settings.model_copy(update={"host_channel": False}), runtime.hosts)
    session = spec("dead2")
    assert (await engine.create_session(session)).session_id == "dead2"
    index = engine.host_of(session.shard_id)
    await killed(runtime.hosts[index])
    got = await engine.book("dead2", 1, "r1")
    assert isinstance(got, OutcomeUnknown), got
    await engine.close()


# ----- Redis paused mid-commit ---------------------------------------------------------------


@pytest.fixture
def paused_redis(tmp_path):
    with EmbeddedRedis(tmp_path / "paused") as server:
        yield server
        os.kill(server.process.pid, signal.SIGCONT)  # never leave it stopped


async def test_a_booking_while_redis_is_paused_is_outcome_unknown_then_found(
    ray_local, paused_redis, settings_for
):
    rt = Runtime.start(settings_for(paused_redis.url, redis_timeout=0.5, hosts=1))
    try:
        engine = rt.engine()
        assert (await engine.create_session(spec("p1"))).session_id == "p1"
        assert isinstance(await engine.book("p1", 1, "warm"), Booked)  # the route is known
        os.kill(paused_redis.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            got = await engine.book("p1", 2, "r-paused")
            took = time.monotonic() - started
        finally:
            os.kill(paused_redis.process.pid, signal.SIGCONT)
        assert isinstance(got, OutcomeUnknown), got
        assert took < 10, "a deadline, not a hang"
        for _ in range(50):  # the host reloads the shard from Redis once it answers again
            again = await engine.book("p1", 2, "r-paused")
            if not isinstance(again, Unavailable | OutcomeUnknown):
                break
            await asyncio.sleep(0.2)
        assert isinstance(again, Booked), again
        # either way is true: the paused commit ran when Redis resumed (the retry answers its
        # booking) or the host's settle ran first and fenced it (the retry books afresh); what
        # may never happen is two bookings for one request
        session = await engine.store.read_session("p1")
        key = request_key("r-paused")
        mine = [
            n
            for n in range(session.count)
            if session.bookings[4 * n : 4 * n + 2].tolist() == [2, key]
        ]
        assert len(mine) == 1, "one request, one booking"
        await engine.close()
    finally:
        rt.stop()
