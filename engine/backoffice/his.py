"""The hospital's own systems behind two small interfaces: its HIS (bookings, schedules) and the
social-insurance filing (社保备案), with HTTP adapters for the simulated HIS (``api/his_sim.py``).

Every call is idempotent by the booking's ``key`` (our booking id): the outbox delivers at least
once, so sending a booking again must answer the first number and create nothing. The adapters
do not retry; they sort every failure into ``HisUnavailable`` (network, timeout, 5xx, 429: the
call may or may not have taken effect, retry later) or ``HisRejected`` (any other 4xx: sending
it again will not help). A real HIS gets its own adapter class implementing the protocol.

Only addresses the ``Egress`` policy allows are called (``EgressRefused`` otherwise: no call
was made, and none will succeed until the link or the allow list changes), and no answer is
read past ``max_bytes``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from engine.backoffice.egress import Egress
from engine.errors import EgressRefused, HisRejected, HisUnavailable

MAX_CONNECTIONS = 64
MAX_BYTES = 4 << 20  # the largest answer read (``Settings.his_max_bytes``)


class His(Protocol):
    async def book(self, booking: dict) -> str:
        """Book at the HIS; answers the HIS booking number. The same ``key`` again answers the
        same number and books nothing."""

    async def cancel(self, his_no: str, key: str, reason: str) -> None:
        """Cancel HIS booking ``his_no``, which was made for ``key``; cancelling again is a
        no-op."""

    async def schedules(self, since: float) -> list[dict]:
        """Schedules changed after ``since`` (the HIS's own ``updated_at``, epoch seconds),
        oldest change first: the largest ``updated_at`` seen is the next cursor."""

    async def close(self) -> None: ...


class Insurance(Protocol):
    async def file(self, booking: dict) -> str:
        """File the booking with social insurance; answers the filing number. The same ``key``
        again answers the same number and files nothing."""

    async def close(self) -> None: ...


def http_client(timeout: float = 2.0, max_connections: int = MAX_CONNECTIONS) -> httpx.AsyncClient:
    """A keep-alive client with a connection limit, to share between adapters (a shared client
    belongs to whoever made it: the adapters do not close it). With an ``Egress`` the pool
    is keyed by the address called, not the name: share one https client only between
    adapters of one host (a connection opened for one name could carry another's request)."""
    return httpx.AsyncClient(
        timeout=timeout,
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
    )


class HttpAdapter:
    """The HTTP plumbing both adapters share: one JSON call, foreign failures turned into ours.

    With an ``egress`` policy every call resolves the host anew, is refused
    (``EgressRefused``, no connection made) if any address it answers is refused, and goes to
    the address checked (see ``egress.py``); without one (``None``: the client's transport is
    trusted, e.g. in-process for tests) the URL is called as it is. Redirects are never
    followed. An answer is read up to ``max_bytes``; a longer one is a broken answer
    (``HisUnavailable``), given up on without reading the rest."""

    system = "HIS"

    def __init__(
        self,
        base_url: str,
        timeout: float = 2.0,
        client: httpx.AsyncClient | None = None,
        *,
        egress: Egress | None = None,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.egress = egress
        self.max_bytes = max_bytes
        self._owns_client = client is None
        self.client = http_client(timeout) if client is None else client

    async def close(self) -> None:
        """Close the client if this adapter made it."""
        if self._owns_client:
            await self.client.aclose()

    async def call(
        self, method: str, path: str, *, body: Any = None, params: dict | None = None
    ) -> dict[str, Any]:
        """The JSON object the remote answered with 2xx; otherwise raise ours
        (``EgressRefused`` when the address may not be called)."""
        where = f"{self.system} {method} {path}"
        try:
            url = httpx.URL(self.base_url + path)
        except httpx.InvalidURL as exc:
            raise EgressRefused(self.base_url, "is not a URL") from exc
        headers: dict[str, str] = {}
        extensions: dict[str, Any] = {}
        if self.egress is not None:
            try:
                async with asyncio.timeout(self.timeout):
                    pinned = await self.egress.pin(url)
            except OSError as exc:  # the name did not resolve (or not in time)
                raise HisUnavailable(f"{where}: cannot resolve {url.host}: {exc}") from exc
            url, headers, extensions = pinned.url, pinned.headers, pinned.extensions
        try:
            request = self.client.build_request(
                method,
                url,
                json=body,
                params=params,
                headers=headers,
                timeout=self.timeout,
                extensions=extensions,
            )
            response = await self.client.send(request, stream=True, follow_redirects=False)
            try:
                content = await self._read(response, where)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:  # refused, reset, timed out, pool exhausted, bad framing
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise HisUnavailable(f"{where}: {detail}") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            code, message = error_of(status, content)
            raise HisUnavailable(f"{where}: answered {status} {code}: {message}")
        if not response.is_success:
            raise HisRejected(status, *error_of(status, content))
        try:
            answer = json.loads(content)
        except ValueError as exc:
            raise HisUnavailable(f"{where}: answered {status} with no JSON") from exc
        if not isinstance(answer, dict):
            raise HisUnavailable(f"{where}: answered {status} with no JSON object")
        return answer

    async def _read(self, response: httpx.Response, where: str) -> bytes:
        """The answer's body, at most ``max_bytes`` of it (decoded): past that, or when it
        says beforehand that it is longer, ``HisUnavailable`` without reading further."""
        too_long = f"{where}: answered more than {self.max_bytes} bytes"
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise HisUnavailable(f"{too_long} (Content-Length {declared})")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise HisUnavailable(too_long)
        return bytes(body)


class HttpHis(HttpAdapter):
    """The HIS over the simulated HIS's HTTP API."""

    async def book(self, booking: dict) -> str:
        answer = await self.call("POST", "/his/bookings", body=booking)
        return field(answer, "his_no", self.system)

    async def cancel(self, his_no: str, key: str, reason: str) -> None:
        path = f"/his/bookings/{quote(his_no, safe='')}/cancel"
        await self.call("POST", path, body={"key": key, "reason": reason})

    async def schedules(self, since: float) -> list[dict]:
        answer = await self.call("GET", "/his/schedules", params={"since": repr(float(since))})
        schedules = answer.get("schedules")
        if not isinstance(schedules, list):
            raise HisUnavailable("HIS GET /his/schedules: answered without a schedules list")
        return schedules


class HttpInsurance(HttpAdapter):
    """Social-insurance filing over the simulated system's HTTP API."""

    system = "insurance"

    async def file(self, booking: dict) -> str:
        answer = await self.call("POST", "/insurance/filings", body=booking)
        return field(answer, "filing_no", self.system)


def field(answer: dict[str, Any], name: str, system: str) -> str:
    """A non-empty string the remote must have answered; a 2xx without it is a broken answer,
    worth retrying (the call itself is idempotent)."""
    value = answer.get(name)
    if not isinstance(value, str) or not value:
        raise HisUnavailable(f"{system} answered without {name}")
    return value


def error_of(status: int, content: bytes) -> tuple[str, str]:
    """(code, message) of a refusal: ours are ``{"code", "message"}``, FastAPI's validation
    errors ``{"detail": ...}``, anything else is its text."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return f"http_{status}", content[:2000].decode("utf-8", "replace")[:500]
    code = str(body.get("code") or f"http_{status}")
    message = body.get("message") or body.get("detail") or ""
    if not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False)[:500]
    return code, message
