"""Patient tokens end when they should, on every worker at once (two API workers on one real
engine: the session's Redis, a host pool on the local Ray; revocations travel by pub/sub)."""

from __future__ import annotations

import asyncio

import jwt

from api.accounts.auth import ALGORITHM
from tests.api.helpers import admin_headers, identity, make_catalog


async def register_and_login(client) -> tuple[dict, str]:
    body = {"name": "李四", **identity(), "password": "correct horse"}
    assert (await client.post("/v1/patients", json=body)).status_code == 201
    login = await client.post(
        "/v1/auth/token", json={"phone": body["phone"], "password": body["password"]}
    )
    return body, login.json()["access_token"]


async def mine(client, token) -> int:
    r = await client.get("/v1/me/bookings", headers={"Authorization": f"Bearer {token}"})
    return r.status_code


async def eventually(predicate, seconds: float = 3.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_logout_voids_every_token_on_every_worker(two_apps):
    one, two = two_apps
    _, token = await register_and_login(one)
    assert (await mine(one, token), await mine(two, token)) == (200, 200)
    out = await one.post("/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})
    assert out.status_code == 200
    assert await mine(one, token) == 401
    assert await eventually(lambda: _is(two, token, 401)), "the other worker learns by pub/sub"


async def _is(client, token, status) -> bool:
    return await mine(client, token) == status


async def test_a_new_password_voids_the_old_tokens_and_gives_a_new_one(two_apps):
    one, two = two_apps
    body, token = await register_and_login(one)
    changed = await two.post(
        "/v1/me/password",
        json={"current_password": body["password"], "new_password": "a new long password"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert changed.status_code == 200, changed.text
    fresh = changed.json()["access_token"]
    assert await mine(two, token) == 401
    assert await eventually(lambda: _is(one, token, 401))
    assert (await mine(one, fresh), await mine(two, fresh)) == (200, 200)
    old_login = await one.post(
        "/v1/auth/token", json={"phone": body["phone"], "password": body["password"]}
    )
    assert old_login.status_code == 401


async def test_a_wrong_current_password_changes_nothing(http):
    body, token = await register_and_login(http)
    r = await http.post(
        "/v1/me/password",
        json={"current_password": "not it", "new_password": "a new long password"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 403
    assert r.json()["code"] == "wrong_password"
    assert await mine(http, token) == 200
    again = await http.post(
        "/v1/auth/token", json={"phone": body["phone"], "password": body["password"]}
    )
    assert again.status_code == 200


async def test_a_token_without_an_audience_is_401_never_500(app, http):
    """Tokens issued before the security review carry no ``aud`` and stop working."""
    key = app.app.state.services.tokens._key
    for claims in (
        {"sub": "1", "exp": 4e9, "iat": 1, "ver": 1},
        {"sub": "1", "aud": "patient", "iat": 1, "ver": 1},
        {"sub": "1", "aud": "patient", "exp": 4e9, "iat": 1},
    ):
        token = jwt.encode(claims, key, algorithm=ALGORITHM)
        assert await mine(http, token) == 401
        cat_session = "s-none"
        r = await http.post(
            f"/v1/sessions/{cat_session}/bookings",
            json={"request_id": "r"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 401


async def test_a_forged_token_naming_a_holder_gets_the_strangers_sold_out(app, http):
    cat = await make_catalog(http, capacity=1, doctors=2)
    sid = cat["sessions"][0]
    _, token = await register_and_login(http)
    holder = jwt.decode(token, options={"verify_signature": False})["sub"]
    r = await http.post(
        f"/v1/sessions/{sid}/bookings",
        json={"request_id": "mine"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201
    _, stranger = await register_and_login(http)
    forged = jwt.encode(
        {"sub": holder, "aud": "patient", "exp": 4e9, "iat": 1, "ver": 1},
        "x" * 32,
        algorithm=ALGORITHM,
    )
    view = app.app.state.services.availability

    async def fast():
        return view.sessions[sid].holders is not None and view.sessions[sid].status == "sold_out"

    assert await eventually(fast), "the worker learns the sell-out and its holders"
    answers = []
    for t in (stranger, forged):
        a = await http.post(
            f"/v1/sessions/{sid}/bookings",
            json={"request_id": "mine"},
            headers={"Authorization": f"Bearer {t}"},
        )
        answers.append((a.status_code, a.content))
    assert answers[0] == answers[1], "the same bytes: the claim changed nothing"
    assert answers[0][0] == 409
    real = await http.post(
        f"/v1/sessions/{sid}/bookings",
        json={"request_id": "mine"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert real.status_code == 200, "the real holder still gets the booking back"
    assert (await http.get("/v1/me/bookings", headers=admin_headers())).status_code == 401
