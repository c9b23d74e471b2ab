"""The authorization matrix: every route of the app × six callers → the status each must get,
against the real app on the real engine (a host pool on the session's local Ray, the session's
Redis).

The callers: nobody (no token), a patient holding a booking at hospital A, another patient
(holding one at hospital B only), hospital A's admin, hospital B's admin, and the platform
admin. Every request names A's things (``PATH``), so B's admin is always reaching into another
hospital and the other patient into someone else's booking. The table (``TABLE``) has one entry
per route of the app's route table (``api.app.routes``); ``test_every_route_has_an_entry`` fails
on a new route without one, and on an entry whose route is gone.

A caller who may do it gets the success status, or a business refusal the route documents
(409 ``has_live_bookings`` for deleting a hospital with live bookings, 404 for a dead letter that
does not exist, ...). A caller who may not gets 401 ``unauthenticated`` (no token, or a token
of the wrong kind: a patient's on an admin route, an admin's on a patient route), 403
``forbidden`` (another hospital's things, a platform-only route) or 404 ``not_found`` (another
patient's booking: never confirm it exists). Every refusal (401, 403, 404, and the business
ones) must change nothing: the whole Redis database is fingerprinted before and after
(``DatabaseWatch``; its one exclusion is explained at ``VOLATILE``).

Each caller runs through the whole table on a world of its own, in the table's order (the app's
route order), so one caller's successes (a rota put, then read, then dropped; a booking paid,
then cancelled) never decide what another caller gets.
"""

from __future__ import annotations

import fnmatch
import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from api.app import create_app, routes
from engine.settings import Settings
from tests.api.helpers import ADMIN, admin_headers, hospital_admin, identity, make_catalog
from tests.api.helpers import PASSWORD as ADMIN_PASSWORD

ANONYMOUS = "anonymous"
PATIENT = "patient"  # holds a booking at hospital A
OTHER_PATIENT = "other patient"  # holds a booking at hospital B only
HOSPITAL_ADMIN = "hospital admin"  # hospital A's
OTHER_HOSPITAL_ADMIN = "other hospital admin"  # hospital B's
PLATFORM_ADMIN = "platform admin"
ROLES = (ANONYMOUS, PATIENT, OTHER_PATIENT, HOSPITAL_ADMIN, OTHER_HOSPITAL_ADMIN, PLATFORM_ADMIN)
REFUSALS = {401: "unauthenticated", 403: "forbidden", 404: "not_found"}
PATIENT_PASSWORD = "correct horse"
_serial = itertools.count(1)


# ----- who gets what ---------------------------------------------------------------------------


def public(status: int = 200) -> dict[str, int]:
    """Anyone, with a token or without."""
    return dict.fromkeys(ROLES, status)


def patients(mine: int, theirs: int | None = None) -> dict[str, int]:
    """A patient's route: the patient gets ``mine``, the other patient ``theirs`` (on the
    patient's booking: 404), an admin's token is no patient's (401)."""
    return {
        **dict.fromkeys(ROLES, 401),
        PATIENT: mine,
        OTHER_PATIENT: mine if theirs is None else theirs,
    }


def hospital(ok: int, mine: int | None = None) -> dict[str, int]:
    """A route about hospital A: its admin (``mine``, when it differs) and the platform admin
    get ``ok``; B's admin 403; a patient's token is no admin's (401)."""
    return {
        **dict.fromkeys(ROLES, 401),
        HOSPITAL_ADMIN: ok if mine is None else mine,
        OTHER_HOSPITAL_ADMIN: 403,
        PLATFORM_ADMIN: ok,
    }


def platform(ok: int) -> dict[str, int]:
    """The platform admin's alone: every hospital admin gets 403, even about its own."""
    return {**hospital(ok), HOSPITAL_ADMIN: 403}


@dataclass(frozen=True)
class Entry:
    """One route's row: who gets what, the request to send and which world objects it names.

    ``params`` names, per path parameter, the world object to use where ``PATH``'s default
    will not do (e.g. ``entity_id``, or a spare doctor that can be deleted for real).
    ``code``: the business refusal's code, for the callers who may do it and are refused for
    a reason of the domain (a 409). ``renews``: the caller's tokens die with a success (logout,
    new password), so the caller logs in again afterwards."""

    expect: dict[str, int]
    code: str | None = None
    body: Callable[[World], Any] | None = None
    query: Callable[[World], dict[str, str]] | None = None
    params: dict[str, str] = field(default_factory=dict)
    renews: bool = False


