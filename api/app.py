"""The FastAPI app: the routers of every area, errors as stable codes, the booking gateway.

``create_app()`` is the uvicorn factory; the returned ASGI app is the booking ``Gateway``
(``api/fastpath/booking.py``) wrapped around FastAPI, so the hot route skips FastAPI while it
still appears in the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from redis.exceptions import RedisClusterException, RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from api import jobs, openapi
from api.errors import INVALID_REQUEST, METHOD_NOT_ALLOWED, NOT_FOUND, ApiError, error
from api.fastpath.booking import Gateway
from api.routers import (
    admin_catalog,
    admin_sessions,
    back_office,
    bookings,
    browse,
    cluster,
    hospital_patients,
    operations,
    patients,
    platform,
)
from api.services import Services
from engine.errors import StoreUnavailable
from engine.settings import Settings

ROUTERS = (
    patients,
    browse,
    bookings,
    admin_catalog,
    hospital_patients,
    admin_sessions,
    platform,
    cluster,
    back_office,
    operations,
)


def create_app(settings: Settings | None = None) -> Gateway:
    """The uvicorn factory (``--factory api.app:create_app``)."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = await Services.start(settings)
        await jobs.start(app.state.services)
        try:
            yield
        finally:
            await app.state.services.stop()

    docs = {} if settings.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(
        title="slotengine",
        version="1",
        summary="Booking core of an internet hospital appointment platform (互联网预约挂号)",
        lifespan=lifespan,
        **docs,
    )
    app.state.services = None
    register_errors(app)
    for area in ROUTERS:
        app.include_router(area.router)
    openapi.install(app, routes)
    return Gateway(app)


def routes(app: FastAPI) -> list[APIRoute]:
    """Every route of the app, in the order requests try them, through included routers."""
    out: list[APIRoute] = []

    def walk(entries: list) -> None:
        for route in entries:
            if isinstance(route, APIRoute):
                out.append(route)
            elif hasattr(route, "original_router"):  # FastAPI keeps an included router whole
                walk(route.original_router.routes)

    walk(app.routes)
    return out


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method of every route whose path matches (FastAPI makes a route a method, and
    Starlette's own 405 names only the first route's)."""
    methods: set[str] = set()
    for route in routes(app):
        match, _ = route.matches({**scope, "method": "\0"})  # no method matches: path only
        if match is Match.PARTIAL:
            methods |= route.methods
    return sorted(methods)


def register_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error(exc.status, exc.code, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return error(422, "invalid_request", "The request is malformed.", errors=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body FastAPI could not read (not UTF-8, say)
            return error(422, INVALID_REQUEST.code, "The request body could not be read.")
        if exc.status_code == 405:  # RFC 9110: say which methods the path takes
            allow = ", ".join(allowed_methods(app, request.scope))
            return error(405, METHOD_NOT_ALLOWED.code, "Method Not Allowed", {"Allow": allow})
        code = NOT_FOUND.code if exc.status_code == 404 else "http_error"
        return error(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(RedisError)
    @app.exception_handler(RedisClusterException)
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        return error(503, "unavailable", "The store cannot answer right now; retry.")
