"""The doctor-session (出诊): a single-writer state machine over numbered slots.

Pure and synchronous: no I/O, time is passed in. Bookings are kept in one int64 array, three
words per booking number (patient, request key, packed slot/state/expiry), so a full 30-slot
session costs about a kilobyte, and its snapshot is one ``tobytes()``.

A booking is never deleted: a released one stays with state ``ENDED`` so that a repeated
(patient, request key) is answered with the same booking and can never take a second slot.
"""

from __future__ import annotations

import re
from array import array
from dataclasses import dataclass

from .outcomes import BOOKED, HELD, Booked, BookingInfo, Closed, NotOpen, SoldOut, Suspended

# Booking states (stored in the packed ``meta`` word).
HELD_STATE = 1
BOOKED_STATE = 2
ENDED_STATE = 3  # released / cancelled / expired: the slot went back to the pool
STATE_NAMES = {HELD_STATE: HELD, BOOKED_STATE: BOOKED, ENDED_STATE: "ended"}

# Session statuses as the API names them.
SCHEDULED = "scheduled"
OPEN = "open"
SOLD_OUT = "sold_out"
CLOSED = "closed"
SUSPENDED = "suspended"

_ID = re.compile(r"[A-Za-z0-9_.-]{1,80}")  # safe in URLs, Redis hash tags and booking ids
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_SLOT_BITS = 16
_STATE_BITS = 8
_SLOT_MASK = (1 << _SLOT_BITS) - 1
_STATE_MASK = (1 << _STATE_BITS) - 1
_EXPIRY_SHIFT = _SLOT_BITS + _STATE_BITS
MAX_CAPACITY = 1000  # slots are found by linear scans in C: fine for any real clinic
NO_BOOKING = 0xFFFF  # a free slot in ``holders``
MAX_BOOKINGS = NO_BOOKING  # booking numbers of one session (including ended ones)
_LAST_BOOKING_WORDS = 3 * (MAX_BOOKINGS - 1)


def pack_meta(slot_no: int, state: int, expires_at: int) -> int:
    """Pack slot number, state and hold expiry (whole seconds) into one int64."""
    return slot_no | (state << _SLOT_BITS) | (expires_at << _EXPIRY_SHIFT)


def unpack_meta(meta: int) -> tuple[int, int, int]:
    return meta & _SLOT_MASK, (meta >> _SLOT_BITS) & _STATE_MASK, meta >> _EXPIRY_SHIFT


@dataclass(frozen=True, slots=True)
class SessionSpec:
    """What a doctor-session is: the catalog facts, fixed at creation."""

    id: str
    hospital_id: str
    department_id: str
    doctor_id: str
    date: str  # ISO visit date
    period: str  # AM / PM / EVENING
    capacity: int
    first_slot_minute: int  # minutes after midnight, local time
    slot_minutes: int
    fee: int = 0  # fen; 0 = no payment step, a booking is booked at once
    opens_at: float = 0.0  # epoch seconds
    closes_at: float | None = None

    def __post_init__(self) -> None:
        for name in ("id", "hospital_id", "department_id", "doctor_id"):
            if not _ID.fullmatch(getattr(self, name)):
                raise ValueError(
                    f"{name} must be 1-80 of A-Z a-z 0-9 _ . - (got {getattr(self, name)!r})"
                )
        if not _DATE.fullmatch(self.date):
            raise ValueError(f"date must be YYYY-MM-DD, got {self.date!r}")
        if not 1 <= self.capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be 1..{MAX_CAPACITY}, got {self.capacity}")
        if not 0 <= self.first_slot_minute < 24 * 60:
            raise ValueError("first_slot_minute must be within the day")
        if self.slot_minutes < 0 or self.fee < 0:
            raise ValueError("slot_minutes and fee must not be negative")
        if self.closes_at is not None and self.closes_at < self.opens_at:
            raise ValueError("closes_at is before opens_at")

    @property
    def shard_id(self) -> str:
        return shard_id_of(self.hospital_id, self.date)