def _registration(w: World) -> dict[str, str]:
    return {"name": "韩梅梅", **identity(), "password": PATIENT_PASSWORD}


def _new_admin(w: World) -> dict[str, str]:
    login = f"matrix-{next(_serial)}"
    return {
        "login": login,
        "password": ADMIN_PASSWORD,
        "name": "新",
        "hospital_id": w.ids["hospital"],
    }


def _session_body(w: World) -> dict[str, Any]:
    return {
        "doctor_id": w.ids["doctor"],
        "date": w.date,
        "period": "PM",
        "capacity": 3,
        "first_slot_at": "14:00",
        "slot_minutes": 10,
        "fee": 0,
    }


def _of_a(w: World) -> dict[str, str]:
    return {"hospital": w.ids["hospital"]}


#: Every route (method, path template as the app has it) → its row. In the app's route order:
#: each caller runs down it, so a row may rely on the rows above it for the same caller.
TABLE: dict[tuple[str, str], Entry] = {
    # ----- patients
    ("POST", "/v1/patients"): Entry(public(201), body=_registration),
    ("POST", "/v1/auth/token"): Entry(
        public(200), body=lambda w: {"phone": w.phones[PATIENT], "password": PATIENT_PASSWORD}
    ),
    ("POST", "/v1/auth/logout"): Entry(patients(200), renews=True),
    ("POST", "/v1/me/password"): Entry(
        patients(200),
        body=lambda w: {"current_password": PATIENT_PASSWORD, "new_password": PATIENT_PASSWORD},
        renews=True,
    ),
    # ----- browsing
    ("GET", "/v1/hospitals"): Entry(public()),
    ("GET", "/v1/hospitals/{hospital_id}/departments"): Entry(public()),
    ("GET", "/v1/departments/{department_id}/sessions"): Entry(
        public(), query=lambda w: {"date": w.date}
    ),
    ("GET", "/v1/sessions/{session_id}"): Entry(public()),
    # ----- booking: the patient's request again is its booking again (200); the other
    # patient's is a new hold of its own (201)
    ("POST", "/v1/sessions/{session_id}/bookings"): Entry(
        patients(200, 201), body=lambda w: {"request_id": w.request_id}
    ),
    ("GET", "/v1/bookings/{booking_id}"): Entry(patients(200, 404)),
    ("GET", "/v1/me/bookings"): Entry(patients(200)),
    ("POST", "/v1/bookings/{booking_id}/payment"): Entry(patients(200, 404)),
    ("POST", "/v1/bookings/{booking_id}/cancel"): Entry(patients(200, 404)),
    # the session is open: 409 slots_available; nobody is on its waitlist: 404
    ("POST", "/v1/sessions/{session_id}/waitlist"): Entry(
        patients(409), code="slots_available", body=lambda w: {"request_id": "wait-1"}
    ),
    ("DELETE", "/v1/sessions/{session_id}/waitlist"): Entry(patients(404)),
    ("GET", "/v1/me/conduct"): Entry(patients(200)),
    ("GET", "/v1/me/notifications"): Entry(patients(200)),
    # ----- the catalog: deleting A itself is refused for its live booking (409); the spare
    # department and doctor are empty, so they really go
    ("GET", "/v1/admin/hospitals/{entity_id}"): Entry(
        hospital(200), params={"entity_id": "hospital"}
    ),
    ("PATCH", "/v1/admin/hospitals/{entity_id}"): Entry(
        hospital(200), body=lambda w: {"address": "北京市东城区"}, params={"entity_id": "hospital"}
    ),
    ("DELETE", "/v1/admin/hospitals/{entity_id}"): Entry(
        platform(409), code="has_live_bookings", params={"entity_id": "hospital"}
    ),
    ("GET", "/v1/admin/departments/{entity_id}"): Entry(
        hospital(200), params={"entity_id": "department"}
    ),
    ("PATCH", "/v1/admin/departments/{entity_id}"): Entry(
        hospital(200), body=lambda w: {"name": "心内科"}, params={"entity_id": "department"}
    ),
    ("DELETE", "/v1/admin/departments/{entity_id}"): Entry(
        hospital(200), params={"entity_id": "spare department"}
    ),
    ("GET", "/v1/admin/doctors/{entity_id}"): Entry(hospital(200), params={"entity_id": "doctor"}),
    ("PATCH", "/v1/admin/doctors/{entity_id}"): Entry(
        hospital(200), body=lambda w: {"specialty": "高血压"}, params={"entity_id": "doctor"}
    ),
    ("DELETE", "/v1/admin/doctors/{entity_id}"): Entry(
        hospital(200), params={"entity_id": "spare doctor"}
    ),
    ("PUT", "/v1/admin/doctors/{doctor_id}/rota"): Entry(
        hospital(200), body=lambda w: {"slots": []}
    ),
    ("GET", "/v1/admin/doctors/{doctor_id}/rota"): Entry(hospital(200)),  # the one put above
    ("DELETE", "/v1/admin/doctors/{doctor_id}/rota"): Entry(hospital(200)),
    # ----- patients as a hospital sees them (the patient booked at A)
    ("GET", "/v1/admin/hospitals/{hospital_id}/patients/{patient_id}"): Entry(hospital(200)),
    ("PUT", "/v1/admin/hospitals/{hospital_id}/patients/{patient_id}/tags"): Entry(
        hospital(200), body=lambda w: {"tags": ["vip"]}
    ),
    ("PUT", "/v1/admin/hospitals/{hospital_id}/patients/{patient_id}/{kind}"): Entry(
        hospital(200), body=lambda w: {"reason": "矩阵"}
    ),
    ("DELETE", "/v1/admin/hospitals/{hospital_id}/patients/{patient_id}/{kind}"): Entry(
        hospital(200)  # the entry put above
    ),
    ("GET", "/v1/admin/hospitals/{hospital_id}/lists/{kind}"): Entry(hospital(200)),
    ("GET", "/v1/admin/hospitals/{hospital_id}/tags/{tag}"): Entry(hospital(200)),
    # ----- admin accounts
    ("POST", "/v1/admin/admins"): Entry(platform(201), body=_new_admin),
    ("GET", "/v1/admin/admins"): Entry(platform(200)),
    ("DELETE", "/v1/admin/admins/{admin_id}"): Entry(platform(200)),  # A's spare admin
    ("POST", "/v1/admin/auth/token"): Entry(
        public(200), body=lambda w: {"login": w.admin_login, "password": ADMIN_PASSWORD}
    ),
    # ----- making things
    ("POST", "/v1/admin/hospitals"): Entry(platform(201), body=lambda w: {"name": "新医院"}),
    ("POST", "/v1/admin/departments"): Entry(
        hospital(201), body=lambda w: {"hospital_id": w.ids["hospital"], "name": "儿科"}
    ),
    ("POST", "/v1/admin/doctors"): Entry(
        hospital(201),
        body=lambda w: {"department_id": w.ids["department"], "name": "李", "title": "主治医师"},
    ),
    ("POST", "/v1/admin/sessions"): Entry(hospital(201), body=_session_body),
    # ----- a doctor-session's bookings; the spare session (no bookings) is the one suspended
    ("GET", "/v1/admin/sessions/{session_id}/bookings"): Entry(hospital(200)),
    ("GET", "/v1/admin/sessions/{session_id}/day-list"): Entry(hospital(200)),
    ("POST", "/v1/admin/sessions/{session_id}/suspend"): Entry(
        hospital(200), params={"session_id": "spare session"}
    ),
    # the booking is held, not booked: 409 invalid_state
    ("POST", "/v1/admin/bookings/{booking_id}/check-in"): Entry(
        hospital(409), code="invalid_state", body=lambda w: {"verification_code": "00000000"}
    ),
    ("GET", "/v1/admin/hospitals/{hospital_id}/policy"): Entry(hospital(200)),
    ("PUT", "/v1/admin/hospitals/{hospital_id}/policy"): Entry(
        hospital(200), body=lambda w: {"hold_seconds": 900}
    ),
    # ----- the platform: nobody is banned, there are no dead letters (404 for one)
    ("GET", "/v1/admin/platform/bans"): Entry(platform(200)),
    ("DELETE", "/v1/admin/platform/bans/{patient_id}"): Entry(platform(404)),
    ("GET", "/v1/admin/outbox/dead-letters"): Entry(platform(200)),
    ("POST", "/v1/admin/outbox/dead-letters/{dead_id}/retry"): Entry(platform(404)),
    ("DELETE", "/v1/admin/outbox/dead-letters/{dead_id}"): Entry(platform(404)),
    ("GET", "/v1/admin/notifications"): Entry(platform(200)),
    ("POST", "/v1/admin/clock"): Entry(platform(200), body=lambda w: {"advance_seconds": 1}),
    ("GET", "/v1/admin/cluster"): Entry(platform(200)),
    ("POST", "/v1/admin/cluster/drain"): Entry(platform(404), body=lambda w: {"node": "none"}),
    # ----- the back office
    ("GET", "/v1/admin/records"): Entry(hospital(200), query=_of_a),
    ("GET", "/v1/admin/records.csv"): Entry(hospital(200), query=_of_a),
    # the HIS link is set by the platform admin only; A has none, so for A's admin reading it
    # or pulling from it is 404 (the platform admin reads the one it put, then drops it)
    ("PUT", "/v1/admin/hospitals/{hospital_id}/his"): Entry(
        platform(200), body=lambda w: {"his_url": "http://127.0.0.1:9", "pull": False}
    ),
    ("GET", "/v1/admin/hospitals/{hospital_id}/his"): Entry(hospital(200, mine=404)),
    ("DELETE", "/v1/admin/hospitals/{hospital_id}/his"): Entry(platform(200)),
    ("POST", "/v1/admin/hospitals/{hospital_id}/his/schedules"): Entry(
        hospital(200), body=lambda w: {"schedules": []}
    ),
    ("POST", "/v1/admin/hospitals/{hospital_id}/his/pull"): Entry(hospital(404)),
    ("GET", "/v1/admin/hospitals/{hospital_id}/his/deliveries"): Entry(hospital(200)),
    ("POST", "/v1/admin/hospitals/{hospital_id}/his/deliveries/retry"): Entry(hospital(200)),
    # no failed delivery to drop: 404
    ("DELETE", "/v1/admin/hospitals/{hospital_id}/his/deliveries/{target}/{booking_id}"): Entry(
        hospital(404)
    ),
    ("GET", "/v1/admin/his/deliveries/failed"): Entry(platform(200)),
    ("GET", "/v1/admin/analytics"): Entry(hospital(200), query=_of_a),
    ("GET", "/v1/admin/analytics/charts/{name}.{fmt}"): Entry(hospital(200), query=_of_a),
    # ----- pages and operations: the admin page asks for a token itself
    ("GET", "/admin"): Entry(public()),
    ("GET", "/healthz"): Entry(public()),
    ("GET", "/readyz"): Entry(public()),
    # refund totals and ban counts: the platform admin's; a hospital admin is known but not
    # allowed (403), a patient's token is no admin's (401)
    ("GET", "/metrics"): Entry(platform(200)),
}

