"""A hospital's patients: manual blacklist and whitelist entries (reasons, expiry) that the
engine and the courier honour, tags, and a view limited to what the hospital may see."""

from __future__ import annotations

from datetime import datetime

from tests.api.helpers import (
    ZONE,
    admin_headers,
    book,
    hospital_admin,
    make_catalog,
    move_clock_to,
    new_patient,
    visit,
)


async def test_manual_lists_tags_and_the_patient_view(http):
    cat = await make_catalog(http, capacity=3, doctors=2)
    other = await make_catalog(http, capacity=1, doctors=1)
    h = admin_headers()
    hid = cat["hospital"]
    p1, a1 = await new_patient(http)
    p2, a2 = await new_patient(http)
    base = f"/v1/admin/hospitals/{hid}/patients"

    # blacklist by hand: refused at once, with the reason kept; lifted: books again
    until = datetime(2031, 1, 1, tzinfo=ZONE).isoformat()
    r = await http.put(
        f"{base}/{p1}/blacklist", json={"reason": "号贩子", "until": until}, headers=h
    )
    assert r.status_code == 200, r.text
    refused = await book(http, cat["sessions"][0], a1)
    assert refused.status_code == 403
    assert refused.json()["code"] == "blacklisted"
    listed = (await http.get(f"/v1/admin/hospitals/{hid}/lists/blacklist", headers=h)).json()
    assert [(x["patient_id"], x["reason"]) for x in listed] == [(p1, "号贩子")]
    assert (await http.delete(f"{base}/{p1}/blacklist", headers=h)).status_code == 200
    assert (await book(http, cat["sessions"][0], a1)).status_code == 201
    assert (await http.delete(f"{base}/{p1}/blacklist", headers=h)).status_code == 404

    # tags, and the hospital's view of its patient (masked identity, bookings here)
    assert (await http.put(f"{base}/{p1}/tags", json={"tags": ["vip", "慢病"]}, headers=h)).json()[
        "tags"
    ] == ["vip", "慢病"]
    assert (await http.get(f"/v1/admin/hospitals/{hid}/tags/vip", headers=h)).json()[
        "patients"
    ] == [p1]
    seen = (await http.get(f"{base}/{p1}", headers=h)).json()
    assert seen["tags"] == ["vip", "慢病"]
    assert len(seen["bookings"]) == 1
    assert "*" in seen["id_number"]
    assert "password_hash" not in seen

    # a hospital admin sees only its own patients, and never another hospital's lists
    a = await hospital_admin(http, hid, "lists-admin")
    assert (await http.get(f"{base}/{p1}", headers=a)).status_code == 200
    assert (await http.get(f"{base}/{p2}", headers=a)).status_code == 404  # never came here
    their = f"/v1/admin/hospitals/{other['hospital']}/patients/{p1}"
    for call in (
        http.get(their, headers=a),
        http.put(f"{their}/blacklist", json={"reason": "x"}, headers=a),
        http.put(f"{their}/tags", json={"tags": ["x"]}, headers=a),
        http.get(f"/v1/admin/hospitals/{other['hospital']}/lists/blacklist", headers=a),
    ):
        r = await call
        assert r.status_code == 403
        assert r.json()["code"] == "forbidden"
    assert (await book(http, other["sessions"][0], a1)).status_code == 201  # nothing changed
    bad = await http.put(f"{base}/{p2}/blacklist", json={"reason": ""}, headers=h)
    assert bad.status_code == 422
    assert (
        await http.put(f"{base}/999999/blacklist", json={"reason": "x"}, headers=h)
    ).status_code == 404
    assert a2


async def test_a_whitelisted_patient_is_not_banned_by_the_rules(http):
    cat = await make_catalog(http, capacity=3, doctors=1)
    h = admin_headers()
    p1, a1 = await new_patient(http)
    p2, a2 = await new_patient(http)
    base = f"/v1/admin/hospitals/{cat['hospital']}/patients"
    r = await http.put(f"{base}/{p1}/whitelist", json={"reason": "行动不便，常迟到"}, headers=h)
    assert r.status_code == 200
    for auth in (a1, a2):
        assert (await book(http, cat["sessions"][0], auth)).status_code == 201
    await move_clock_to(http, visit(cat, "13:00"))  # both miss the visit
    c1 = (await http.get("/v1/me/conduct", headers=a1)).json()
    c2 = (await http.get("/v1/me/conduct", headers=a2)).json()
    assert [v["kind"] for v in c1["scopes"][0]["violations"]] == ["no_show"]  # recorded ...
    assert c1["banned"] is False  # ... but not held against a whitelisted patient
    assert c2["banned"] is True
    seen = (await http.get(f"{base}/{p1}", headers=h)).json()
    assert seen["whitelist"]["reason"] == "行动不便，常迟到"
    assert seen["banned_until"] is None
    assert p2


async def test_the_printable_day_list(http):
    import csv
    import io

    cat = await make_catalog(http, capacity=3, doctors=1)
    sid = cat["sessions"][0]
    _, a1 = await new_patient(http)
    _, a2 = await new_patient(http)
    first = await book(http, sid, a1)
    await book(http, sid, a2)
    await http.post(f"/v1/bookings/{first.json()['booking_id']}/cancel", headers=a1)
    _, a3 = await new_patient(http)
    third = await book(http, sid, a3)  # takes slot 1 again
    r = await http.get(f"/v1/admin/sessions/{sid}/day-list", headers=admin_headers())
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text.lstrip("\ufeff"))))
    assert [(x["slot_no"], x["status"]) for x in rows] == [("1", "booked"), ("2", "booked")]
    assert rows[0]["booking_id"] == third.json()["booking_id"]
    assert rows[0]["name"] == "李雷"
    assert "****" in rows[0]["phone"]
    assert "*" in rows[0]["id_number"]
    assert third.json()["verification_code"] not in r.text  # the code never leaves the patient
    page = await http.get(f"/v1/admin/sessions/{sid}/day-list?format=html", headers=admin_headers())
    assert page.status_code == 200
    assert "<table" in page.text
    assert "李雷" in page.text
    bad = await http.get(f"/v1/admin/sessions/{sid}/day-list?format=pdf", headers=admin_headers())
    assert bad.status_code == 422
    other = await make_catalog(http, capacity=1, doctors=1)
    a = await hospital_admin(http, other["hospital"], "print-admin")
    assert (await http.get(f"/v1/admin/sessions/{sid}/day-list", headers=a)).status_code == 403