def shard_id_of(hospital_id: str, date: str) -> str:
    """The unit of placement: every doctor-session of one hospital on one visit date."""
    return f"{hospital_id}:{date}"


class DoctorSession:
    """One doctor, one visit date, one period, ``capacity`` numbered slots.

    Invariants (tested in tests/engine/test_session.py):
    - each slot has at most one live (held or booked) booking, and live ≤ capacity;
    - ``free + held + booked == capacity`` at every moment (ended bookings freed their slot);
    - a request is decided in the order it is given; once ``free == 0`` every new request is
      answered sold out and changes nothing.
    """

    __slots__ = (
        "_sold_out",
        "bookings",
        "free",
        "held",
        "holders",
        "spec",
        "suspended",
    )

    def __init__(self, spec: SessionSpec, suspended: bool = False) -> None:
        self.spec = spec
        self.suspended = suspended
        self.bookings = array("q")  # [patient, request key, meta] per booking number
        self.holders = array("H", [NO_BOOKING]) * spec.capacity  # slot index → booking no.
        self.free = spec.capacity
        self.held = 0
        self._sold_out = SoldOut(spec.id)

    # ----- reading -------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def count(self) -> int:
        """Bookings ever made here, ended ones included (the next booking number)."""
        return len(self.bookings) // 3

    @property
    def patients(self) -> array:
        return self.bookings[0::3]

    @property
    def requests(self) -> array:
        return self.bookings[1::3]

    @property
    def metas(self) -> array:
        return self.bookings[2::3]

    @property
    def version(self) -> int:
        """Grows with every booking and every release (bookings made + bookings ended)."""
        return self.count + self.ended

    @property
    def booked(self) -> int:
        return self.spec.capacity - self.free - self.held

    @property
    def ended(self) -> int:
        return self.count - self.held - self.booked

    def status(self, now: float) -> str:
        spec = self.spec
        if self.suspended:
            return SUSPENDED
        if now < spec.opens_at:
            return SCHEDULED
        if spec.closes_at is not None and now >= spec.closes_at:
            return CLOSED
        return SOLD_OUT if self.free == 0 or len(self.bookings) >= _LAST_BOOKING_WORDS else OPEN

    def slot_time(self, slot_no: int) -> str:
        minute = self.spec.first_slot_minute + (slot_no - 1) * self.spec.slot_minutes
        return f"{(minute // 60) % 24:02d}:{minute % 60:02d}"

    def booking_id(self, booking_no: int) -> str:
        return f"{self.spec.id}.{booking_no}"

    def find(self, patient: int, request: int) -> int:
        """The booking number this (patient, request key) got here, or -1."""
        bookings = self.bookings
        if patient not in bookings:  # a C scan; a hit may be another word, checked below
            return -1
        for i in range(0, len(bookings), 3):
            if bookings[i] == patient and bookings[i + 1] == request:
                return i // 3
        return -1

    def booking(self, booking_no: int) -> tuple[int, int, int, int]:
        """(patient, slot_no, state, hold_expires_at) of a booking number."""
        slot_no, state, expires = unpack_meta(self.bookings[3 * booking_no + 2])
        return self.bookings[3 * booking_no], slot_no, state, expires

    def request_of(self, booking_no: int) -> int:
        return self.bookings[3 * booking_no + 1]

    def answer(self, booking_no: int, repeat: bool) -> Booked:
        _, slot_no, state, expires = self.booking(booking_no)
        return Booked(
            booking_id=self.booking_id(booking_no),
            session_id=self.spec.id,
            slot_no=slot_no,
            slot_time=self.slot_time(slot_no),
            status=STATE_NAMES[state],
            hold_expires_at=float(expires) if state == HELD_STATE else None,
            repeat=repeat,
        )

    def info(self, booking_no: int) -> BookingInfo:
        patient, slot_no, state, expires = self.booking(booking_no)
        return BookingInfo(
            booking_id=self.booking_id(booking_no),
            session_id=self.spec.id,
            patient_id=patient,
            slot_no=slot_no,
            slot_time=self.slot_time(slot_no),
            status=STATE_NAMES[state],
            hold_expires_at=float(expires) if state == HELD_STATE else None,
        )

    def refusal(self, status: str) -> SoldOut | NotOpen | Closed | Suspended:
        if status == SOLD_OUT:
            return self._sold_out
        if status == SCHEDULED:
            return NotOpen(self.spec.id, self.spec.opens_at)
        if status == CLOSED:
            return Closed(self.spec.id)
        return Suspended(self.spec.id)

    def live_bookings(self) -> list[tuple[int, int, int]]:
        """(booking number, patient, slot_no) of every held or booked booking."""
        out = []
        for slot_index, booking_no in enumerate(self.holders):
            if booking_no != NO_BOOKING:
                out.append((booking_no, self.bookings[3 * booking_no], slot_index + 1))
        return out

    # ----- deciding ------------------------------------------------------------------------

    def take(self, patient: int, request: int, now: float, hold_seconds: int) -> Booked:
        """Give the lowest free slot to the patient and answer with the new booking.

        The caller has checked ``status(now) == OPEN`` and the patient rules.
        """
        slot_index = self.holders.index(NO_BOOKING)
        booking_no = len(self.bookings) // 3
        if self.spec.fee > 0:
            state, expires = HELD_STATE, int(now) + hold_seconds
            self.held += 1
        else:
            state, expires = BOOKED_STATE, 0
        self.bookings.extend((patient, request, pack_meta(slot_index + 1, state, expires)))
        self.holders[slot_index] = booking_no
        self.free -= 1
        return Booked(
            booking_id=f"{self.spec.id}.{booking_no}",
            session_id=self.spec.id,
            slot_no=slot_index + 1,
            slot_time=self.slot_time(slot_index + 1),
            status=STATE_NAMES[state],
            hold_expires_at=float(expires) if state == HELD_STATE else None,
        )

    def release(self, booking_no: int) -> bool:
        """Return a live booking's slot to the pool. False if it had already ended."""
        slot_no, state, _ = unpack_meta(self.bookings[3 * booking_no + 2])
        if state == ENDED_STATE:
            return False
        if state == HELD_STATE:
            self.held -= 1
        self.bookings[3 * booking_no + 2] = pack_meta(slot_no, ENDED_STATE, 0)
        self.holders[slot_no - 1] = NO_BOOKING
        self.free += 1
        return True

    def expired_holds(self, now: float) -> list[int]:
        """Booking numbers of holds whose payment window has passed."""
        if not self.held:
            return []
        out = []
        for booking_no in self.holders:
            if booking_no != NO_BOOKING:
                _, state, expires = unpack_meta(self.bookings[3 * booking_no + 2])
                if state == HELD_STATE and expires <= now:
                    out.append(booking_no)
        return out

    def restore(self, bookings: array) -> None:
        """Load bookings from a snapshot and rebuild the derived slot map and counters."""
        if len(bookings) % 3:
            raise ValueError("booking words are not a multiple of three")
        metas = bookings[2::3]
        if len(metas) >= MAX_BOOKINGS:
            raise ValueError(f"{self.spec.id} has more than {MAX_BOOKINGS - 1} bookings")
        holders = array("H", [NO_BOOKING]) * self.spec.capacity
        held = live = 0
        pairs = list(zip(bookings[0::3], bookings[1::3], strict=True))
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"a (patient, request) of {self.spec.id} is booked twice")
        for booking_no, meta in enumerate(metas):
            slot_no, state, _ = unpack_meta(meta)
            if state not in STATE_NAMES:
                raise ValueError(f"booking {booking_no} of {self.spec.id} has state {state}")
            if state == ENDED_STATE:
                continue
            if not 1 <= slot_no <= self.spec.capacity or holders[slot_no - 1] != NO_BOOKING:
                raise ValueError(f"slot {slot_no} of {self.spec.id} is held twice or out of range")
            holders[slot_no - 1] = booking_no
            live += 1
            held += state == HELD_STATE
        self.bookings = bookings
        self.holders = holders
        self.free = self.spec.capacity - live
        self.held = held
