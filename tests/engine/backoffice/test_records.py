"""The record book on a real Redis: records derived from committed sessions (ages, states,
sales), and every query shape against a brute-force filter of the same records."""

from __future__ import annotations

import random
import time
from dataclasses import replace

import msgpack
import pytest

from engine.backoffice.analytics import summarize
from engine.backoffice.record import Record, SessionSale, changed_rows, marks_of, records_of
from engine.backoffice.record_book import (
    TX_RECORDS,
    TX_SESSIONS,
    RecordBook,
    RecordQuery,
    age_on,
    transactions,
)
from engine.core.session import (
    BOOKED_STATE,
    CANCELLED_STATE,
    EXPIRED_STATE,
    HELD_STATE,
    REVOKED_STATE,
    WORDS,
    DoctorSession,
    Extra,
    SessionSpec,
    unpack_meta,
)
from engine.core.shard import CodeSource
from engine.store.outbox import partition_of
from engine.store.shards import ShardWrite, Store
from tests import helpers

DAY = 86400.0


pytestmark = pytest.mark.on_cluster


@pytest.fixture
async def store(redis_server, redis_client, store_kind, request):
    if store_kind == "cluster":
        s = Store.from_url(request.getfixturevalue("redis_cluster").url, "rb", cluster=True)
        await s.client.flushdb()  # on every master
    else:
        s = Store.from_url(redis_server.url, "rb")
    yield s
    await s.close()


def spec(i: int, capacity: int = 3, fee: int = 0) -> SessionSpec:
    return helpers.spec(
        id=f"s{i}", department_id="dep1", doctor_id=f"doc{i}", capacity=capacity, fee=fee
    )


def test_age_on_the_visit_date():
    assert age_on("1990-12-01", "2026-12-01") == 36
    assert age_on("1990-12-02", "2026-12-01") == 35
    assert age_on(None, "2026-12-01") == -1
    assert age_on("garbage", "2026-12-01") == -1


def test_records_of_reports_only_what_changed():
    session = DoctorSession(spec(1, capacity=3))
    codes = CodeSource()
    session.take(7, 1, 100.0, 0, codes())
    session.take(8, 1, 101.0, 0, codes())
    first = records_of(session, {}, 200.0)
    assert [(r.booking_id, r.patient_id, r.state, r.slot_no) for r in first] == [
        ("s1.0", 7, "booked", 1),
        ("s1.1", 8, "booked", 2),
    ]
    assert first[0].made_at == 100.0
    assert first[0].was_confirmed
    known = {r.booking_id: r for r in first}
    assert records_of(session, known, 300.0) == []  # nothing changed
    session.move(1, 4, 400.0)  # the patient cancelled
    (changed,) = records_of(session, known, 500.0)
    assert (changed.booking_id, changed.state, changed.cancelled_by) == (
        "s1.1",
        "cancelled",
        "patient",
    )
    assert changed.made_at == 101.0
    assert changed.changed_at == 400.0
    assert changed.was_confirmed


def test_a_session_that_only_took_bookings_is_looked_at_in_its_new_rows_only():
    session = DoctorSession(spec(2, capacity=10))
    for p in range(4):
        session.take(p, 1, 100.0 + p, 0, 0)
    mark = marks_of(session)
    assert changed_rows(session, mark) == ([], set())
    session.take(9, 1, 110.0, 0, 0)
    session.take(10, 1, 111.0, 0, 0)
    assert changed_rows(session, mark) == ([4, 5], set())
    session.move(1, CANCELLED_STATE, 120.0)
    assert changed_rows(session, mark) == ([1, 4, 5], {1})
    assert changed_rows(session, None) == ([0, 1, 2, 3, 4, 5], {0, 1, 2, 3, 4, 5})


