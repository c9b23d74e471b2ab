"""Who may see a patient, and how little of an identity anyone sees (the real app on a real
engine: the session's Redis, a host pool on the local Ray).

- a hospital admin sees and changes (tags, lists) only patients with a booking at that hospital;
  for anyone else it is 404 and nothing changes;
- no role can narrow an ID number to fewer than 10,000 candidates from everything its answers
  show together (the patient view, the day list, the records and their CSV): counted here by
  the attacker's enumerator (``tests.helpers.resident_candidates``);
- stored masks from before are re-masked in place on upgrade, and phones rewritten to E.164;
- a CSV cell never reaches a spreadsheet as a formula.
"""

from __future__ import annotations

import csv
import io
import logging
from datetime import date

import orjson

from api.upgrades import run_upgrades
from tests.api.helpers import admin_headers, hospital_admin, make_catalog, new_patient
from tests.helpers import resident_candidates, resident_id


async def book(http, session_id, auth, request_id="r1"):
    r = await http.post(
        f"/v1/sessions/{session_id}/bookings", json={"request_id": request_id}, headers=auth
    )
    assert r.status_code == 201, r.text
    return r.json()


async def test_a_hospital_admin_cannot_tag_or_read_a_patient_who_never_booked_there(
    http, redis_client
):
    mine = await make_catalog(http, doctors=1)
    theirs = await make_catalog(http, doctors=1)
    a = await hospital_admin(http, mine["hospital"], "privacy-a")
    stranger, auth = await new_patient(http)
    await book(http, theirs["sessions"][0], auth)  # booked elsewhere only
    path = f"/v1/admin/hospitals/{mine['hospital']}/patients/{stranger}"
    before = sorted(await redis_client.keys("*hospital:*"))
    tagged = await http.put(path + "/tags", json={"tags": ["vip"]}, headers=a)
    listed = await http.put(path + "/blacklist", json={"reason": "x"}, headers=a)
    seen = await http.get(path, headers=a)
    assert [tagged.status_code, listed.status_code, seen.status_code] == [404, 404, 404]
    assert seen.json()["code"] == "not_found"
    assert sorted(await redis_client.keys("*hospital:*")) == before, "nothing changed"


async def test_a_booking_listed_for_a_commit_that_never_happened_is_shown_to_no_one(http, app):
    """The commit lists a new booking in its patient's "my bookings" after its script, even
    when the script was refused (a fenced host; ``Store.follow_ups``), and the booking id is
    then given to someone else: every reader asks the engine whose the booking is."""
    cat = await make_catalog(http, doctors=1)
    a = await hospital_admin(http, cat["hospital"], "privacy-e")
    _, owner_auth = await new_patient(http)
    ghost, ghost_auth = await new_patient(http)
    booked = await book(http, cat["sessions"][0], owner_auth)
    store = app.app.state.services.engine.store
    await store.client.sadd(store.keys.patient_bookings(ghost), booked["booking_id"])
    mine = await http.get("/v1/me/bookings", headers=ghost_auth)
    assert mine.status_code == 200 and mine.json() == []
    path = f"/v1/admin/hospitals/{cat['hospital']}/patients/{ghost}"
    assert (await http.get(path, headers=a)).status_code == 404  # never booked there
    assert (await http.put(path + "/tags", json={"tags": ["x"]}, headers=a)).status_code == 404
    seen = await http.get(path, headers=admin_headers())  # the platform sees it: no bookings
    assert seen.status_code == 200 and seen.json()["bookings"] == []
    theirs = await http.get("/v1/me/bookings", headers=owner_auth)
    assert [b["booking_id"] for b in theirs.json()] == [booked["booking_id"]]


async def test_a_hospital_admin_sees_a_patient_once_they_booked_there(http):
    cat = await make_catalog(http, doctors=1)
    a = await hospital_admin(http, cat["hospital"], "privacy-b")
    patient, auth = await new_patient(http)
    path = f"/v1/admin/hospitals/{cat['hospital']}/patients/{patient}"
    assert (await http.get(path, headers=a)).status_code == 404
    await book(http, cat["sessions"][0], auth)
    seen = await http.get(path, headers=a)
    assert seen.status_code == 200, seen.text
    assert (await http.put(path + "/tags", json={"tags": ["vip"]}, headers=a)).status_code == 200


async def test_a_cancelled_booking_still_counts_as_having_booked_there(http):
    cat = await make_catalog(http, doctors=1)
    a = await hospital_admin(http, cat["hospital"], "privacy-c")
    patient, auth = await new_patient(http)
    booked = await book(http, cat["sessions"][0], auth)
    assert (await http.post(f"/v1/bookings/{booked['booking_id']}/cancel", headers=auth)).is_success
    path = f"/v1/admin/hospitals/{cat['hospital']}/patients/{patient}"
    assert (await http.get(path, headers=a)).status_code == 200


async def test_the_platform_admin_sees_every_patient(http):
    cat = await make_catalog(http, doctors=1)
    patient, _ = await new_patient(http)
    path = f"/v1/admin/hospitals/{cat['hospital']}/patients/{patient}"
    assert (await http.get(path, headers=admin_headers())).status_code == 200


