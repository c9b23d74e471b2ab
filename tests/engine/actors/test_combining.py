"""Batches that wait for a busy host are decided together, in one group commit.

The real ``Host`` class in this process (no timer) on the session's real Redis; the callers are
real threads, as the channel's connections are. The host's lock is held while they arrive, so
they are all waiting when it frees — the case a crowd from several API workers makes.
"""

from __future__ import annotations

import pickle
import threading
import time

import pytest

from engine.actors.host import Host
from engine.client import request_key
from engine.core.protocol import BOOK, CREATE
from engine.outcomes import Booked, SoldOut
from tests import helpers

NOW = time.time()
DATE = time.strftime("%Y-%m-%d", time.gmtime(NOW + 5 * 86400))


@pytest.fixture
def host(redis_server, redis_client, settings_for):
    made = Host(0, settings_for(redis_server.url, hosts=1), timer=False)
    session = helpers.spec(id="m1", hospital_id="hm", date=DATE, capacity=10, opens_at=NOW - 60)
    made._run(made._store.claim_session(session.id, session.shard_id))
    pickle.loads(made.submit([(time.time_ns(), CREATE, session.shard_id, session, 0, 0)]))
    return made, session.shard_id


def books(shard_id: str, caller: int, n: int) -> list[tuple]:
    return [
        (time.time_ns(), BOOK, shard_id, "m1", caller * 100 + i, request_key(f"c{caller}-{i}"))
        for i in range(n)
    ]


def arrive_while_busy(made: Host, batches: list[list[tuple]]) -> list[list]:
    """Each batch from its own thread, all while the host's lock is held; their answers."""
    answers: list[list] = [[] for _ in batches]

    def call(k: int) -> None:
        answers[k] = pickle.loads(made.submit(batches[k]))

    threads = [threading.Thread(target=call, args=(k,)) for k in range(len(batches))]
    with made._lock:  # the host is busy
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(made._queue) < len(batches):
            assert time.monotonic() < deadline, "the callers never queued"
            time.sleep(0.001)
    for t in threads:
        t.join(10)
    return answers


def test_waiting_batches_share_one_commit_and_each_caller_gets_its_own_answers(host):
    made, shard_id = host
    commits = made.counters["commits"]
    batches = [books(shard_id, caller, 4) for caller in range(4)]  # 16 requests, 10 slots
    answers = arrive_while_busy(made, batches)
    assert made.counters["commits"] == commits + 1, "one group commit for the four batches"
    assert made.counters["combined"] == 3
    assert [len(a) for a in answers] == [4, 4, 4, 4], "each caller answered its own requests"
    booked = [o for a in answers for o in a if isinstance(o, Booked)]
    assert len(booked) == 10
    assert sum(isinstance(o, SoldOut) for a in answers for o in a) == 6
    assert len({o.slot_no for o in booked}) == 10, "no slot twice"
    stored = made._run(made._store.read_session("m1"))
    assert stored.made == 10, "Redis holds exactly the bookings answered"
    # each answer is its own request's: the repeat of a booked request finds the same booking
    for k, batch in enumerate(batches):
        for request, outcome in zip(batch, answers[k], strict=True):
            if isinstance(outcome, Booked):
                again = pickle.loads(made.submit([(time.time_ns(), *request[1:])]))[0]
                assert (again.booking_id, again.repeat) == (outcome.booking_id, True)


def test_a_failure_while_combined_fails_every_waiting_caller(host, monkeypatch):
    made, shard_id = host

    def broken(requests):
        raise RuntimeError("a bug")

    monkeypatch.setattr(made, "_decide_and_commit", broken)
    errors: list[BaseException] = []

    def call(k: int) -> None:
        try:
            made.submit(books(shard_id, k, 2))
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(3)]
    with made._lock:
        for t in threads:
            t.start()
        while len(made._queue) < 3:
            time.sleep(0.001)
    for t in threads:
        t.join(10)
    assert len(errors) == 3, "no caller is left waiting, none is answered as if decided"
    assert made._queue == []
