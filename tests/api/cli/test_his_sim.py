"""The simulated HIS driven through the engine's HTTP adapters, in-process (no Ray, no Redis)."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from api.cli.his_sim import create_app
from engine.backoffice.his import HttpHis, HttpInsurance
from engine.errors import HisRejected, HisUnavailable


def booking(key: str = "s1.1", **changes: Any) -> dict[str, Any]:
    doc = {
        "key": key,
        "hospital_id": "h1",
        "department_id": "dep1",
        "doctor_id": "doc1",
        "session_id": "s1",
        "his_schedule_id": "",
        "date": "2030-01-02",
        "period": "AM",
        "slot_no": 1,
        "slot_at": 1893546000.0,
        "patient_id": 7,
        "fee": 5000,
    }
    return {**doc, **changes}


def schedule(schedule_id: str, **changes: Any) -> dict[str, Any]:
    doc = {
        "id": schedule_id,
        "doctor_id": "doc1",
        "date": "2030-01-02",
        "period": "AM",
        "capacity": 20,
        "first_slot_at": "08:00",
        "slot_minutes": 10,
        "fee": 5000,
        "status": "active",
    }
    return {**doc, **changes}


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://his")


@pytest.fixture
async def sim():
    """The simulation's raw HTTP client (admin and inspection calls)."""
    async with client_of(create_app()) as client:
        yield client


@pytest.fixture
async def his(sim):
    adapter = HttpHis("http://his", client=sim)
    yield adapter
    await adapter.close()


@pytest.fixture
async def insurance(sim):
    adapter = HttpInsurance("http://his", client=sim)
    yield adapter
    await adapter.close()


async def test_booking_twice_books_once(his, sim):
    first = await his.book(booking())
    again = await his.book(booking())
    other = await his.book(booking("s1.2", slot_no=2))
    assert first == again == "H000001"
    assert other == "H000002"
    listed = {b["key"]: b for b in (await sim.get("/his/bookings")).json()}
    assert listed["s1.1"]["sends"] == 2
    assert listed["s1.1"]["his_no"] == "H000001"
    assert listed["s1.2"]["sends"] == 1
    assert (await sim.get("/his/stats")).json()["bookings"] == 2


async def test_cancel_is_idempotent_and_keeps_the_number(his, sim):
    his_no = await his.book(booking())
    await his.cancel(his_no, "s1.1", "patient cancelled")
    await his.cancel(his_no, "s1.1", "patient cancelled")
    assert await his.book(booking()) == his_no  # re-sent after cancelling: same number
    [listed] = (await sim.get("/his/bookings")).json()
    assert listed["cancelled"] is True
    assert listed["sends"] == 2
    stats = (await sim.get("/his/stats")).json()
    assert (stats["bookings"], stats["cancelled"]) == (1, 1)


async def test_refusals_are_rejected(his):
    his_no = await his.book(booking())
    with pytest.raises(HisRejected) as unknown:
        await his.cancel("H999999", "s1.1", "x")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    with pytest.raises(HisRejected) as mismatch:
        await his.cancel(his_no, "s9.9", "x")
    assert mismatch.value.status == 409
    with pytest.raises(HisRejected) as invalid:
        await his.book(booking("s1.3", period="NIGHT"))
    assert invalid.value.status == 422


async def test_outage_answers_unavailable_and_records_nothing(his, insurance, sim):
    await sim.post("/his/admin/outage", json={"down": True})
    with pytest.raises(HisUnavailable) as down:
        await his.book(booking())
    assert down.value.__cause__ is None  # an answer (503), not a network error
    with pytest.raises(HisUnavailable):
        await his.cancel("H000001", "s1.1", "x")
    with pytest.raises(HisUnavailable):
        await insurance.file(booking())
    assert (await sim.get("/his/bookings")).json() == []
    assert (await sim.get("/insurance/filings")).json() == []
    stats = (await sim.get("/his/stats")).json()
    assert (stats["bookings"], stats["calls"], stats["rejected_while_down"]) == (0, 3, 3)

    await sim.post("/his/admin/outage", json={"down": False})
    assert await his.book(booking()) == "H000001"


async def test_fail_rate_one_always_fails(his, sim):
    r = await sim.post("/his/admin/outage", json={"down": False, "fail_rate": 1.0})
    assert r.json()["fail_rate"] == 1.0
    for _ in range(5):
        with pytest.raises(HisUnavailable):
            await his.book(booking())
    assert (await sim.get("/his/stats")).json()["bookings"] == 0