async def everything_shown(http, headers, cat, patient) -> list[str]:
    """Every string any answer about the patient holds: the view, the day list (CSV and
    HTML), the records and their CSV."""
    hospital, session = cat["hospital"], cat["sessions"][0]
    texts = [
        (
            await http.get(f"/v1/admin/hospitals/{hospital}/patients/{patient}", headers=headers)
        ).text,
        (await http.get(f"/v1/admin/sessions/{session}/day-list", headers=headers)).text,
        (
            await http.get(
                f"/v1/admin/sessions/{session}/day-list", params={"format": "html"}, headers=headers
            )
        ).text,
        (await http.get("/v1/admin/records", params={"patient": patient}, headers=headers)).text,
        (
            await http.get("/v1/admin/records.csv", params={"patient": patient}, headers=headers)
        ).text,
        (await http.get(f"/v1/admin/sessions/{session}/bookings", headers=headers)).text,
    ]
    return texts


async def test_no_role_can_narrow_an_id_number_below_ten_thousand_candidates(app, http):
    born = date(1987, 6, 14)
    number = resident_id(born, seq=123)
    cat = await make_catalog(http, doctors=1)
    body = {
        "name": "王芳",
        "phone": "13912340001",
        "id_number": number,
        "birth_date": born.isoformat(),
        "password": "correct horse",
    }
    patient = (await http.post("/v1/patients", json=body)).json()["id"]
    login = await http.post(
        "/v1/auth/token", json={"phone": body["phone"], "password": body["password"]}
    )
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    await book(http, cat["sessions"][0], auth)
    await app.app.state.services.engine.drain_outbox()  # the records are indexed
    for headers in (admin_headers(), await hospital_admin(http, cat["hospital"], "enum-a")):
        texts = await everything_shown(http, headers, cat, patient)
        joined = "\n".join(texts)
        assert number not in joined
        assert born.strftime("%Y%m%d") not in joined
        assert born.isoformat() not in joined
        view = orjson.loads(texts[0])
        masked, year = view["id_number"], view["birth_year"]
        assert year == 1987
        shown = [
            row["id_number"]
            for row in csv.DictReader(io.StringIO(texts[1].lstrip("\ufeff")))
            if row["patient_id"] == str(patient)
        ]
        assert shown == [masked], "the day list shows the same mask, nothing more"
        assert resident_candidates(masked, birth_year=year) >= 10_000
        assert resident_candidates(masked, birth_year=year, sex="M") >= 10_000


async def test_stored_masks_and_phones_from_before_are_rewritten_once(redis_client, caplog):
    from engine.store.keys import Keys

    keys = Keys("upg")
    old = {
        1: {"id": 1, "phone": "13912345678", "id_masked": "110101********1234", "name": "a"},
        2: {"id": 2, "phone": "+86 139 1234 5678", "id_masked": "E******78", "name": "b"},
        3: {"id": 3, "phone": "13700000009", "id_masked": "*********", "name": "c"},
    }
    for pid, doc in old.items():
        await redis_client.set(keys.entity("patient", pid), orjson.dumps(doc))
        await redis_client.hset(keys.patient_by("phone"), doc["phone"], pid)
    with caplog.at_level(logging.WARNING):
        done = await run_upgrades(redis_client, keys)
    assert done == {
        "one-slot-keys": 0,
        "outbox-slot": 0,
        "records-by-hospital": 0,
        "remask-ids": 1,
        "e164-phones": 2,
    }
    first = orjson.loads(await redis_client.get(keys.entity("patient", 1)))
    assert first["id_masked"] == "110101***********4"
    assert first["phone"] == "+8613912345678"
    index = {
        k.decode(): int(v)
        for k, v in (await redis_client.hgetall(keys.patient_by("phone"))).items()
    }
    assert index["+8613912345678"] == 1, "the first keeps the number"
    assert index["+86 139 1234 5678"] == 2, "the collision keeps its old form"
    assert index["+8613700000009"] == 3
    assert "13700000009" not in index
    assert "same phone" in caplog.text
    assert await run_upgrades(redis_client, keys) == {}, "once"


async def test_a_name_that_looks_like_a_formula_reaches_the_day_list_as_text(http):
    cat = await make_catalog(http, doctors=1)
    body = {
        "name": "=1+1",
        "phone": "13912340002",
        "id_number": resident_id(date(1990, 5, 5), seq=9),
        "birth_date": "1990-05-05",
        "password": "correct horse",
    }
    assert (await http.post("/v1/patients", json=body)).status_code == 201
    login = await http.post(
        "/v1/auth/token", json={"phone": body["phone"], "password": body["password"]}
    )
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    await book(http, cat["sessions"][0], auth)
    day_list = await http.get(
        f"/v1/admin/sessions/{cat['sessions'][0]}/day-list", headers=admin_headers()
    )
    rows = list(csv.DictReader(io.StringIO(day_list.text.lstrip("\ufeff"))))
    assert [r["name"] for r in rows] == ["'=1+1"]
