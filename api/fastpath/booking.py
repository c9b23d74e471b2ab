"""The booking route, lean: a raw ASGI gateway in front of FastAPI.

``POST /v1/sessions/{id}/bookings`` is the one route a flash crowd hits. The gateway answers it
before FastAPI's routing and validation (which alone cost 4–9× a raw ASGI answer here):

1. if this worker knows the session is sold out, not open yet, closed or suspended, it sends
   pre-built bytes, touching neither Ray nor Redis (the fast path). The answer never depends on
   an unverified claim: only a caller whose token is valid and whose patient holds a booking
   there goes on (to get that booking back); anyone else gets the same bytes;
2. otherwise it checks the client address's and the patient's rate (in this worker's memory),
   the token and the body, and books through the engine's mailbox.

Every other request passes to FastAPI, with bodies larger than the limit refused first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from api import metrics
from api.accounts.auth import bearer
from api.answers import HEADERS, booked_body, refusal
from api.errors import error_body, retry_after_header
from api.fastpath.limits import UNKNOWN, client_address
from api.services import Services
from engine.outcomes import Booked, OutcomeUnknown, SoldOut, Unavailable

log = logging.getLogger(__name__)
PREFIX, SUFFIX = "/v1/sessions/", "/bookings"
MAX_REQUEST_ID = 64
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def invalid(message: str) -> tuple[int, bytes]:
    return 422, error_body("invalid_request", message)


def too_many(wait: float) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    seconds = retry_after_header(wait)
    body = error_body("rate_limited", "Too many requests; slow down.", retry_after=int(seconds))
    return 429, body, [(b"retry-after", seconds.encode())]


async def book(
    services: Services,
    session_id: str,
    authorization: str | None,
    body: bytes,
    address: str = UNKNOWN,
) -> tuple[int, bytes] | tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Decide one booking request; (HTTP status, JSON body[, extra headers])."""
    now = time.monotonic()
    if services.settings.address_limits and (wait := services.addresses.hit(address, now)):
        return too_many(wait)
    token = bearer(authorization)
    patient = services.tokens.patient_of(token) if token else None
    if patient is None:
        return 401, error_body("unauthenticated", "A valid patient bearer token is required.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return invalid("The body is not valid JSON.")
    request_id = data.get("request_id") if isinstance(data, dict) else None
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= MAX_REQUEST_ID:
        return invalid(f"request_id must be a string of 1 to {MAX_REQUEST_ID} characters.")
    if wait := services.limiter.hit(patient, now):
        return too_many(wait)
    metrics.ENGINE_CALLS.inc()
    outcome = await services.engine.book(session_id, patient, request_id)
    metrics.OUTCOMES.labels(type(outcome).__name__).inc()
    if isinstance(outcome, Booked):  # the host indexed it for "my bookings" in its commit
        return (200 if outcome.repeat else 201), booked_body(outcome, services.clock)
    if isinstance(outcome, Unavailable | OutcomeUnknown):
        log.warning(
            "booking %s for patient %s: %s: %s",
            session_id,
            patient,
            type(outcome).__name__,
            outcome.reason,
        )
    elif isinstance(outcome, SoldOut):  # with the alternatives this worker knows of
        view = services.availability.sessions.get(session_id)
        if view is not None:  # the view itself learns of the sell-out from pub/sub, in order
            code, body, _ = services.availability.answer(view, "sold_out", services.now())
            return code, body
    return refusal(outcome, services.clock)


async def respond(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [*HEADERS, (b"content-length", str(len(body)).encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None when it is larger than ``limit``."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


TOO_LARGE = error_body("payload_too_large", "The request body is too large.")

_SECURITY = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_CSP = (
    b"default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    b"script-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; "
    b"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_DOCS_CSP = (  # FastAPI's Swagger UI and ReDoc pages load their code from jsDelivr
    b"default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; worker-src blob:; "
    b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = [*_SECURITY, (b"content-security-policy", _CSP)]
DOCS_HEADERS = [*_SECURITY, (b"content-security-policy", _DOCS_CSP)]


def with_page_headers(send: Send, docs: bool) -> Send:
    """``send`` that adds the security headers to an HTML page (CSP, no framing, no sniffing,
    no referrer); every other answer passes as it is."""
    extra = DOCS_HEADERS if docs else PAGE_HEADERS

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            kind = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            if kind.startswith(b"text/html"):
                message = {**message, "headers": headers + extra}
        await send(message)

    return wrapped


class Gateway:
    """ASGI app: the booking fast path and body limits in front of the FastAPI app."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services: Services | None = getattr(self.app.state, "services", None)
        limit = services.settings.max_body_bytes if services else 8192
        path = scope["path"]
        if (
            services is not None
            and scope["method"] == "POST"
            and path.startswith(PREFIX)
            and path.endswith(SUFFIX)
        ):
            session_id = path[len(PREFIX) : -len(SUFFIX)]
            if session_id and "/" not in session_id:
                authorization = header(scope, b"authorization")
                tokens = services.tokens
                fast = services.availability.fast_refusal(
                    session_id,
                    services.now(),
                    lambda holders: tokens.holder_of(bearer(authorization), holders),
                )
                if fast is not None:
                    metrics.FAST_PATH_BY_CODE[fast[2]].inc()
                    await respond(send, fast[0], fast[1])
                    return
                body = await read_body(receive, limit)
                if body is None:
                    await respond(send, 413, TOO_LARGE)
                    return
                address = client_address(scope, services.proxies)
                status, answer, *extra = await book(
                    services, session_id, authorization, body, address
                )
                metrics.REQUESTS.labels("book", str(status)).inc()
                await respond(send, status, answer, extra[0] if extra else None)
                return
        send = with_page_headers(send, path in ("/docs", "/redoc"))
        length = header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await respond(send, 413, TOO_LARGE)
            return
        if length is None and scope["method"] in ("POST", "PUT", "PATCH"):
            body = await read_body(receive, limit)
            if body is None:
                await respond(send, 413, TOO_LARGE)
                return
            receive = _replay(body)
        await self.app(scope, receive, send)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
