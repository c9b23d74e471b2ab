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

A few generated cases seldom reach the edges of the types the schema allows (the last date, an
instant that exists in UTC but not in the hospitals' zone, a stream id Redis cannot parse, a
body that is not UTF-8): ``EDGES`` sends those by hand, with the same two properties, plus
that a refusal changes nothing and that what was accepted does not break a later request.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from tests.api.test_authorization import (
    HOSPITAL_ADMIN,
    PATH,
    PATIENT,
    PLATFORM_ADMIN,
    DatabaseWatch,
    World,
    build_world,
)

ANONYMOUS = "anonymous"
CALLERS = (ANONYMOUS, PATIENT, HOSPITAL_ADMIN, PLATFORM_ADMIN)
EXAMPLES = 5  # per operation, strategy and caller
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


async def renew(app, world: World) -> None:
    """A new token for the world's patient, issued as the login route issues it."""
    services = app.app.state.services
    patient = world.ids["patient"]
    token = services.tokens.issue(patient, version=await services.token_version(patient))
    world.headers[PATIENT] = {"Authorization": f"Bearer {token}"}


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
        if renewed and caller == PATIENT:  # its tokens were revoked: carry on with a new one
            await renew(app, world)  # (not by logging in: that is limited per phone)

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


# ----- the edges of the types ------------------------------------------------------------------


async def answer(http: httpx.AsyncClient, method: str, url: str, **kw: Any) -> tuple[int, str]:
    """(status, text) of a request; an exception the app let escape counts as the 500 a real
    client would get, with where it was raised."""
    try:
        r = await http.request(method, url, **kw)
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)
        line = next((f for f in reversed(where) if "/work/main/" in f.filename), where[-1])
        return 500, f"{type(exc).__name__}: {exc} (at {line.filename}:{line.lineno} {line.line})"
    return r.status_code, r.text


@dataclass(frozen=True)
class Edge:
    """A request at the edge of what the schema allows (a few generated cases rarely reach
    it), sent by ``caller``; ``path`` and the values of ``json``/``params`` may name world
    objects as ``{hospital}``, ``{doctor}``... ``status``: the one answer that is right, or
    None for "anything but a server error". Any refusal must change nothing, and ``then``
    (another request of the same caller, or of ``then_caller``) must not fail afterwards."""

    caller: str
    method: str
    path: str
    kw: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    then: tuple[str, str, dict[str, Any]] | None = None
    then_caller: str | None = None


def _session(**times: str) -> dict[str, Any]:
    body = {"doctor_id": "{doctor}", "date": "{date}", "period": "PM", "capacity": 1}
    return body | {"first_slot_at": "14:00", "slot_minutes": 10, "fee": 0, **times}