def test_records_from_marks_match_a_rebuild_of_every_row_through_random_changes():
    """Whatever happens to a session (bookings, payments, refunds, cancellations, compaction
    moving its rows), the records kept from marked rows equal those rebuilt from all rows."""
    rng = random.Random(7)
    session = DoctorSession(spec(3, capacity=12, fee=500))
    full: dict[str, Record] = {}
    kept: dict[str, Record] = {}
    mark = None
    now = 100.0
    for step in range(400):
        now += rng.choice([1.0, 60.0, 4000.0])
        for action in [rng.random() for _ in range(rng.randrange(1, 4))]:  # between looks
            states = {
                row: unpack_meta(session.bookings[row * WORDS + 2])[1]
                for row in range(session.count)
            }
            held = [row for row, state in states.items() if state == HELD_STATE]
            booked = [row for row, state in states.items() if state == BOOKED_STATE]
            if action < 0.4 and session.free:
                session.take(rng.randrange(10**6), step, now, 900 * rng.randrange(2), 0)
            elif action < 0.5 and held:  # paid
                session.move(rng.choice(held), BOOKED_STATE, now, Extra(code=1234, paid=True))
            elif action < 0.6 and held:
                session.move(rng.choice(held), rng.choice([EXPIRED_STATE, CANCELLED_STATE]), now)
            elif action < 0.7 and booked:
                session.move(rng.choice(booked), rng.choice([CANCELLED_STATE, REVOKED_STATE]), now)
            elif action < 0.8 and states:  # a refund, or a wrong code tried
                row = rng.choice(list(states))
                session.set_extra(row, replace(session.extra(row), refunded=rng.choice([50, 100])))
            elif action < 0.9:
                session.compact(now, keep=rng.randrange(3), forget=50, force=True)
        for r in records_of(session, full, now):
            full[r.booking_id] = r
        rows, had = changed_rows(session, mark)
        known = {i: kept[i] for n in had if (i := f"{session.id}.{n}") in kept}  # as get_many
        for r in records_of(session, known, now, rows):
            kept[r.booking_id] = r
        mark = marks_of(session)
        assert kept == full, f"step {step}"
    assert session.numbers is not None, "the walk compacted the session at least once"


def test_a_booking_paid_and_cancelled_between_two_looks_was_confirmed():
    session = DoctorSession(spec(5, capacity=2, fee=500))
    session.take(7, 1, 100.0, 900, 0)  # held
    session.take(8, 1, 101.0, 900, 0)  # held, then its payment window passes
    known = {r.booking_id: r for r in records_of(session, {}, 110.0)}
    assert [(r.state, r.was_confirmed) for r in known.values()] == [("held", False)] * 2
    session.move(0, 2, 120.0, Extra(code=12345678, paid=True))  # paid: booked
    session.move(0, 4, 130.0)  # cancelled by the patient before the indexer looked again
    session.move(1, 6, 1100.0)  # expired unpaid
    paid, lapsed = records_of(session, known, 1200.0)
    assert (paid.state, paid.was_confirmed) == ("cancelled", True)
    assert (lapsed.state, lapsed.was_confirmed) == ("expired", False)


