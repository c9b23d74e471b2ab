"""Booking records: the back office's flat, denormalised view of every booking, and of every
doctor-session's sale (the read model behind records, CSV export, HIS delivery and analytics).

Pure: derived from a ``DoctorSession`` and the time it was looked at. The session snapshot stays
the truth; a record is rebuilt from it whenever the session changes
(``engine/backoffice/record_book.py``), so a lost record is repaired by the next change or a
re-index, never the other way round.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import msgpack

from engine.core.session import (
    BOOKED_STATE,
    CANCELLED_STATE,
    HELD_STATE,
    REVOKED_STATE,
    STATE_NAMES,
    WORDS,
    DoctorSession,
    Extra,
    unpack_meta,
)
from engine.outcomes import SessionFacts

# Record states: the API's booking states, except that a cancellation says who cancelled it.
STATES = ("held", "booked", "checked_in", "cancelled", "no_show", "expired")
BY_PATIENT = "patient"
BY_HOSPITAL = "hospital"
CONFIRMED = frozenset({"booked", "checked_in", "no_show"})  # a slot the patient still holds
VISITED = frozenset({"checked_in", "no_show"})  # the visit day is over for it


@dataclass(frozen=True, slots=True)
class Record:
    """One booking as the back office sees it. Times are epoch seconds."""

    booking_id: str
    session_id: str
    hospital_id: str
    department_id: str
    doctor_id: str
    date: str  # visit date, ISO
    period: str  # AM / PM / EVENING
    slot_no: int
    slot_at: float  # when the slot starts
    patient_id: int
    state: str  # one of STATES
    cancelled_by: str = ""  # BY_PATIENT or BY_HOSPITAL when state == "cancelled"
    fee: int = 0  # fen
    paid: bool = False
    refunded: int = 0  # fen
    made_at: float = 0.0  # when the booking was made (first seen, or its booking time)
    changed_at: float = 0.0  # when its state last changed
    age: int = -1  # the patient's age in whole years on the visit date; -1 unknown
    was_confirmed: bool = False  # it was booked at some point (a cancellation counts as one)
    his_no: str = ""  # the HIS booking number, once the HIS answered
    insurance_no: str = ""  # the social-insurance filing number (社保备案)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def pack(self) -> list[Any]:
        return [getattr(self, name) for name in _FIELDS]

    @classmethod
    def unpack(cls, values: list[Any]) -> Record:
        return cls(*values[: len(_FIELDS)])


_FIELDS = tuple(Record.__dataclass_fields__)


@dataclass(slots=True)
class SessionSale(SessionFacts):
    """How one doctor-session sold: for fill rate and time-to-sell-out (a value: never
    changed once made; a new sale replaces it)."""

    opens_at: float
    starts_at: float
    taken: int  # slots occupied now (held, booked, checked in, no-show)
    sold_out_at: float | None = None  # first time every slot was taken; None if never
    suspended: bool = False

    def pack(self) -> list[Any]:
        return [getattr(self, name) for name in _SALE_FIELDS]

    @classmethod
    def unpack(cls, values: list[Any]) -> SessionSale:
        return cls(*values[: len(_SALE_FIELDS)])


_SALE_FIELDS = tuple(SessionSale.__dataclass_fields__)


def state_of(state: int) -> tuple[str, str]:
    """(record state, cancelled_by) of an engine booking state."""
    if state == REVOKED_STATE:
        return "cancelled", BY_HOSPITAL
    if state == CANCELLED_STATE:
        return "cancelled", BY_PATIENT
    return STATE_NAMES[state], ""


def records_of(
    session: DoctorSession,
    known: dict[str, Record],
    now: float,
    rows: Iterable[int] | None = None,
    ages: dict[int, int] | None = None,
) -> list[Record]:
    """The records of ``session`` that are new or changed against ``known`` (by booking id),
    looking at ``rows`` only (None: every row); a new record takes its patient's age on the
    visit date from ``ages`` (-1 if not there).

    What a record knows beyond the snapshot (when it was made, the patient's age, the HIS and
    insurance numbers) is carried over from its known version."""
    spec = session.spec
    out: list[Record] = []
    words = session.bookings
    for row in range(session.count) if rows is None else rows:  # compacted: their records stay
        base = row * WORDS
        patient, meta, extra_word = words[base], words[base + 2], words[base + 3]
        slot_no, raw_state, at = unpack_meta(meta)
        state, by = state_of(raw_state)
        extra = Extra.unpack(extra_word)
        booking_id = session.booking_id(row)
        old = known.get(booking_id)
        changed_at = float(at) if raw_state != HELD_STATE else now
        # booked at some point: a cancellation of a paid (or free) booking was one too, even
        # when it was paid and cancelled between two looks
        confirmed = state in CONFIRMED or (state == "cancelled" and (extra.paid or spec.fee == 0))
        if old is None:
            made_at = float(at) if raw_state == BOOKED_STATE else now
            record = Record(
                booking_id=booking_id,
                session_id=spec.id,
                hospital_id=spec.hospital_id,
                department_id=spec.department_id,
                doctor_id=spec.doctor_id,
                date=spec.date,
                period=spec.period,
                slot_no=slot_no,
                slot_at=spec.slot_at(slot_no),
                patient_id=int(patient),
                state=state,
                cancelled_by=by,
                fee=spec.fee,
                paid=extra.paid,
                refunded=extra.refunded,
                made_at=made_at,
                changed_at=changed_at,
                age=-1 if ages is None else ages.get(int(patient), -1),
                was_confirmed=confirmed,
            )
            out.append(record)
            continue
        if (old.state, old.cancelled_by, old.paid, old.refunded) == (
            state,
            by,
            extra.paid,
            extra.refunded,
        ):
            continue
        out.append(
            replace(
                old,
                state=state,
                cancelled_by=by,
                paid=extra.paid,
                refunded=extra.refunded,
                changed_at=changed_at,
                was_confirmed=old.was_confirmed or confirmed,
            )
        )
    return out


def sale_of(session: DoctorSession, old: SessionSale | None, now: float) -> SessionSale:
    """The session's sale now; the first sell-out time is kept once seen."""
    spec = session.spec
    sold_out_at = old.sold_out_at if old is not None else None
    if sold_out_at is None and session.free == 0:
        sold_out_at = now
    return SessionSale(
        session_id=spec.id,
        hospital_id=spec.hospital_id,
        department_id=spec.department_id,
        doctor_id=spec.doctor_id,
        date=spec.date,
        period=spec.period,
        capacity=spec.capacity,
        opens_at=spec.opens_at,
        starts_at=spec.visit_at,
        taken=session.occupied,
        sold_out_at=sold_out_at,
        suspended=session.suspended,
    )


