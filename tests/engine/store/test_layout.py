"""The move to one-slot keys (engine/store/layout.py) on the session's real Redis: the keys
written under the names the previous release used are found, after the upgrade, where the
engine reads them now, and nothing they promised is lost (a refund key, a notice sent, a
ban, a pin, a drained node)."""

from __future__ import annotations

import msgpack
import orjson
from redis.crc import key_slot

from engine.actors.courier import CourierWork
from engine.backoffice.deliveries import Deliveries
from engine.backoffice.record import Record, SessionSale
from engine.backoffice.record_book import RecordBook, RecordQuery
from engine.core.policy import PLATFORM
from engine.store.dead_letters import DeadLetters
from engine.store.keys import Keys
from engine.store.layout import ENGINE_STEPS, records_by_hospital, run_steps
from engine.store.notices import Notice, NoticeBoard, patient_notices
from engine.store.payments import SandboxGateway
from engine.store.shards import Store

NS = "old"


OLD_NOTICE = ["notice", "confirmed", 9, "s2.0", "s2", 100.0, {}]


def notice(n: int) -> Notice:
    return Notice(f"9-0:{n}", "confirmed", 7, f"s1.{n}", "s1", 100.0 + n, {})


async def write_the_previous_layout(client) -> None:
    """What the release before one-slot keys stored, under its key names."""
    await client.hset(f"{NS}:bans:h1", mapping={"3": "9000000000.0"})
    await client.set(f"{NS}:bans:h1:version", 4)
    await client.hset(f"{NS}:bans:platform", mapping={"5": "8000000000.0"})
    await client.set(f"{NS}:bans:platform:version", 2)
    await client.hset(f"{NS}:hospital:h1:blacklist", "3", orjson.dumps({"reason": "scalping"}))
    await client.hset(f"{NS}:hospital:h1:whitelist", "8", orjson.dumps({"reason": "staff"}))
    await client.hset(f"{NS}:placement", "h1:2026-12-03", 1)
    await client.set(f"{NS}:placement:version", 6)
    await client.sadd(f"{NS}:placement:draining", "node-a")
    sent = [notice(1), notice(2)]
    for n in sent:
        await client.lpush(f"{NS}:patient:7:notices", n.to_json())
        await client.set(f"{NS}:sent:{n.id}", 1, ex=3600)
    await client.hset(
        f"{NS}:payment:s1.0",
        mapping={
            "payment_id": "pay_1",
            "booking_id": "s1.0",
            "account": 7,
            "amount": 1000,
            "refunded": 300,
            "paid_at": 1.0,
        },
    )
    await client.hset(f"{NS}:payment:s1.0:refunds", "s1.0:cancel", 300)
    await client.sadd(f"{NS}:payments", "s1.0")
    # the platform-wide outbox: one entry delivered to the courier and not yet settled, one new
    await client.xgroup_create(f"{NS}:outbox", "couriers", id="0", mkstream=True)
    await client.xadd(f"{NS}:outbox", {"e": msgpack.packb([OLD_NOTICE])}, id="7-0")
    await client.xreadgroup("couriers", "courier", {f"{NS}:outbox": ">"}, count=1)
    await client.xadd(f"{NS}:outbox", {"e": msgpack.packb([OLD_NOTICE])}, id="8-0")
    await client.xadd(f"{NS}:outbox:dead", {"origin": "3-0", "e": b"", "tries": 5})


