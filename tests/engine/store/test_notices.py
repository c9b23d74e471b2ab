"""The notice board on the session's real Redis: what a patient and an operator read back."""

from __future__ import annotations

from engine.store.keys import Keys
from engine.store.notices import (
    KEEP_PER_PATIENT,
    Notice,
    NoticeBoard,
    patient_notices,
    recent_notices,
)


def notice(n: int, details: dict | None = None) -> Notice:
    return Notice(f"1-0:{n}", "confirmed", 7, f"s1-{n}", "s1", 100.0 + n, details or {})


async def test_a_notice_reads_back_as_it_was_sent(redis_client):
    board = NoticeBoard(redis_client, Keys("nb"))
    await board.send([notice(1, {"slot_no": 1, "slot_time": "08:00", "where": "门诊楼 3F"})])
    [mine] = await patient_notices(redis_client, Keys("nb"), 7)
    assert mine == {
        "id": "1-0:1",
        "kind": "confirmed",
        "patient_id": 7,
        "booking_id": "s1-1",
        "session_id": "s1",
        "at": 101.0,
        "details": {"slot_no": 1, "slot_time": "08:00", "where": "门诊楼 3F"},
    }


async def test_a_replayed_notice_is_delivered_once(redis_client):
    board = NoticeBoard(redis_client, Keys("nb"))
    await board.send([notice(1)])
    await board.send([notice(1), notice(2)])
    assert [n["id"] for n in await patient_notices(redis_client, Keys("nb"), 7)] == [
        "1-0:2",
        "1-0:1",
    ]
    assert len(await recent_notices(redis_client, Keys("nb"))) == 2


async def test_notices_are_delivered_after_redis_forgot_the_script(redis_client):
    board = NoticeBoard(redis_client, Keys("nb"))
    await board.send([notice(1)])
    await redis_client.script_flush()  # as after a restart: the loaded script is gone
    await board.send([notice(2)])
    assert len(await patient_notices(redis_client, Keys("nb"), 7)) == 2


async def test_a_large_batch_with_replays_is_delivered_once_each(redis_client):
    board = NoticeBoard(redis_client, Keys("nb"))
    first = [
        Notice(f"2-0:{n}", "confirmed", n % 3, f"s{n}.0", f"s{n}", 1.0, {}) for n in range(700)
    ]
    await board.send(first[:200])
    await board.send(first[150:] + first[:10])  # replays of 60 inside a batch over 500
    assert len(await recent_notices(redis_client, Keys("nb"), count=5000)) == 700
    for patient in range(3):
        mine = await patient_notices(redis_client, Keys("nb"), patient)
        assert len(mine) == KEEP_PER_PATIENT
        assert len({n["id"] for n in mine}) == KEEP_PER_PATIENT
        assert mine[0]["id"] == f"2-0:{max(n for n in range(700) if n % 3 == patient)}"
