"""The back office's routes beyond the catalog: booking records (paged, CSV), the HIS link
(configuration, schedule push and pull, the delivery outbox), and analytics (numbers, charts,
the admin page). A hospital admin sees and touches only its own hospital; the HIS endpoints
are set by the platform admin only (the server calls them: no admin may point it elsewhere).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import date as Date
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StrictBool

from api.answers import content, declared
from api.catalog.his_import import import_schedules, pull
from api.csv_export import csv_stream
from api.deps import AdminDep, ServicesDep, entity_of, platform_only
from api.errors import (
    ADDRESS_NOT_ALLOWED,
    CONFLICT,
    HIS_REJECTED,
    HIS_UNAVAILABLE,
    INVALID_CURSOR,
    INVALID_REQUEST,
    NOT_FOUND,
    OUTCOME_UNKNOWN,
    UNAVAILABLE,
    ApiError,
)
from api.schemas import Day
from api.services import Services
from engine.backoffice.analytics import Report, Tally
from engine.backoffice.egress import Egress
from engine.backoffice.record import STATES, Record
from engine.backoffice.record_book import RecordQuery
from engine.errors import EgressRefused, HisRejected, HisUnavailable

PAGE_MAX = 500
CSV_COLUMNS = (
    "booking_id",
    "hospital_id",
    "department_id",
    "doctor_id",
    "session_id",
    "date",
    "period",
    "slot_no",
    "slot_time",
    "patient_id",
    "state",
    "cancelled_by",
    "fee",
    "paid",
    "refunded",
    "made_at",
    "changed_at",
    "his_no",
    "insurance_no",
)
MAX_REPORT_DAYS = 366
REPORT_SECONDS = 60.0  # an analytics report is reused this long (its charts ask for it 8 times)
DEFAULT_DAYS = 90
PAGE = Path(__file__).parent.parent / "admin_page.html"


class HisConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    his_url: HttpUrl
    insurance_url: HttpUrl | None = None
    pull: StrictBool = True


class SchedulesIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schedules: list[dict[str, Any]] = Field(max_length=1000)


class Filters(BaseModel):
    """The records filters, from the query string."""

    hospital: str | None = Field(default=None, max_length=80)
    department: str | None = Field(default=None, max_length=80)
    doctor: str | None = Field(default=None, max_length=80)
    patient: int | None = Field(default=None, ge=0)
    state: Literal[STATES] | None = None  # type: ignore[valid-type]
    from_: Day | None = Field(default=None, alias="from")
    to: Day | None = None


async def record_query(s: Services, who: Any, f: Filters) -> RecordQuery:
    """The query an admin may run: a hospital admin's is always about its own hospital; every
    named department or doctor must be one the admin may see (403 otherwise, 404 unknown)."""
    hospital = f.hospital
    if hospital is not None:
        await entity_of(s, who, "hospital", hospital)
    elif not who.platform:
        hospital = who.hospital_id
    for kind, value in (("department", f.department), ("doctor", f.doctor)):
        if value is not None:
            await entity_of(s, who, kind, value)
    if f.from_ is not None and f.to is not None and f.to < f.from_:
        raise INVALID_REQUEST("to is before from.")
    return RecordQuery(
        hospital_id=hospital,
        department_id=f.department,
        doctor_id=f.doctor,
        patient_id=f.patient,
        state=f.state,
        start=_midnight(s, f.from_),
        end=_midnight(s, f.to + timedelta(days=1)) if f.to is not None else None,
    )


def _midnight(s: Services, day: Date | None) -> float | None:
    if day is None:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=s.clock.zone).timestamp()


def record_body(s: Services, r: Record) -> dict[str, Any]:
    """A record as an admin sees it. The patient's age stays inside (the analytics use it):
    ages on several visit dates would narrow the birth date down, and with it the ID number
    behind its mask."""
    body = r.to_dict()
    body["slot_time"] = s.clock.iso(r.slot_at)
    body["made_at"] = s.clock.iso(r.made_at)
    body["changed_at"] = s.clock.iso(r.changed_at)
    del body["slot_at"], body["was_confirmed"], body["age"]
    return body


async def csv_rows(s: Services, query: RecordQuery) -> AsyncIterator[str]:
    """The records of ``query`` as CSV, through the one CSV writer (``csv_export``)."""

    async def chunks() -> AsyncIterator[list[dict[str, Any]]]:
        async for chunk in s.records.scan(query):
            yield [record_body(s, r) for r in chunk]

    async for text in csv_stream(CSV_COLUMNS, chunks()):
        yield text


class Reports:
    """Analytics reports, kept ``REPORT_SECONDS`` per (hospital, range); one worker builds a
    report while the others asking for the same one wait for it (other reports go on)."""

    def __init__(self) -> None:
        self._kept: dict[tuple[Any, ...], tuple[float, Report]] = {}
        self._locks: dict[tuple[Any, ...], asyncio.Lock] = {}

    async def get(self, s: Services, hospital: str | None, start: Date, end: Date) -> Report:
        """The report of visit dates ``start`` to ``end`` (inclusive): the records' side from
        the daily tallies the indexer keeps, the sales from the sessions of those dates."""
        key = (hospital, start, end)
        async with self._locks.setdefault(key, asyncio.Lock()):
            kept = self._kept.get(key)
            if kept is not None and time.monotonic() - kept[0] < REPORT_SECONDS:
                return kept[1]
            dates = [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]
            low, high = _midnight(s, start), _midnight(s, end + timedelta(days=1))
            if await s.records.tallies_ready():
                tally = await s.records.tally(hospital, dates)
            else:  # being made after an upgrade: read the records themselves meanwhile
                tally = Tally()
                query = RecordQuery(hospital_id=hospital, start=low, end=high)
                async for chunk in s.records.scan(query):
                    await asyncio.to_thread(tally.add, chunk)
            hospitals = [hospital] if hospital else [h["id"] for h in await s.catalog.hospitals()]
            sales = [x for h in hospitals for x in await s.records.sales(h, low, high)]
            report = await asyncio.to_thread(tally.report, sales)
            if len(self._kept) > 64:
                self._kept.clear()
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            self._kept[key] = (time.monotonic(), report)
            return report


def not_allowed(exc: EgressRefused) -> ApiError:
    """The answer to a link the server may not call."""
    return ADDRESS_NOT_ALLOWED(
        f"The server may not call {exc.host}: it {exc.reason}. HIS links must point to public "
        "addresses (or into the networks the operator allows).",
    )


router = APIRouter(tags=["back office"])


reports = Reports()  # one per worker


# NOT_FOUND: a hospital, department or doctor named in the query (here and below)
@router.get("/v1/admin/records", responses=declared(INVALID_CURSOR, NOT_FOUND))
async def records(
    s: ServicesDep,
    who: AdminDep,
    f: Annotated[Filters, Query()],
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> dict[str, Any]:
    """Booking records in slot-time order, filtered by hospital, department, doctor,
    patient, state and visit dates (``from``/``to`` inclusive, local dates); ``next_cursor``
    gives the next page. ``total`` is given when it is cheap to know."""
    query = await record_query(s, who, f)
    try:
        page = await s.records.page(query, limit, cursor)
    except ValueError as exc:
        raise INVALID_CURSOR("This cursor is not for this query.") from exc
    return {
        "items": [record_body(s, r) for r in page.records],
        "next_cursor": page.next_cursor,
        "total": page.total,
    }


@router.get(
    "/v1/admin/records.csv",
    response_class=Response,
    responses=content("text/csv") | declared(NOT_FOUND),
)
async def records_csv(
    s: ServicesDep, who: AdminDep, f: Annotated[Filters, Query()]
) -> StreamingResponse:
    """The same records as CSV (UTF-8 with a BOM), streamed."""
    query = await record_query(s, who, f)
    name = "-".join(x for x in ("records", query.hospital_id, f.from_ and str(f.from_)) if x)
    return StreamingResponse(
        csv_rows(s, query),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


# ----- the HIS link --------------------------------------------------------------------


@router.put("/v1/admin/hospitals/{hospital_id}/his", responses=declared(ADDRESS_NOT_ALLOWED))
async def set_his(
    hospital_id: str, body: HisConfigIn, s: ServicesDep, who: AdminDep
) -> dict[str, Any]:
    """Where the hospital's HIS (and its social-insurance filing) answer. Platform only.
    422 ``address_not_allowed`` (and nothing changed) when the server may not call one of
    them: loopback, private, link-local (cloud metadata) ... outside ``his_allow_networks``."""
    platform_only(who)
    await entity_of(s, who, "hospital", hospital_id)
    config = {
        "his_url": str(body.his_url).rstrip("/"),
        "insurance_url": str(body.insurance_url).rstrip("/") if body.insurance_url else "",
        "pull": body.pull,
    }
    egress = Egress.from_settings(s.settings)
    for url in (config["his_url"], config["insurance_url"]):
        if url:
            try:
                await egress.check_url(url)
            except EgressRefused as exc:
                raise not_allowed(exc) from exc
    await s.deliveries.configure(hospital_id, config)
    return {"hospital_id": hospital_id, **config}


@router.get("/v1/admin/hospitals/{hospital_id}/his")
async def get_his(hospital_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """The HIS link and its delivery counts (pending, failed)."""
    await entity_of(s, who, "hospital", hospital_id)
    config = await s.deliveries.config(hospital_id)
    if config is None:
        raise NOT_FOUND("This hospital has no HIS configured.")
    return {
        "hospital_id": hospital_id,
        **config,
        "deliveries": await s.deliveries.counts(hospital_id),
    }


@router.delete("/v1/admin/hospitals/{hospital_id}/his")
async def drop_his(hospital_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    platform_only(who)
    await entity_of(s, who, "hospital", hospital_id)
    await s.deliveries.configure(hospital_id, None)
    return {"hospital_id": hospital_id, "his": None}


@router.post(
    "/v1/admin/hospitals/{hospital_id}/his/schedules", responses=declared(CONFLICT, OUTCOME_UNKNOWN)
)
async def push_schedules(
    hospital_id: str, body: SchedulesIn, s: ServicesDep, who: AdminDep
) -> dict[str, Any]:
    """The HIS pushes schedules (new ones are released as doctor-sessions) and
    suspensions (停诊). Idempotent; each schedule's fate is in the answer. 503 when the
    engine could not take some of them: push them again (the rest were taken)."""
    await entity_of(s, who, "hospital", hospital_id)
    result = await import_schedules(s, hospital_id, body.schedules)
    if result["failed"]:
        raise UNAVAILABLE(
            "The engine could not take some schedules; push them again.",
            result=result,
        )
    return result


@router.post(
    "/v1/admin/hospitals/{hospital_id}/his/pull",
    responses=declared(
        ADDRESS_NOT_ALLOWED, CONFLICT, HIS_REJECTED, HIS_UNAVAILABLE, OUTCOME_UNKNOWN
    ),
)
async def pull_now(hospital_id: str, s: ServicesDep, who: AdminDep) -> dict[str, Any]:
    """Pull what changed at the HIS now (it is also pulled every 30 s)."""
    await entity_of(s, who, "hospital", hospital_id)
    try:
        result = await pull(s, hospital_id)
    except HisUnavailable as exc:
        raise HIS_UNAVAILABLE(f"The HIS did not answer: {exc}") from exc
    except HisRejected as exc:
        raise HIS_REJECTED(f"The HIS refused: {exc}") from exc
    except EgressRefused as exc:  # e.g. its name now resolves to a private address
        raise not_allowed(exc) from exc
    if result is None:
        raise NOT_FOUND("This hospital has no HIS configured.")
    return result


@router.get("/v1/admin/hospitals/{hospital_id}/his/deliveries")
async def deliveries(
    hospital_id: str,
    s: ServicesDep,
    who: AdminDep,
    status: Literal["pending", "failed"] = "pending",
    limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100,
) -> dict[str, Any]:
    """What is still to go to the HIS and the insurance, or what gave up."""
    await entity_of(s, who, "hospital", hospital_id)
    return {
        "counts": await s.deliveries.counts(hospital_id),
        "items": await s.deliveries.listing(hospital_id, status, limit),
    }


@router.post("/v1/admin/hospitals/{hospital_id}/his/deliveries/retry")
async def retry(hospital_id: str, s: ServicesDep, who: AdminDep) -> dict[str, int]:
    """Put every failed delivery back in line."""
    await entity_of(s, who, "hospital", hospital_id)
    return {"retried": await s.deliveries.retry_failed(hospital_id, s.now())}


@router.delete("/v1/admin/hospitals/{hospital_id}/his/deliveries/{target}/{booking_id}")
async def drop_delivery(
    hospital_id: str,
    target: Literal["his", "insurance"],
    booking_id: str,
    s: ServicesDep,
    who: AdminDep,
) -> dict[str, Any]:
    """Forget one failed delivery (it will not be sent); only a failed one."""
    await entity_of(s, who, "hospital", hospital_id)
    if not await s.deliveries.drop(hospital_id, target, booking_id):
        raise NOT_FOUND("No such failed delivery of this hospital.")
    return {"hospital_id": hospital_id, "target": target, "booking_id": booking_id}


@router.get("/v1/admin/his/deliveries/failed")
async def failed_everywhere(
    s: ServicesDep, who: AdminDep, limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 100
) -> dict[str, Any]:
    """Failed HIS and insurance deliveries of every hospital, newest first. Platform only."""
    platform_only(who)
    return {"items": await s.deliveries.failed_everywhere(limit)}


# ----- analytics -----------------------------------------------------------------------


async def report_for(
    s: Services, who: Any, hospital: str | None, start: Date | None, end: Date | None
) -> Report:
    if hospital is not None:
        await entity_of(s, who, "hospital", hospital)
    elif not who.platform:
        hospital = who.hospital_id
    today = datetime.fromtimestamp(s.now(), s.clock.zone).date()
    end = end or today
    start = start or end - timedelta(days=DEFAULT_DAYS)
    if end < start:
        raise INVALID_REQUEST("to is before from.")
    if (end - start).days > MAX_REPORT_DAYS:
        raise INVALID_REQUEST(f"A report covers at most {MAX_REPORT_DAYS} days.")
    return await reports.get(s, hospital, start, end)


@router.get("/v1/admin/analytics", responses=declared(NOT_FOUND))
async def analytics(
    s: ServicesDep,
    who: AdminDep,
    hospital: Annotated[str | None, Query(max_length=80)] = None,
    from_: Annotated[Day | None, Query(alias="from")] = None,
    to: Annotated[Day | None, Query()] = None,
) -> dict[str, Any]:
    """No-show and cancellation rates by age band, department, weekday, period and lead
    time; fill rates and time to sell out (default: the last 90 days)."""
    return (await report_for(s, who, hospital, from_, to)).to_dict()


@router.get(
    "/v1/admin/analytics/charts/{name}.{fmt}",
    response_class=Response,
    responses=content("image/svg+xml", "image/png"),
)
async def chart(
    name: str,
    fmt: Literal["svg", "png"],
    s: ServicesDep,
    who: AdminDep,
    hospital: Annotated[str | None, Query(max_length=80)] = None,
    from_: Annotated[Day | None, Query(alias="from")] = None,
    to: Annotated[Day | None, Query()] = None,
) -> Response:
    from api import charts

    if name not in charts.CHARTS:
        raise NOT_FOUND(f"No such chart; there are {list(charts.CHARTS)}.")
    report = await report_for(s, who, hospital, from_, to)
    image = await asyncio.to_thread(charts.render, report, name, fmt)
    media = "image/svg+xml" if fmt == "svg" else "image/png"
    return Response(image, media_type=media)


@router.get("/admin", response_class=HTMLResponse, include_in_schema=False)
async def admin_page() -> HTMLResponse:
    """The back office's analytics page (it asks for an admin token itself)."""
    return HTMLResponse(PAGE.read_text(encoding="utf-8"))
