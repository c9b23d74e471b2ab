"""Catalog read, update and delete: deleting anything that still has live bookings or bookable
sessions under it is refused with a clear code and changes nothing."""

from __future__ import annotations

from tests.api.helpers import admin_headers, make_catalog, new_patient


async def test_read_and_update_hospital_department_doctor(http):
    cat = await make_catalog(http, capacity=1, doctors=1)
    h = admin_headers()
    doctor = (await http.get(f"/v1/sessions/{cat['sessions'][0]}")).json()["doctor_id"]
    r = await http.patch(
        f"/v1/admin/hospitals/{cat['hospital']}", json={"level": "三甲"}, headers=h
    )
    assert r.status_code == 200
    assert (r.json()["name"], r.json()["level"]) == ("协和", "三甲")
    r = await http.patch(
        f"/v1/admin/doctors/{doctor}", json={"title": "副主任医师", "specialty": "心衰"}, headers=h
    )
    assert r.status_code == 200
    got = (await http.get(f"/v1/admin/doctors/{doctor}", headers=h)).json()
    assert (got["title"], got["specialty"], got["department_id"]) == (
        "副主任医师",
        "心衰",
        cat["department"],
    )
    bad = await http.patch(
        f"/v1/admin/departments/{cat['department']}", json={"name": ""}, headers=h
    )
    assert bad.status_code == 422
    assert (await http.get(f"/v1/admin/departments/{cat['department']}", headers=h)).json()[
        "name"
    ] == "心内科"
    assert (await http.get("/v1/admin/doctors/doc9999", headers=h)).status_code == 404
    assert (await http.get(f"/v1/admin/doctors/{doctor}")).status_code == 401


async def test_deleting_is_refused_while_anything_still_matters(http):
    cat = await make_catalog(http, capacity=1, doctors=1)
    h = admin_headers()
    sid = cat["sessions"][0]
    doctor = (await http.get(f"/v1/sessions/{sid}")).json()["doctor_id"]
    _, auth = await new_patient(http)
    booked = await http.post(f"/v1/sessions/{sid}/bookings", json={"request_id": "r"}, headers=auth)
    for path in (
        f"/v1/admin/doctors/{doctor}",
        f"/v1/admin/departments/{cat['department']}",
        f"/v1/admin/hospitals/{cat['hospital']}",
    ):
        r = await http.delete(path, headers=h)
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "has_live_bookings", r.text
        assert r.json()["live"] == 1
    cancel = await http.post(f"/v1/bookings/{booked.json()['booking_id']}/cancel", headers=auth)
    assert cancel.status_code == 200
    r = await http.delete(f"/v1/admin/doctors/{doctor}", headers=h)
    assert r.status_code == 409
    assert r.json()["code"] == "has_open_sessions"
    assert r.json()["sessions"] == [sid]
    assert (await http.get(f"/v1/admin/doctors/{doctor}", headers=h)).status_code == 200
    assert (await http.post(f"/v1/admin/sessions/{sid}/suspend", headers=h)).status_code == 200
    r = await http.delete(f"/v1/admin/hospitals/{cat['hospital']}", headers=h)
    assert r.status_code == 409
    assert r.json()["code"] == "not_empty"
    assert (await http.delete(f"/v1/admin/doctors/{doctor}", headers=h)).json()["deleted"]
    assert (await http.get(f"/v1/admin/doctors/{doctor}", headers=h)).status_code == 404
    assert (
        await http.delete(f"/v1/admin/departments/{cat['department']}", headers=h)
    ).status_code == 200
    assert (await http.get(f"/v1/hospitals/{cat['hospital']}/departments")).json() == []
    assert (
        await http.delete(f"/v1/admin/hospitals/{cat['hospital']}", headers=h)
    ).status_code == 200
    assert cat["hospital"] not in [x["id"] for x in (await http.get("/v1/hospitals")).json()]
