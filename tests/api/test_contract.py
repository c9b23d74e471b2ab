"""The OpenAPI contract under generated requests (schemathesis), with each caller's token,
against the real app on the real engine (a host pool on the session's local Ray, the session's
Redis).

Only two properties are checked here (full conformance is another matter): the app never
answers 500 (nor lets an exception escape), and a 503 is only the documented one, with the code
``unavailable`` or ``outcome_unknown``. The schema is the app's own OpenAPI document, loaded
with ``schemathesis.openapi.from_dict``; each operation's cases come from schemathesis's
Hypothesis strategies (valid and invalid data), half of them with their path parameters set to
the world's real objects (``test_authorization.build_world``: two hospitals, sessions, a
patient holding a booking, admins) so that they reach past the "not found". Each case is sent
in process through the ``http`` client (httpx's ASGI transport), on the loop that started the
app, from a thread where Hypothesis runs.

Bounded and deterministic: ``EXAMPLES`` cases per operation, strategy and caller, drawn with
``derandomize=True`` (the same cases every run; no example database is written). Every finding
is collected, none shrunk, and all are reported at once with the request that caused it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import traceback
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from .test_authorization import HOSPITAL_ADMIN, PATH, PATIENT, PLATFORM_ADMIN, World, build_world

ANONYMOUS = "anonymous"
CALLERS = (ANONYMOUS, PATIENT, HOSPITAL_ADMIN, PLATFORM_ADMIN)
EXAMPLES = 3  # per operation, strategy and caller
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
DOCUMENTED_503 = {"unavailable", "outcome_unknown"}
BASE = "http://test"
_ENTITY = re.compile(r"^/v1/admin/(hospital|department|doctor)s/\{entity_id\}")
RENEWING = {("POST", "/v1/auth/logout"), ("POST", "/v1/me/password")}


def world_parameters(w: World, path: str, names: list[str]) -> dict[str, Any]:
    """The world's value for each path parameter of ``path`` (as in the authorization
    matrix); ``entity_id`` is the hospital, department or doctor the path is about."""
    values = {k: w.ids.get(v, v) for k, v in PATH.items()}
    kind = _ENTITY.match(path)
    if kind:
        values["entity_id"] = w.ids[kind[1]]
    return {n: values[n] for n in names if n in values}


def problem(response: httpx.Response) -> str | None:
    """What is wrong with an answer, for the two properties checked here; None if nothing."""
    if response.status_code == 500:
        return "500"
    if response.status_code == 503:
        try:
            code = response.json().get("code")
        except ValueError:
            code = None
        if code not in DOCUMENTED_503:
            return f"503 with code {code!r}"
    return None


def request_of(case: schemathesis.Case, token: dict[str, str]) -> dict[str, Any]:
    """httpx arguments for a generated case, with the caller's token (an anonymous caller
    keeps whatever Authorization header was generated, if any)."""
    kw = case.as_transport_kwargs(base_url=BASE)
    headers = {k: str(v) for k, v in (kw.get("headers") or {}).items()}
    if token:
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"} | token
    out: dict[str, Any] = {
        "method": kw["method"],
        "url": kw["url"],
        "headers": headers,
        "params": kw.get("params"),
    }
    if "json" in kw:
        out["json"] = kw["json"]
    elif kw.get("data") is not None:
        data = kw["data"]
        out["content" if isinstance(data, bytes | str) else "data"] = data
    return out


def describe(request: dict[str, Any]) -> str:
    body = request.get("json", request.get("content", request.get("data")))
    return f"{request['method']} {request['url']} params={request['params']} body={body!r:.300}"


@pytest.fixture
async def world(http) -> World:
    return await build_world(http)


@pytest.mark.parametrize("caller", CALLERS)
async def test_generated_requests_never_get_a_500_nor_an_undocumented_503(app, http, world, caller):
    """Every operation of the app's OpenAPI document, fuzzed with one caller's token."""
    loop = asyncio.get_running_loop()
    spec = app.app.openapi()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    findings: list[str] = []
    sent = 0
    statuses: Counter[int] = Counter()

    async def send(request: dict[str, Any], path: str) -> None:
        nonlocal sent
        try:
            built = http.build_request(**request)
        except (UnicodeEncodeError, ValueError, TypeError, httpx.HTTPError):
            return  # not sendable over HTTP at all (e.g. a header that is not latin-1)
        sent += 1
        try:
            response = await http.send(built)
        except Exception as exc:  # the app let it escape: a 500 to a real client
            where = traceback.extract_tb(exc.__traceback__)
            line = next((f for f in reversed(where) if "/work/main/" in f.filename), where[-1])
            findings.append(
                f"{describe(request)} as {caller}: raised {type(exc).__name__}: {exc} "
                f"(at {line.filename}:{line.lineno} {line.line})"
            )
            return
        statuses[response.status_code] += 1
        if (what := problem(response)) is not None:
            findings.append(f"{describe(request)} as {caller}: {what}: {response.text[:300]}")
        renewed = (request["method"], path) in RENEWING and response.status_code == 200
        if renewed and caller == PATIENT:
            await world.log_in(http, PATIENT)  # its tokens were revoked: carry on with new ones

    def run(strategy, path: str) -> None:
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def each(case: schemathesis.Case) -> None:
            request = request_of(case, world.headers[caller])
            asyncio.run_coroutine_threadsafe(send(request, path), loop).result(timeout=60)

        with contextlib.suppress(Unsatisfiable):  # nothing invalid to make of it (no
            each()  # parameters, or only the fixed ones)

    for operation in operations:
        names = [p.name for p in operation.path_parameters]
        fixed = world_parameters(world, operation.path, names)
        for mode in MODES:
            strategies = [operation.as_strategy(generation_mode=mode)]
            if fixed:
                strategies.append(
                    operation.as_strategy(generation_mode=mode, path_parameters=fixed)
                )
            for strategy in strategies:
                await asyncio.to_thread(run, strategy, operation.path)
    print(f"{caller}: {sent} requests, {len(operations)} operations (derandomized): {statuses}")
    assert sent > len(operations) * 2
    assert not findings, "\n".join(findings)
