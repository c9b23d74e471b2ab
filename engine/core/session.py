"""The doctor-session (出诊): a single-writer state machine over numbered slots.

Pure and synchronous: no I/O, time is passed in. Bookings are kept in one int64 array, four
words per row (patient, request key, packed slot/state/time, packed verification
code/wrong tries/refund/flags), so a full 30-slot session costs about a kilobyte of booking
data, and its snapshot is one ``tobytes()``. The waitlist (候补) is a second array of
(patient, request key) pairs in the order patients joined.

Booking numbers are not positions. Rows are kept in number order; a session that never
compacted has row i = booking i (``numbers`` is None), one that did keeps the number of each
row in ``numbers``. Ended bookings (cancelled, expired, revoked) stay whole for at least an hour
and up to ``keep`` of them, then are compacted: moved, with their numbers, into ``forgotten``,
a bounded first-in first-out set, so a repeated (patient, request key) is still answered with
the same booking and can never take a second slot, and the row space can never fill up (a
session jammed by hold-and-cancel is impossible by construction: numbers are int64 and rows are
bounded). Ids ``<session>.<n>`` never change.

A freed slot goes to the waitlist at once, else back to the pool after a random delay (the
shard decides it): while it is ``returning`` it is neither free nor taken.

Lifecycle (only these transitions exist; tests/engine/test_lifecycle.py checks them):
held → booked → checked_in | cancelled | no_show;  held → expired | cancelled;
held | booked → revoked (the hospital suspended the session).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from itertools import pairwise

from engine.outcomes import BOOKED, HELD, Booked, BookingInfo, Closed, NotOpen, SoldOut, Suspended

# Booking states (stored in the packed ``meta`` word). A slot is occupied while its booking is
# held, booked, checked in or a no-show; cancelled, expired and revoked bookings freed it.
HELD_STATE = 1
BOOKED_STATE = 2
CHECKED_IN_STATE = 3
CANCELLED_STATE = 4  # by the patient
NO_SHOW_STATE = 5
EXPIRED_STATE = 6  # a hold whose payment window passed
REVOKED_STATE = 7  # cancelled by the hospital (停诊)
STATE_NAMES = {
    HELD_STATE: HELD,
    BOOKED_STATE: BOOKED,
    CHECKED_IN_STATE: "checked_in",
    CANCELLED_STATE: "cancelled",
    NO_SHOW_STATE: "no_show",
    EXPIRED_STATE: "expired",
    REVOKED_STATE: "cancelled",
}
OCCUPYING = frozenset({HELD_STATE, BOOKED_STATE, CHECKED_IN_STATE, NO_SHOW_STATE})
ENDED_STATES = frozenset({CANCELLED_STATE, EXPIRED_STATE, REVOKED_STATE})

# Session statuses as the API names them.
SCHEDULED = "scheduled"
OPEN = "open"
SOLD_OUT = "sold_out"
CLOSED = "closed"
SUSPENDED = "suspended"

_ID = re.compile(r"[A-Za-z0-9_.-]{1,80}")  # safe in URLs, Redis hash tags and booking ids
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
WORDS = 4  # int64 words per booking
_SLOT_BITS = 16
_STATE_BITS = 8
_SLOT_MASK = (1 << _SLOT_BITS) - 1
_STATE_MASK = (1 << _STATE_BITS) - 1
_TIME_SHIFT = _SLOT_BITS + _STATE_BITS
# the extra word: code (27 bits) | wrong tries (4) | refunded fen (28) | paid | warned
_CODE_MASK = (1 << 27) - 1
_TRIES_SHIFT, _TRIES_MASK = 27, 0xF
_REFUND_SHIFT, _REFUND_MASK = 31, (1 << 28) - 1
_PAID = 1 << 59
_WARNED = 1 << 60
MAX_FEE = 10_000_000  # fen; fits the refund field
MAX_CAPACITY = 1000  # slots are found by linear scans in C: fine for any real clinic
NO_BOOKING = 0xFFFF  # a free slot in ``holders``
RETURNING = 0xFFFE  # a freed slot held back from the pool until its return time
MAX_ROWS = 0xFFF0  # rows kept at once (row indices live in the 16-bit slot map)
MAX_NUMBER = 10**12 - 1  # booking numbers: ``<session>.<n>`` has at most 12 digits
FORGOTTEN_WORDS = 5  # [patient, request key, meta, extra, booking number] per compacted booking
COMPACT_AFTER = 3600  # seconds an ended booking stays whole (records, payment reconciliation)
_HELD_BITS = HELD_STATE << _SLOT_BITS
_BOOKED_BITS = BOOKED_STATE << _SLOT_BITS


def pack_meta(slot_no: int, state: int, at: int) -> int:
    """Pack slot number, state and a time in whole seconds (the hold's expiry while held,
    otherwise when the booking last changed state) into one int64."""
    return slot_no | (state << _SLOT_BITS) | (at << _TIME_SHIFT)


def unpack_meta(meta: int) -> tuple[int, int, int]:
    return meta & _SLOT_MASK, (meta >> _SLOT_BITS) & _STATE_MASK, meta >> _TIME_SHIFT


@dataclass(frozen=True, slots=True)
class Extra:
    """The lifecycle facts of one booking (the fourth word)."""

    code: int = 0  # 8-digit verification code (1..99999999), 0 until booked
    tries: int = 0  # wrong verification codes so far
    refunded: int = 0  # fen given back
    paid: bool = False
    warned: bool = False  # the "hold expiring" notice went out

    def pack(self) -> int:
        return (
            self.code
            | (min(self.tries, _TRIES_MASK) << _TRIES_SHIFT)
            | (self.refunded << _REFUND_SHIFT)
            | (_PAID if self.paid else 0)
            | (_WARNED if self.warned else 0)
        )

    @classmethod
    def unpack(cls, word: int) -> Extra:
        return cls(
            word & _CODE_MASK,
            (word >> _TRIES_SHIFT) & _TRIES_MASK,
            (word >> _REFUND_SHIFT) & _REFUND_MASK,
            bool(word & _PAID),
            bool(word & _WARNED),
        )


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
    starts_at: float | None = None  # the first slot, epoch seconds (None: date and slot in UTC)

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
        if self.slot_minutes < 0 or not 0 <= self.fee <= MAX_FEE:
            raise ValueError(f"slot_minutes must not be negative, fee must be 0..{MAX_FEE}")
        if self.closes_at is not None and self.closes_at < self.opens_at:
            raise ValueError("closes_at is before opens_at")
        if self.starts_at is None:  # without a zone: the date and first slot read as UTC
            day = dt.date.fromisoformat(self.date)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
            object.__setattr__(self, "starts_at", start + 60 * self.first_slot_minute)

    @property
    def shard_id(self) -> str:
        return shard_id_of(self.hospital_id, self.date)

    @property
    def visit_at(self) -> float:
        """When the session starts (the first slot), for fee tiers and the no-show sweep."""
        return self.starts_at  # type: ignore[return-value]  # set by __post_init__

    def slot_at(self, slot_no: int) -> float:
        return self.visit_at + (slot_no - 1) * self.slot_minutes * 60

    @property
    def ends_at(self) -> float:
        return self.visit_at + self.capacity * self.slot_minutes * 60


def shard_id_of(hospital_id: str, date: str) -> str:
    """The unit of placement: every doctor-session of one hospital on one visit date."""
    return f"{hospital_id}:{date}"


class DoctorSession:
    """One doctor, one visit date, one period, ``capacity`` numbered slots, and a waitlist.

    Invariants (tested in tests/engine/test_session.py and test_lifecycle.py):
    - each slot has at most one occupying (held, booked, checked-in, no-show) booking;
    - ``free + occupied == capacity`` at every moment (cancelled, expired and revoked
      bookings freed their slot);
    - a request is decided in the order it is given; once ``free == 0`` every new request is
      answered sold out and changes nothing.
    """

    __slots__ = (
        "_sold_out",
        "bookings",
        "due",
        "forgotten",
        "free",
        "held",
        "holders",
        "made",
        "numbers",
        "returned",
        "returning",
        "spec",
        "suspended",
        "swept",
        "waitlist",
    )

    def __init__(self, spec: SessionSpec, suspended: bool = False) -> None:
        self.spec = spec
        self.suspended = suspended
        self.swept = False  # the no-show sweep has run
        self.due = -math.inf  # the earliest hold timer (expiry or warning); derived, not stored
        self.bookings = array("q")  # [patient, request key, meta, extra] per row
        self.numbers: array | None = None  # booking number of each row; None: row i is number i
        self.made = 0  # bookings ever made here: the next booking number
        self.forgotten = NO_WAITLIST  # compacted bookings, FORGOTTEN_WORDS each, oldest first
        self.returning = NO_WAITLIST  # [slot_no, return time] per slot held back from the pool
        self.returned = 0  # slots that came back from ``returning`` (part of ``version``)
        self.waitlist = NO_WAITLIST  # [patient, request key] per waiting patient, in order
        self.holders = array("H", [NO_BOOKING]) * spec.capacity  # slot index → row
        self.free = spec.capacity
        self.held = 0
        self._sold_out: SoldOut | None = None  # made once, shared by every sold-out answer

    # ----- reading -------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def count(self) -> int:
        """Rows kept whole: live bookings and recently ended ones (iterate ``range(count)``)."""
        return len(self.bookings) // WORDS

    @property
    def patients(self) -> array:
        return self.bookings[0::WORDS]

    @property
    def requests(self) -> array:
        return self.bookings[1::WORDS]

    @property
    def metas(self) -> array:
        return self.bookings[2::WORDS]

    @property
    def extras(self) -> array:
        return self.bookings[3::WORDS]

    @property
    def version(self) -> int:
        """Grows with every booking, every freed slot and every slot returned to the pool
        (bookings made + bookings ended + slots returned)."""
        return self.made + self.ended + self.returned

    @property
    def held_back(self) -> int:
        """Freed slots not yet returned to the pool."""
        return len(self.returning) // 2

    @property
    def occupied(self) -> int:
        return self.spec.capacity - self.free - len(self.returning) // 2

    @property
    def booked(self) -> int:
        """Occupied slots that are not held (booked, checked in, no-show)."""
        return self.occupied - self.held

    @property
    def ended(self) -> int:
        """Bookings ever ended here (cancelled, expired, revoked), compacted ones included."""
        return self.made - self.occupied

    @property
    def waiting(self) -> int:
        return len(self.waitlist) // 2

    def status(self, now: float) -> str:
        spec = self.spec
        if self.suspended:
            return SUSPENDED
        if self.swept:  # the visit is over: nothing more to book, hold or promote
            return CLOSED
        if now < spec.opens_at:
            return SCHEDULED
        if spec.closes_at is not None and now >= spec.closes_at:
            return CLOSED
        return SOLD_OUT if self.free == 0 else OPEN

    def slot_time(self, slot_no: int) -> str:
        minute = self.spec.first_slot_minute + (slot_no - 1) * self.spec.slot_minutes
        return f"{(minute // 60) % 24:02d}:{minute % 60:02d}"

    def number_of(self, row: int) -> int:
        """The booking number of a row."""
        return row if self.numbers is None else self.numbers[row]

    def row_of(self, number: int) -> int:
        """The row of a booking number, or -1 (never made, or compacted)."""
        numbers = self.numbers
        if numbers is None:
            return number if 0 <= number < len(self.bookings) // WORDS else -1
        i = bisect_left(numbers, number)
        return i if i < len(numbers) and numbers[i] == number else -1

    def booking_id(self, row: int) -> str:
        return f"{self.spec.id}.{self.number_of(row)}"

    def find(self, patient: int, request: int) -> int:
        """The row of the booking this (patient, request key) got here, or -1 (see also
        ``find_forgotten``)."""
        bookings = self.bookings
        if patient not in bookings:  # a C scan; a hit may be another word, checked below
            return -1
        for i in range(0, len(bookings), WORDS):
            if bookings[i] == patient and bookings[i + 1] == request:
                return i // WORDS
        return -1

    def find_forgotten(self, patient: int, request: int) -> int:
        """The index in ``forgotten`` of a compacted booking of this (patient, request), or -1."""
        forgotten = self.forgotten
        if patient not in forgotten:
            return -1
        for i in range(0, len(forgotten), FORGOTTEN_WORDS):
            if forgotten[i] == patient and forgotten[i + 1] == request:
                return i // FORGOTTEN_WORDS
        return -1

    def forgotten_index(self, number: int) -> int:
        """The index in ``forgotten`` of compacted booking ``number``, or -1."""
        forgotten = self.forgotten
        for i in range(4, len(forgotten), FORGOTTEN_WORDS):
            if forgotten[i] == number:
                return i // FORGOTTEN_WORDS
        return -1

    def forgotten_answer(self, index: int) -> Booked:
        """The answer to a repeated request whose booking was compacted (it had ended)."""
        base = FORGOTTEN_WORDS * index
        slot_no, state, _ = unpack_meta(self.forgotten[base + 2])
        return Booked(
            booking_id=f"{self.spec.id}.{self.forgotten[base + 4]}",
            session_id=self.spec.id,
            slot_no=slot_no,
            slot_time=self.slot_time(slot_no),
            status=STATE_NAMES[state],
            hold_expires_at=None,
            repeat=True,
        )

    def forgotten_info(self, index: int) -> BookingInfo:
        base = FORGOTTEN_WORDS * index
        patient, _, meta, word, number = self.forgotten[base : base + FORGOTTEN_WORDS]
        return self._info(f"{self.spec.id}.{number}", patient, meta, word)

    def forgotten_rows(self) -> list[tuple[int, int, int, int, int]]:
        """(patient, request key, meta, extra, number) of every compacted booking kept."""
        f = self.forgotten
        return [
            tuple(f[i : i + FORGOTTEN_WORDS])  # type: ignore[misc]
            for i in range(0, len(f), FORGOTTEN_WORDS)
        ]

    def booking(self, row: int) -> tuple[int, int, int, int]:
        """(patient, slot_no, state, time) of a row."""
        slot_no, state, at = unpack_meta(self.bookings[WORDS * row + 2])
        return self.bookings[WORDS * row], slot_no, state, at

    def extra(self, row: int) -> Extra:
        return Extra.unpack(self.bookings[WORDS * row + 3])

    def request_of(self, row: int) -> int:
        return self.bookings[WORDS * row + 1]

    def answer(self, row: int, repeat: bool) -> Booked:
        _, slot_no, state, at = self.booking(row)
        code = self.extra(row).code
        return Booked(
            booking_id=self.booking_id(row),
            session_id=self.spec.id,
            slot_no=slot_no,
            slot_time=self.slot_time(slot_no),
            status=STATE_NAMES[state],
            hold_expires_at=float(at) if state == HELD_STATE else None,
            repeat=repeat,
            verification_code=format_code(code) if code else None,
        )

    def info(self, row: int) -> BookingInfo:
        base = WORDS * row
        bookings = self.bookings
        return self._info(
            self.booking_id(row), bookings[base], bookings[base + 2], bookings[base + 3]
        )

    def _info(self, booking_id: str, patient: int, meta: int, word: int) -> BookingInfo:
        slot_no, state, at = unpack_meta(meta)
        extra = Extra.unpack(word)
        return BookingInfo(
            booking_id=booking_id,
            session_id=self.spec.id,
            patient_id=patient,
            slot_no=slot_no,
            slot_time=self.slot_time(slot_no),
            status=STATE_NAMES[state],
            hold_expires_at=float(at) if state == HELD_STATE else None,
            fee=self.spec.fee,
            paid=extra.paid,
            refunded=extra.refunded,
            verification_code=format_code(extra.code) if extra.code else None,
            changed_at=None if state == HELD_STATE else float(at),
            cancelled_by="hospital"
            if state == REVOKED_STATE
            else ("patient" if state == CANCELLED_STATE else None),
        )

    def refusal(self, status: str) -> SoldOut | NotOpen | Closed | Suspended:
        if status == SOLD_OUT:
            if self._sold_out is None:
                self._sold_out = SoldOut(self.spec.id)
            return self._sold_out
        if status == SCHEDULED:
            return NotOpen(self.spec.id, self.spec.opens_at)
        if status == CLOSED:
            return Closed(self.spec.id)
        return Suspended(self.spec.id)

    def live_bookings(self) -> list[tuple[int, int, int]]:
        """(row, patient, slot_no) of every booking that occupies a slot."""
        out = []
        for slot_index, row in enumerate(self.holders):
            if row < RETURNING:
                out.append((row, self.bookings[WORDS * row], slot_index + 1))
        return out

    def in_state(self, wanted: int) -> list[int]:
        """Rows of occupying bookings in state ``wanted``."""
        bookings = self.bookings
        return [
            n
            for n in self.holders
            if n < RETURNING and (bookings[WORDS * n + 2] >> _SLOT_BITS) & _STATE_MASK == wanted
        ]

    # ----- deciding ------------------------------------------------------------------------

    def take(self, patient: int, request: int, now: float, hold_seconds: int, code: int) -> Booked:
        """Give the lowest free slot to the patient and answer with the new booking: held
        until ``now + hold_seconds`` when there is a fee, booked (with ``code``) when not.

        The caller has checked ``free > 0`` and the patient rules.
        """
        slot_index = self.holders.index(NO_BOOKING)
        bookings = self.bookings
        booking_no = self.made  # the number; the row is ``len(bookings) // WORDS``
        self.made = booking_no + 1
        if self.numbers is not None:
            self.numbers.append(booking_no)
        slot_no = slot_index + 1
        spec = self.spec
        self.holders[slot_index] = len(bookings) // WORDS
        self.free -= 1
        minute = spec.first_slot_minute + slot_index * spec.slot_minutes
        slot_time = f"{(minute // 60) % 24:02d}:{minute % 60:02d}"
        if spec.fee > 0:
            expires = int(now) + hold_seconds
            self.held += 1
            bookings.extend((patient, request, slot_no | _HELD_BITS | (expires << _TIME_SHIFT), 0))
            return Booked(
                f"{spec.id}.{booking_no}", spec.id, slot_no, slot_time, HELD, float(expires)
            )
        bookings.extend(
            (patient, request, slot_no | _BOOKED_BITS | (int(now) << _TIME_SHIFT), code)
        )
        return Booked(
            f"{spec.id}.{booking_no}",
            spec.id,
            slot_no,
            slot_time,
            BOOKED,
            None,
            False,
            f"{code:08d}",
        )

    def move(self, row: int, state: int, now: float, extra: Extra | None = None) -> None:
        """Put a booking in ``state`` (the caller checked the transition is legal), keeping
        the slot map and counters true: a freed state gives the slot back to the pool."""
        base = WORDS * row
        slot_no, old, _ = unpack_meta(self.bookings[base + 2])
        if old == HELD_STATE:
            self.held -= 1
        if state == HELD_STATE:
            self.held += 1
        self.bookings[base + 2] = pack_meta(slot_no, state, int(now))
        if extra is not None:
            self.bookings[base + 3] = extra.pack()
        if state in ENDED_STATES and old not in ENDED_STATES:
            self.holders[slot_no - 1] = NO_BOOKING
            self.free += 1

    def set_extra(self, row: int, extra: Extra) -> None:
        self.bookings[WORDS * row + 3] = extra.pack()

    def expired_holds(self, now: float) -> list[int]:
        """Rows of holds whose payment window has passed."""
        if not self.held:
            return []
        return [n for n in self.in_state(HELD_STATE) if self.booking(n)[3] <= now]

    # ----- freed slots held back, and compaction ---------------------------------------------

    def hold_back(self, slot_no: int, until: int) -> None:
        """Keep a free slot out of the pool until ``until`` (epoch seconds)."""
        if self.holders[slot_no - 1] != NO_BOOKING:
            raise ValueError(f"slot {slot_no} of {self.spec.id} is not free")
        self.holders[slot_no - 1] = RETURNING
        self.free -= 1
        if self.returning is NO_WAITLIST:
            self.returning = array("q")
        self.returning.extend((slot_no, until))

    @property
    def next_return(self) -> float:
        """When the first held-back slot comes back to the pool (inf: none)."""
        returning = self.returning
        return min(returning[1::2]) if returning else math.inf

    def return_due(self, now: float) -> int:
        """Give back to the pool every held-back slot whose time has come; how many."""
        returning = self.returning
        if not returning:
            return 0
        kept = array("q")
        back = 0
        for i in range(0, len(returning), 2):
            slot_no, until = returning[i], returning[i + 1]
            if until <= now:
                self.holders[slot_no - 1] = NO_BOOKING
                self.free += 1
                back += 1
            else:
                kept.extend((slot_no, until))
        self.returning = kept if kept else NO_WAITLIST
        self.returned += back
        return back

    def compactable(self, keep: int) -> bool:
        """More than ``keep`` ended bookings are kept whole."""
        return self.count - self.occupied > keep

    def compact(self, now: float, keep: int, forget: int, force: bool = False) -> int:
        """Compact ended bookings beyond the newest ``keep``: those ended at least
        ``COMPACT_AFTER`` ago (all of the oldest, with ``force``), oldest first. Their rows move,
        with their numbers, to ``forgotten``, which keeps the newest ``forget``. Numbers never
        change; the slot map is rebuilt. How many rows were compacted."""
        bookings = self.bookings
        rows = len(bookings) // WORDS
        ended = [
            row
            for row in range(rows)
            if (bookings[WORDS * row + 2] >> _SLOT_BITS) & _STATE_MASK in ENDED_STATES
        ]
        excess = len(ended) - keep
        if excess <= 0:
            return 0
        if force:
            drop = ended[:excess]
        else:
            old = now - COMPACT_AFTER
            drop = [r for r in ended[:excess] if bookings[WORDS * r + 2] >> _TIME_SHIFT <= old]
        if not drop:
            return 0
        dropped = set(drop)
        kept_words, kept_numbers = array("q"), array("q")
        forgotten = array("q", self.forgotten)
        new_row = array("H", [NO_BOOKING]) * rows
        for row in range(rows):
            base = WORDS * row
            number = self.number_of(row)
            if row in dropped:
                forgotten.extend(bookings[base : base + WORDS])
                forgotten.append(number)
                continue
            new_row[row] = len(kept_numbers)
            kept_words.extend(bookings[base : base + WORDS])
            kept_numbers.append(number)
        excess_forgotten = len(forgotten) - FORGOTTEN_WORDS * forget
        if excess_forgotten > 0:
            del forgotten[:excess_forgotten]
        self.bookings = kept_words
        self.numbers = kept_numbers
        self.forgotten = forgotten if forgotten else NO_WAITLIST
        holders = self.holders
        for slot_index, row in enumerate(holders):
            if row < RETURNING:
                holders[slot_index] = new_row[row]
        return len(drop)

    # ----- the waitlist (候补) ---------------------------------------------------------------

    def waitlist_position(self, patient: int) -> int:
        """1-based place of the patient on the waitlist, or 0."""
        waitlist = self.waitlist
        for i in range(0, len(waitlist), 2):
            if waitlist[i] == patient:
                return i // 2 + 1
        return 0

    def join_waitlist(self, patient: int, request: int) -> int:
        if self.waitlist is NO_WAITLIST:
            self.waitlist = array("q")
        self.waitlist.extend((patient, request))
        return self.waiting

    def leave_waitlist(self, patient: int) -> bool:
        position = self.waitlist_position(patient)
        if position:
            del self.waitlist[2 * (position - 1) : 2 * position]
        return bool(position)

    def next_waiting(self) -> tuple[int, int] | None:
        """Take the first patient off the waitlist: (patient, request key)."""
        if not self.waitlist:
            return None
        patient, request = self.waitlist[0], self.waitlist[1]
        del self.waitlist[0:2]
        return patient, request

    # ----- snapshots -----------------------------------------------------------------------

    def restore(
        self,
        bookings: array,
        waitlist: array | None = None,
        *,
        made: int | None = None,
        numbers: array | None = None,
        forgotten: array | None = None,
        returning: array | None = None,
        returned: int = 0,
    ) -> None:
        """Load bookings from a snapshot and rebuild the derived slot map and counters."""
        if len(bookings) % WORDS:
            raise ValueError(f"booking words are not a multiple of {WORDS}")
        metas = bookings[2::WORDS]
        if len(metas) >= MAX_ROWS:
            raise ValueError(f"{self.spec.id} keeps more than {MAX_ROWS - 1} rows")
        rows = len(metas)
        made = rows if made is None else made
        if numbers is not None:
            if len(numbers) != rows or any(a >= b for a, b in pairwise(numbers)):
                raise ValueError(f"booking numbers of {self.spec.id} do not fit its rows")
            if rows and not (numbers[0] >= 0 and numbers[-1] < made):
                raise ValueError(f"booking numbers of {self.spec.id} are out of range")
        elif made < rows:
            raise ValueError(f"{self.spec.id} made fewer bookings than it keeps")
        if not 0 <= made <= MAX_NUMBER:
            raise ValueError(f"{self.spec.id} has an impossible booking count {made}")
        forgotten = forgotten if forgotten else NO_WAITLIST
        if len(forgotten) % FORGOTTEN_WORDS:
            raise ValueError("forgotten words are not whole bookings")
        returning = returning if returning else NO_WAITLIST
        if len(returning) % 2:
            raise ValueError("returning words are not pairs")
        holders = array("H", [NO_BOOKING]) * self.spec.capacity
        held = 0
        pairs = list(zip(bookings[0::WORDS], bookings[1::WORDS], strict=True))
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"a (patient, request) of {self.spec.id} is booked twice")
        for row, meta in enumerate(metas):
            slot_no, state, _ = unpack_meta(meta)
            if state not in STATE_NAMES:
                raise ValueError(f"booking {row} of {self.spec.id} has state {state}")
            if state in ENDED_STATES:
                continue
            if not 1 <= slot_no <= self.spec.capacity or holders[slot_no - 1] != NO_BOOKING:
                raise ValueError(f"slot {slot_no} of {self.spec.id} is held twice or out of range")
            holders[slot_no - 1] = row
            held += state == HELD_STATE
        for i in range(0, len(returning), 2):
            slot_no = returning[i]
            if not 1 <= slot_no <= self.spec.capacity or holders[slot_no - 1] != NO_BOOKING:
                raise ValueError(f"returning slot {slot_no} of {self.spec.id} is not free")
            holders[slot_no - 1] = RETURNING
        waitlist = waitlist if waitlist else NO_WAITLIST
        if len(waitlist) % 2:
            raise ValueError("waitlist words are not pairs")
        self.bookings = bookings
        self.numbers = numbers
        self.made = made
        self.forgotten = forgotten
        self.returning = returning
        self.returned = returned
        self.waitlist = waitlist
        self.holders = holders
        self.free = self.spec.capacity - sum(1 for n in holders if n != NO_BOOKING)
        self.held = held


NO_WAITLIST = array("q")  # shared by every session nobody waits for; never extended


def format_code(code: int) -> str:
    """The 8-digit verification code as the patient sees it (leading zeros kept)."""
    return f"{code:08d}"