#: Path parameter → the world object it names by default (``Entry.params`` overrides), or a
#: literal value (no world object: the name is kept as it is).
PATH = {
    "hospital_id": "hospital",
    "department_id": "department",
    "doctor_id": "doctor",
    "session_id": "session",
    "booking_id": "booking",  # the patient's, at A
    "patient_id": "patient",
    "admin_id": "spare admin",
    "kind": "blacklist",
    "tag": "vip",
    "name": "no_show_by_age",
    "fmt": "svg",
    "target": "his",
    "dead_id": "1-0",
}


# ----- the world -------------------------------------------------------------------------------


@dataclass
class World:
    """Hospitals A and B, each with a department, a doctor and an open doctor-session with a
    fee; the patient's held booking at A, the other patient's at B; an admin of each."""

    ids: dict[str, Any]
    headers: dict[str, dict[str, str]]
    phones: dict[str, str]
    date: str
    request_id: str
    admin_login: str

    def path(self, template: str, overrides: dict[str, str]) -> str:
        names = {**PATH, **overrides}
        return template.format(**{k: self.ids.get(v, v) for k, v in names.items()})

    async def log_in(self, http: httpx.AsyncClient, role: str) -> None:
        r = await http.post(
            "/v1/auth/token", json={"phone": self.phones[role], "password": PATIENT_PASSWORD}
        )
        assert r.status_code == 200, r.text
        self.headers[role] = {"Authorization": f"Bearer {r.json()['access_token']}"}