def marks_of(session: DoctorSession) -> bytes:
    """What a session's rows are now, as far as their records go: each row's booking number,
    state word and extra word, packed (kept beside the records: ``changed_rows``)."""
    numbers = b"" if session.numbers is None else session.numbers.tobytes()
    return msgpack.packb([numbers, session.metas.tobytes(), session.extras.tobytes()])


def changed_rows(session: DoctorSession, mark: bytes | None) -> tuple[list[int], set[int]]:
    """(rows whose record may have changed since ``mark`` was taken, the numbers among them
    that had a record then). No mark: every row, each may have had one. A row is looked at
    again when its state or extra word moved, so ``records_of`` finds every change; a session
    that only took new bookings is the common case and costs two C comparisons."""
    count = session.count
    if mark is None:
        return list(range(count)), {session.number_of(row) for row in range(count)}
    raw_numbers, raw_metas, raw_extras = msgpack.unpackb(mark)
    old_metas, old_extras = array("q"), array("q")
    old_metas.frombytes(raw_metas)
    old_extras.frombytes(raw_extras)
    metas, extras = session.metas, session.extras
    seen = len(old_metas)
    numbers = session.numbers
    same_rows = raw_numbers == b"" if numbers is None else numbers[:seen].tobytes() == raw_numbers
    if same_rows and seen <= count:  # rows kept their numbers; new ones came after
        if metas[:seen] == old_metas and extras[:seen] == old_extras:  # only new rows
            return list(range(seen, count)), set()
        rows = [
            row
            for row in range(count)
            if row >= seen or metas[row] != old_metas[row] or extras[row] != old_extras[row]
        ]
        return rows, {session.number_of(row) for row in rows if row < seen}
    old_numbers = array("q")
    old_numbers.frombytes(raw_numbers)
    before = {
        number: (meta, extra)
        for number, meta, extra in zip(
            old_numbers if raw_numbers else range(seen), old_metas, old_extras, strict=True
        )
    }
    rows = [
        row
        for row in range(count)
        if before.get(session.number_of(row)) != (metas[row], extras[row])
    ]
    return rows, {n for row in rows if (n := session.number_of(row)) in before}
