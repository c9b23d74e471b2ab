"""The delivery outbox on a real Redis: what record changes ask for (pure), a cancellation that
is final, and an HIS adapter failing in an unexpected way (retried later, the others carried
out). The HIS here is a small in-process stand-in; the real round trip with the simulated HIS
service is in tests/api/test_his.py."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from engine.backoffice.deliveries import BOOK, CANCEL, HIS, INSURANCE, Deliveries, Wanted, wanted
from engine.backoffice.record import Record
from engine.backoffice.record_book import RecordBook
from engine.store.keys import Keys

URL = "http://his.invalid"


def record(n: int, state: str = "booked", hospital: str = "h1") -> Record:
    return Record(
        booking_id=f"s1.{n}",
        session_id="s1",
        hospital_id=hospital,
        department_id="dep1",
        doctor_id="doc1",
        date="2026-12-01",
        period="AM",
        slot_no=n + 1,
        slot_at=time.time() + 86400,
        patient_id=100 + n,
        state=state,
        was_confirmed=state != "held",
    )


class StandIn:
    """Answers numbers, except for the booking ids it is told to break on."""

    def __init__(self, broken: set[str]) -> None:
        self.broken, self.booked, self.cancelled = broken, [], []

    async def book(self, booking: dict) -> str:
        assert booking["key"].endswith(":" + booking["booking_id"])  # under the install id
        if booking["booking_id"] in self.broken:
            raise KeyError("an answer the adapter did not expect")
        self.booked.append(booking["booking_id"])
        return f"H{len(self.booked)}"

    async def cancel(self, number: str, key: str, by: str) -> None:
        self.cancelled.append(number)

    async def close(self) -> None:
        pass


def test_what_record_changes_ask_for():
    booked, held = record(0), record(1, "held")
    cancelled = record(0, "cancelled")
    asks = wanted([(None, booked), (None, held), (booked, cancelled)], {"h1"}, {"h1"})
    assert asks == [
        Wanted(HIS, BOOK, "s1.0", "h1"),
        Wanted(INSURANCE, BOOK, "s1.0", "h1"),
        Wanted(HIS, CANCEL, "s1.0", "h1"),
    ]
    assert wanted([(None, booked)], set(), set()) == []  # no HIS configured: nothing
    never_sent = replace(record(1, "cancelled"), was_confirmed=False)
    assert wanted([(None, never_sent)], {"h1"}, set()) == []  # a hold that lapsed


@pytest.fixture
async def deliveries(redis_client):
    d = Deliveries(redis_client, Keys("dl"))
    await d.configure("h1", {"his_url": URL})
    yield d


async def test_a_cancellation_is_final(deliveries):
    booked, cancelled = record(0), record(0, "cancelled")
    assert await deliveries.ask([(None, booked)], 1.0) == 1
    assert await deliveries.ask([(booked, cancelled)], 2.0) == 1
    assert await deliveries.ask([(None, booked)], 3.0) == 1  # a replayed, older change
    state = await deliveries.client.hget(deliveries.key("h1", HIS, "s1.0"), "wanted")
    assert state == b"cancel"


async def test_an_unexpected_failure_is_retried_later_and_does_not_stop_the_others(deliveries):
    records = [record(n) for n in range(5)]
    await RecordBook(deliveries.client, deliveries.keys).put([(None, r) for r in records])
    assert await deliveries.ask([(None, r) for r in records], 1.0) == 5
    his = StandIn(broken={"s1.2"})
    deliveries._his[URL] = his
    assert await deliveries.run(10.0) == 5
    assert sorted(his.booked) == ["s1.0", "s1.1", "s1.3", "s1.4"]
    assert await deliveries.counts("h1") == {"pending": 1, "failed": 0}
    (left,) = await deliveries.listing("h1", "pending")
    assert left["booking_id"] == "s1.2"
    assert left["attempts"] == 1
    assert "KeyError" in left["error"]
    assert await deliveries.run(10.5) == 0  # backed off: not due yet
    his.broken.clear()
    assert await deliveries.run(10.0 + 60) == 1
    assert sorted(his.booked) == [f"s1.{n}" for n in range(5)]
    assert await deliveries.counts("h1") == {"pending": 0, "failed": 0}


async def test_a_delivery_done_expires_and_a_later_cancellation_still_reaches_the_his(deliveries):
    booked = record(0)
    book = RecordBook(deliveries.client, deliveries.keys)
    await book.put([(None, booked)])
    await deliveries.ask([(None, booked)], 1.0)
    his = StandIn(broken=set())
    deliveries._his[URL] = his
    assert await deliveries.run(2.0) == 1
    key = deliveries.key("h1", HIS, "s1.0")
    assert 86400 < await deliveries.client.ttl(key) <= 4 * 86400  # the visit + 2 days
    await deliveries.client.delete(key)  # as if it expired
    cancelled = replace(booked, state="cancelled")
    await book.put([(booked, cancelled)])
    await deliveries.ask([(booked, cancelled)], 3.0)
    assert await deliveries.client.ttl(key) == -1  # asked again: kept until done
    assert await deliveries.run(4.0) == 1
    assert his.cancelled == ["H1"]  # the number kept with the record
    assert await deliveries.counts("h1") == {"pending": 0, "failed": 0}


async def test_the_earliest_due_go_first_whichever_hospital_they_are_at(deliveries, monkeypatch):
    """Each hospital has its own due set; a round takes the earliest of all of them, so one
    hospital's backlog never starves another's."""
    from engine.backoffice import deliveries as module

    monkeypatch.setattr(module, "ROUND", 2)
    await deliveries.configure("h2", {"his_url": URL})
    backlog = [record(n) for n in range(4)]
    other = replace(record(9, hospital="h2"), booking_id="s2.0", session_id="s2")
    await RecordBook(deliveries.client, deliveries.keys).put([(None, r) for r in [*backlog, other]])
    for at, r in ((1.0, backlog[0]), (1.5, other), (2.0, backlog[1]), (3.0, backlog[2])):
        assert await deliveries.ask([(None, r)], at) == 1
    assert await deliveries.ask([(None, backlog[3])], 4.0) == 1
    his = StandIn(broken=set())
    deliveries._his[URL] = his
    assert await deliveries.run(10.0, limit=2) == 2
    assert sorted(his.booked) == ["s1.0", "s2.0"]
    assert await deliveries.run(10.0) == 3
    assert sorted(his.booked) == ["s1.0", "s1.1", "s1.2", "s1.3", "s2.0"]


async def test_a_due_delivery_whose_state_is_gone_is_dropped_not_sent(deliveries):
    booked = record(0)
    await RecordBook(deliveries.client, deliveries.keys).put([(None, booked)])
    key = deliveries.key("h1", HIS, "s1.0")
    keys = deliveries.keys
    await deliveries.client.sadd(keys.delivery_hospitals, "h1")
    await deliveries.client.zadd(keys.deliveries_due("h1"), {key: 1.0})
    await deliveries.client.zadd(keys.deliveries_pending("h1"), {key: 1.0})
    his = StandIn(broken=set())
    deliveries._his[URL] = his
    assert await deliveries.run(10.0) == 1
    assert his.booked == [] and his.cancelled == []
    assert await deliveries.counts("h1") == {"pending": 0, "failed": 0}
    assert await deliveries.client.zcard(keys.deliveries_due("h1")) == 0