async def register(http: httpx.AsyncClient) -> tuple[int, str]:
    who = identity()
    r = await http.post("/v1/patients", json={"name": "李雷", **who, "password": PATIENT_PASSWORD})
    assert r.status_code == 201, r.text
    return r.json()["id"], who["phone"]


async def build_world(http: httpx.AsyncClient) -> World:
    a = await make_catalog(http, capacity=5, fee=500, doctors=2)
    b = await make_catalog(http, capacity=5, fee=500, doctors=1)
    root = admin_headers()
    doctor = (await http.get(f"/v1/sessions/{a['sessions'][0]}")).json()["doctor_id"]
    spare_doctor = await http.post(
        "/v1/admin/doctors",
        json={"department_id": a["department"], "name": "赵", "title": "医师"},
        headers=root,
    )
    spare_department = await http.post(
        "/v1/admin/departments", json={"hospital_id": a["hospital"], "name": "空科"}, headers=root
    )
    n = next(_serial)
    login = f"admin-a-{n}"
    headers = {
        ANONYMOUS: {},
        HOSPITAL_ADMIN: await hospital_admin(http, a["hospital"], login),
        OTHER_HOSPITAL_ADMIN: await hospital_admin(http, b["hospital"], f"admin-b-{n}"),
        PLATFORM_ADMIN: root,
    }
    await hospital_admin(http, a["hospital"], f"admin-a-spare-{n}")
    listed = (await http.get("/v1/admin/admins", headers=root)).json()
    spare_admin = next(x["id"] for x in listed if x["login"] == f"admin-a-spare-{n}")
    patient, patient_phone = await register(http)
    other, other_phone = await register(http)
    w = World(
        ids={
            "hospital": a["hospital"],
            "department": a["department"],
            "doctor": doctor,
            "session": a["sessions"][0],
            "spare session": a["sessions"][1],
            "spare doctor": spare_doctor.json()["id"],
            "spare department": spare_department.json()["id"],
            "spare admin": spare_admin,
            "patient": patient,
            "other patient": other,
            "other hospital": b["hospital"],
        },
        headers=headers,
        phones={PATIENT: patient_phone, OTHER_PATIENT: other_phone},
        date=a["date"],
        request_id="world-1",
        admin_login=login,
    )
    await w.log_in(http, PATIENT)
    await w.log_in(http, OTHER_PATIENT)
    for role, session in ((PATIENT, a["sessions"][0]), (OTHER_PATIENT, b["sessions"][0])):
        held = await http.post(
            f"/v1/sessions/{session}/bookings",
            json={"request_id": w.request_id},
            headers=w.headers[role],
        )
        assert held.status_code == 201, held.text
        assert held.json()["status"] == "held", held.text
        w.ids["booking" if role == PATIENT else "other booking"] = held.json()["booking_id"]
    return w


