"""Probes and metrics: /healthz, /readyz (from a health state kept in the background), /metrics
(the platform admin's token unless opened by a setting)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Security
from fastapi.responses import JSONResponse, Response

from api import metrics
from api.answers import content, declared
from api.deps import (
    ADMIN_TOKEN,
    Credentials,
    ServicesDep,
    admin,
    platform_only,
    services_of,
)
from api.errors import FORBIDDEN, UNAUTHENTICATED

router = APIRouter()


@router.get("/healthz", tags=["operations"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", tags=["operations"])
async def readyz(s: ServicesDep) -> Any:
    """Redis and every host reachable, as a background check found them (every second);
    a probe never sends a call of its own into the hosts."""
    checks = {k: v for k, v in s.health.items() if k in ("redis", "ray")}
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "unavailable", **checks}
    body["checked_at"] = s.clock.iso(s.health.get("checked_at"))
    if not ready:
        body = {"code": "unavailable", "message": "Not ready.", **body}
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics_reader(
    request: Request, credentials: Annotated[Credentials, Security(ADMIN_TOKEN)]
) -> None:
    if not services_of(request).settings.metrics_public:  # refund totals, bans: not for all
        platform_only(await admin(request, credentials))


@router.get(
    "/metrics",
    response_class=Response,
    responses=declared(UNAUTHENTICATED, FORBIDDEN) | content("text/plain"),
    tags=["operations"],
    dependencies=[Depends(metrics_reader)],
)
async def prometheus(s: ServicesDep) -> Response:
    """Prometheus text (the platform admin's bearer token unless SLOTENGINE_METRICS_PUBLIC);
    the courier's figures as a background task last read them."""
    body, content_type = metrics.render(s.figures, s.health.get("hosts"))
    return Response(body, media_type=content_type)
