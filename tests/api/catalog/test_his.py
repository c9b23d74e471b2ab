"""The HIS link through the real stack and a simulated HIS running as its own HTTP service:
schedules and suspensions imported (pull and push), bookings and cancellations delivered with
their HIS numbers stored, the insurance filing, and the HIS being down (bookings unaffected,
retried with backoff, nothing sent twice)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import httpx

from api.app import create_app
from api.catalog.rotas import release
from tests.api.helpers import ADMIN, admin_headers, book, hospital_admin, make_catalog, new_patient


def schedule(doctor: str, day: str, sid: str, period: str, at: str, capacity: int = 3) -> dict:
    return {
        "id": sid,
        "doctor_id": doctor,
        "date": day,
        "period": period,
        "capacity": capacity,
        "first_slot_at": at,
        "slot_minutes": 10,
        "fee": 0,
        "status": "active",
    }


async def linked(http, url: str, **catalog) -> tuple[dict, str]:
    cat = await make_catalog(http, **catalog)
    r = await http.put(
        f"/v1/admin/hospitals/{cat['hospital']}/his",
        json={"his_url": url, "insurance_url": url},
        headers=admin_headers(),
    )
    assert r.status_code == 200, r.text
    doctor = (await http.get(f"/v1/sessions/{cat['sessions'][0]}")).json()["doctor_id"]
    return cat, doctor


async def settle(app) -> None:
    """Index the records, then carry out what is due at the HIS."""
    engine = app.app.state.services.engine
    await engine.drain_outbox()
    await engine.deliver()


async def his_bookings(url: str) -> dict[str, dict]:
    async with httpx.AsyncClient(base_url=url) as his:
        # keyed by our booking id (the key sent is it under the installation's id)
        return {b["key"].rpartition(":")[2]: b for b in (await his.get("/his/bookings")).json()}


async def test_schedules_bookings_cancellations_and_suspensions_round_trip(http, app, his_sim):
    cat, doctor = await linked(http, his_sim, capacity=2, doctors=1)
    hid, h = cat["hospital"], admin_headers()
    async with httpx.AsyncClient(base_url=his_sim) as his:
        r = await his.post(
            "/his/admin/schedules",
            json=[
                schedule(doctor, cat["date"], "S1", "PM", "14:00"),
                schedule(doctor, cat["date"], "S2", "EVENING", "18:00"),
            ],
        )
        assert r.status_code == 200, r.text

    pulled = (await http.post(f"/v1/admin/hospitals/{hid}/his/pull", headers=h)).json()
    s1, s2 = f"his-{hid}-S1", f"his-{hid}-S2"
    assert pulled["created"] == [s1, s2]
    assert pulled["rejected"] == []
    again = (await http.post(f"/v1/admin/hospitals/{hid}/his/pull", headers=h)).json()
    assert again["created"] == []
    assert again["unchanged"] == 0  # the cursor moved on
    pushed = await http.post(
        f"/v1/admin/hospitals/{hid}/his/schedules",
        json={"schedules": [schedule(doctor, cat["date"], "S1", "PM", "14:00"), {"id": "bad"}]},
        headers=await hospital_admin(http, hid, "his-pusher"),  # the HIS's own account
    )
    assert pushed.status_code == 200, pushed.text
    assert pushed.json()["unchanged"] == 1
    assert pushed.json()["created"] == []
    assert [x["reason"] for x in pushed.json()["rejected"]] == ["invalid"]
    made = (await http.get(f"/v1/sessions/{s1}")).json()
    assert (made["status"], made["capacity"], made["period"]) == ("open", 3, "PM")

    (_, a1), (_, a2), (_, a3) = [await new_patient(http) for _ in range(3)]
    b1 = (await book(http, s1, a1)).json()["booking_id"]
    b2 = (await book(http, s1, a2)).json()["booking_id"]
    b3 = (await book(http, s2, a3)).json()["booking_id"]
    await settle(app)
    sent = await his_bookings(his_sim)
    assert set(sent) == {b1, b2, b3}
    assert all(b["sends"] == 1 and not b["cancelled"] for b in sent.values())
    assert sent[b1]["his_schedule_id"] == "S1"
    assert sent[b3]["his_schedule_id"] == "S2"
    records = (await http.get("/v1/admin/records", params={"hospital": hid}, headers=h)).json()
    numbers = {r["booking_id"]: (r["his_no"], r["insurance_no"]) for r in records["items"]}
    assert numbers[b1] == (sent[b1]["his_no"], numbers[b1][1])
    assert numbers[b1][1].startswith("SB")
    async with httpx.AsyncClient(base_url=his_sim) as his:
        assert len((await his.get("/insurance/filings")).json()) == 3

    # the patient cancels; the HIS suspends S2 (停诊): both reach the HIS as cancellations
    assert (await http.post(f"/v1/bookings/{b2}/cancel", headers=a2)).status_code == 200
    async with httpx.AsyncClient(base_url=his_sim) as his:
        assert (await his.post("/his/admin/schedules/S2/suspend")).status_code == 200
    pulled = (await http.post(f"/v1/admin/hospitals/{hid}/his/pull", headers=h)).json()
    assert pulled["suspended"] == [s2]
    assert (await http.get(f"/v1/sessions/{s2}")).json()["status"] == "suspended"
    await settle(app)
    sent = await his_bookings(his_sim)
    assert {k for k, b in sent.items() if b["cancelled"]} == {b2, b3}
    assert all(b["sends"] == 1 for b in sent.values())  # nothing sent twice
    async with httpx.AsyncClient(base_url=his_sim) as his:
        calls = (await his.get("/his/stats")).json()["calls"]
        await settle(app)
        assert (await his.get("/his/stats")).json()["calls"] == calls  # nothing left to send
    view = (await http.get(f"/v1/admin/hospitals/{hid}/his", headers=h)).json()
    assert view["deliveries"] == {"pending": 0, "failed": 0}


async def test_the_his_down_never_blocks_booking_and_is_caught_up_once(http, app, his_sim):
    cat, _ = await linked(http, his_sim, capacity=4, doctors=1)
    hid, h, sid = cat["hospital"], admin_headers(), cat["sessions"][0]
    async with httpx.AsyncClient(base_url=his_sim) as his:
        await his.post("/his/admin/outage", json={"down": True})
    patients = [await new_patient(http) for _ in range(3)]
    made = [await book(http, sid, auth) for _, auth in patients]
    assert [r.status_code for r in made] == [201, 201, 201]  # booking does not wait for the HIS
    ids = [r.json()["booking_id"] for r in made]
    await settle(app)
    pending = (await http.get(f"/v1/admin/hospitals/{hid}/his/deliveries", headers=h)).json()
    assert pending["counts"] == {"pending": 6, "failed": 0}  # 3 to the HIS, 3 to the insurance
    assert all(x["attempts"] >= 1 and x["error"] for x in pending["items"])
    assert (await http.post(f"/v1/bookings/{ids[2]}/cancel", headers=patients[2][1])).json()[
        "status"
    ] == "cancelled"
    await settle(app)
    assert await his_bookings(his_sim) == {}

    async with httpx.AsyncClient(base_url=his_sim) as his:
        await his.post("/his/admin/outage", json={"down": False})
    r = await http.post("/v1/admin/clock", json={"advance_seconds": 600}, headers=h)
    assert r.status_code == 200  # past every backoff
    await settle(app)
    sent = await his_bookings(his_sim)
    assert set(sent) == set(ids)
    assert all(b["sends"] == 1 for b in sent.values())
    assert [sent[i]["cancelled"] for i in ids] == [False, False, True]
    counts = (await http.get(f"/v1/admin/hospitals/{hid}/his/deliveries", headers=h)).json()
    assert counts["counts"] == {"pending": 0, "failed": 0}
    for i in ids[:2]:
        status = (await http.get(f"/v1/sessions/{sid}")).json()
        assert status["remaining"] == 2
        assert i in {
            r["booking_id"]
            for r in (
                await http.get(
                    "/v1/admin/records", params={"hospital": hid, "state": "booked"}, headers=h
                )
            ).json()["items"]
        }


async def test_a_refusing_his_fails_at_once_and_can_be_retried(http, app, his_sims):
    url = his_sims(hospital="somebody-else")  # refuses our bookings: 422 wrong_hospital
    cat, _ = await linked(http, url, capacity=2, doctors=1)
    hid, h = cat["hospital"], admin_headers()
    _, auth = await new_patient(http)
    assert (await book(http, cat["sessions"][0], auth)).status_code == 201
    await settle(app)
    failed = (
        await http.get(
            f"/v1/admin/hospitals/{hid}/his/deliveries", params={"status": "failed"}, headers=h
        )
    ).json()
    assert failed["counts"]["failed"] == 2
    assert failed["counts"]["pending"] == 0
    assert {x["target"] for x in failed["items"]} == {"his", "insurance"}
    assert all("wrong_hospital" in x["error"] for x in failed["items"])
    retried = await http.post(f"/v1/admin/hospitals/{hid}/his/deliveries/retry", headers=h)
    assert retried.json() == {"retried": 2}
    assert (await http.get(f"/v1/admin/hospitals/{hid}/his", headers=h)).json()["deliveries"] == {
        "pending": 2,
        "failed": 0,
    }
    bad = await http.put(f"/v1/admin/hospitals/{hid}/his", json={"his_url": "not a url"}, headers=h)
    assert bad.status_code == 422
    missing = await http.post("/v1/admin/hospitals/nope/his/pull", headers=h)
    assert missing.status_code == 404


async def test_a_suspension_is_never_lost_to_a_late_or_racing_schedule(http, app, his_sim):
    """The HIS may send a suspension before its schedule, or both at once from two workers:
    the schedule never ends up open. Odd data is refused and changes nothing."""
    cat, doctor = await linked(http, his_sim, capacity=2, doctors=1)
    hid, h = cat["hospital"], admin_headers()
    url = f"/v1/admin/hospitals/{hid}/his/schedules"

    def one(sid: str, status: str) -> dict:
        return {**schedule(doctor, cat["date"], sid, "PM", "14:00"), "status": status}

    early = await http.post(url, json={"schedules": [one("L1", "suspended")]}, headers=h)
    assert early.json()["unchanged"] == 1
    assert early.json()["failed"] == []
    late = await http.post(url, json={"schedules": [one("L1", "active")]}, headers=h)
    assert late.json()["created"] == []
    assert late.json()["unchanged"] == 1
    assert (await http.get(f"/v1/sessions/his-{hid}-L1")).status_code == 404

    # a release that raced the suspension and was left open (its worker died before it could
    # look again): the next import of either kind suspends it
    services = app.app.state.services
    doctor_doc = await services.catalog.get("doctor", doctor)
    _, made = await release(
        services,
        doctor_doc,
        dt.date.fromisoformat(cat["date"]),
        "PM",
        2,
        "14:00",
        10,
        0,
        session_id=f"his-{hid}-L1",
    )
    assert type(made).__name__ == "Created"
    assert (await http.get(f"/v1/sessions/his-{hid}-L1")).json()["status"] == "open"
    again = await http.post(url, json={"schedules": [one("L1", "active")]}, headers=h)
    assert again.json()["suspended"] == [f"his-{hid}-L1"]
    assert (await http.get(f"/v1/sessions/his-{hid}-L1")).json()["status"] == "suspended"

    ids = [f"R{i}" for i in range(12)]
    pushes = [
        http.post(url, json={"schedules": [one(sid, status)]}, headers=h)
        for sid in ids
        for status in ("active", "suspended")
    ]
    answers = await asyncio.gather(*pushes)
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    for sid in ids:
        r = await http.get(f"/v1/sessions/his-{hid}-{sid}")
        assert r.status_code == 404 or r.json()["status"] == "suspended", (sid, r.text)

    far = (dt.date.fromisoformat(cat["date"]) + dt.timedelta(days=400)).isoformat()
    odd = [
        {**one("F1", "active"), "date": far},
        {**one("F2", "active"), "updated_at": float("inf")},
        {**one("F3", "active"), "date": "9999-12-31"},
        {**one("F4", "active"), "doctor_id": "nobody"},
    ]
    r = await http.post(
        url,
        content=json.dumps({"schedules": odd}),
        headers={**h, "content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    reasons = [x["reason"] for x in r.json()["rejected"]]
    assert reasons == ["out_of_range", "invalid", "out_of_range", "unknown_doctor"]
    assert r.json()["created"] == []
    assert r.json()["cursor"] is not None
    for sid in ("F1", "F2", "F3", "F4"):
        assert (await http.get(f"/v1/sessions/his-{hid}-{sid}")).status_code == 404


async def test_an_his_link_to_a_forbidden_address_is_refused_and_changes_nothing(http):
    """Even with loopback allowed (the tests' settings), the cloud metadata address is not."""
    cat = await make_catalog(http, doctors=1)
    hid, h = cat["hospital"], admin_headers()
    for body in (
        {"his_url": "http://169.254.169.254/latest/"},
        {"his_url": "http://93.184.216.34/his", "insurance_url": "http://10.0.0.1/"},
    ):
        r = await http.put(f"/v1/admin/hospitals/{hid}/his", json=body, headers=h)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "address_not_allowed"
        assert "may not call" in r.json()["message"]
    assert (await http.get(f"/v1/admin/hospitals/{hid}/his", headers=h)).status_code == 404


async def test_loopback_is_refused_when_the_settings_do_not_allow_it(runtime):
    """An app whose settings allow no private network: a loopback link is refused when set,
    and one stored before (or whose name now resolves there) is refused when pulled."""
    settings = runtime.settings.model_copy(
        update={"admin_token": ADMIN, "movable_clock": True, "his_allow_networks": ()}
    )
    gateway = create_app(settings)
    async with (
        gateway.app.router.lifespan_context(gateway.app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway.app), base_url="http://test"
        ) as http,
    ):
        cat = await make_catalog(http, doctors=1)
        hid, h = cat["hospital"], admin_headers()
        for url in ("http://127.0.0.1:1/", "http://localhost:1/", "http://[::1]:1/"):
            r = await http.put(f"/v1/admin/hospitals/{hid}/his", json={"his_url": url}, headers=h)
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "address_not_allowed", r.text
            assert "loopback" in r.json()["message"]
        assert (await http.get(f"/v1/admin/hospitals/{hid}/his", headers=h)).status_code == 404

        services = gateway.app.state.services
        await services.deliveries.configure(hid, {"his_url": "http://127.0.0.1:1", "pull": True})
        pulled = await http.post(f"/v1/admin/hospitals/{hid}/his/pull", headers=h)
        assert pulled.status_code == 422, pulled.text
        assert pulled.json()["code"] == "address_not_allowed"
