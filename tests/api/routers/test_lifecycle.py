"""The lifecycle routes (payment, cancellation, check-in, suspension, waitlist, policy, conduct,
notifications) on the real app and engine, with the one clock moved through the admin API."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from tests.api.helpers import (
    ZONE,
    admin_headers,
    book,
    make_catalog,
    move_clock_to,
    new_patient,
    visit,
)


async def test_pay_check_in_and_cancel_cutoff(http):
    cat = await make_catalog(http, capacity=3, fee=2500, doctors=1)
    sid = cat["sessions"][0]
    p1, a1 = await new_patient(http)
    _, a2 = await new_patient(http)
    held = await book(http, sid, a1)
    assert held.status_code == 201
    assert held.json()["status"] == "held"
    assert held.json()["hold_expires_at"]
    assert held.json()["verification_code"] is None
    bid = held.json()["booking_id"]
    assert (await http.post(f"/v1/bookings/{bid}/payment", headers=a2)).status_code == 404

    paid = await http.post(f"/v1/bookings/{bid}/payment", headers=a1)
    assert paid.status_code == 200, paid.text
    code, payment_id = paid.json()["verification_code"], paid.json()["payment_id"]
    assert len(code) == 8
    assert code.isdigit()
    assert paid.json()["amount"] == 2500
    again = await http.post(f"/v1/bookings/{bid}/payment", headers=a1)
    assert (again.json()["verification_code"], again.json()["payment_id"]) == (code, payment_id)
    mine = (await http.get(f"/v1/bookings/{bid}", headers=a1)).json()
    assert (mine["status"], mine["verification_code"], mine["paid"]) == ("booked", code, True)
    listed = await http.get(f"/v1/admin/sessions/{sid}/bookings", headers=admin_headers())
    assert listed.json()[0]["patient_id"] == p1
    assert listed.json()[0]["verification_code"] is None

    check = f"/v1/admin/bookings/{bid}/check-in"
    early = await http.post(check, json={"verification_code": code}, headers=admin_headers())
    assert early.status_code == 409
    assert early.json()["code"] == "not_visit_day"
    bad = await http.post(check, json={"verification_code": "12ab"}, headers=admin_headers())
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_request"
    patient_try = await http.post(check, json={"verification_code": code}, headers=a1)
    assert patient_try.status_code == 401

    await move_clock_to(http, visit(cat, "07:30"))
    late = await http.post(f"/v1/bookings/{bid}/cancel", headers=a1)  # default: day before 16:00
    assert late.status_code == 409
    assert late.json()["code"] == "cancel_closed"
    assert late.json()["deadline"].endswith("16:00:00+08:00")
    wrong = "0" * 8 if code != "0" * 8 else "1" * 8
    r = await http.post(check, json={"verification_code": wrong}, headers=admin_headers())
    assert r.status_code == 422
    assert (r.json()["code"], r.json()["tries_left"]) == ("wrong_code", 4)
    ok = await http.post(check, json={"verification_code": code}, headers=admin_headers())
    assert ok.status_code == 200
    assert ok.json()["status"] == "checked_in"
    assert (await http.get(f"/v1/bookings/{bid}", headers=a1)).json()["status"] == "checked_in"
    notices = (await http.get("/v1/me/notifications", headers=a1)).json()
    assert [n["kind"] for n in notices] == ["confirmed"]


async def test_wrong_codes_lock_the_booking(http):
    cat = await make_catalog(http, capacity=1, doctors=1)
    _, auth = await new_patient(http)
    r = await book(http, cat["sessions"][0], auth)
    bid, code = r.json()["booking_id"], r.json()["verification_code"]
    await move_clock_to(http, visit(cat, "07:00"))
    wrong = "0" * 8 if code != "0" * 8 else "1" * 8
    check = f"/v1/admin/bookings/{bid}/check-in"
    answers = [
        (await http.post(check, json={"verification_code": wrong}, headers=admin_headers()))
        for _ in range(5)
    ]
    assert [a.status_code for a in answers] == [422, 422, 422, 422, 423]
    right = await http.post(check, json={"verification_code": code}, headers=admin_headers())
    assert right.status_code == 423
    assert right.json()["code"] == "locked"
    assert (await http.get(f"/v1/bookings/{bid}", headers=auth)).json()["status"] == "booked"


async def test_hold_expiry_lifts_sold_out_for_every_worker_view(http):
    cat = await make_catalog(http, capacity=1, fee=100, doctors=1)
    sid = cat["sessions"][0]
    _, a1 = await new_patient(http)
    _, a2 = await new_patient(http)
    assert (await book(http, sid, a1)).status_code == 201
    refused = await book(http, sid, a2)
    assert refused.status_code == 409
    assert refused.json()["code"] == "sold_out"
    await http.post(
        "/v1/admin/clock", json={"advance_seconds": 15 * 60 + 1}, headers=admin_headers()
    )
    for _ in range(50):  # the view learns it from pub/sub
        listed = await http.get(f"/v1/departments/{cat['department']}/sessions")
        if listed.json()[0]["remaining"] == 1:
            break
        await asyncio.sleep(0.02)
    assert listed.json()[0]["status"] == "open"
    again = await book(http, sid, a2, "r2")
    assert again.status_code == 201
    assert again.json()["slot_no"] == 1


async def test_waitlist_routes(http):
    cat = await make_catalog(http, capacity=1, doctors=1)
    sid = cat["sessions"][0]
    _, a1 = await new_patient(http)
    _, a2 = await new_patient(http)
    _, a3 = await new_patient(http)
    path = f"/v1/sessions/{sid}/waitlist"
    early = await http.post(path, json={"request_id": "w"}, headers=a2)
    assert early.status_code == 409
    assert early.json()["code"] == "slots_available"
    first = await book(http, sid, a1)
    assert (await http.post(path, json={}, headers=a2)).status_code == 422
    assert (await http.post(path, json={"request_id": "w"})).status_code == 401
    joined = await http.post(path, json={"request_id": "w"}, headers=a2)
    assert joined.status_code == 201
    assert joined.json()["position"] == 1
    repeat = await http.post(path, json={"request_id": "w"}, headers=a2)
    assert repeat.status_code == 200
    assert repeat.json()["position"] == 1
    assert (await http.post(path, json={"request_id": "x"}, headers=a3)).json()["position"] == 2
    assert (await http.delete(path, headers=a3)).status_code == 200
    assert (await http.delete(path, headers=a3)).status_code == 404

    cancelled = await http.post(f"/v1/bookings/{first.json()['booking_id']}/cancel", headers=a1)
    assert cancelled.status_code == 200
    mine = (await http.get("/v1/me/bookings", headers=a2)).json()
    assert [(b["session_id"], b["status"]) for b in mine] == [(sid, "booked")]
    again = await http.post(path, json={"request_id": "w"}, headers=a2)  # the request's booking
    assert again.status_code == 200
    assert again.json()["booking_id"] == mine[0]["booking_id"]
    await asyncio.sleep(0.3)  # the courier runs every tick
    kinds = [n["kind"] for n in (await http.get("/v1/me/notifications", headers=a2)).json()]
    assert "waitlist_promoted" in kinds


async def test_suspend_route(http):
    cat = await make_catalog(http, capacity=3, fee=500, doctors=1)
    sid = cat["sessions"][0]
    _, a1 = await new_patient(http)
    r = await book(http, sid, a1)
    await http.post(f"/v1/bookings/{r.json()['booking_id']}/payment", headers=a1)
    none = await http.post("/v1/admin/sessions/nope/suspend", headers=admin_headers())
    assert none.status_code == 404
    assert (await http.post(f"/v1/admin/sessions/{sid}/suspend")).status_code == 401
    done = await http.post(f"/v1/admin/sessions/{sid}/suspend", headers=admin_headers())
    assert done.status_code == 200, done.text
    assert (done.json()["cancelled"], done.json()["refunded"]) == (1, 500)
    assert (await http.get(f"/v1/sessions/{sid}")).json()["status"] == "suspended"
    _, a2 = await new_patient(http)
    refused = await book(http, sid, a2)
    assert refused.status_code == 409
    assert refused.json()["code"] == "suspended"
    mine = (await http.get(f"/v1/bookings/{r.json()['booking_id']}", headers=a1)).json()
    assert (mine["status"], mine["cancelled_by"], mine["refunded"]) == (
        "cancelled",
        "hospital",
        500,
    )
    for _ in range(50):
        kinds = [n["kind"] for n in (await http.get("/v1/me/notifications", headers=a1)).json()]
        if "suspended" in kinds:
            break
        await asyncio.sleep(0.05)
    assert "suspended" in kinds
    sent = (await http.get("/v1/admin/notifications", headers=admin_headers())).json()
    assert any(n["kind"] == "suspended" for n in sent)


async def test_policy_routes(http):
    cat = await make_catalog(http, capacity=1, doctors=1)
    path = f"/v1/admin/hospitals/{cat['hospital']}/policy"
    default = (await http.get(path, headers=admin_headers())).json()
    assert (default["cancel_until"], default["ban_days"]) == ("16:00", [30, 60, 90])
    change = {
        "hold_seconds": 300,
        "fee_tiers": [
            {"minutes_before": 1440, "fee_percent": 10},
            {"minutes_before": 0, "fee_percent": 30},
        ],
    }
    put = await http.put(path, json=change, headers=admin_headers())
    assert put.status_code == 200
    assert put.json()["hold_seconds"] == 300
    assert put.json()["fee_tiers"][0] == {"minutes_before": 1440, "fee_percent": 10}
    assert put.json()["cancel_until"] == "16:00"  # untouched fields stay
    for bad in (
        {"hold_seconds": "soon"},
        {"fee_tiers": [{"minutes_before": 0, "fee_percent": 101}]},
        {"ban_scope": "galaxy"},
        {"cancel_until": "25:00"},
    ):
        r = await http.put(path, json=bad, headers=admin_headers())
        assert r.status_code == 422, bad
        assert r.json()["code"] == "invalid_request", bad
    assert (await http.get(path, headers=admin_headers())).json() == put.json()
    assert (
        await http.get("/v1/admin/hospitals/nope/policy", headers=admin_headers())
    ).status_code == 404
    assert (await http.put(path, json={}, headers={})).status_code == 401


async def test_no_show_shows_in_conduct_and_bars_booking(http):
    cat = await make_catalog(http, capacity=2, doctors=2)
    _, auth = await new_patient(http)
    r = await book(http, cat["sessions"][0], auth)
    assert r.status_code == 201
    await move_clock_to(http, visit(cat, "13:00"))  # AM session: 08:00 + 2 slots + grace
    mine = (await http.get(f"/v1/bookings/{r.json()['booking_id']}", headers=auth)).json()
    assert mine["status"] == "no_show"
    conduct = (await http.get("/v1/me/conduct", headers=auth)).json()
    assert conduct["banned"] is True
    [scope] = conduct["scopes"]
    assert scope["scope"] == cat["hospital"]
    assert [v["kind"] for v in scope["violations"]] == ["no_show"]
    # a session of the same hospital, later: refused while banned
    doc = await http.post(
        "/v1/admin/doctors",
        headers=admin_headers(),
        json={"department_id": cat["department"], "name": "x", "title": "y"},
    )
    later = datetime.fromtimestamp(time.time() + 10 * 86400, ZONE).date()
    s = await http.post(
        "/v1/admin/sessions",
        headers=admin_headers(),
        json={
            "doctor_id": doc.json()["id"],
            "date": later.isoformat(),
            "period": "PM",
            "capacity": 5,
            "first_slot_at": "14:00",
            "slot_minutes": 10,
            "fee": 0,
            "opens_at": datetime.fromtimestamp(time.time() - 60, ZONE).isoformat(),
        },
    )
    assert s.status_code == 201, s.text
    refused = await book(http, s.json()["id"], auth, "again")
    assert refused.status_code == 403
    assert refused.json()["code"] == "blacklisted"
    assert refused.json()["scope"] == "hospital"
    assert refused.json()["until"]


async def test_sessions_open_and_close_by_the_hospitals_policy(http):
    cat = await make_catalog(http, capacity=1, doctors=1)
    path = f"/v1/admin/hospitals/{cat['hospital']}/policy"
    await http.put(
        path,
        json={"window_days": 5, "release_at": "06:30", "booking_closes_minutes": 60},
        headers=admin_headers(),
    )
    doc = await http.post(
        "/v1/admin/doctors",
        headers=admin_headers(),
        json={"department_id": cat["department"], "name": "x", "title": "y"},
    )
    day = datetime.fromtimestamp(time.time() + 20 * 86400, ZONE).date()
    made = await http.post(
        "/v1/admin/sessions",
        headers=admin_headers(),
        json={
            "doctor_id": doc.json()["id"],
            "date": day.isoformat(),
            "period": "AM",
            "capacity": 2,
            "first_slot_at": "08:00",
            "slot_minutes": 10,
            "fee": 0,
        },
    )
    assert made.status_code == 201, made.text
    state = (await http.get(f"/v1/sessions/{made.json()['id']}")).json()
    opens = datetime.fromisoformat(state["opens_at"])
    closes = datetime.fromisoformat(state["closes_at"])
    assert (day - opens.date()).days == 5
    assert opens.strftime("%H:%M") == "06:30"
    assert closes.date() == day
    assert closes.strftime("%H:%M") == "07:00"
    assert (state["status"], state["waiting"]) == ("scheduled", 0)
    _, auth = await new_patient(http)
    early = await book(http, made.json()["id"], auth)
    assert early.status_code == 409
    assert early.json()["code"] == "not_open"
    await move_clock_to(http, opens)
    assert (await book(http, made.json()["id"], auth)).status_code == 201


async def test_metrics_show_the_courier(http):
    cat = await make_catalog(http, capacity=1, doctors=1)
    _, auth = await new_patient(http)
    assert (await book(http, cat["sessions"][0], auth)).status_code == 201
    for _ in range(100):  # the figures are read every FIGURES_SECONDS in the background
        text = (await http.get("/metrics", headers=admin_headers())).text
        lines = dict(
            line.split(" ", 1)
            for line in text.splitlines()
            if line.startswith("slotengine_courier")
        )
        if float(lines.get("slotengine_courier_notices", 0)) >= 1:
            break
        await asyncio.sleep(0.1)
    assert float(lines["slotengine_courier_notices"]) >= 1  # the booking's "confirmed"
    assert "slotengine_courier_outbox_pending" in lines
    assert float(lines["slotengine_courier_unsettled_payments"]) == 0
