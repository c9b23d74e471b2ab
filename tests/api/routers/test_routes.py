"""Each route's success and error codes against the real app and a real engine; bad input
changes nothing and the server keeps serving."""

import asyncio
import time

import orjson
import pytest

from api import metrics
from tests.api.helpers import admin_headers, identity, iso_in, make_catalog, new_patient


async def remaining(http, sid):
    return (await http.get(f"/v1/sessions/{sid}")).json()["remaining"]


def registration() -> dict[str, str]:
    return {"name": "韩梅梅", **identity(), "password": "s3cret-pass"}


async def test_a_patient_registers_and_gets_an_id(http):
    first = await http.post("/v1/patients", json=registration())
    assert first.status_code == 201
    assert isinstance(first.json()["id"], int)


async def test_registering_the_same_person_again_is_a_conflict(http):
    body = registration()
    await http.post("/v1/patients", json=body)
    again = await http.post("/v1/patients", json=body)
    assert again.status_code == 409
    assert again.json()["code"] == "conflict"


async def test_one_id_number_is_one_account(http):
    body = registration()
    await http.post("/v1/patients", json=body)
    other_phone = identity()["phone"]
    same_person = await http.post("/v1/patients", json={**body, "phone": other_phone})
    assert same_person.status_code == 409


async def test_one_phone_number_however_it_is_typed_is_one_account(http):
    body = registration()
    await http.post("/v1/patients", json=body)
    other = identity()
    typed = f"+86 {body['phone'][:3]} {body['phone'][3:7]} {body['phone'][7:]}"
    same_phone = await http.post("/v1/patients", json={**body, **other, "phone": typed})
    assert same_phone.status_code == 409


@pytest.mark.parametrize(
    "bad",
    [{"phone": "x"}, {"birth_date": "yesterday"}, {"name": 5}],
    ids=["a phone that is none", "a date that is none", "a name that is a number"],
)
async def test_a_malformed_registration_is_invalid_request(http, bad):
    r = await http.post("/v1/patients", json={**registration(), **bad})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request", r.text