@pytest.fixture
async def world(http) -> World:
    return await build_world(http)


# ----- nothing changed -------------------------------------------------------------------------

#: Keys that may change on a refused request or on their own, each with its reason. Patterns
#: are matched after the namespace prefix (``<prefix>:``). Nothing else changes on its own once
#: the courier has carried the outbox out (``DatabaseWatch.settle``): the hosts' timers, the
#: availability resync, the health and /metrics loops only read while nothing is due, and the
#: HIS pull and the rota release write only for HIS links and rotas, which a world lacks (the
#: one rota and HIS link the table puts are dropped by the next rows).
VOLATILE = {
    # a shared rate limit counts a request before the answer is known (``api.deps.limit``):
    # the pay and cancel routes count the patient, then find the booking is not theirs
    "limit:*": "rate-limit state, counted before the refusal is known",
}


async def fingerprint(client, prefix: str) -> dict[bytes, str]:
    """Every key of the database (any prefix) → a digest of its type and value, read by type
    (so equal contents give equal digests whatever their encoding), minus ``VOLATILE``."""
    ignored = [f"{prefix}:{p}" for p in VOLATILE]
    keys = sorted([k async for k in client.scan_iter(count=1000)])
    keys = [k for k in keys if not any(fnmatch.fnmatchcase(k.decode(), p) for p in ignored)]
    out = {}
    for key in keys:
        kind = (await client.type(key)).decode()
        if kind == "string":
            value: Any = await client.get(key)
        elif kind == "hash":
            value = sorted((await client.hgetall(key)).items())
        elif kind == "set":
            value = sorted(await client.smembers(key))
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        elif kind == "stream":
            value = await client.xrange(key)
        else:
            value = kind
        out[key] = hashlib.sha256(repr((kind, value)).encode()).hexdigest()
    return out


