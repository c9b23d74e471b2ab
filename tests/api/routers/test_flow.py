"""Every route's success path and error codes, against the real app and engine."""

import asyncio

from tests.api.helpers import admin_headers, make_catalog, new_patient


async def test_book_see_cancel(http):
    cat = await make_catalog(http, capacity=2)
    patient, auth = await new_patient(http)
    sid = cat["sessions"][0]
    r = await http.post(f"/v1/sessions/{sid}/bookings", json={"request_id": "r1"}, headers=auth)
    assert r.status_code == 201, r.text
    booking = r.json()
    assert (booking["slot_no"], booking["slot_time"], booking["status"]) == (1, "08:00", "booked")
    again = await http.post(f"/v1/sessions/{sid}/bookings", json={"request_id": "r1"}, headers=auth)
    assert again.status_code == 200
    assert again.json() == booking
    mine = await http.get("/v1/me/bookings", headers=auth)
    assert [b["booking_id"] for b in mine.json()] == [booking["booking_id"]]
    one = await http.get(f"/v1/bookings/{booking['booking_id']}", headers=auth)
    assert one.status_code == 200
    assert one.json()["status"] == "booked"
    state = (await http.get(f"/v1/sessions/{sid}")).json()
    assert (state["remaining"], state["status"], state["capacity"]) == (1, "open", 2)
    c = await http.post(f"/v1/bookings/{booking['booking_id']}/cancel", headers=auth)
    assert c.status_code == 200
    assert c.json()["status"] == "cancelled"
    assert (await http.get(f"/v1/sessions/{sid}")).json()["remaining"] == 2
    listed = await http.get(f"/v1/admin/sessions/{sid}/bookings", headers=admin_headers())
    assert [(b["patient_id"], b["status"]) for b in listed.json()] == [(patient, "cancelled")]
    await asyncio.sleep(0)
