"""Admin roles: a hospital admin acts only on its own hospital; a reach into another one is
refused (403 ``forbidden``) and changes nothing. Accounts are made and disabled by the platform
admin; their tokens are not patients' tokens, nor the other way round."""

from __future__ import annotations

from tests.api.helpers import PASSWORD, admin_headers, hospital_admin, make_catalog, new_patient


async def test_a_hospital_admin_cannot_reach_another_hospital(http):
    mine = await make_catalog(http, capacity=2, doctors=1)
    theirs = await make_catalog(http, capacity=2, doctors=1)
    a = await hospital_admin(http, mine["hospital"], "admin-mine")
    patient, auth = await new_patient(http)
    booked = await http.post(
        f"/v1/sessions/{theirs['sessions'][0]}/bookings", json={"request_id": "r"}, headers=auth
    )
    their_booking = booked.json()["booking_id"]
    their_session = theirs["sessions"][0]
    policy_path = f"/v1/admin/hospitals/{theirs['hospital']}/policy"
    policy_before = (await http.get(policy_path, headers=admin_headers())).json()
    doctor = (await http.get(f"/v1/sessions/{their_session}")).json()["doctor_id"]
    their_his = f"/v1/admin/hospitals/{theirs['hospital']}/his"
    schedule = {
        "id": "X1",
        "doctor_id": doctor,
        "date": theirs["date"],
        "period": "PM",
        "capacity": 5,
        "first_slot_at": "14:00",
        "slot_minutes": 10,
    }

    attempts = [
        http.post("/v1/admin/hospitals", json={"name": "x"}, headers=a),
        http.post(
            "/v1/admin/departments",
            json={"hospital_id": theirs["hospital"], "name": "x"},
            headers=a,
        ),
        http.post(
            "/v1/admin/doctors",
            json={"department_id": theirs["department"], "name": "x", "title": "y"},
            headers=a,
        ),
        http.post(
            "/v1/admin/sessions",
            headers=a,
            json={
                "doctor_id": doctor,
                "date": theirs["date"],
                "period": "PM",
                "capacity": 5,
                "first_slot_at": "14:00",
                "slot_minutes": 10,
                "fee": 0,
            },
        ),
        http.get(f"/v1/admin/sessions/{their_session}/bookings", headers=a),
        http.post(f"/v1/admin/sessions/{their_session}/suspend", headers=a),
        http.post(
            f"/v1/admin/bookings/{their_booking}/check-in",
            json={"verification_code": booked.json()["verification_code"]},
            headers=a,
        ),
        http.get(policy_path, headers=a),
        http.put(policy_path, json={"hold_seconds": 60}, headers=a),
        http.get("/v1/admin/notifications", headers=a),
        http.get(f"/v1/admin/hospitals/{theirs['hospital']}", headers=a),
        http.patch(f"/v1/admin/hospitals/{theirs['hospital']}", json={"name": "x"}, headers=a),
        http.delete(f"/v1/admin/hospitals/{mine['hospital']}", headers=a),  # even its own
        http.patch(f"/v1/admin/departments/{theirs['department']}", json={"name": "x"}, headers=a),
        http.get(f"/v1/admin/doctors/{doctor}", headers=a),
        http.patch(f"/v1/admin/doctors/{doctor}", json={"title": "x"}, headers=a),
        http.delete(f"/v1/admin/doctors/{doctor}", headers=a),
        http.delete(f"/v1/admin/departments/{theirs['department']}", headers=a),
        http.post("/v1/admin/clock", json={"advance_seconds": 1}, headers=a),
        http.get("/v1/admin/admins", headers=a),
        http.get("/v1/admin/records", params={"hospital": theirs["hospital"]}, headers=a),
        http.get("/v1/admin/records", params={"doctor": doctor}, headers=a),
        http.get("/v1/admin/records.csv", params={"hospital": theirs["hospital"]}, headers=a),
        http.put(f"{their_his}", json={"his_url": "http://127.0.0.1:9"}, headers=a),
        http.put(  # the server calls it: platform only, even for its own hospital
            f"/v1/admin/hospitals/{mine['hospital']}/his",
            json={"his_url": "http://127.0.0.1:9"},
            headers=a,
        ),
        http.get(their_his, headers=a),
        http.delete(their_his, headers=a),
        http.post(f"{their_his}/schedules", json={"schedules": [schedule]}, headers=a),
        http.post(f"{their_his}/pull", headers=a),
        http.get(f"{their_his}/deliveries", headers=a),
        http.post(f"{their_his}/deliveries/retry", headers=a),
        http.get("/v1/admin/analytics", params={"hospital": theirs["hospital"]}, headers=a),
        http.get(
            "/v1/admin/analytics/charts/no_show_by_age.svg",
            params={"hospital": theirs["hospital"]},
            headers=a,
        ),
        http.post(
            "/v1/admin/admins",
            headers=a,
            json={"login": "sneaky", "password": PASSWORD, "name": "x"},
        ),
    ]
    for attempt in attempts:
        r = await attempt
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "forbidden", r.text

    # nothing changed
    assert (await http.get(their_his, headers=admin_headers())).status_code == 404  # no HIS set
    assert (await http.get(f"/v1/sessions/his-{theirs['hospital']}-X1")).status_code == 404
    assert (await http.get(policy_path, headers=admin_headers())).json() == policy_before
    state = (await http.get(f"/v1/sessions/{their_session}")).json()
    assert (state["status"], state["remaining"]) == ("open", 1)
    assert (await http.get(f"/v1/bookings/{their_booking}", headers=auth)).json()["status"] == (
        "booked"
    )
    hospitals = (await http.get("/v1/hospitals")).json()
    assert len([h for h in hospitals if h["name"] == "x"]) == 0
    assert {mine["hospital"], theirs["hospital"]} <= {h["id"] for h in hospitals}
    their_doctor = (await http.get(f"/v1/admin/doctors/{doctor}", headers=admin_headers())).json()
    assert their_doctor["title"] == "主任医师"
    listed = (await http.get("/v1/admin/admins", headers=admin_headers())).json()
    assert [x["login"] for x in listed] == ["admin-mine"]
    assert all("password_hash" not in x for x in listed)
    assert patient > 0