async def test_sync_indexes_committed_sessions_with_ages_and_sales(store):
    client, keys = store.client, store.keys
    await client.set(keys.entity("patient", 7), b'{"birth_date": "1950-06-01"}')
    session = DoctorSession(spec(1, capacity=2))
    codes = CodeSource()
    session.take(7, 1, 100.0, 0, codes())
    session.take(8, 1, 101.0, 0, codes())  # no patient document: age unknown
    epoch = await client.incr(keys.epoch("h1:2026-12-01"))
    write = ShardWrite("h1:2026-12-01", "h1", epoch, [session], new_session_ids=["s1"])
    assert await store.commit([write]) == [None]
    book = RecordBook(client, keys)
    changes = await book.sync(now=150.0)
    assert [(old, new.booking_id, new.age) for old, new in changes] == [
        (None, "s1.0", 76),
        (None, "s1.1", -1),
    ]
    assert await book.sync(now=160.0) == []  # claimed and done: nothing left
    assert await client.scard(keys.changed_sessions) == 0
    assert await client.scard(keys.changed_claimed) == 0
    (sale,) = await book.sales("h1", None, None)
    assert (sale.capacity, sale.taken, sale.sold_out_at) == (2, 2, 150.0)

    session.move(0, 5, 200.0)  # no-show
    assert await store.commit([ShardWrite("h1:2026-12-01", "h1", epoch, [session])]) == [None]
    ((old, new),) = await book.sync(now=210.0)
    assert (old.state, new.state, new.age) == ("booked", "no_show", 76)  # the age stays
    page = await book.page(RecordQuery(hospital_id="h1", state="no_show"), 10)
    assert [r.booking_id for r in page.records] == ["s1.0"]
    assert page.total == 1
    gone = await book.page(RecordQuery(hospital_id="h1", state="booked"), 10)
    assert [r.booking_id for r in gone.records] == ["s1.1"]


