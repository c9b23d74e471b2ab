"""The real app on a real engine: host pool on the session's Ray, the session's Redis."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.app import create_app
from engine.redis_server import free_port

ADMIN = "admin-" + secrets.token_hex(16)
ZONE = ZoneInfo("Asia/Shanghai")


@pytest.fixture
async def app(runtime):
    settings = runtime.settings.model_copy(update={"admin_token": ADMIN, "movable_clock": True})
    gateway = create_app(settings)
    async with gateway.app.router.lifespan_context(gateway.app):
        yield gateway


@pytest.fixture
async def http(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN}"}


def iso_in(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, ZONE).isoformat()


async def make_catalog(http: httpx.AsyncClient, *, capacity=3, fee=0, opens_in=-1.0, doctors=2):
    """A hospital, a department, ``doctors`` doctors with one open session each, three days
    ahead (inside the default 7-day window, before the default cancellation cutoff)."""
    h = await http.post("/v1/admin/hospitals", json={"name": "协和"}, headers=admin_headers())
    assert h.status_code == 201, h.text
    hospital = h.json()["id"]
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


_phones = iter(range(13_800_000_000, 13_900_000_000))


async def new_patient(http: httpx.AsyncClient) -> tuple[int, dict[str, str]]:
    phone = str(next(_phones))
    r = await http.post(
        "/v1/patients",
        json={
            "name": "李雷",
            "phone": phone,
            "id_number": f"11010119900101{phone[-4:]}",
            "birth_date": "1990-01-01",
            "password": "correct horse",
        },
    )
    assert r.status_code == 201, r.text
    t = await http.post("/v1/auth/token", json={"phone": phone, "password": "correct horse"})
    assert t.status_code == 200, t.text
    return r.json()["id"], {"Authorization": f"Bearer {t.json()['access_token']}"}


@pytest.fixture
def his_sims():
    """Start simulated HIS services (``api/his_sim.py``) as real HTTP processes; stops them."""
    started: list[subprocess.Popen] = []

    def start(hospital: str | None = None) -> str:
        port = free_port()
        args = [sys.executable, "-m", "api.his_sim", "--host", "127.0.0.1", "--port", str(port)]
        if hospital:
            args += ["--hospital", hospital]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/his/stats", timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the simulated HIS did not start")

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def his_sim(his_sims):
    return his_sims()