async def test_a_hospital_admin_runs_its_own_hospital(http):
    mine = await make_catalog(http, capacity=2, doctors=1)
    a = await hospital_admin(http, mine["hospital"], "admin-own")
    sid = mine["sessions"][0]
    path = f"/v1/admin/hospitals/{mine['hospital']}/policy"
    assert (await http.put(path, json={"hold_seconds": 300}, headers=a)).json()[
        "hold_seconds"
    ] == 300
    department = await http.post(
        "/v1/admin/departments", json={"hospital_id": mine["hospital"], "name": "儿科"}, headers=a
    )
    assert department.status_code == 201
    _, auth = await new_patient(http)
    booked = await http.post(f"/v1/sessions/{sid}/bookings", json={"request_id": "r"}, headers=auth)
    listed = await http.get(f"/v1/admin/sessions/{sid}/bookings", headers=a)
    assert [b["booking_id"] for b in listed.json()] == [booked.json()["booking_id"]]
    done = await http.post(f"/v1/admin/sessions/{sid}/suspend", headers=a)
    assert done.status_code == 200
    assert done.json()["cancelled"] == 1


async def test_admin_accounts_tokens_and_their_end(http):
    cat = await make_catalog(http, capacity=1, doctors=1)
    a = await hospital_admin(http, cat["hospital"], "admin-end")
    _, patient = await new_patient(http)
    path = f"/v1/admin/hospitals/{cat['hospital']}/policy"
    assert (await http.get(path, headers=patient)).status_code == 401  # a patient is no admin
    assert (await http.get("/v1/me/bookings", headers=a)).status_code == 401  # nor the reverse
    wrong = await http.post("/v1/admin/auth/token", json={"login": "admin-end", "password": "no"})
    assert wrong.status_code == 401
    taken = await http.post(
        "/v1/admin/admins",
        json={"login": "admin-end", "password": PASSWORD, "name": "x"},
        headers=admin_headers(),
    )
    assert taken.status_code == 409
    nowhere = await http.post(
        "/v1/admin/admins",
        json={"login": "ghost", "password": PASSWORD, "name": "x", "hospital_id": "h999"},
        headers=admin_headers(),
    )
    assert nowhere.status_code == 404
    short = await http.post(
        "/v1/admin/admins",
        json={"login": "shorty", "password": "short", "name": "x"},
        headers=admin_headers(),
    )
    assert short.status_code == 422
    listed = (await http.get("/v1/admin/admins", headers=admin_headers())).json()
    admin_id = next(x["id"] for x in listed if x["login"] == "admin-end")
    assert (await http.get(path, headers=a)).status_code == 200
    gone = await http.delete(f"/v1/admin/admins/{admin_id}", headers=admin_headers())
    assert gone.status_code == 200
    assert gone.json()["disabled"] is True
    assert (await http.get(path, headers=a)).status_code == 401  # its tokens died with it
    again = await http.post(
        "/v1/admin/auth/token", json={"login": "admin-end", "password": PASSWORD}
    )
    assert again.status_code == 401
    assert (await http.delete("/v1/admin/admins/adm0", headers=admin_headers())).status_code == 404