async def test_the_previous_layout_moves_once_and_keeps_its_promises(
    redis_client, redis_server, settings_for
):
    await write_the_previous_layout(redis_client)
    keys = Keys(NS)
    moved = await run_steps(redis_client, keys)
    # 4 bans keys, 2 lists, 3 placement, notices, refunds; the outbox and its dead letters
    assert moved == {"one-slot-keys": 11, "outbox-slot": 2, "records-by-hospital": 0}
    assert await run_steps(redis_client, keys) == {}  # recorded: never again

    store = Store(redis_client, keys)
    assert (await store.read_rules("h1"))[1] == {3: 9e9}
    assert (await store.read_rules(PLATFORM))[1] == {5: 8e9}
    assert await store.ban_versions(["h1", PLATFORM]) == [b"4", b"2"]
    assert await store.placement() == {"h1:2026-12-03": 1}
    assert await store.draining() == {"node-a"}
    assert int(await redis_client.get(keys.placement_version)) == 6
    assert await redis_client.hexists(keys.patient_list("h1", "blacklist"), "3")
    assert await redis_client.hexists(keys.patient_list("h1", "whitelist"), "8")

    gateway = SandboxGateway(redis_client, keys)
    assert await gateway.refunds("s1.0") == {"s1.0:cancel": 300}
    again = await gateway.refund("s1.0", 300, "s1.0:cancel")  # the same key: paid out once
    assert again.amount == 300 and (await gateway.payment("s1.0")).refunded == 300
    assert not await redis_client.exists(f"{NS}:payment:s1.0:refunds")

    board = NoticeBoard(redis_client, keys)
    await board.send([notice(2), notice(3)])  # 2 is a replay of a notice sent before
    assert [n["id"] for n in await patient_notices(redis_client, keys, 7)] == [
        "9-0:3",
        "9-0:2",
        "9-0:1",
    ]
    # the old stream's group came along: the entry it had delivered is still pending
    assert (await redis_client.xpending(keys.outbox, "couriers"))["pending"] == 1
    assert await DeadLetters(redis_client, keys).count() == 1
    rounds = CourierWork(settings_for(redis_server.url, namespace=NS))
    try:
        assert (await rounds.drain())["entries"] == 2
    finally:
        await rounds.store.close()
    assert [n["id"] for n in await patient_notices(redis_client, keys, 9)] == ["8-0:0", "7-0:0"]
    assert await redis_client.xlen(keys.outbox) == 0

    leftovers = [k async for k in redis_client.scan_iter(match=f"{NS}:*")]
    old_names = {
        f"{NS}:{name}".encode()
        for name in (
            "bans:h1",
            "bans:h1:version",
            "bans:platform",
            "bans:platform:version",
            "hospital:h1:blacklist",
            "hospital:h1:whitelist",
            "placement",
            "placement:version",
            "placement:draining",
            "patient:7:notices",
            "outbox",
            "outbox:dead",
        )
    }
    assert not old_names & set(leftovers)


async def test_keys_written_together_share_a_slot():
    keys = Keys(NS)
    together = [
        (keys.bans("h1"), keys.bans_version("h1")),
        (keys.bans(PLATFORM), keys.bans_version(PLATFORM)),
        (keys.patient_list("h1", "blacklist"), keys.patient_list("h1", "whitelist")),
        (keys.placement, keys.placement_version, keys.draining),
        (keys.patient_notices(7), keys.sent(7, "1-0:1"), keys.sent(7, "2-0:5")),
        (
            keys.epoch("h1:2026-12-03"),
            keys.session("h1:2026-12-03", "s1"),
            keys.shard_outbox("h1:2026-12-03"),
        ),
        (keys.outbox, keys.outbox_dead),
        (
            keys.records("h1"),
            keys.record_marks("h1"),
            keys.record_numbers("h1", "his"),
            keys.record_index("h1", "p", "7"),
            keys.record_index("h1", "s", "booked"),
            keys.record_tally("h1", "2026-12-03"),
            keys.sales("h1"),
            keys.sales_index("h1"),
            keys.delivery("h1", "his", "s1.0"),
            keys.deliveries_due("h1"),
            keys.deliveries_pending("h1"),
            keys.deliveries_failed("h1"),
        ),
        (keys.changed_sessions, keys.changed_claimed, keys.changed_unreadable),
    ]
    for group in together:
        assert len({key_slot(k.encode()) for k in group}) == 1, group


async def test_a_new_installation_records_the_steps_without_moving_anything(redis_client):
    keys = Keys("fresh")
    assert await run_steps(redis_client, keys) == {name: 0 for name, _ in ENGINE_STEPS}
    assert set(await redis_client.hkeys(keys.upgrades)) == {n.encode() for n, _ in ENGINE_STEPS}