async def test_delay_slows_the_answer(his, sim):
    await sim.post("/his/admin/outage", json={"down": False, "delay_ms": 50})
    started = time.perf_counter()
    await his.book(booking())
    assert time.perf_counter() - started >= 0.05


async def test_schedules_since_a_cursor(his, sim):
    assert await his.schedules(0.0) == []
    r = await sim.post("/his/admin/schedules", json=[schedule("A1"), schedule("A2")])
    assert r.status_code == 200, r.text
    pulled = await his.schedules(0.0)
    assert [s["id"] for s in pulled] == ["A1", "A2"]
    assert pulled[0]["updated_at"] < pulled[1]["updated_at"]
    cursor = pulled[-1]["updated_at"]
    assert await his.schedules(cursor) == []

    await sim.post("/his/admin/schedules/A1/suspend")
    await sim.post("/his/admin/schedules", json=[schedule("A2", capacity=30)])
    changed = await his.schedules(cursor)
    assert [(s["id"], s["status"], s["capacity"]) for s in changed] == [
        ("A1", "suspended", 20),
        ("A2", "active", 30),
    ]
    now = (await sim.get("/his/schedules", params={"since": changed[-1]["updated_at"]})).json()
    await sim.post("/his/admin/schedules", json=[schedule("A3")])
    assert [s["id"] for s in await his.schedules(now["now"])] == ["A3"]
    assert (await sim.post("/his/admin/schedules/nope/suspend")).status_code == 404


async def test_insurance_filing_is_idempotent(insurance, sim):
    assert await insurance.file(booking()) == "SB000001"
    assert await insurance.file(booking()) == "SB000001"
    assert await insurance.file(booking("s1.2")) == "SB000002"
    listed = {f["key"]: f["sends"] for f in (await sim.get("/insurance/filings")).json()}
    assert listed == {"s1.1": 2, "s1.2": 1}


async def test_schedule_changes_are_pushed():
    pushed: list[tuple[str | None, dict]] = []
    platform = FastAPI()

    @platform.post("/his/push")
    async def receive(request: Request) -> dict:
        pushed.append((request.headers.get("authorization"), await request.json()))
        return {}

    app = create_app(
        "http://platform/his/push",
        "secret",
        "h1",
        push_transport=httpx.ASGITransport(app=platform),
    )
    async with client_of(app) as sim:
        his = HttpHis("http://his", client=sim)
        await sim.post("/his/admin/schedules", json=[schedule("A1")])
        await sim.post("/his/admin/schedules/A1/suspend")
        with pytest.raises(HisRejected) as other:
            await his.book(booking(hospital_id="h2"))
        assert other.value.code == "wrong_hospital"
    assert [auth for auth, _ in pushed] == ["Bearer secret", "Bearer secret"]
    assert [[s["status"] for s in body["schedules"]] for _, body in pushed] == [
        ["active"],
        ["suspended"],
    ]
    assert pushed[0][1]["hospital_id"] == "h1"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_failing_push_does_not_fail_the_change():
    app = create_app(f"http://127.0.0.1:{closed_port()}/his/push", "secret")
    async with client_of(app) as sim:
        r = await sim.post("/his/admin/schedules", json=[schedule("A1")])
        assert r.status_code == 200
        assert r.json()["schedules"][0]["id"] == "A1"


async def test_connection_refused_is_unavailable():
    his = HttpHis(f"http://127.0.0.1:{closed_port()}", timeout=1.0)
    started = time.perf_counter()
    try:
        with pytest.raises(HisUnavailable) as refused:
            await his.book(booking())
    finally:
        await his.close()
    assert time.perf_counter() - started < 1.0
    assert isinstance(refused.value.__cause__, httpx.ConnectError)


def answering(status: int, body: str, media_type: str = "application/json") -> FastAPI:
    app = FastAPI()

    @app.post("/his/bookings")
    async def any_booking() -> PlainTextResponse:
        return PlainTextResponse(body, status_code=status, media_type=media_type)

    return app


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (429, '{"code": "slow_down"}', HisUnavailable),
        (500, "oops", HisUnavailable),
        (502, "<html>bad gateway</html>", HisUnavailable),
        (200, "<html>not json</html>", HisUnavailable),
        (200, '{"created": true}', HisUnavailable),  # no his_no
        (400, '{"code": "bad_patient", "message": "no such patient"}', HisRejected),
        (403, "forbidden", HisRejected),
    ],
)
async def test_answers_are_sorted_into_our_errors(status, body, error):
    async with client_of(answering(status, body)) as client:
        with pytest.raises(error) as raised:
            await HttpHis("http://his", client=client).book(booking())
    if status == 400:
        assert (raised.value.code, raised.value.message) == ("bad_patient", "no such patient")
