"""The real app on a real engine: host pool on the session's Ray, the session's Redis."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from api.app import create_app
from engine.settings import Limit
from engine.store.embedded import free_port
from tests.api.helpers import ADMIN


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


@pytest.fixture
async def two_apps(runtime):
    """Two API workers with small shared limits; (client of worker 1, client of worker 2)."""
    settings = runtime.settings.model_copy(
        update={
            "admin_token": ADMIN,
            "movable_clock": True,
            "limit_login_phone": Limit(count=5, seconds=60),
            "limit_register_address": Limit(count=12, seconds=3600),
            "limit_cancel_patient": Limit(count=3, seconds=60),
        }
    )
    one, two = create_app(settings), create_app(settings)
    async with (
        one.app.router.lifespan_context(one.app),
        two.app.router.lifespan_context(two.app),
    ):
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=g), base_url="http://test")
            for g in (one, two)
        ]
        yield clients
        for c in clients:
            await c.aclose()
