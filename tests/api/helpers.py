"""Helpers the API tests share: the platform admin's token, a small catalog, patients with
valid identities, hospital admins, booking and moving the clock over HTTP."""

from __future__ import annotations

import itertools
import random
import secrets
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from tests.helpers import resident_id

ADMIN = "admin-" + secrets.token_hex(16)

ZONE = ZoneInfo("Asia/Shanghai")


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def iso_in(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, ZONE).isoformat()


async def make_catalog(
    http: httpx.AsyncClient, *, capacity=3, fee=0, opens_in=-1.0, doctors=2, jitter=0
):
    """A hospital, a department, ``doctors`` doctors with one open session each, three days
    ahead (inside the default 7-day window, before the default cancellation cutoff). ``jitter``
    is the policy's return_jitter_seconds: 0 by default, so a freed slot returns at once."""
    h = await http.post("/v1/admin/hospitals", json={"name": "协和"}, headers=admin_headers())
    assert h.status_code == 201, h.text
    hospital = h.json()["id"]
    p = await http.put(
        f"/v1/admin/hospitals/{hospital}/policy",
        json={"return_jitter_seconds": jitter},
        headers=admin_headers(),
    )
    assert p.status_code == 200, p.text
    d = await http.post(
        "/v1/admin/departments",
        json={"hospital_id": hospital, "name": "心内科"},
        headers=admin_headers(),
    )
    department = d.json()["id"]
    tomorrow = (datetime.now(ZONE) + timedelta(days=3)).date().isoformat()
    sessions = []
    for i in range(doctors):
        doc = await http.post(
            "/v1/admin/doctors",
            json={"department_id": department, "name": f"王{i}", "title": "主任医师"},
            headers=admin_headers(),
        )
        s = await http.post(
            "/v1/admin/sessions",
            json={
                "doctor_id": doc.json()["id"],
                "date": tomorrow,
                "period": "AM",
                "capacity": capacity,
                "first_slot_at": "08:00",
                "slot_minutes": 10,
                "fee": fee,
                "opens_at": iso_in(opens_in),
            },
            headers=admin_headers(),
        )
        assert s.status_code == 201, s.text
        sessions.append(s.json()["id"])
    return {"hospital": hospital, "department": department, "sessions": sessions, "date": tomorrow}


_serials = itertools.count(random.randrange(10**6))


def identity(birth: date | None = None) -> dict[str, str]:
    """A fresh phone and a valid resident ID number with its birth date (``birth``, else one
    of many), unique in this run."""
    n = next(_serials)
    if birth is None:
        birth = date(1950, 1, 1) + timedelta(days=n % 20_000)
        number = resident_id(birth, seq=n // 20_000 % 1000, region="110102")
    else:
        number = resident_id(birth, seq=n % 1000, region=f"{110_000 + n // 1000 % 10_000}")
    return {"phone": f"138{n % 10**8:08d}", "id_number": number, "birth_date": birth.isoformat()}


async def new_patient(
    http: httpx.AsyncClient, birth: date | None = None
) -> tuple[int, dict[str, str]]:
    who = identity(birth)
    phone = who["phone"]
    r = await http.post(
        "/v1/patients",
        json={"name": "李雷", **who, "password": "correct horse"},
    )
    assert r.status_code == 201, r.text
    t = await http.post("/v1/auth/token", json={"phone": phone, "password": "correct horse"})
    assert t.status_code == 200, t.text
    return r.json()["id"], {"Authorization": f"Bearer {t.json()['access_token']}"}


PASSWORD = "a long enough password"


async def hospital_admin(http, hospital_id: str, login: str) -> dict[str, str]:
    made = await http.post(
        "/v1/admin/admins",
        json={"login": login, "password": PASSWORD, "name": "王", "hospital_id": hospital_id},
        headers=admin_headers(),
    )
    assert made.status_code == 201, made.text
    token = await http.post("/v1/admin/auth/token", json={"login": login, "password": PASSWORD})
    assert token.status_code == 200
    assert token.json()["hospital_id"] == hospital_id
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


async def move_clock_to(http: httpx.AsyncClient, when: datetime) -> None:
    now = (
        await http.post("/v1/admin/clock", json={"advance_seconds": 0.001}, headers=admin_headers())
    ).json()["now"]
    seconds = when.timestamp() - datetime.fromisoformat(now).timestamp()
    r = await http.post(
        "/v1/admin/clock", json={"advance_seconds": seconds}, headers=admin_headers()
    )
    assert r.status_code == 200, r.text


def visit(cat: dict, hhmm: str) -> datetime:
    hour, minute = (int(x) for x in hhmm.split(":"))
    day = datetime.fromisoformat(cat["date"])
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE)


async def book(http, session_id, auth, request_id="r1"):
    return await http.post(
        f"/v1/sessions/{session_id}/bookings", json={"request_id": request_id}, headers=auth
    )
