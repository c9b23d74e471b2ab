"""The other apps of the API benchmark, each served by uvicorn like ours.

- ``raw``: a raw ASGI app answering a constant (the ceiling of any Python HTTP server here);
- ``lua``: the seed's Redis answer behind a FastAPI route: verify the token, then one EVALSHA
  "decrement the stock if positive, push the patient" per request;
- ``pg``: the seed's PostgreSQL answer behind the same route: one conditional
  ``UPDATE ... SET left = left - 1 WHERE left > 0`` (and the booking row) per request;
- ``lua_raw``: the same Lua script behind a raw ASGI front as lean as slotengine's gateway
  (the token checked, the body's request_id read with orjson, prebuilt answers), so that the
  ratio against it measures the engine, not FastAPI.

Configured by BENCH_REDIS_URL, BENCH_PG_DSN and BENCH_SECRET.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.accounts.auth import Tokens, bearer

PREFIX = os.environ.get("BENCH_LUA_PREFIX", "lua")  # each Lua server its own stock
CONSTANT = b'{"code":"sold_out","message":"No free slot is left in this doctor-session."}'
LUA = """
local left = tonumber(redis.call('GET', KEYS[1]) or '0')
if left <= 0 then return -1 end
redis.call('DECR', KEYS[1])
redis.call('RPUSH', KEYS[2], ARGV[1])
return left - 1
"""


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 409,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": CONSTANT})


class BookingIn(BaseModel):
    request_id: str = Field(min_length=1, max_length=64)


def _tokens() -> Tokens:
    return Tokens(os.environ["BENCH_SECRET"], "unused-admin-token-x", 3600)


def _patient(state: dict[str, Any], authorization: str | None) -> int | None:
    token = bearer(authorization)
    return state["tokens"].patient_of(token) if token else None


async def open_lua(state: dict[str, Any]) -> None:
    """The Lua rows' Redis client, their script and the tokens, into ``state``."""
    import redis.asyncio as aioredis

    state["redis"] = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"], max_connections=256)
    state["sha"] = await state["redis"].script_load(LUA)
    state["tokens"] = _tokens()


async def take_with_lua(state: dict[str, Any], session_id: str, patient: int) -> int:
    """The seed's answer: one script call; the stock left, or < 0 when none was taken."""
    return await state["redis"].evalsha(
        state["sha"],
        2,
        f"{PREFIX}:{session_id}:stock",
        f"{PREFIX}:{session_id}:patients",
        patient,
    )


def lua() -> FastAPI:

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        await open_lua(state)
        yield
        await state["redis"].aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/sessions/{session_id}/bookings", status_code=201)
    async def book(session_id: str, body: BookingIn, authorization: str | None = Header(None)):  # type: ignore[no-untyped-def]
        patient = _patient(state, authorization)
        if patient is None:
            return JSONResponse({"code": "unauthenticated"}, status_code=401)
        left = await take_with_lua(state, session_id, patient)
        if left < 0:
            return JSONResponse({"code": "sold_out"}, status_code=409)
        return {"session_id": session_id, "remaining": left}

    return app


def lua_raw() -> Any:
    """The seed's Lua answer behind a raw ASGI front like ``api/fastpath/booking.py``."""
    import orjson

    state: dict[str, Any] = {}
    prefix, suffix = "/v1/sessions/", "/bookings"
    json = [(b"content-type", b"application/json")]
    answers = {
        401: b'{"code":"unauthenticated","message":"A valid patient bearer token is required."}',
        404: b'{"code":"not_found","message":"No such route."}',
        409: b'{"code":"sold_out","message":"No free slot is left in this doctor-session."}',
        422: b'{"code":"invalid_request","message":"The request is malformed."}',
    }

    async def answer(send: Any, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": json})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await open_lua(state)
                    await send({"type": "lifespan.startup.complete"})
            await state["redis"].aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] != "POST" or not (path.startswith(prefix) and path.endswith(suffix)):
            return await answer(send, 404, answers[404])
        session_id = path[len(prefix) : -len(suffix)]
        headers = dict(scope["headers"])
        patient = _patient(state, (headers.get(b"authorization") or b"").decode() or None)
        if patient is None:
            return await answer(send, 401, answers[401])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request_id = orjson.loads(body).get("request_id")
        except (orjson.JSONDecodeError, AttributeError):
            request_id = None
        if not isinstance(request_id, str) or not 1 <= len(request_id) <= 64:
            return await answer(send, 422, answers[422])
        left = await take_with_lua(state, session_id, patient)
        if left < 0:
            return await answer(send, 409, answers[409])
        await answer(send, 201, orjson.dumps({"session_id": session_id, "remaining": left}))

    return app


def pg() -> FastAPI:
    import asyncpg

    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        state["pool"] = await asyncpg.create_pool(
            os.environ["BENCH_PG_DSN"], min_size=8, max_size=32
        )
        state["tokens"] = _tokens()
        yield
        await state["pool"].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/sessions/{session_id}/bookings", status_code=201)
    async def book(session_id: str, body: BookingIn, authorization: str | None = Header(None)):  # type: ignore[no-untyped-def]
        patient = _patient(state, authorization)
        if patient is None:
            return JSONResponse({"code": "unauthenticated"}, status_code=401)
        async with state["pool"].acquire() as conn, conn.transaction():
            left = await conn.fetchval(
                "UPDATE stock SET remaining = remaining - 1 "
                "WHERE session_id = $1 AND remaining > 0 RETURNING remaining",
                session_id,
            )
            if left is None:
                return JSONResponse({"code": "sold_out"}, status_code=409)
            await conn.execute(
                "INSERT INTO booking (session_id, patient_id, request_id) VALUES ($1, $2, $3)",
                session_id,
                patient,
                body.request_id,
            )
        return {"session_id": session_id, "remaining": left}

    return app
