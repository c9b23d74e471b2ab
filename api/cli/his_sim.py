"""A simulated HIS and social-insurance system (社保备案), run as its own small HTTP service.

It behaves like the hospital systems the engine delivers to (``engine/backoffice/his.py``):
bookings and filings are idempotent by the booking's ``key`` and get sequential numbers
(``H000001``, ``SB000001``); schedules carry the HIS's own ``updated_at``, pulled with a cursor
and pushed to the platform when the simulation's admin changes them. Admin endpoints script
failures: down, a random failure rate, a delay. State lives in memory: this is somebody else's
system.

    python -m api.his_sim --host 127.0.0.1 --port 8100 [--push-url URL] [--push-token T]
                          [--hospital H]
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import date as Date
from typing import Any, Literal

import click
import httpx
import uvicorn
from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

Period = Literal["AM", "PM", "EVENING"]


class Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class BookingIn(Loose):
    key: str = Field(min_length=1, max_length=128, description="our booking id: idempotency key")
    hospital_id: str = Field(min_length=1, max_length=80)
    department_id: str = Field(min_length=1, max_length=80)
    doctor_id: str = Field(min_length=1, max_length=80)
    session_id: str = Field(min_length=1, max_length=80)
    his_schedule_id: str = Field(default="", pattern=r"^[A-Za-z0-9_-]{0,40}$")
    date: Date
    period: Period
    slot_no: int = Field(ge=1, le=1000)
    slot_at: float = Field(description="epoch seconds")
    patient_id: int
    fee: int = Field(ge=0, description="fen")


class CancelIn(Loose):
    key: str = Field(min_length=1, max_length=128)
    reason: str = Field(default="", max_length=200)


class ScheduleIn(Loose):
    id: str = Field(
        pattern=r"^[A-Za-z0-9_-]{1,40}$", description="the HIS schedule id (no dots: ours)"
    )
    doctor_id: str = Field(min_length=1, max_length=80)
    date: Date
    period: Period
    capacity: int = Field(ge=1, le=1000)
    first_slot_at: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    slot_minutes: int = Field(ge=0, le=240)
    fee: int = Field(ge=0, le=10_000_000, description="fen")
    status: Literal["active", "suspended"] = "active"


class OutageIn(Loose):
    """The whole failure state: a field left out goes back to healthy (0)."""

    down: bool
    fail_rate: float = Field(default=0.0, ge=0.0, le=1.0, description="fraction answered 503")
    delay_ms: int = Field(default=0, ge=0, le=60_000, description="wait before answering")


class SimError(Exception):
    """An answer other than 2xx: ``{"code", "message"}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Remote:
    """The simulated systems' memory. Every method runs without awaiting, so each is atomic on
    the one event loop; handlers still hold ``lock`` around changes, so that stays true."""

    hospital_id: str | None = None
    bookings: dict[str, dict[str, Any]] = field(default_factory=dict)  # key → booking
    his_nos: dict[str, str] = field(default_factory=dict)  # his_no → key
    filings: dict[str, dict[str, Any]] = field(default_factory=dict)  # key → filing
    schedules: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → schedule
    down: bool = False
    fail_rate: float = 0.0
    delay_ms: int = 0
    calls: int = 0
    rejected_while_down: int = 0
    last_stamp: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    rng: random.Random = field(default_factory=random.Random)

    def stamp(self) -> float:
        """Epoch now, strictly above every stamp given before: a change made after a pull
        answered ``now`` always has ``updated_at > now``, so a cursor never skips one."""
        self.last_stamp = max(time.time(), self.last_stamp + 1e-6)
        return self.last_stamp

    def check_hospital(self, booking: BookingIn) -> None:
        if self.hospital_id is not None and booking.hospital_id != self.hospital_id:
            raise SimError(422, "wrong_hospital", f"this HIS serves {self.hospital_id} only")

    def book(self, booking: BookingIn) -> tuple[str, bool]:
        """(HIS number, created): the same key answers its first number, cancelled or not."""
        self.check_hospital(booking)
        known = self.bookings.get(booking.key)
        if known is not None:
            known["sends"] += 1
            return known["his_no"], False
        his_no = f"H{len(self.bookings) + 1:06d}"
        self.bookings[booking.key] = {
            **booking.model_dump(mode="json"),
            "his_no": his_no,
            "cancelled": False,
            "cancel_reason": None,
            "sends": 1,
            "created_at": time.time(),
        }
        self.his_nos[his_no] = booking.key
        return his_no, True

    def cancel(self, his_no: str, key: str, reason: str) -> None:
        """Cancel once; again is a no-op. The key must be the one the booking was made with."""
        booked_key = self.his_nos.get(his_no)
        if booked_key is None:
            raise SimError(404, "not_found", f"no HIS booking {his_no}")
        if booked_key != key:
            raise SimError(409, "key_mismatch", f"HIS booking {his_no} was not made for {key}")
        booking = self.bookings[key]
        if not booking["cancelled"]:
            booking.update(cancelled=True, cancel_reason=reason)

    def file(self, booking: BookingIn) -> tuple[str, bool]:
        """(filing number, created), idempotent by key."""
        self.check_hospital(booking)
        known = self.filings.get(booking.key)
        if known is not None:
            known["sends"] += 1
            return known["filing_no"], False
        filing_no = f"SB{len(self.filings) + 1:06d}"
        self.filings[booking.key] = {
            **booking.model_dump(mode="json"),
            "filing_no": filing_no,
            "sends": 1,
            "created_at": time.time(),
        }
        return filing_no, True

    def put_schedules(self, schedules: list[ScheduleIn]) -> list[dict[str, Any]]:
        """Add or replace by id, each with a fresh ``updated_at``."""
        done = []
        for s in schedules:
            doc = {**s.model_dump(mode="json"), "updated_at": self.stamp()}
            self.schedules[s.id] = doc
            done.append(dict(doc))
        return done

    def suspend(self, schedule_id: str) -> dict[str, Any]:
        doc = self.schedules.get(schedule_id)
        if doc is None:
            raise SimError(404, "not_found", f"no schedule {schedule_id}")
        doc.update(status="suspended", updated_at=self.stamp())
        return dict(doc)

    def changed_since(self, since: float) -> list[dict[str, Any]]:
        changed = [dict(s) for s in self.schedules.values() if s["updated_at"] > since]
        return sorted(changed, key=lambda s: s["updated_at"])

    def stats(self) -> dict[str, int]:
        return {
            "bookings": len(self.bookings),
            "cancelled": sum(b["cancelled"] for b in self.bookings.values()),
            "filings": len(self.filings),
            "schedules": len(self.schedules),
            "calls": self.calls,
            "rejected_while_down": self.rejected_while_down,
        }