async def test_a_round_is_written_in_transactions_of_bounded_records(store):
    client, keys = store.client, store.keys
    ones = [DoctorSession(replace(spec(100 + i, capacity=2), id=f"m{i}")) for i in range(60)]
    fulls = [DoctorSession(replace(spec(200 + i, capacity=30), id=f"f{i}")) for i in range(10)]
    codes = CodeSource()
    for i, session in enumerate(ones):
        session.take(1000 + i, 1, 100.0, 0, codes())
    for i, session in enumerate(fulls):
        for p in range(30):
            session.take(5000 + 100 * i + p, 1, 100.0, 0, codes())
    epoch = await client.incr(keys.epoch("h1:2026-12-01"))
    write = ShardWrite("h1:2026-12-01", "h1", epoch, ones + fulls, new_session_ids=[])
    assert await store.commit([write]) == [None]
    groups = []

    async def follow(changes):
        groups.append(len(changes))
        return lambda pipe: None

    changes = await RecordBook(client, keys).sync(now=120.0, follow=follow)
    assert len(changes) == 60 + 300
    assert sum(groups) == 360
    assert max(groups) <= TX_RECORDS
    assert len(groups) == -(-360 // TX_RECORDS), "no transaction smaller than it must be"
    assert await client.hlen(keys.records("h1")) == 360
    assert await client.scard(keys.changed_claimed) == 0


def test_transactions_bound_sessions_and_records_and_never_split_a_session():
    sizes = [1] * (TX_SESSIONS + 50) + [TX_RECORDS + 50, 3, TX_RECORDS - 3, 1]
    h1 = DoctorSession(spec(1))
    groups = transactions([("k", h1, [None] * n, None) for n in sizes])
    assert [len(g) for g in groups] == [TX_SESSIONS, 50, 1, 2, 1]
    assert [sum(len(m[2]) for m in g) for g in groups] == [
        TX_SESSIONS,
        50,
        TX_RECORDS + 50,  # too big for any transaction: alone, whole
        TX_RECORDS,  # 3 + 197: exactly full
        1,
    ]


def test_a_transaction_holds_one_hospital_s_sessions():
    """One hospital's keys share a Redis Cluster slot; two hospitals' do not."""
    a, b = DoctorSession(spec(1)), DoctorSession(replace(spec(2), hospital_id="h2"))
    groups = transactions([("k", s, [None], None) for s in (a, b, a, b, a)])
    assert [[m[1].spec.hospital_id for m in g] for g in groups] == [["h1"] * 3, ["h2"] * 2]


async def test_each_indexer_indexes_its_own_hospitals_and_takes_over_a_gone_one_s(store):
    """With two couriers each indexes the hospitals ``partition_of`` gives it: a commit marks
    its sessions in its hospital's indexer's set; sessions left in the set of an indexer there
    is no more (there were more couriers) are moved to theirs by courier 0's ``rehome``."""
    client, keys = store.client, store.keys
    store.couriers = 2
    hospitals = [f"hp{i}" for i in range(8)]
    assert {partition_of(h, 2) for h in hospitals} == {0, 1}
    for i, hospital in enumerate(hospitals):
        session = DoctorSession(replace(spec(300 + i, capacity=2), hospital_id=hospital))
        session.take(40 + i, 1, 100.0, 0, CodeSource()())
        shard = f"{hospital}:2026-12-01"
        epoch = await client.incr(keys.epoch(shard))
        assert await store.commit([ShardWrite(shard, hospital, epoch, [session])]) == [None]
    books = [RecordBook(client, keys, part, 2) for part in (0, 1)]
    first = await books[0].sync(now=120.0)
    assert {new.hospital_id for _, new in first} == {
        h for h in hospitals if partition_of(h, 2) == 0
    }
    assert await client.scard(keys.changed_sessions_of(1)) == sum(
        1 for h in hospitals if partition_of(h, 2) == 1
    )
    second = await books[1].sync(now=120.0)
    assert {new.hospital_id for _, new in second} == {
        h for h in hospitals if partition_of(h, 2) == 1
    }

    # three couriers before, two now: the third's marks go to their hospitals' indexers
    session = DoctorSession(replace(spec(399, capacity=2), hospital_id="hp1"))
    session.take(99, 1, 100.0, 0, CodeSource()())
    shard = "hp1:2026-12-02"
    epoch = await client.incr(keys.epoch(shard))
    store.couriers = 3
    assert await store.commit([ShardWrite(shard, "hp1", epoch, [session])]) == [None]
    if partition_of("hp1", 3) != 2:  # make it so: left in the third indexer's set
        await client.srem(
            keys.changed_sessions_of(partition_of("hp1", 3)), keys.session(shard, session.id)
        )
        await client.sadd(keys.changed_sessions_of(2), keys.session(shard, session.id))
    assert await books[0].rehome() == 1
    assert not await client.scard(keys.changed_sessions_of(2))
    mine = books[partition_of("hp1", 2)]
    assert [new.booking_id for _, new in await mine.sync(now=130.0)] == [f"{session.id}.0"]


async def test_a_claim_left_by_a_crash_is_redone(store):
    client, keys = store.client, store.keys
    session = DoctorSession(spec(2, capacity=2))
    session.take(9, 1, 100.0, 0, CodeSource()())
    snapshot_key = keys.session("h1:2026-12-01", "s2")
    epoch = await client.incr(keys.epoch("h1:2026-12-01"))
    assert await store.commit([ShardWrite("h1:2026-12-01", "h1", epoch, [session])]) == [None]
    await client.smove(keys.changed_sessions, keys.changed_claimed, snapshot_key)  # taken, lost
    changes = await RecordBook(client, keys).sync(now=120.0)
    assert [new.booking_id for _, new in changes] == ["s2.0"]


async def test_the_indexer_rebuilds_only_moved_rows_until_the_marks_are_deleted(store):
    client, keys = store.client, store.keys
    book = RecordBook(client, keys)
    session = DoctorSession(spec(4, capacity=5))
    epoch = await client.incr(keys.epoch("h1:2026-12-01"))

    async def commit_and_sync(now: float) -> list[str]:
        write = ShardWrite("h1:2026-12-01", "h1", epoch, [session])
        assert await store.commit([write]) == [None]
        return [new.booking_id for _, new in await book.sync(now=now)]

    session.take(1, 1, 100.0, 0, 0)
    session.take(2, 1, 101.0, 0, 0)
    assert await commit_and_sync(110.0) == ["s4.0", "s4.1"]
    await client.hdel(keys.records("h1"), "s4.0")  # a record lost behind the indexer's back
    session.take(3, 1, 120.0, 0, 0)
    assert await commit_and_sync(130.0) == ["s4.2"], "only the new row is looked at"
    session.move(1, CANCELLED_STATE, 140.0)
    assert await commit_and_sync(150.0) == ["s4.1"]
    assert await book.get("h1", "s4.0") is None
    await client.delete(keys.record_marks("h1"))  # the operator's rebuild
    assert await commit_and_sync(160.0) == ["s4.0"], "every row is looked at again"
    assert (await book.get("h1", "s4.0")).patient_id == 1


async def test_records_and_what_they_ask_for_are_written_together_or_not_at_all(store):
    """A failure after the records are built (the HIS asks could not be planned) writes
    nothing and keeps the claim: the next round redoes both, so no delivery is lost."""
    client, keys = store.client, store.keys
    session = DoctorSession(spec(3, capacity=2))
    session.take(9, 1, 100.0, 0, CodeSource()())
    epoch = await client.incr(keys.epoch("h1:2026-12-01"))
    assert await store.commit([ShardWrite("h1:2026-12-01", "h1", epoch, [session])]) == [None]
    book = RecordBook(client, keys)

    async def broken(changes):
        raise ConnectionError("the HIS config could not be read")

    with pytest.raises(ConnectionError):
        await book.sync(now=120.0, follow=broken)
    assert await book.get("h1", "s3.0") is None
    assert await client.scard(keys.changed_claimed) == 1

    seen = []

    async def follow(changes):
        seen.extend(new.booking_id for _, new in changes)
        return lambda pipe: pipe.set(f"{keys.records('h1')}:asked", len(changes))

    changes = await book.sync(now=130.0, follow=follow)
    assert [new.booking_id for _, new in changes] == seen == ["s3.0"]
    assert (await book.get("h1", "s3.0")).state == "booked"
    assert await client.get(f"{keys.records('h1')}:asked") == b"1"
    assert await client.scard(keys.changed_claimed) == 0


async def test_an_unreadable_snapshot_is_set_aside_and_does_not_block_the_rest(store):
    client, keys = store.client, store.keys
    session = DoctorSession(spec(4, capacity=2))
    session.take(9, 1, 100.0, 0, CodeSource()())
    epoch = await client.incr(keys.epoch("h1:2026-12-01"))
    assert await store.commit([ShardWrite("h1:2026-12-01", "h1", epoch, [session])]) == [None]
    bad = keys.session("h1:2026-12-01", "s-bad")
    await client.set(bad, b"\x00not a snapshot")
    await client.sadd(keys.changed_sessions, bad)
    book = RecordBook(client, keys)
    changes = await book.sync(now=120.0)
    assert [new.booking_id for _, new in changes] == ["s4.0"]
    assert await client.smembers(keys.changed_unreadable) == {bad.encode()}
    assert await client.scard(keys.changed_claimed) == 0
    assert await book.sync(now=130.0) == []


def random_records(rng: random.Random, n: int) -> list[Record]:
    base = time.time()
    out = []
    for i in range(n):
        hospital = rng.choice(["h1", "h2", "h3"])
        department = f"{hospital}-dep{rng.randrange(3)}"
        slot_at = base + rng.randrange(30) * DAY + rng.randrange(40) * 600
        out.append(
            Record(
                booking_id=f"s{i // 30}.{i % 30}",
                session_id=f"s{i // 30}",
                hospital_id=hospital,
                department_id=department,
                doctor_id=f"{department}-doc{rng.randrange(4)}",
                date="2026-12-01",
                period="AM",
                slot_no=i % 30 + 1,
                slot_at=slot_at,
                patient_id=rng.randrange(40),
                state=rng.choice(["booked", "checked_in", "cancelled", "no_show"]),
            )
        )
    return out


async def test_every_query_shape_matches_a_brute_force_filter(store):
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    records = random_records(rng, 3000)
    book = RecordBook(store.client, store.keys)
    await book.put([(None, r) for r in records])
    base = min(r.slot_at for r in records)
    for _ in range(60):
        some = rng.choice(records)
        query = RecordQuery(
            hospital_id=some.hospital_id if rng.random() < 0.7 else None,
            department_id=some.department_id if rng.random() < 0.3 else None,
            doctor_id=some.doctor_id if rng.random() < 0.2 else None,
            patient_id=some.patient_id if rng.random() < 0.2 else None,
            state=some.state if rng.random() < 0.4 else None,
            start=base + rng.randrange(10) * DAY if rng.random() < 0.5 else None,
            end=base + rng.randrange(10, 31) * DAY if rng.random() < 0.5 else None,
        )
        expected = sorted(
            (
                r
                for r in records
                if query.accepts(r)
                and (query.start is None or r.slot_at >= query.start)
                and (query.end is None or r.slot_at < query.end)
            ),
            key=lambda r: (r.slot_at, r.booking_id),
        )
        limit = rng.choice([1, 7, 50, 500])
        got: list[Record] = []
        cursor = None
        for _ in range(len(expected) // limit + 3):
            page = await book.page(query, limit, cursor)
            assert len(page.records) <= limit
            assert page.total in (None, len(expected))
            got.extend(page.records)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert cursor is None, query
        assert [r.booking_id for r in got] == [r.booking_id for r in expected], query
        exported = [r async for chunk in book.scan(query, chunk=256) for r in chunk]
        assert exported == got


async def test_paging_a_changing_index_never_skips_or_repeats(store):
    """Between pages, the last record read leaves the index (its state changed), others
    are added before and at the cursor's slot time: the next pages go on exactly after it."""
    book = RecordBook(store.client, store.keys)
    base = time.time()
    records = [
        replace(r, hospital_id="h1", state="booked", slot_at=base + (i // 4) * 600)
        for i, r in enumerate(random_records(random.Random(3), 200))
    ]
    await book.put([(None, r) for r in records])
    query = RecordQuery(hospital_id="h1", state="booked")
    first = await book.page(query, 10)
    seen = [r.booking_id for r in first.records]
    assert (
        seen
        == [r.booking_id for r in sorted(records, key=lambda r: (r.slot_at, r.booking_id))][:10]
    )
    last = first.records[-1]
    await book.put([(last, replace(last, state="cancelled"))])  # leaves the hs index
    await book.put(  # new ones before the cursor and tied with it: not for the next pages
        [(None, replace(last, booking_id=f"new.{i}", slot_at=last.slot_at - i)) for i in range(3)]
    )
    later = sorted(
        (r for r in records if (r.slot_at, r.booking_id) > (last.slot_at, last.booking_id)),
        key=lambda r: (r.slot_at, r.booking_id),
    )
    got, cursor = [], first.next_cursor
    while cursor is not None:
        page = await book.page(query, 10, cursor)
        got.extend(r.booking_id for r in page.records)
        cursor = page.next_cursor
    assert got == [r.booking_id for r in later]
    assert not set(got) & set(seen)


async def test_daily_tallies_match_a_report_over_the_records_themselves(store):
    """The analytics counts the indexer keeps day by day equal ``summarize`` over the final
    records, after records are added and then change state (some several times)."""
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rng = random.Random(seed)
    book = RecordBook(store.client, store.keys)
    states = ["held", "booked", "checked_in", "cancelled", "no_show", "expired"]
    records = [
        replace(
            r,
            state=rng.choice(states[:2]),
            age=rng.randrange(-1, 95),
            made_at=r.slot_at - rng.randrange(0, 10 * 86400) if rng.random() < 0.9 else 0.0,
            was_confirmed=False,
            date=f"2026-12-{1 + int(r.slot_at // DAY) % 28:02d}",
        )
        for r in random_records(rng, 1500)
    ]
    await book.put([(None, r) for r in records])
    current = {r.booking_id: r for r in records}
    for _ in range(3):
        changes = []
        for r in rng.sample(list(current.values()), 500):
            state = rng.choice(states)
            new = replace(
                r,
                state=state,
                cancelled_by=rng.choice(["patient", "hospital"]) if state == "cancelled" else "",
                was_confirmed=r.was_confirmed or state in ("booked", "checked_in", "no_show"),
            )
            changes.append((r, new))
            current[r.booking_id] = new
        await book.put(changes)
    dates = sorted({r.date for r in current.values()})
    for hospital in ("h1", "h2", None):
        mine = [r for r in current.values() if hospital is None or r.hospital_id == hospital]
        got = (await book.tally(hospital, dates)).report([])
        assert got == summarize(mine, []), hospital
    some = dates[:5]
    got = (await book.tally("h1", some)).report([])
    expected = [r for r in current.values() if r.hospital_id == "h1" and r.date in some]
    assert got == summarize(expected, [])
    assert got.overall.records == len(expected) > 0


async def test_tallies_are_made_once_for_records_written_without_them(store):
    client, keys = store.client, store.keys
    book = RecordBook(client, keys)
    records = [replace(r, date="2026-12-02") for r in random_records(random.Random(4), 300)]
    await book.put([(None, r) for r in records])
    expected = summarize([r for r in records if r.hospital_id == "h1"], [])
    for key in [k async for k in client.scan_iter(match=f"{keys.prefix}:records:*:tally:*")]:
        await client.delete(key)  # as a version without tallies left them
    await client.hset(keys.record_tally("h1", "2026-12-02"), "overall\toverall\t0", 999)
    assert (await book.tally("h1", ["2026-12-02"])).report([]) != expected
    assert await book.ensure_tallies(chunk=64) == 300
    assert (await book.tally("h1", ["2026-12-02"])).report([]) == expected
    assert await book.ensure_tallies() == 0  # once
    assert (await book.tally("h1", ["2026-12-02"])).report([]) == expected


async def test_a_cursor_for_another_query_or_made_up_is_refused(store):
    book = RecordBook(store.client, store.keys)
    await book.put([(None, r) for r in random_records(random.Random(1), 100)])
    page = await book.page(RecordQuery(hospital_id="h1"), 5)
    assert page.next_cursor is not None
    with pytest.raises(ValueError):
        await book.page(RecordQuery(hospital_id="h2"), 5, page.next_cursor)
    with pytest.raises(ValueError):  # the same index over another range
        await book.page(RecordQuery(hospital_id="h1", start=0.0), 5, page.next_cursor)
    for junk in ("", "nonsense", "W10=", "WyJ4IiwgLTFd"):
        with pytest.raises(ValueError):
            await book.page(RecordQuery(hospital_id="h1"), 5, junk)


async def test_numbers_survive_the_indexer_rewriting_the_record(store):
    book = RecordBook(store.client, store.keys)
    record = random_records(random.Random(2), 1)[0]
    await book.put([(None, record)])
    await book.set_numbers(record.hospital_id, record.booking_id, his_no="H000001")
    await book.set_numbers(record.hospital_id, record.booking_id, insurance_no="SB000001")
    got = await book.get(record.hospital_id, record.booking_id)
    assert got is not None
    assert (got.his_no, got.insurance_no) == ("H000001", "SB000001")
    assert got.state == record.state
    assert got.slot_at == record.slot_at
    rewritten = Record.unpack(msgpack.unpackb(msgpack.packb(record.pack())))
    await book.put([(record, replace(rewritten, state="checked_in"))])  # as the indexer does
    got = await book.get(record.hospital_id, record.booking_id)
    assert got is not None
    assert (got.his_no, got.insurance_no, got.state) == (
        "H000001",
        "SB000001",
        "checked_in",
    )
    sale = SessionSale("s1", "h1", "d", "doc", "2026-12-01", "AM", 30, 0.0, 10.0, 30, 5.0)
    assert SessionSale.unpack(sale.pack()) == sale
