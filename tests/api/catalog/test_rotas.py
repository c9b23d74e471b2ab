"""Weekly rotas release doctor-sessions day by day, shortly before each release time, so a change
to the rota applies to every session not yet released."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.api.helpers import ZONE, admin_headers, hospital_admin, make_catalog

WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def expected(now: datetime, window: int, release_at: str, hhmm: str) -> set[str]:
    """Days whose session should exist: released (opens ≤ now + 1 h) and not yet begun."""
    days = set()
    for ahead in range(window + 2):
        day = now.date() + timedelta(days=ahead)
        hour, minute = (int(x) for x in release_at.split(":"))
        opens = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE) - timedelta(
            days=window
        )
        h, m = (int(x) for x in hhmm.split(":"))
        starts = datetime(day.year, day.month, day.day, h, m, tzinfo=ZONE)
        if opens - now <= timedelta(hours=1) and starts > now:
            days.add(f"{day:%Y%m%d}")
    return days


async def clock_now(http) -> datetime:
    r = await http.post("/v1/admin/clock", json={"advance_seconds": 0.001}, headers=admin_headers())
    return datetime.fromisoformat(r.json()["now"])


async def test_a_rota_releases_the_window_day_by_day_and_edits_apply_ahead(http):
    cat = await make_catalog(http, capacity=1, doctors=1)
    h = admin_headers()
    doctor = (await http.get(f"/v1/sessions/{cat['sessions'][0]}")).json()["doctor_id"]
    await http.put(
        f"/v1/admin/hospitals/{cat['hospital']}/policy",
        json={"window_days": 3, "release_at": "15:00"},
        headers=h,
    )
    slots = [
        {
            "weekday": d,
            "period": "PM",
            "capacity": 3,
            "first_slot_at": "14:00",
            "slot_minutes": 10,
            "fee": 0,
        }
        for d in WEEK
    ]
    put = await http.put(f"/v1/admin/doctors/{doctor}/rota", json={"slots": slots}, headers=h)
    assert put.status_code == 200, put.text
    now = await clock_now(http)
    made = {x.split("-")[2] for x in put.json()["released"]}
    assert made == expected(now, 3, "15:00", "14:00")
    for session_id in put.json()["released"]:
        state = (await http.get(f"/v1/sessions/{session_id}")).json()
        assert (state["doctor_id"], state["capacity"], state["period"]) == (doctor, 3, "PM")
    again = await http.put(f"/v1/admin/doctors/{doctor}/rota", json={"slots": slots}, headers=h)
    assert again.json()["released"] == []  # made once

    # the rota changes: sessions already released keep theirs, the next ones follow it
    bigger = [{**x, "capacity": 5} for x in slots]
    await http.put(f"/v1/admin/doctors/{doctor}/rota", json={"slots": bigger}, headers=h)
    await http.post("/v1/admin/clock", json={"advance_seconds": 86400}, headers=h)
    later = await clock_now(http)
    sessions = (await http.get(f"/v1/departments/{cat['department']}/sessions")).json()
    mine = {x["id"].split("-")[2]: x["capacity"] for x in sessions if x["id"].startswith("r-")}
    assert set(mine) >= expected(later, 3, "15:00", "14:00")
    new_days = set(mine) - made
    assert new_days
    assert all(mine[d] == 5 for d in new_days)
    assert all(mine[d] == 3 for d in made if d in mine)
    assert (await http.get(f"/v1/admin/doctors/{doctor}/rota", headers=h)).json()["slots"][0][
        "capacity"
    ] == 5


async def test_rota_input_and_scope(http):
    cat = await make_catalog(http, capacity=1, doctors=1)
    other = await make_catalog(http, capacity=1, doctors=1)
    h = admin_headers()
    doctor = (await http.get(f"/v1/sessions/{cat['sessions'][0]}")).json()["doctor_id"]
    path = f"/v1/admin/doctors/{doctor}/rota"
    slot = {
        "weekday": "mon",
        "period": "AM",
        "capacity": 3,
        "first_slot_at": "08:00",
        "slot_minutes": 10,
        "fee": 0,
    }
    for bad in (
        {"slots": [{**slot, "weekday": "funday"}]},
        {"slots": [slot, slot]},
        {"slots": [{**slot, "capacity": 0}]},
        {"slots": "mon"},
    ):
        r = await http.put(path, json=bad, headers=h)
        assert r.status_code == 422, bad
        assert r.json()["code"] == "invalid_request", bad
    assert (await http.get(path, headers=h)).status_code == 404
    a = await hospital_admin(http, other["hospital"], "rota-admin")
    r = await http.put(path, json={"slots": [slot]}, headers=a)
    assert r.status_code == 403
    assert (await http.get(path, headers=h)).status_code == 404
    assert (await http.put(path, json={"slots": [slot]}, headers=h)).status_code == 200
    assert (await http.delete(path, headers=a)).status_code == 403
    assert (await http.delete(path, headers=h)).status_code == 200
    assert (await http.delete(path, headers=h)).status_code == 404