async def test_a_data_folder_of_the_previous_release_starts_in_the_new_layout(
    ray_local, settings_for, tmp_path
):
    """``tests/data/release_1bd0c5c``: the AOF that release wrote (its own code, run by
    ``tests/data/make_previous_release.py``): a paid booking, a cancelled one refunded, a hold,
    bans of the hospital and the platform, a blacklist entry, a pinned shard, the notices
    its courier delivered. The new release starts on it and finds each where it reads now."""
    import shutil
    from pathlib import Path

    from engine.outcomes import BookingInfo
    from engine.runtime import Runtime
    from engine.store.embedded import EmbeddedRedis

    data = tmp_path / "redis"
    data.mkdir()
    release = Path(__file__).parents[2] / "data" / "release_1bd0c5c" / "appendonlydir"
    shutil.copytree(release, data / "appendonlydir")
    with EmbeddedRedis(data) as server:
        rt = Runtime.start(settings_for(server.url, namespace="prev", hosts=1))
        engine = rt.engine()
        try:
            keys, client = engine.store.keys, engine.store.client
            assert set(await client.hkeys(keys.upgrades)) == {n.encode() for n, _ in ENGINE_STEPS}
            book = RecordBook(client, keys)
            rows = {r.booking_id: r for r in (await book.page(RecordQuery("h1"), 50)).records}
            assert {"prev1.0", "prev1.1"} <= rows.keys()
            assert rows["prev1.1"].state == "cancelled"
            mine = (await book.page(RecordQuery(patient_id=1), 50)).records
            assert "prev1.0" in {r.booking_id for r in mine}
            assert (await engine.store.read_rules("h1"))[1].keys() == {9}
            assert (await engine.store.read_rules(PLATFORM))[1].keys() == {8}
            assert await engine.store.placement() == {"h1:2026-12-06": 0}
            assert await client.hexists(keys.patient_list("h1", "blacklist"), "9")
            gateway = SandboxGateway(client, keys)
            assert await gateway.refunds("prev1.1") == {"prev1.1:cancelled": 1500}
            again = await gateway.refund("prev1.1", None, "prev1.1:cancelled")
            assert again.amount == 1500 and (await gateway.payment("prev1.1")).refunded == 1500
            for patient in (1, 2):
                for n in await patient_notices(client, keys, patient):
                    assert await client.exists(keys.sent(patient, n["id"])), n["id"]
            kinds = [n["kind"] for n in await patient_notices(client, keys, 2)]
            assert kinds == ["cancelled", "confirmed"]
            first = await engine.booking("prev1.0")
            assert isinstance(first, BookingInfo) and first.patient_id == 1 and first.paid
            old = ("bans:h1", "placement", "payment:prev1.1:refunds", "patient:1:notices", "outbox")
            old += ("records", "records:by:all", "sales")
            assert not await client.exists(*[f"prev:{name}" for name in old])
        finally:
            await engine.close()
            rt.stop()


def old_record(n: int, hospital: str, patient: int, state: str = "booked") -> Record:
    return Record(
        booking_id=f"s{hospital}.{n}",
        session_id=f"s{hospital}",
        hospital_id=hospital,
        department_id=f"{hospital}-dep",
        doctor_id=f"{hospital}-doc",
        date="2026-12-03",
        period="AM",
        slot_no=n + 1,
        slot_at=1000.0 + 10 * n + (hospital == "h2"),
        patient_id=patient,
        state=state,
    )