def create_app(
    push_url: str | None = None,
    push_token: str | None = None,
    hospital_id: str | None = None,
    *,
    push_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The simulation's app. With ``push_url``, every schedule change is also POSTed there as
    ``{"schedules": [...]}`` (plus ``hospital_id`` when set) with ``Bearer push_token``;
    ``push_transport`` lets tests deliver those pushes in-process."""
    app = FastAPI(title="Simulated HIS and social insurance", version="1")
    remote = Remote(hospital_id=hospital_id)
    app.state.remote = remote
    push_lock = asyncio.Lock()  # one push at a time, in the order of the changes

    @app.exception_handler(SimError)
    async def sim_error(request: Request, exc: SimError) -> JSONResponse:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.status)

    async def gate() -> None:
        """A call to the HIS or social insurance: delayed, then maybe refused, as scripted."""
        remote.calls += 1
        if remote.delay_ms:
            await asyncio.sleep(remote.delay_ms / 1000)
        if remote.down or remote.rng.random() < remote.fail_rate:
            remote.rejected_while_down += 1
            raise SimError(503, "unavailable", "the HIS is unavailable (simulated)")

    async def push(schedules: list[dict[str, Any]]) -> None:
        if push_url is None:
            return
        body: dict[str, Any] = {"schedules": schedules}
        if hospital_id is not None:
            body["hospital_id"] = hospital_id
        headers = {"Authorization": f"Bearer {push_token}"} if push_token else {}
        async with push_lock:
            try:
                async with httpx.AsyncClient(transport=push_transport, timeout=5.0) as client:
                    response = await client.post(push_url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                log.warning("schedule push to %s failed: %s: %s", push_url, type(exc).__name__, exc)
                return
        if not response.is_success:
            log.warning("schedule push to %s answered %s", push_url, response.status_code)

    # ----- the HIS ------------------------------------------------------------------------

    @app.post("/his/bookings", dependencies=[Depends(gate)])
    async def book(booking: BookingIn) -> dict[str, Any]:
        async with remote.lock:
            his_no, created = remote.book(booking)
        return {"his_no": his_no, "created": created}

    @app.post("/his/bookings/{his_no}/cancel", dependencies=[Depends(gate)])
    async def cancel(his_no: str, body: CancelIn) -> dict[str, Any]:
        async with remote.lock:
            remote.cancel(his_no, body.key, body.reason)
        return {"his_no": his_no, "cancelled": True}

    @app.get("/his/schedules")
    async def schedules(since: float = 0.0) -> dict[str, Any]:
        remote.calls += 1
        answer: dict[str, Any] = {"schedules": remote.changed_since(since), "now": remote.stamp()}
        if hospital_id is not None:
            answer["hospital_id"] = hospital_id
        return answer

    @app.get("/his/bookings")
    async def bookings() -> list[dict[str, Any]]:
        """Every booking with its ``sends`` (for tests and demos; never refused)."""
        return [dict(b) for b in remote.bookings.values()]

    @app.get("/his/stats")
    async def stats() -> dict[str, int]:
        return remote.stats()

    # ----- social insurance ---------------------------------------------------------------

    @app.post("/insurance/filings", dependencies=[Depends(gate)])
    async def file(booking: BookingIn) -> dict[str, Any]:
        async with remote.lock:
            filing_no, created = remote.file(booking)
        return {"filing_no": filing_no, "created": created}

    @app.get("/insurance/filings")
    async def filings() -> list[dict[str, Any]]:
        return [dict(f) for f in remote.filings.values()]

    # ----- the simulation's admin ---------------------------------------------------------

    @app.post("/his/admin/schedules")
    async def put_schedules(body: list[ScheduleIn], tasks: BackgroundTasks) -> dict[str, Any]:
        async with remote.lock:
            done = remote.put_schedules(body)
        tasks.add_task(push, done)
        return {"schedules": done}

    @app.post("/his/admin/schedules/{schedule_id}/suspend")
    async def suspend(schedule_id: str, tasks: BackgroundTasks) -> dict[str, Any]:
        async with remote.lock:
            doc = remote.suspend(schedule_id)
        tasks.add_task(push, [doc])
        return doc

    @app.post("/his/admin/outage")
    async def outage(body: OutageIn) -> dict[str, Any]:
        async with remote.lock:
            remote.down = body.down
            remote.fail_rate = body.fail_rate
            remote.delay_ms = body.delay_ms
        return body.model_dump()

    return app


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True)
@click.option("--push-url", default=None, help="where to POST schedule changes")
@click.option("--push-token", default=None, envvar="HIS_SIM_PUSH_TOKEN", help="their bearer token")
@click.option("--hospital", default=None, help="serve only this hospital id")
def main(
    host: str, port: int, push_url: str | None, push_token: str | None, hospital: str | None
) -> None:
    """Run the simulated HIS and social-insurance system."""
    logging.basicConfig(level=logging.INFO)
    uvicorn.run(create_app(push_url, push_token, hospital), host=host, port=port)


if __name__ == "__main__":
    main()