def changes(before: dict[bytes, str], after: dict[bytes, str]) -> list[str]:
    keys = before.keys() | after.keys()
    return sorted(k.decode() for k in keys if before.get(k) != after.get(k))


# ----- the tests -------------------------------------------------------------------------------


def app_routes(app) -> set[tuple[str, str]]:
    return {
        (method, route.path_format)
        for route in routes(app)
        for method in route.methods - {"HEAD", "OPTIONS"}
    }


def test_every_route_has_an_entry():
    """Both ways: a new route needs a row here, and a row whose route is gone must go."""
    gateway = create_app(Settings.from_env({}, admin_token=ADMIN))
    routes = app_routes(gateway.app)
    assert sorted(routes - TABLE.keys()) == [], "routes without an entry in TABLE"
    assert sorted(TABLE.keys() - routes) == [], "entries of TABLE for routes that are gone"
    for route, e in TABLE.items():
        assert e.expect.keys() == set(ROLES), route
        business = {x for x in e.expect.values() if x >= 400} - REFUSALS.keys()
        assert not business or e.code, f"{route}: name the code of its {business} refusal"


def refusal_code(e: Entry, status: int) -> str:
    """The code of a refusal the table expects: who is asking (401, 403), else the entry's."""
    return REFUSALS[status] if status in (401, 403) else e.code or REFUSALS[status]


def test_every_answer_of_the_table_is_declared_in_the_document():
    """What the table expects of each caller (and the matrix checks against the real app) is
    an answer the OpenAPI document declares for that operation, its code named."""
    doc = create_app(Settings.from_env({}, admin_token=ADMIN)).app.openapi()
    undeclared = []
    for (method, path), e in TABLE.items():
        if path not in doc["paths"]:  # a page, not in the document (``/admin``)
            continue
        answers = doc["paths"][path][method.lower()]["responses"]
        for role, status in e.expect.items():
            code = None if status < 400 else refusal_code(e, status)
            entry = answers.get(str(status))
            if entry is None or (code and f"`{code}`" not in entry["description"]):
                undeclared.append(f"{method} {path} as {role}: {status} {code or ''}")
    assert undeclared == []


class DatabaseWatch:
    """What a request changed in the database: the courier carries out what came before, the
    database is fingerprinted, the request sent, the courier drained again (so that what it
    did on the request's behalf shows too), and the database fingerprinted again."""

    def __init__(self, app, redis_client) -> None:
        self.app, self.client = app, redis_client
        self.prefix = app.app.state.services.engine.store.keys.prefix

    async def settle(self) -> None:
        await self.app.app.state.services.engine.drain_outbox()

    async def around(self, request) -> tuple[httpx.Response, list[str]]:
        await self.settle()
        before = await fingerprint(self.client, self.prefix)
        response = await request
        await self.settle()
        return response, changes(before, await fingerprint(self.client, self.prefix))


async def send(http: httpx.AsyncClient, w: World, role: str, method: str, path: str, e: Entry):
    return await http.request(
        method,
        w.path(path, e.params),
        json=e.body(w) if e.body else None,
        params=e.query(w) if e.query else None,
        headers=w.headers[role],
    )


@pytest.mark.parametrize("role", ROLES)
async def test_every_route_answers_each_caller_as_the_table_says(
    app, http, redis_client, world, role
):
    """One caller down the whole table, on a world of its own. Every refusal (401, 403, 404,
    and the business refusals) carries its code and leaves the database as it was. All
    mismatches are reported at once."""
    watch = DatabaseWatch(app, redis_client)
    wrong = []
    for (method, path), e in TABLE.items():
        expected = e.expect[role]
        where = f"{method} {path} as {role}"
        request = send(http, world, role, method, path, e)
        if expected < 400:
            r = await request
            if r.status_code != expected:
                wrong.append(f"{where}: {r.status_code}, expected {expected}: {r.text[:300]}")
            elif e.renews:
                await world.log_in(http, role)
            continue
        r, changed = await watch.around(request)
        if r.status_code != expected:
            wrong.append(f"{where}: {r.status_code}, expected {expected}: {r.text[:300]}")
            continue
        want = refusal_code(e, expected)
        if (code := r.json().get("code")) != want:
            wrong.append(f"{where}: code {code!r}, expected {want!r}")
        if changed:
            wrong.append(f"{where}: refused ({expected}) but it changed {changed}")
    assert not wrong, "\n".join(wrong)