LAST_DAY = "9999-12-31"
EDGES = {
    # dates the query allows: the day after the last one is no date
    "records up to the last day": Edge(
        HOSPITAL_ADMIN, "GET", "/v1/admin/records", {"params": {"to": LAST_DAY}}
    ),
    "records.csv up to the last day": Edge(
        HOSPITAL_ADMIN, "GET", "/v1/admin/records.csv", {"params": {"to": LAST_DAY}}
    ),
    "analytics up to the last day": Edge(
        HOSPITAL_ADMIN, "GET", "/v1/admin/analytics", {"params": {"to": LAST_DAY}}
    ),
    "a chart up to the last day": Edge(
        HOSPITAL_ADMIN,
        "GET",
        "/v1/admin/analytics/charts/no_show_by_age.svg",
        {"params": {"to": LAST_DAY}},
    ),
    # instants that exist, but not in the hospitals' time zone (UTC+8): the list entry is
    # kept, then its answer (and every later booking of the patient there) cannot be written
    "a blacklist entry until the last hour UTC": Edge(
        HOSPITAL_ADMIN,
        "PUT",
        "/v1/admin/hospitals/{hospital}/patients/{patient}/blacklist",
        {"json": {"reason": "x", "until": f"{LAST_DAY}T16:00:00+00:00"}},
        then=("POST", "/v1/sessions/{spare session}/bookings", {"json": {"request_id": "r"}}),
        then_caller=PATIENT,
    ),
    "a whitelist entry until the first hour, far east": Edge(
        HOSPITAL_ADMIN,
        "PUT",
        "/v1/admin/hospitals/{hospital}/patients/{patient}/whitelist",
        {"json": {"reason": "x", "until": "0001-01-01T00:00:00+14:00"}},
    ),
    # a doctor-session opening at the first hour far east: made, then the public pages of the
    # session and of its whole department cannot be written
    "a session opening at the first hour, far east": Edge(
        HOSPITAL_ADMIN,
        "POST",
        "/v1/admin/sessions",
        {"json": _session(opens_at="0001-01-01T00:00:00+14:00")},
        then=("GET", "/v1/departments/{department}/sessions", {}),
    ),
    # a stream id Redis cannot parse is no dead letter, not a store outage
    "retrying a dead letter whose id overflows": Edge(
        PLATFORM_ADMIN,
        "POST",
        "/v1/admin/outbox/dead-letters/99999999999999999999999-0/retry",
        status=404,
    ),
    "dropping a dead letter whose id overflows": Edge(
        PLATFORM_ADMIN,
        "DELETE",
        "/v1/admin/outbox/dead-letters/99999999999999999999999-0",
        status=404,
    ),
    # a body that is not UTF-8 is malformed like any other (422 invalid_request)
    "a registration whose body is not UTF-8": Edge(
        ANONYMOUS,
        "POST",
        "/v1/patients",
        {"content": b'{"name": "\xc0"}', "headers": {"content-type": "application/json"}},
        status=422,
    ),
}


def filled(value: Any, w: World) -> Any:
    """``value`` with ``{name}`` replaced by the world object ``name`` (and ``{date}``)."""
    names = {**{k: str(v) for k, v in w.ids.items()}, "date": w.date}
    if isinstance(value, str):
        return re.sub(r"\{([a-z ]+)\}", lambda m: names.get(m[1], m[0]), value)
    if isinstance(value, dict):
        return {k: filled(v, w) for k, v in value.items()}
    if isinstance(value, list):
        return [filled(v, w) for v in value]
    return value


@pytest.mark.parametrize("edge", EDGES.values(), ids=EDGES.keys())
async def test_values_at_the_edges_never_get_a_server_error(app, http, redis_client, world, edge):
    """No 500 (nor an undocumented 503) for a value the schema allows, a refusal changes
    nothing, and what was accepted does not break a later request."""
    watch = DatabaseWatch(app, redis_client)
    kw = {k: filled(v, world) for k, v in edge.kw.items()} if edge.kw else {}
    headers = {**world.headers[edge.caller], **kw.pop("headers", {})}
    url = filled(edge.path, world)
    (status, text), changed = await watch.around(
        answer(http, edge.method, url, headers=headers, **kw)
    )
    wrong = []
    if edge.status is not None and status != edge.status:
        wrong.append(f"{edge.method} {url}: {status}, expected {edge.status}: {text[:300]}")
    elif status >= 500 and not (status == 503 and code_of(text) in DOCUMENTED_503):
        wrong.append(f"{edge.method} {url}: {status}: {text[:300]}")
    if status >= 400 and changed:
        what = "failed" if status >= 500 else "refused"
        wrong.append(f"{edge.method} {url}: {what} ({status}) yet it changed {changed}")
    if edge.then is not None:
        method, path, then_kw = edge.then
        who = world.headers[edge.then_caller or edge.caller]
        later, later_text = await answer(
            http, method, filled(path, world), headers=who, **filled(then_kw, world)
        )
        if later >= 500:
            wrong.append(f"then {method} {filled(path, world)}: {later}: {later_text[:300]}")
    assert not wrong, "\n".join(wrong)


def code_of(text: str) -> str | None:
    try:
        return orjson.loads(text).get("code")
    except (orjson.JSONDecodeError, AttributeError):
        return None
