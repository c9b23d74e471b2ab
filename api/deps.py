"""What the routes share: the error they raise, who is asking (patient or admin, and which
hospitals an admin may reach), and the catalog lookups that check it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.accounts.admins import ROOT, AdminScope
from api.answers import LocalTime, refusal_parts
from api.errors import FORBIDDEN, NOT_FOUND, RATE_LIMITED, UNAUTHENTICATED, UNAVAILABLE, ApiError
from api.fastpath.limits import client_address
from api.services import Services
from engine.outcomes import NotFound, SessionState
from engine.settings import Limit


async def limit(s: Services, name: str, subject: str, rule: Limit) -> None:
    """Count one request of ``subject`` against a limit every worker shares (Redis); 429 when
    over it. Call it before any expensive work."""
    wait = await s.shared.hit(name, subject, rule)
    if wait > 0:
        raise RATE_LIMITED.with_retry(wait)


async def limit_address(s: Services, request: Request, name: str, rule: Limit) -> str:
    """The same, per client address (unless ``SLOTENGINE_ADDRESS_LIMITS=off``); the address."""
    address = client_address(request.scope, s.proxies)
    if s.settings.address_limits:
        await limit(s, name, address, rule)
    return address


def services_of(request: Request) -> Services:
    return request.app.state.services


PATIENT_TOKEN = HTTPBearer(
    scheme_name="patient",
    description="A patient's token, from POST /v1/auth/token.",
    auto_error=False,
)
ADMIN_TOKEN = HTTPBearer(
    scheme_name="admin",
    description="The platform's admin token (SLOTENGINE_ADMIN_TOKEN), or an admin account's "
    "from POST /v1/admin/auth/token.",
    auto_error=False,
)
Credentials = HTTPAuthorizationCredentials | None


def token_of(credentials: Credentials) -> str | None:
    """The bearer token, if any (surrounding blanks are no part of it)."""
    token = credentials.credentials.strip() if credentials else ""
    return token or None


def patient_of(
    request: Request, credentials: Annotated[Credentials, Security(PATIENT_TOKEN)]
) -> int:
    token = token_of(credentials)
    patient = services_of(request).tokens.patient_of(token) if token else None
    if patient is None:
        raise UNAUTHENTICATED("A valid patient bearer token is required.")
    return patient


async def admin(
    request: Request, credentials: Annotated[Credentials, Security(ADMIN_TOKEN)]
) -> AdminScope:
    """The acting admin: the platform's root token, or an admin account's token."""
    token = token_of(credentials)
    services = services_of(request)
    if token is not None and services.tokens.is_admin(token):
        return ROOT
    scope = await services.admins.scope_of(token) if token else None
    if scope is None:
        raise UNAUTHENTICATED("A valid admin bearer token is required.")
    return scope


def allow(scope: AdminScope, hospital_id: str) -> None:
    """Refuse (and change nothing) when a hospital admin reaches into another hospital."""
    if not scope.may(hospital_id):
        raise FORBIDDEN("This belongs to another hospital.")


def platform_only(scope: AdminScope) -> None:
    if not scope.platform:
        raise FORBIDDEN("Only the platform admin may do this.")


ServicesDep = Annotated[Services, Depends(services_of)]
PatientDep = Annotated[int, Depends(patient_of)]
AdminDep = Annotated[AdminScope, Depends(admin)]


def outcome_parts(outcome: object, clock: LocalTime) -> tuple[int, str, str]:
    status, code, message, _ = refusal_parts(outcome, clock)
    return status, code, message


async def session_of(s: Services, who: AdminScope, session_id: str) -> SessionState:
    """A doctor-session the acting admin may touch (404 if none, 403 if another hospital's)."""
    state = await s.engine.session_state(session_id)
    if not isinstance(state, SessionState):
        if isinstance(state, NotFound):
            raise NOT_FOUND("No such doctor-session or booking.")
        raise ApiError(*outcome_parts(state, s.clock))
    allow(who, state.hospital_id)
    return state


async def entity_of(s: Services, who: AdminScope, kind: str, entity_id: str) -> dict[str, Any]:
    """A hospital, department or doctor the acting admin may touch."""
    doc = await s.catalog.get(kind, entity_id)
    if doc is None:
        raise NOT_FOUND(f"No such {kind}.")
    allow(who, doc["id"] if kind == "hospital" else doc["hospital_id"])
    return doc


SHED_WAITING = 64  # password checks queued in one worker before it answers 503 at once


def shed(s: Services) -> None:
    """Answer 503 at once rather than queue a flood of password checks behind each other."""
    if s.passwords.waiting >= SHED_WAITING:
        raise UNAVAILABLE(
            "Too many logins at once; retry in a moment.", headers={"Retry-After": "1"}
        )
