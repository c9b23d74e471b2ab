"""Booking records through the real stack: what patients did shows up in the records (state,
ages from birth dates), filtered, paged and exported as CSV; bad filters are refused."""

from __future__ import annotations

import csv
import io

from tests.api.helpers import admin_headers, book, hospital_admin, make_catalog, new_patient


async def drain(app) -> None:
    await app.app.state.services.engine.drain_outbox()


async def test_records_filters_paging_and_csv(http, app):
    cat = await make_catalog(http, capacity=3, doctors=2)
    other = await make_catalog(http, capacity=2, doctors=1)
    hid, h = cat["hospital"], admin_headers()
    s1, s2 = cat["sessions"]
    doctor1 = (await http.get(f"/v1/sessions/{s1}")).json()["doctor_id"]
    people = [await new_patient(http) for _ in range(4)]
    made = {}
    for i, (patient, auth) in enumerate(people):
        r = await book(http, s1 if i < 3 else s2, auth)
        assert r.status_code == 201
        made[patient] = r.json()["booking_id"]
    their = await book(http, other["sessions"][0], people[0][1])
    assert their.status_code == 201
    cancelled = made[people[1][0]]
    assert (
        await http.post(f"/v1/bookings/{cancelled}/cancel", headers=people[1][1])
    ).status_code == 200
    await drain(app)

    async def records(**params) -> dict:
        r = await http.get("/v1/admin/records", params=params, headers=h)
        assert r.status_code == 200, r.text
        return r.json()

    everything = await records(hospital=hid)
    assert everything["total"] == 4
    assert everything["next_cursor"] is None
    by_id = {x["booking_id"]: x for x in everything["items"]}
    assert set(by_id) == set(made.values())
    assert by_id[cancelled]["state"] == "cancelled"
    assert by_id[cancelled]["cancelled_by"] == "patient"
    assert "age" not in by_id[made[people[0][0]]], "ages on visit dates would narrow a birthday"
    assert [x["slot_time"] for x in everything["items"]] == sorted(
        x["slot_time"] for x in everything["items"]
    )
    assert {x["booking_id"] for x in (await records(hospital=hid, doctor=doctor1))["items"]} == {
        made[p] for p, _ in people[:3]
    }
    assert [x["booking_id"] for x in (await records(hospital=hid, state="cancelled"))["items"]] == [
        cancelled
    ]
    mine = await records(patient=people[0][0])  # the platform sees every hospital
    assert {x["hospital_id"] for x in mine["items"]} == {hid, other["hospital"]}
    day = cat["date"]
    assert (await records(hospital=hid, **{"from": day, "to": day}))["total"] == 4
    assert (await records(hospital=hid, to="2020-01-01"))["items"] == []

    pages, cursor = [], None
    while True:
        params = {"hospital": hid, "limit": 1, **({"cursor": cursor} if cursor else {})}
        page = await records(**params)
        pages.extend(x["booking_id"] for x in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == [x["booking_id"] for x in everything["items"]]

    exported = await http.get("/v1/admin/records.csv", params={"hospital": hid}, headers=h)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text.lstrip("\ufeff"))))
    assert [r["booking_id"] for r in rows] == [x["booking_id"] for x in everything["items"]]
    row = next(r for r in rows if r["booking_id"] == cancelled)
    assert (row["state"], row["patient_id"], row["hospital_id"]) == (
        "cancelled",
        str(people[1][0]),
        hid,
    )
    assert row["slot_time"] == by_id[cancelled]["slot_time"]
    # a number an HIS answered is never run as a spreadsheet formula
    record_book = app.app.state.services.records
    await record_book.set_numbers(hid, cancelled, his_no='=HYPERLINK("http://x")')
    again = await http.get("/v1/admin/records.csv", params={"hospital": hid}, headers=h)
    rows = list(csv.DictReader(io.StringIO(again.text.lstrip("\ufeff"))))
    row = next(r for r in rows if r["booking_id"] == cancelled)
    assert row["his_no"] == '\'=HYPERLINK("http://x")'

    # a hospital admin sees its own hospital only, whatever it asks
    a = await hospital_admin(http, hid, "records-admin")
    own = (await http.get("/v1/admin/records", params={"patient": people[0][0]}, headers=a)).json()
    assert {x["hospital_id"] for x in own["items"]} == {hid}
    for params in (
        {"hospital": other["hospital"]},
        {"doctor": (await http.get(f"/v1/sessions/{other['sessions'][0]}")).json()["doctor_id"]},
    ):
        for path in ("/v1/admin/records", "/v1/admin/records.csv"):
            r = await http.get(path, params=params, headers=a)
            assert r.status_code == 403
            assert r.json()["code"] == "forbidden"

    # bad input: a clear code, nothing else
    for params, status, code in (
        ({"state": "bogus"}, 422, "invalid_request"),
        ({"limit": 0}, 422, "invalid_request"),
        ({"limit": "x"}, 422, "invalid_request"),
        ({"from": "2026-13-01"}, 422, "invalid_request"),
        ({"from": "2026-12-02", "to": "2026-12-01"}, 422, "invalid_request"),
        ({"hospital": hid, "cursor": "garbage"}, 422, "invalid_cursor"),
        ({"hospital": "no-such"}, 404, "not_found"),
        ({"doctor": "no-such"}, 404, "not_found"),
    ):
        r = await http.get("/v1/admin/records", params=params, headers=h)
        assert (r.status_code, r.json()["code"]) == (status, code), (params, r.text)
    assert (await http.get("/v1/admin/records")).status_code == 401
