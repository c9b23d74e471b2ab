"""Each worker's view of every doctor-session's stock, kept fresh by the engine's pub/sub.

It answers browsing without touching the engine, and lets the booking fast path refuse a
sold-out, not-yet-open, closed or suspended session from pre-built bytes. Idempotency comes
first: once a session cannot be booked, the view also learns who holds its bookings, and a
request from one of them goes to the engine, which answers it with the booking it already has.
A sold-out answer lists alternatives (other doctors of the department, other dates with
stock); the bytes are rebuilt only when something in that department changed.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from api.answers import LocalTime
from api.errors import error_body
from engine.outcomes import SessionFacts

OPEN, SCHEDULED, SOLD_OUT, CLOSED, SUSPENDED = (
    "open",
    "scheduled",
    "sold_out",
    "closed",
    "suspended",
)
MAX_ALTERNATIVES = 5
REBUILD_SECONDS = 0.5
CODES = {SOLD_OUT: "sold_out", SCHEDULED: "not_open", CLOSED: "closed", SUSPENDED: "suspended"}


@dataclass(slots=True)
class SessionView(SessionFacts):
    """A doctor-session as this worker serves its stock."""

    opens_at: float
    closes_at: float | None
    status: str
    remaining: int
    version: int = -1  # the engine's DoctorSession.version this view reflects
    holders: frozenset[int] | None = None  # patients with a booking here; None = not known
    day: int = 0  # the visit date as a day number, for "nearest date" alternatives

    def __post_init__(self) -> None:
        self.day = datetime.date.fromisoformat(self.date).toordinal()

    def status_at(self, now: float) -> str:
        """The status as this worker knows it, with the clock applied on top."""
        if self.status == SUSPENDED:
            return SUSPENDED
        if self.closes_at is not None and now >= self.closes_at:
            return CLOSED
        if now < self.opens_at:
            return SCHEDULED
        if self.status == SCHEDULED:
            return OPEN  # opened by the clock; the engine's notice may still be on its way
        return self.status

    def public(self, clock: LocalTime, now: float) -> dict[str, Any]:
        return {
            "id": self.session_id,
            "hospital_id": self.hospital_id,
            "department_id": self.department_id,
            "doctor_id": self.doctor_id,
            "date": self.date,
            "period": self.period,
            "capacity": self.capacity,
            "remaining": self.remaining,
            "status": self.status_at(now),
            "opens_at": clock.iso(self.opens_at),
        }


class Availability:
    def __init__(self, clock: LocalTime) -> None:
        self.clock = clock
        self.sessions: dict[str, SessionView] = {}
        self.by_department: dict[str, list[SessionView]] = {}
        # session → (status, department version, built at, answer)
        self._answers: dict[str, tuple[str, int, float, tuple[int, bytes, str]]] = {}
        self._versions: dict[str, int] = {}  # department → changes seen
        self.missing_holders: set[str] = set()  # sessions whose holders the worker should fetch
        self.updates = 0

    def add(self, doc: dict[str, Any], status: str = SCHEDULED, remaining: int | None = None):
        view = self.sessions.get(doc["id"])
        if view is None:
            view = SessionView(
                session_id=doc["id"],
                hospital_id=doc["hospital_id"],
                department_id=doc["department_id"],
                doctor_id=doc["doctor_id"],
                date=doc["date"],
                period=doc["period"],
                capacity=doc["capacity"],
                opens_at=doc["opens_at_epoch"],
                closes_at=doc.get("closes_at_epoch"),
                status=status,
                remaining=doc["capacity"] if remaining is None else remaining,
            )
            self.sessions[view.session_id] = view
            self.by_department.setdefault(view.department_id, []).append(view)
        self._changed(view)
        return view

    def update(self, session_id: str, status: str, remaining: int, version: int) -> None:
        """Take the engine's word for a session, unless it is older than what the view has
        (messages and state answers may arrive out of order)."""
        view = self.sessions.get(session_id)
        if view is None or version < view.version:
            return
        if version != view.version:
            view.holders = None  # someone booked or released: who holds bookings may differ
        if view.holders is None and status in (SOLD_OUT, CLOSED, SUSPENDED):
            self.missing_holders.add(session_id)  # fetch them before the crowd asks
        view.status, view.remaining, view.version = status, remaining, version
        self.updates += 1
        self._changed(view)

    def set_holders(self, session_id: str, version: int, patients: frozenset[int]) -> None:
        """Who has a booking in a session, as of ``version`` (from the engine)."""
        view = self.sessions.get(session_id)
        if view is not None and view.version == version:
            view.holders = patients

    def _changed(self, view: SessionView) -> None:
        self._versions[view.department_id] = self._versions.get(view.department_id, 0) + 1

    def department(self, department_id: str, date: str | None) -> list[SessionView]:
        views = self.by_department.get(department_id, [])
        return sorted(
            (v for v in views if date is None or v.date == date),
            key=lambda v: (v.date, v.period, v.doctor_id),
        )

    def fast_refusal(
        self,
        session_id: str,
        now: float,
        holder: Callable[[frozenset[int]], int | None] = lambda holders: None,
    ) -> tuple[int, bytes, str] | None:
        """(HTTP status, body, code) when this worker knows the session cannot be booked now
        and the caller holds no booking in it. ``holder(holders)``: the caller's patient if
        their token is valid and they are one of ``holders``, else None (see
        ``Tokens.holder_of``: a forged token naming a holder is a stranger)."""
        view = self.sessions.get(session_id)
        if view is None:
            return None
        status = view.status_at(now)
        if status == OPEN:
            return None
        if status != SCHEDULED:  # bookings may exist: their holders must get them back
            if view.holders is None:
                self.missing_holders.add(session_id)
                return None
            if view.holders and holder(view.holders) is not None:
                return None
        return self.answer(view, status, now)

    def answer(self, view: SessionView, status: str, now: float) -> tuple[int, bytes, str]:
        """The pre-built refusal for a session at ``status`` (built once per change)."""
        version = self._versions.get(view.department_id, 0)
        cached = self._answers.get(view.session_id)
        # alternatives are hints: during a crowd, rebuild them at most every REBUILD_SECONDS
        if (
            cached is not None
            and cached[0] == status
            and (status != SOLD_OUT or cached[1] == version or now - cached[2] < REBUILD_SECONDS)
        ):
            return cached[3]
        answer = self._refusal(view, status, now)
        self._answers[view.session_id] = (status, version, now, answer)
        return answer

    def _refusal(self, view: SessionView, status: str, now: float) -> tuple[int, bytes, str]:
        code = CODES[status]
        if status == SOLD_OUT:
            body = error_body(
                "sold_out",
                "No free slot is left in this doctor-session.",
                alternatives=self.alternatives(view, now),
            )
        elif status == SCHEDULED:
            body = error_body(
                "not_open",
                "This doctor-session is not open for booking yet.",
                opens_at=self.clock.iso(view.opens_at),
            )
        elif status == CLOSED:
            body = error_body("closed", "Booking for this doctor-session has closed.")
        else:
            body = error_body("suspended", "This doctor-session was suspended by the hospital.")
        return 409, body, code

    def alternatives(self, view: SessionView, now: float) -> list[dict[str, Any]]:
        """Other sessions of the department with stock: same date first, then the nearest."""
        candidates = [
            v
            for v in self.by_department.get(view.department_id, ())
            if v.session_id != view.session_id
            and v.remaining > 0
            and v.status_at(now) in (OPEN, SCHEDULED)
        ]
        candidates.sort(key=lambda v: (v.date != view.date, abs(v.day - view.day)))
        return [
            {
                "session_id": v.session_id,
                "doctor_id": v.doctor_id,
                "date": v.date,
                "period": v.period,
                "remaining": v.remaining,
            }
            for v in candidates[:MAX_ALTERNATIVES]
        ]
