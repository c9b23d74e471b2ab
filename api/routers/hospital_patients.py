"""A hospital's view of its patients: who they are (masked), their conduct here, the hospital's
lists and tags. A hospital admin sees only patients with a booking there."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from starlette.convertors import StringConvertor, register_url_convertor

from api.accounts.admins import AdminScope
from api.answers import engine_answer
from api.catalog import patients
from api.deps import (
    AdminDep,
    ServicesDep,
    entity_of,
)
from api.errors import NOT_FOUND
from api.schemas import ListEntryIn, TagsIn
from api.services import Services
from engine.outcomes import (
    Done,
)


class ListKind(StringConvertor):
    """A path segment that is the name of a hospital's list, and nothing else: so that
    ``.../tags`` is never taken for a list (a DELETE there is 405, ``Allow: PUT``)."""

    regex = "blacklist|whitelist"


register_url_convertor("list_kind", ListKind())
PATIENT = "/v1/admin/hospitals/{hospital_id}/patients/{patient_id}"
LIST = PATIENT + "/{kind:list_kind}"
router = APIRouter(tags=["admin"])


async def hospital_patient(
    s: Services, who: AdminScope, hospital_id: str, patient_id: int
) -> dict[str, Any]:
    """A patient the acting admin may see at this hospital: the platform admin sees every
    patient; a hospital admin only those with a booking there, past or present (anyone
    else is 404, indistinguishable from no such patient, and nothing changes)."""
    await entity_of(s, who, "hospital", hospital_id)
    patient = await s.catalog.get("patient", str(patient_id))
    if patient is None or not (
        who.platform or await patients.booked_at(s, hospital_id, patient_id)
    ):
        raise NOT_FOUND("No such patient at this hospital.")
    return patient


@router.get(PATIENT)
async def patient_view(hospital_id: str, patient_id: int, s: ServicesDep, who: AdminDep) -> Any:
    """A patient as this hospital may see them: name, masked document, birth year,
    bookings and conduct here, the hospital's list entries and tags. A hospital admin sees
    only patients with a booking there."""
    patient = await hospital_patient(s, who, hospital_id, patient_id)
    return await patients.view(s, hospital_id, patient)


@router.put(PATIENT + "/tags")
async def put_tags(
    hospital_id: str, patient_id: int, body: TagsIn, s: ServicesDep, who: AdminDep
) -> Any:
    """Tags (groups) this hospital gives a patient; an empty list removes them."""
    await hospital_patient(s, who, hospital_id, patient_id)
    await patients.set_tags(s, hospital_id, patient_id, body.tags)
    return {"patient_id": patient_id, "tags": sorted(set(body.tags))}


@router.put(LIST)
async def put_list_entry(
    hospital_id: str,
    patient_id: int,
    kind: Literal["blacklist", "whitelist"],
    body: ListEntryIn,
    s: ServicesDep,
    who: AdminDep,
) -> Any:
    """Put a patient on the hospital's blacklist (a ban set by hand, until ``until``) or
    whitelist (lifts any ban; the rules do not ban them here until ``until``)."""
    await hospital_patient(s, who, hospital_id, patient_id)
    until = body.until.timestamp() if body.until else None
    outcome = await patients.put_entry(
        s, hospital_id, kind, patient_id, body.reason, until, who.admin_id
    )
    if not isinstance(outcome, Done):
        return engine_answer(outcome, s.clock)
    return {
        "patient_id": patient_id,
        kind: {"reason": body.reason, "until": s.clock.iso(until)},
    }


@router.delete(LIST)
async def drop_list_entry(
    hospital_id: str,
    patient_id: int,
    kind: Literal["blacklist", "whitelist"],
    s: ServicesDep,
    who: AdminDep,
) -> Any:
    await hospital_patient(s, who, hospital_id, patient_id)
    outcome = await patients.drop_entry(s, hospital_id, kind, patient_id)
    if outcome is None:
        raise NOT_FOUND(f"The patient is not on the {kind}.")
    if not isinstance(outcome, Done):
        return engine_answer(outcome, s.clock)
    return {"patient_id": patient_id, kind: None}


@router.get("/v1/admin/hospitals/{hospital_id}/lists/{kind}")
async def list_entries(
    hospital_id: str, kind: Literal["blacklist", "whitelist"], s: ServicesDep, who: AdminDep
) -> Any:
    await entity_of(s, who, "hospital", hospital_id)
    found = await patients.entries(s, hospital_id, kind)
    return [{"patient_id": p, **e} for p, e in sorted(found.items())]


@router.get("/v1/admin/hospitals/{hospital_id}/tags/{tag}")
async def tagged_patients(hospital_id: str, tag: str, s: ServicesDep, who: AdminDep) -> Any:
    await entity_of(s, who, "hospital", hospital_id)
    return {"tag": tag, "patients": await patients.tagged(s, hospital_id, tag)}