async def test_a_registration_that_is_no_json_is_invalid_request(http):
    garbled = await http.post(
        "/v1/patients", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert garbled.status_code == 422
    assert garbled.json()["code"] == "invalid_request"


async def test_a_wrong_password_gets_no_token(http):
    body = registration()
    await http.post("/v1/patients", json=body)
    wrong = await http.post("/v1/auth/token", json={"phone": body["phone"], "password": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "unauthenticated"


async def test_an_unknown_phone_gets_no_token(http):
    unknown = await http.post(
        "/v1/auth/token", json={"phone": identity()["phone"], "password": "x"}
    )
    assert unknown.status_code == 401
    assert unknown.json()["code"] == "unauthenticated"


@pytest.mark.parametrize("typed", ["as registered", "in E.164"])
async def test_the_right_password_gets_a_bearer_token_however_the_phone_is_typed(http, typed):
    body = registration()
    await http.post("/v1/patients", json=body)
    phone = body["phone"] if typed == "as registered" else f"+86{body['phone']}"
    ok = await http.post("/v1/auth/token", json={"phone": phone, "password": body["password"]})
    assert ok.status_code == 200
    assert ok.json()["token_type"] == "bearer"


async def test_id_numbers_are_never_stored_in_the_clear(http, redis_client):
    who = identity()
    r = await http.post("/v1/patients", json={"name": "x", **who, "password": "correct horse"})
    assert r.status_code == 201
    keys = await redis_client.keys("*patient:*")
    dump = b"".join([await redis_client.get(k) or b"" for k in keys])
    assert who["id_number"].encode() not in dump
    assert b"correct horse" not in dump
    for doc in [orjson.loads(v) for v in [await redis_client.get(k) for k in keys] if v]:
        if "id_masked" in doc:
            assert doc["birth_date"].replace("-", "") not in doc["id_masked"]
            assert doc["id_masked"][6:17] == "*" * 11, "the birth digits stay hidden"


async def test_browse(http):
    cat = await make_catalog(http, capacity=4)
    hospitals = (await http.get("/v1/hospitals")).json()
    assert cat["hospital"] in [h["id"] for h in hospitals]
    deps = await http.get(f"/v1/hospitals/{cat['hospital']}/departments")
    assert [d["id"] for d in deps.json()] == [cat["department"]]
    listed = await http.get(
        f"/v1/departments/{cat['department']}/sessions", params={"date": cat["date"]}
    )
    assert sorted(s["id"] for s in listed.json()) == sorted(cat["sessions"])
    assert all(s["remaining"] == 4 and s["status"] == "open" for s in listed.json())
    assert (
        await http.get(
            f"/v1/departments/{cat['department']}/sessions", params={"date": "2020-01-01"}
        )
    ).json() == []
    one = (await http.get(f"/v1/sessions/{cat['sessions'][0]}")).json()
    assert (one["capacity"], one["period"], one["hospital_id"]) == (4, "AM", cat["hospital"])
    for path in (
        "/v1/hospitals/nope/departments",
        "/v1/departments/nope/sessions",
        "/v1/sessions/nope",
        "/v1/no-such-route",
    ):
        r = await http.get(path)
        assert r.status_code == 404, path
        assert r.json()["code"] == "not_found", path
    bad_date = await http.get(f"/v1/departments/{cat['department']}/sessions", params={"date": "x"})
    assert bad_date.status_code == 422


async def test_booking_refusals_change_nothing(http, app):
    cat = await make_catalog(http, capacity=3)
    sid = cat["sessions"][0]
    _, auth = await new_patient(http)
    url = f"/v1/sessions/{sid}/bookings"
    cases = [
        ({}, {"request_id": "a"}, None, 401, "unauthenticated"),
        (
            {"Authorization": "Bearer forged.token.here"},
            {"request_id": "a"},
            None,
            401,
            "unauthenticated",
        ),
        ({"Authorization": "Basic abc"}, {"request_id": "a"}, None, 401, "unauthenticated"),
        (auth, None, b"{nope", 422, "invalid_request"),
        (auth, {"request_id": 5}, None, 422, "invalid_request"),
        (auth, {"request_id": ""}, None, 422, "invalid_request"),
        (auth, {"request_id": "x" * 65}, None, 422, "invalid_request"),
        (auth, ["request_id"], None, 422, "invalid_request"),
        (auth, None, b'{"request_id": "' + b"x" * 20_000 + b'"}', 413, "payload_too_large"),
    ]
    for headers, body, raw, status, code in cases:
        r = await (
            http.post(url, json=body, headers=headers)
            if raw is None
            else http.post(url, content=raw, headers=headers)
        )
        assert (r.status_code, r.json()["code"]) == (status, code), (headers, body, r.text)
        assert r.json()["message"]
    unknown = await http.post(
        "/v1/sessions/s999999/bookings", json={"request_id": "a"}, headers=auth
    )
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"
    assert await remaining(http, sid) == 3
    assert (await http.get("/healthz")).status_code == 200  # still serving


async def test_day_rules_blacklist_and_not_open(http, app, runtime):
    cat = await make_catalog(http, capacity=5, doctors=3)
    _, auth = await new_patient(http)
    s0, s1, s2 = cat["sessions"]
    ok = await http.post(f"/v1/sessions/{s0}/bookings", json={"request_id": "1"}, headers=auth)
    assert ok.status_code == 201
    same_dept = await http.post(
        f"/v1/sessions/{s1}/bookings", json={"request_id": "2"}, headers=auth
    )
    assert same_dept.status_code == 422
    assert same_dept.json()["code"] == "department_day_limit"
    assert same_dept.json()["limit"] == 1

    barred, barred_auth = await new_patient(http)
    services = app.app.state.services
    await services.engine.set_blacklist(cat["hospital"], barred, time.time() + 3600)
    r = await http.post(
        f"/v1/sessions/{s2}/bookings", json={"request_id": "3"}, headers=barred_auth
    )
    assert r.status_code == 403
    assert r.json()["code"] == "blacklisted"
    assert r.json()["until"]

    later = await make_catalog(http, capacity=5, opens_in=3600, doctors=1)
    r = await http.post(
        f"/v1/sessions/{later['sessions'][0]}/bookings", json={"request_id": "4"}, headers=auth
    )
    assert r.status_code == 409
    assert r.json()["code"] == "not_open"
    assert r.json()["opens_at"]
    assert [await remaining(http, s) for s in (s1, s2)] == [5, 5]


async def test_sold_out_is_answered_without_the_engine_and_winners_get_their_booking(http, app):
    cat = await make_catalog(http, capacity=2, doctors=2)
    sid, other = cat["sessions"]
    winners = [await new_patient(http) for _ in range(2)]
    first = [
        await http.post(f"/v1/sessions/{sid}/bookings", json={"request_id": "w"}, headers=auth)
        for _, auth in winners
    ]
    assert [r.status_code for r in first] == [201, 201]
    services = app.app.state.services
    for _ in range(100):  # the worker learns the sell-out and who holds the slots
        view = services.availability.sessions[sid]
        if view.status == "sold_out" and view.holders is not None:
            break
        await asyncio.sleep(0.05)
    assert view.holders == {patient for patient, _ in winners}
    losers = [await new_patient(http) for _ in range(5)]
    engine_calls = metrics.ENGINE_CALLS._value.get()
    fast_before = metrics.FAST_PATH.labels("sold_out")._value.get()
    for i in range(50):
        _, auth = losers[i % 5]
        r = await http.post(
            f"/v1/sessions/{sid}/bookings", json={"request_id": f"l{i}"}, headers=auth
        )
        assert r.status_code == 409
        assert r.json()["code"] == "sold_out"
        assert [a["session_id"] for a in r.json()["alternatives"]] == [other]
    assert metrics.ENGINE_CALLS._value.get() == engine_calls, "the engine was asked"
    assert metrics.FAST_PATH.labels("sold_out")._value.get() - fast_before == 50
    # a winner whose answer was lost retries: the same booking, not sold_out
    retry = await http.post(
        f"/v1/sessions/{sid}/bookings", json={"request_id": "w"}, headers=winners[0][1]
    )
    assert retry.status_code == 200
    assert retry.json() == first[0].json()


async def test_released_slot_makes_the_session_bookable_again(http, app):
    cat = await make_catalog(http, capacity=1, doctors=1)
    sid = cat["sessions"][0]
    (_, a), (_, b) = await new_patient(http), await new_patient(http)
    booked = await http.post(f"/v1/sessions/{sid}/bookings", json={"request_id": "x"}, headers=a)
    refused = await http.post(f"/v1/sessions/{sid}/bookings", json={"request_id": "y"}, headers=b)
    assert refused.json()["code"] == "sold_out"
    await http.post(f"/v1/bookings/{booked.json()['booking_id']}/cancel", headers=a)
    for _ in range(40):
        r = await http.post(f"/v1/sessions/{sid}/bookings", json={"request_id": "y"}, headers=b)
        if r.status_code == 201:
            break
        await asyncio.sleep(0.05)
    assert r.status_code == 201
    assert r.json()["slot_no"] == 1


async def test_rate_limit(http, runtime):
    cat = await make_catalog(http, capacity=1, doctors=1)
    _, auth = await new_patient(http)
    codes = [
        (
            await http.post(
                f"/v1/sessions/{cat['sessions'][0]}/bookings",
                json={"request_id": "same"},
                headers=auth,
            )
        ).status_code
        for _ in range(runtime.settings.rate_burst + 5)
    ]
    assert codes[0] == 201
    assert 429 in codes
    assert codes.count(429) >= 4


async def test_other_patients_bookings_are_invisible(http):
    cat = await make_catalog(http, capacity=2, doctors=1)
    (_, mine), (_, theirs) = await new_patient(http), await new_patient(http)
    r = await http.post(
        f"/v1/sessions/{cat['sessions'][0]}/bookings", json={"request_id": "a"}, headers=mine
    )
    bid = r.json()["booking_id"]
    for call in (
        http.get(f"/v1/bookings/{bid}", headers=theirs),
        http.post(f"/v1/bookings/{bid}/cancel", headers=theirs),
        http.post(f"/v1/bookings/{bid}/payment", headers=theirs),
        http.get("/v1/bookings/garbage", headers=mine),
        http.get(f"/v1/bookings/{bid}9", headers=mine),
    ):
        resp = await call
        assert resp.status_code == 404, resp.text
        assert resp.json()["code"] == "not_found", resp.text
    assert (await http.get("/v1/me/bookings", headers=theirs)).json() == []
    assert (await http.get(f"/v1/bookings/{bid}", headers=mine)).json()["status"] == "booked"
    code = r.json()["verification_code"]
    assert code is not None
    assert len(code) == 8
    assert code.isdigit()
    pay = await http.post(f"/v1/bookings/{bid}/payment", headers=mine)  # no fee: nothing to pay
    assert pay.status_code == 200
    assert pay.json()["verification_code"] == code
    assert pay.json()["amount"] == 0


async def test_admin_routes_need_the_admin_token_and_valid_input(http):
    cat = await make_catalog(http, capacity=2, doctors=1)
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
        r = await http.post("/v1/admin/hospitals", json={"name": "x"}, headers=headers)
        assert r.status_code == 401
        assert r.json()["code"] == "unauthenticated"
    _, patient = await new_patient(http)
    r = await http.post("/v1/admin/hospitals", json={"name": "x"}, headers=patient)
    assert r.status_code == 401
    doctor_missing = await http.post(
        "/v1/admin/sessions",
        headers=admin_headers(),
        json={
            "doctor_id": "doc-none",
            "date": cat["date"],
            "period": "AM",
            "capacity": 3,
            "first_slot_at": "08:00",
            "slot_minutes": 5,
            "fee": 0,
            "opens_at": iso_in(0),
        },
    )
    assert doctor_missing.status_code == 404
    doctors = await http.get(f"/v1/departments/{cat['department']}/sessions")
    doctor = doctors.json()[0]["doctor_id"]
    base = {
        "doctor_id": doctor,
        "date": cat["date"],
        "period": "AM",
        "capacity": 3,
        "first_slot_at": "08:00",
        "slot_minutes": 5,
        "fee": 0,
        "opens_at": iso_in(0),
    }
    for bad in (
        {"capacity": 0},
        {"capacity": 1001},
        {"period": "NIGHT"},
        {"first_slot_at": "25:00"},
        {"opens_at": "2026-01-01T00:00:00"},
        {"fee": -1},
        {"closes_at": iso_in(-60)},
    ):
        r = await http.post("/v1/admin/sessions", json={**base, **bad}, headers=admin_headers())
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["code"] == "invalid_request", (bad, r.text)
    dep = await http.post(
        "/v1/admin/departments", json={"hospital_id": "nope", "name": "x"}, headers=admin_headers()
    )
    assert dep.status_code == 404
    assert (
        await http.get("/v1/admin/sessions/nope/bookings", headers=admin_headers())
    ).status_code == 404
    extra = await http.post(
        "/v1/admin/hospitals", json={"name": "y", "unknown": 1}, headers=admin_headers()
    )
    assert extra.status_code == 201  # unknown fields are ignored


async def test_operations(http):
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["redis"] == "ok"
    assert ready.json()["ray"] == "ok"
    text = (await http.get("/metrics", headers=admin_headers())).text
    assert "slotengine_fast_path_answers" in text
    assert "slotengine_mailbox_batch_size" in text


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_wrong_method(http, method):
    r = await http.request(method, "/v1/hospitals")
    assert r.status_code == 405
    assert r.json()["code"] == "method_not_allowed"