async def test_a_hospital_admin_sees_no_patient_who_never_booked_there(
    app, http, redis_client, world
):
    """To A's admin, the other patient (who booked only at B) and a patient who does not
    exist are alike: 404 on every per-patient route, and nothing changes. B's admin sees the
    other patient (it booked at B); the platform admin sees every patient."""
    watch = DatabaseWatch(app, redis_client)
    a, b = world.ids["hospital"], world.ids["other hospital"]
    own = world.headers[HOSPITAL_ADMIN]
    for patient in (world.ids["other patient"], 10**9):
        base = f"/v1/admin/hospitals/{a}/patients/{patient}"
        for request in (
            http.get(base, headers=own),
            http.put(f"{base}/tags", json={"tags": ["vip"]}, headers=own),
            http.put(f"{base}/blacklist", json={"reason": "x"}, headers=own),
            http.put(f"{base}/whitelist", json={"reason": "x"}, headers=own),
            http.delete(f"{base}/blacklist", headers=own),
        ):
            r, changed = await watch.around(request)
            assert (r.status_code, r.json()["code"], changed) == (404, "not_found", []), r.text
    other = world.ids["other patient"]
    seen = await http.get(
        f"/v1/admin/hospitals/{b}/patients/{other}", headers=world.headers[OTHER_HOSPITAL_ADMIN]
    )
    assert seen.status_code == 200
    assert seen.json()["patient_id"] == other
    assert [x["booking_id"] for x in seen.json()["bookings"]] == [world.ids["other booking"]]
    anyone = await http.get(f"/v1/admin/hospitals/{a}/patients/{other}", headers=admin_headers())
    assert anyone.status_code == 200
    assert anyone.json()["bookings"] == []


async def test_a_hospital_admins_records_and_analytics_are_of_its_own_hospital(app, http, world):
    """Without a hospital filter, a hospital admin's records, their CSV and the analytics are
    its own hospital's (never a 403, never another's rows); the platform admin's are all."""
    await app.app.state.services.engine.drain_outbox()  # the records indexer runs there
    a, b = world.ids["hospital"], world.ids["other hospital"]
    for role, hospital_id, booking in (
        (HOSPITAL_ADMIN, a, world.ids["booking"]),
        (OTHER_HOSPITAL_ADMIN, b, world.ids["other booking"]),
    ):
        headers = world.headers[role]
        page = await http.get("/v1/admin/records", headers=headers)
        assert page.status_code == 200, page.text
        items = page.json()["items"]
        assert [(x["hospital_id"], x["booking_id"]) for x in items] == [(hospital_id, booking)]
        csv = await http.get("/v1/admin/records.csv", headers=headers)
        assert csv.status_code == 200
        assert booking in csv.text
        assert ({a, b} - {hospital_id}).pop() not in csv.text
        mine = await http.get("/v1/admin/analytics", headers=headers)
        named = await http.get(
            "/v1/admin/analytics", params={"hospital": hospital_id}, headers=headers
        )
        assert mine.status_code == named.status_code == 200
        assert mine.json() == named.json()
    every = await http.get("/v1/admin/records", headers=admin_headers())
    assert {x["hospital_id"] for x in every.json()["items"]} == {a, b}


async def test_only_the_platform_admin_makes_a_hospitals_bans_platform_wide(
    app, http, redis_client, world
):
    """``ban_scope: platform`` bars a patient everywhere: A's admin is refused (403, nothing
    changes, not even the other fields sent with it); the platform admin may."""
    watch = DatabaseWatch(app, redis_client)
    path = f"/v1/admin/hospitals/{world.ids['hospital']}/policy"
    body = {"ban_scope": "platform", "hold_seconds": 600}
    r, changed = await watch.around(
        http.put(path, json=body, headers=world.headers[HOSPITAL_ADMIN])
    )
    assert (r.status_code, r.json()["code"], changed) == (403, "forbidden", []), r.text
    done = await http.put(path, json=body, headers=admin_headers())
    assert done.status_code == 200
    assert done.json()["ban_scope"] == "platform"
