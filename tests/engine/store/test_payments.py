"""The sandbox payment gateway and the courier's rounds, on a real Redis (no Ray needed)."""

from __future__ import annotations

import time

import msgpack
import pytest

from engine.actors.courier import CourierWork
from engine.core.policy import PLATFORM, Policy
from engine.settings import Settings
from engine.store.keys import Keys
from engine.store.notices import NoticeBoard, patient_notices
from engine.store.payments import SandboxGateway
from engine.store.shards import Store


@pytest.fixture
def gateway(redis_client):
    return SandboxGateway(redis_client, Keys("pay"))


async def test_a_booking_is_charged_once(gateway):
    first = await gateway.charge("s1.0", account=7, amount=1500)
    again = await gateway.charge("s1.0", account=7, amount=1500)
    assert first == again
    assert first.payment_id.startswith("pay_")
    assert (await gateway.ledger()) == {"s1.0": first}
    with pytest.raises(ValueError):
        await gateway.charge("s1.1", account=7, amount=0)


async def test_refunds_are_keyed_partial_and_never_exceed_the_payment(gateway):
    assert await gateway.refund("nothing.0", 100, "k") is None  # no payment, no refund
    await gateway.charge("s1.0", account=7, amount=1000)
    part = await gateway.refund("s1.0", 300, "s1.0:cancel")
    assert (part.amount, part.account) == (300, 7)  # back to the paying account
    assert (await gateway.refund("s1.0", 300, "s1.0:cancel")).amount == 300  # same key: once
    rest = await gateway.refund("s1.0", None, "s1.0:expired")  # None = all that is left
    assert rest.amount == 700
    assert (await gateway.refund("s1.0", 500, "s1.0:more")).amount == 0
    payment = await gateway.payment("s1.0")
    assert (payment.amount, payment.refunded) == (1000, 1000)
    assert await gateway.refunds("s1.0") == {
        "s1.0:cancel": 300,
        "s1.0:expired": 700,
        "s1.0:more": 0,
    }


async def test_the_notice_board_delivers_a_replayed_notice_once(redis_client):
    keys = Keys("nb")
    board = NoticeBoard(redis_client, keys)
    from engine.store.notices import Notice

    notice = Notice("1-0:0", "confirmed", 5, "s1.0", "s1", 1.0, {"slot_no": 1})
    await board.send([notice])
    await board.send([notice])
    assert [n["kind"] for n in await patient_notices(redis_client, keys, 5)] == ["confirmed"]
    assert await redis_client.xlen(keys.notices) == 1


async def test_courier_rounds_are_idempotent_and_judge_bans(redis_server, redis_client):
    settings = Settings.from_env({}, redis_url=redis_server.url, namespace="cr", movable_clock=True)
    rounds = CourierWork(settings)
    store: Store = rounds.store
    await store.write_policy("h1", Policy(ban_days=(10,)))
    await rounds.gateway.charge("s1.0", 3, 900)
    events = [
        ["refund", "s1.0", 3, 900, "no_show"],
        ["violation", "h1", "h1", 3, "no_show", "s1.0", 1000.0],
        ["notice", "no_show", 3, "s1.0", "s1", 1000.0, {"refund": 900}],
    ]
    entry = msgpack.packb(events, use_bin_type=True)
    entry_id = (await redis_client.xadd(rounds.keys.outbox, {"e": entry})).decode()
    await redis_client.set(rounds.keys.clock, 1000.0 - time.time())  # judge as of t = 1000
    await rounds.drain()
    # the same events replayed (a crash after handling, before acknowledging)
    await rounds._handle(entry_id, events)
    await rounds.drain()
    assert (await rounds.gateway.payment("s1.0")).refunded == 900
    assert await redis_client.hlen(rounds.keys.conduct("h1", 3)) == 1
    ban = float(await redis_client.hget(rounds.keys.bans("h1"), "3"))
    assert ban == 1000.0 + 10 * 86400
    kinds = [n["kind"] for n in await patient_notices(redis_client, rounds.keys, 3)]
    assert sorted(kinds) == ["banned", "no_show"]
    assert await redis_client.xlen(rounds.keys.outbox) == 0  # acknowledged and deleted
    assert await redis_client.hlen(rounds.keys.bans(PLATFORM)) == 0
    await store.close()


async def test_a_payment_stranded_by_a_crash_is_found_and_refunded(redis_server, redis_client):
    """The money was taken, then the API worker died before the engine heard of it: once the
    booking has ended unpaid (or is unknown), the courier's reconciliation gives it back."""
    settings = Settings.from_env({}, redis_url=redis_server.url, namespace="rc")
    rounds = CourierWork(settings)
    await rounds.gateway.charge("ghost.0", 4, 700)  # no such booking in the engine
    assert await rounds.reconcile(settle_seconds=60) == 0  # too fresh: maybe still on its way
    assert await rounds.reconcile(settle_seconds=-1) == 1
    payment = await rounds.gateway.payment("ghost.0")
    assert (payment.amount, payment.refunded) == (700, 700)
    assert await rounds.gateway.unsettled(time.time() + 1) == []
    assert await rounds.reconcile(settle_seconds=-1) == 0  # once
    await rounds.store.close()


async def test_a_corrupt_snapshot_does_not_stop_reconciliation(redis_server, redis_client):
    settings = Settings.from_env({}, redis_url=redis_server.url, namespace="rb")
    rounds = CourierWork(settings)
    keys = rounds.keys
    await redis_client.hset(keys.catalog, "bad", "h1:2030-01-01")
    await redis_client.set(keys.session("h1:2030-01-01", "bad"), b"\x00garbage")
    await rounds.gateway.charge("bad.0", 4, 100)
    await rounds.gateway.charge("ghost.0", 5, 200)
    assert await rounds.reconcile(settle_seconds=-1) == 1  # the ghost; "bad" waits for a fix
    assert (await rounds.gateway.payment("ghost.0")).refunded == 200
    assert await rounds.gateway.unsettled(time.time() + 1) == ["bad.0"]
    await rounds.store.close()
