"""Registration, login, logout, a new password; my conduct and notifications."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from api.accounts.auth import DUMMY_HASH, check_password, hash_password
from api.accounts.identity import check_document, mask_document, normalize_document, normalize_phone
from api.answers import declared
from api.deps import (
    PatientDep,
    ServicesDep,
    limit,
    limit_address,
    shed,
)
from api.errors import CONFLICT, RATE_LIMITED, UNAUTHENTICATED, WRONG_PASSWORD, invalid_field
from api.schemas import Credentials, PasswordChangeIn, PatientIn
from engine.store.notices import patient_notices

router = APIRouter()


@router.post(
    "/v1/patients", responses=declared(CONFLICT, RATE_LIMITED), status_code=201, tags=["patients"]
)
async def register(body: PatientIn, request: Request, s: ServicesDep) -> dict[str, int]:
    """Register a patient (实名). A resident ID number must carry a valid GB 11643 check
    character and the birth date given; other documents are format-checked. The phone is
    kept in E.164, so one number is one account however it is typed; the document is kept
    only as a keyed hash (one account per document) and a mask that hides the birth date.
    Limited per client address and per phone before any password is hashed."""
    await limit_address(s, request, "register", s.settings.limit_register_address)
    phone = normalize_phone(body.phone)
    if phone is None:
        raise invalid_field("phone", "not a valid phone number")
    problem = check_document(body.id_type, body.id_number, body.birth_date)
    if problem is not None:
        raise invalid_field("id_number", problem)
    await limit(s, "register-phone", phone, s.settings.limit_register_phone)
    number = normalize_document(body.id_type, body.id_number)
    hashed_id = number if body.id_type == "resident" else f"{body.id_type}:{number}"
    patient_id = await s.catalog.register_patient(
        {
            "name": body.name,
            "phone": phone,
            "id_type": body.id_type,
            "id_hash": s.tokens.hash_id(hashed_id),
            "id_masked": mask_document(body.id_type, number),
            "birth_date": body.birth_date.isoformat(),
            "password_hash": await s.passwords.run(hash_password, body.password),
        }
    )
    if patient_id is None:
        raise CONFLICT("This phone or ID number is already registered.")
    return {"id": patient_id}


@router.post("/v1/auth/token", responses=declared(UNAUTHENTICATED, RATE_LIMITED), tags=["patients"])
async def token(body: Credentials, request: Request, s: ServicesDep) -> dict[str, str]:
    """A bearer token for a patient (limited per client address and per phone)."""
    await limit_address(s, request, "login", s.settings.limit_login_address)
    phone = normalize_phone(body.phone) or body.phone  # as stored (E.164), else as typed
    await limit(s, "login-phone", phone, s.settings.limit_login_phone)
    shed(s)
    patient = await s.catalog.patient_by_phone(phone)
    hashed = patient["password_hash"] if patient else DUMMY_HASH  # same work either way
    ok = await s.passwords.run(check_password, hashed, body.password)
    if patient is None or not ok:
        raise UNAUTHENTICATED("Wrong phone or password.")
    version = await s.token_version(patient["id"])
    return {
        "access_token": s.tokens.issue(patient["id"], version=version),
        "token_type": "bearer",
    }


@router.post("/v1/auth/logout", tags=["patients"])
async def logout(s: ServicesDep, patient: PatientDep) -> dict[str, Any]:
    """Revoke every token of the caller (on every device), at once on every worker."""
    await s.revoke_tokens(patient)
    return {"patient_id": patient, "revoked": True}


@router.post("/v1/me/password", responses=declared(WRONG_PASSWORD, RATE_LIMITED), tags=["patients"])
async def change_password(
    body: PasswordChangeIn, s: ServicesDep, patient: PatientDep
) -> dict[str, str]:
    """A new password: every older token stops working; the answer carries a new one."""
    await limit(s, "password", str(patient), s.settings.limit_login_phone)
    shed(s)
    doc = await s.catalog.get("patient", str(patient))
    if doc is None:
        raise UNAUTHENTICATED("A valid patient bearer token is required.")
    if not await s.passwords.run(check_password, doc["password_hash"], body.current_password):
        raise WRONG_PASSWORD("The current password is wrong.")
    await s.catalog.set_password(patient, await s.passwords.run(hash_password, body.new_password))
    version = await s.revoke_tokens(patient)
    return {"access_token": s.tokens.issue(patient, version=version), "token_type": "bearer"}


@router.get("/v1/me/conduct", tags=["patients"])
async def my_conduct(s: ServicesDep, patient: PatientDep) -> dict[str, Any]:
    """My violations (no-shows, cancellations) and bans, per hospital or platform-wide.

    ``bans`` are what the rules earned; ``banned_until`` is the ban in force (a hospital
    may have lifted one by hand, spared a whitelisted patient, or set one itself)."""
    now = s.now()
    scopes = await s.engine.conduct(patient)
    out = []
    for scope, conduct in scopes.items():
        stored = await s.engine.bans(scope, patient)
        until = stored if stored is not None and stored > now else None
        out.append(
            {
                "scope": scope,
                "violations": [
                    {"kind": v.kind, "booking_id": v.booking_id, "at": s.clock.iso(v.at)}
                    for v in conduct.violations
                ],
                "bans": [
                    {"from": s.clock.iso(b.start), "until": s.clock.iso(b.until)}
                    for b in conduct.bans
                ],
                "banned_until": s.clock.iso(until),
            }
        )
    return {"patient_id": patient, "banned": any(x["banned_until"] for x in out), "scopes": out}


@router.get("/v1/me/notifications", tags=["patients"])
async def my_notifications(s: ServicesDep, patient: PatientDep) -> list[dict[str, Any]]:
    """My latest notifications (confirmed, hold expiring, expired, cancelled, ...)."""
    return await patient_notices(s.engine.store.client, s.engine.store.keys, patient)
