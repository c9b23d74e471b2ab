"""Operations after the security review, against the real app on a real engine (the session's
Redis, a host pool on the local Ray): probes that never call into the hosts, metrics behind a
token, security headers on pages, docs that can be switched off, a moved clock that does not
outlive its test, dead letters the platform admin can see, and the ambiguous commit's code."""

from __future__ import annotations

import asyncio
import time

import httpx
import msgpack
import pytest

from api import jobs
from api.answers import REFUSALS
from api.app import create_app
from engine.outcomes import OutcomeUnknown, Unavailable
from tests.api.helpers import ADMIN, admin_headers, hospital_admin, make_catalog


async def test_metrics_need_the_platform_admins_token(http):
    assert (await http.get("/metrics")).status_code == 401
    cat = await make_catalog(http, doctors=1)
    a = await hospital_admin(http, cat["hospital"], "metrics-a")
    assert (await http.get("/metrics", headers=a)).status_code == 403
    ok = await http.get("/metrics", headers=admin_headers())
    assert ok.status_code == 200
    assert "slotengine_http_requests" in ok.text


async def inline_app(runtime, **settings):
    update = {"admin_token": ADMIN, **settings}
    return create_app(runtime.settings.model_copy(update=update))


async def test_metrics_can_be_opened_by_a_setting(runtime):
    gateway = await inline_app(runtime, metrics_public=True)
    async with gateway.app.router.lifespan_context(gateway.app):
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/metrics")).status_code == 200


async def test_readiness_probes_send_no_call_into_the_hosts(app, http, runtime):
    before = [(await h.info.remote())["calls"] for h in runtime.hosts]
    answers = await asyncio.gather(*(http.get("/readyz") for _ in range(50)))
    after = [(await h.info.remote())["calls"] for h in runtime.hosts]
    assert {a.status_code for a in answers} == {200}
    assert all(a.json()["redis"] == "ok" and a.json()["ray"] == "ok" for a in answers)
    assert sum(after) - sum(before) == 0, "a probe answers from the kept health state"


@pytest.mark.parametrize("path", ["/admin", "/docs"])
async def test_pages_carry_security_headers(http, path):
    r = await http.get(path)
    assert r.status_code == 200
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"


async def test_the_printable_day_list_carries_security_headers(http):
    cat = await make_catalog(http, doctors=1)
    r = await http.get(
        f"/v1/admin/sessions/{cat['sessions'][0]}/day-list",
        params={"format": "html"},
        headers=admin_headers(),
    )
    assert r.status_code == 200
    assert "default-src 'self'" in r.headers["content-security-policy"]


async def test_the_docs_can_be_switched_off(runtime):
    gateway = await inline_app(runtime, docs=False)
    async with gateway.app.router.lifespan_context(gateway.app):
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path in ("/docs", "/redoc", "/openapi.json"):
                assert (await client.get(path)).status_code == 404, path
            assert (await client.get("/healthz")).status_code == 200


async def test_a_clock_moved_by_a_test_is_ignored_when_the_clock_is_fixed(runtime, redis_client):
    await redis_client.set(runtime.engine().store.keys.clock, 3 * 86400)
    gateway = await inline_app(runtime, movable_clock=False)
    async with gateway.app.router.lifespan_context(gateway.app):
        services = gateway.app.state.services
        assert abs(services.now() - time.time()) < 5, "production runs on the wall clock"
        transport = httpx.ASGITransport(app=gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            moved = await client.post(
                "/v1/admin/clock", json={"advance_seconds": 60}, headers=admin_headers()
            )
            assert moved.status_code == 404
        with pytest.raises(RuntimeError):
            await services.engine.advance_clock(60)


async def test_the_platform_admin_sees_retries_and_drops_dead_letters(app, http, runtime):
    services = app.app.state.services
    keys = services.engine.store.keys
    client = services.engine.store.client
    poison = msgpack.packb([["refund", "x"]], use_bin_type=True)  # malformed: always fails
    await client.xadd(keys.outbox, {"e": poison})
    for _ in range(runtime.settings.outbox_max_tries + 1):
        await services.engine.drain_outbox()
    listed = await http.get("/v1/admin/outbox/dead-letters", headers=admin_headers())
    assert listed.status_code == 200
    assert listed.json()["count"] == 1
    dead = listed.json()["items"][0]
    assert "ValueError" in dead["error"] or "Error" in dead["error"]
    await jobs.read_figures(services)
    metrics = (await http.get("/metrics", headers=admin_headers())).text
    assert "slotengine_courier_dead_letters_waiting 1" in metrics
    cat = await make_catalog(http, doctors=1)
    a = await hospital_admin(http, cat["hospital"], "dead-a")
    assert (await http.get("/v1/admin/outbox/dead-letters", headers=a)).status_code == 403
    retried = await http.post(
        f"/v1/admin/outbox/dead-letters/{dead['id']}/retry", headers=admin_headers()
    )
    assert retried.status_code == 200
    assert await client.xlen(keys.outbox) >= 1
    for _ in range(runtime.settings.outbox_max_tries + 1):  # it fails again: dead again
        await services.engine.drain_outbox()
    again = (await http.get("/v1/admin/outbox/dead-letters", headers=admin_headers())).json()
    dropped = await http.delete(
        f"/v1/admin/outbox/dead-letters/{again['items'][0]['id']}", headers=admin_headers()
    )
    assert dropped.status_code == 200
    assert (await http.get("/v1/admin/outbox/dead-letters", headers=admin_headers())).json()[
        "count"
    ] == 0
    unknown = await http.delete("/v1/admin/outbox/dead-letters/1-1", headers=admin_headers())
    assert unknown.status_code == 404


def test_an_ambiguous_commit_has_its_own_code_and_says_to_retry():
    code, message = REFUSALS[OutcomeUnknown]
    assert (code.status, code.code) == (503, "outcome_unknown")
    assert "same request_id" in message
    assert "may have booked" in message


def test_an_unavailable_store_says_nothing_was_booked():
    code, message = REFUSALS[Unavailable]
    assert (code.status, code.code) == (503, "unavailable")
    assert "nothing was booked" in message