async def test_the_records_and_deliveries_move_to_their_hospitals_once(redis_client):
    """The back office's read model and the HIS deliveries as the release before stored them
    (one hash, global indexes, one due set): after the step, every query, number, tally, sale
    and delivery is where it is read now, and running the step again changes nothing."""
    client, p = redis_client, NS
    records = [old_record(n, h, 7 if n % 2 else 8) for h in ("h1", "h2") for n in range(4)]
    await client.hset(
        f"{p}:records", mapping={r.booking_id: msgpack.packb(r.pack()) for r in records}
    )
    for r in records:
        for kind, value in (("all", ""), ("h", r.hospital_id), ("p", str(r.patient_id))):
            await client.zadd(f"{p}:records:by:{kind}:{value}", {r.booking_id: r.slot_at})
    await client.hset(f"{p}:records:numbers:his", "sh1.0", "H0001")
    await client.hset(f"{p}:records:marks", mapping={"sh1": b"m1", "sh2": b"m2", "gone": b"x"})
    await client.hset(f"{p}:records:tally:h1:2026-12-03", "overall\toverall\t0", 4)
    await client.sadd(f"{p}:records:tally:hospitals", "h1", "h2")
    await client.sadd(f"{p}:records:changed", "snap-a")
    await client.sadd(f"{p}:records:claimed", "snap-b")
    sale = SessionSale("sh1", "h1", "h1-dep", "h1-doc", "2026-12-03", "AM", 4, 0.0, 9.0, 4, 1.0)
    await client.hset(f"{p}:sales", "sh1", msgpack.packb(sale.pack()))
    await client.zadd(f"{p}:sales:by:h:h1", {"sh1": 1000.0})
    due, failed = f"{p}:deliveries:his:sh1.1", f"{p}:deliveries:his:sh2.1"
    await client.hset(due, mapping={"wanted": "book", "hospital": "h1", "made_at": 5})
    await client.hset(failed, mapping={"wanted": "book", "hospital": "h2", "made_at": 6})
    await client.zadd(f"{p}:deliveries:due", {due: 50.0})
    await client.zadd(f"{p}:deliveries:pending:h1", {due: 5.0})
    await client.zadd(f"{p}:deliveries:failed:h2", {failed: 6.0})

    keys = Keys(NS)
    steps = [("records-by-hospital", records_by_hospital)]
    assert (await run_steps(client, keys, steps))["records-by-hospital"] > 0
    book = RecordBook(client, keys)
    everyone = await book.page(RecordQuery(), 100)
    assert [r.booking_id for r in everyone.records] == [
        r.booking_id for r in sorted(records, key=lambda r: (r.slot_at, r.booking_id))
    ]
    mine = await book.page(RecordQuery(patient_id=7), 100)
    assert sorted(r.booking_id for r in mine.records) == ["sh1.1", "sh1.3", "sh2.1", "sh2.3"]
    assert (await book.get("h1", "sh1.0")).his_no == "H0001"
    assert await client.hgetall(keys.record_marks("h1")) == {b"sh1": b"m1"}
    assert await client.hgetall(keys.record_marks("h2")) == {b"sh2": b"m2"}
    tally = await client.hgetall(keys.record_tally("h1", "2026-12-03"))
    assert tally == {b"overall\toverall\t0": b"4"}, "moved as it was, nothing added"
    assert [s.session_id for s in await book.sales("h1", None, None)] == ["sh1"]
    assert await client.smembers(keys.changed_sessions) == {b"snap-a"}
    assert await client.smembers(keys.changed_claimed) == {b"snap-b"}
    deliveries = Deliveries(client, keys)
    assert await deliveries.counts("h1") == {"pending": 1, "failed": 0}
    assert await deliveries.counts("h2") == {"pending": 0, "failed": 1}
    assert [d["booking_id"] for d in await deliveries.listing("h2", "failed")] == ["sh2.1"]
    assert await client.zrange(keys.deliveries_due("h1"), 0, -1, withscores=True) == [
        (keys.delivery("h1", "his", "sh1.1").encode(), 50.0)
    ]
    assert await client.smembers(keys.delivery_hospitals) == {b"h1", b"h2"}
    assert not [k async for k in client.scan_iter(match=f"{p}:records:by:*")]
    for old in ("records", "records:marks", "sales", "deliveries:due", "records:changed"):
        assert not await client.exists(f"{p}:{old}"), old

    before = {k: await client.dump(k) for k in sorted([k async for k in client.scan_iter()])}
    await records_by_hospital(client, keys)  # a run cut off is run again: the same result
    after = {k: await client.dump(k) for k in sorted([k async for k in client.scan_iter()])}
    assert after == before
