"""Versioned msgpack snapshots of a doctor-session and of a hospital's policy.

A session snapshot is one msgpack array: the catalog facts, the flags (suspended, swept), then
the booking words (four int64 per row) and the waitlist (two int64 per waiting patient) as
raw little-endian int64 bytes; since version 3 also the number of bookings ever made, the
booking number of each row (empty: row i is booking i), the compacted bookings kept for
idempotency (five int64 each) and the freed slots held back from the pool (slot, return time),
and how many came back. Versions 1 and 2 are upgraded on load. Every timer's due time is in
here (hold expiry, the no-show cutoff, opening and closing, slots held back), so timers survive
a host restart. Strings
shared by many sessions (hospital, department, date, period) are interned on load.
Anything that does not decode to exactly this shape raises
``SnapshotError`` naming the key and the reason; a snapshot is never half-loaded.
"""

from __future__ import annotations

import math
import sys
from array import array

import msgpack

from engine.core.policy import Policy
from engine.core.session import CANCELLED_STATE, DoctorSession, SessionSpec, pack_meta, unpack_meta
from engine.errors import SnapshotError

SESSION_VERSION = 3
RULES_VERSION = 2
SESSION_FIELDS = 23
V2_FIELDS = 18
_LITTLE = sys.byteorder == "little"


def _int64_bytes(values: array) -> bytes:
    if _LITTLE:
        return values.tobytes()
    swapped = array("q", values)
    swapped.byteswap()
    return swapped.tobytes()


def _int64_array(raw: bytes) -> array:
    if len(raw) % 8:
        raise ValueError("booking array is not a whole number of int64")
    values = array("q")
    values.frombytes(raw)
    if not _LITTLE:
        values.byteswap()
    return values


def encode_session(session: DoctorSession) -> bytes:
    spec = session.spec
    return msgpack.packb(
        [
            SESSION_VERSION,
            spec.id,
            spec.hospital_id,
            spec.department_id,
            spec.doctor_id,
            spec.date,
            spec.period,
            spec.capacity,
            spec.first_slot_minute,
            spec.slot_minutes,
            spec.fee,
            spec.opens_at,
            spec.closes_at,
            spec.starts_at,
            session.suspended,
            session.swept,
            _int64_bytes(session.bookings),
            _int64_bytes(session.waitlist),
            session.made,
            b"" if session.numbers is None else _int64_bytes(session.numbers),
            _int64_bytes(session.forgotten),
            _int64_bytes(session.returning),
            session.returned,
        ],
        use_bin_type=True,
    )


def decode_session(raw: bytes, where: str = "session snapshot") -> DoctorSession:
    """Rebuild a doctor-session; ``SnapshotError`` on anything but a valid snapshot."""
    try:
        fields = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        if not isinstance(fields, list) or not fields:
            raise ValueError("not a msgpack array")
        if fields[0] == 1 and len(fields) == 15:  # before the lifecycle: upgrade in memory
            fields = _upgrade_v1(fields)
        if fields[0] == 2 and len(fields) == V2_FIELDS:  # before compaction: no numbers
            rows = len(fields[16]) // 32 if isinstance(fields[16], bytes) else 0
            fields = [SESSION_VERSION, *fields[1:], rows, b"", b"", b"", 0]
        if fields[0] != SESSION_VERSION:
            raise ValueError(f"unknown snapshot version {fields[0]!r}")
        if len(fields) != SESSION_FIELDS:
            raise ValueError(f"expected {SESSION_FIELDS} fields, got {len(fields)}")
        (
            _,
            sid,
            hospital,
            department,
            doctor,
            date,
            period,
            capacity,
            first,
            minutes,
            fee,
            opens_at,
            closes_at,
            starts_at,
            suspended,
            swept,
            bookings,
            waitlist,
            made,
            numbers,
            forgotten,
            returning,
            returned,
        ) = fields
        names = ("id", "hospital", "department", "doctor", "date", "period")
        values = (sid, hospital, department, doctor, date, period)
        for name, value in zip(names, values, strict=True):
            if not isinstance(value, str):
                raise ValueError(f"{name} is not a string")
        for name, value in (("capacity", capacity), ("first slot", first),
                            ("slot minutes", minutes), ("fee", fee)):  # fmt: skip
            if type(value) is not int:
                raise ValueError(f"{name} is not an integer")
        for name, value in (("opens_at", opens_at), ("closes_at", closes_at),
                            ("starts_at", starts_at)):  # fmt: skip
            if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
                raise ValueError(f"{name} is not a finite number")
        if type(suspended) is not bool or type(swept) is not bool:
            raise ValueError("suspended or swept is not a boolean")
        spec = SessionSpec(
            id=sid,
            hospital_id=sys.intern(hospital),
            department_id=sys.intern(department),
            doctor_id=doctor,
            date=sys.intern(date),
            period=sys.intern(period),
            capacity=int(capacity),
            first_slot_minute=int(first),
            slot_minutes=int(minutes),
            fee=int(fee),
            opens_at=float(opens_at),
            closes_at=None if closes_at is None else float(closes_at),
            starts_at=None if starts_at is None else float(starts_at),
        )
        words = (bookings, waitlist, numbers, forgotten, returning)
        if not all(isinstance(w, bytes) for w in words):
            raise ValueError("booking, waitlist, number or slot words are not bytes")
        if type(made) is not int or type(returned) is not int or returned < 0:
            raise ValueError("made or returned is not a non-negative integer")
        session = DoctorSession(spec, suspended=suspended)
        session.swept = swept
        session.restore(
            _int64_array(bookings),
            _int64_array(waitlist),
            made=made,
            numbers=_int64_array(numbers) if numbers else None,
            forgotten=_int64_array(forgotten),
            returning=_int64_array(returning),
            returned=returned,
        )
        return session
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SnapshotError(f"corrupt {where}: {exc}") from exc


def _upgrade_v1(fields: list) -> list:
    """Version 1 (three words per booking, one "ended" state, no waitlist) → version 2 (then
    version 3, like any version 2 snapshot).

    Ended bookings become cancelled; bookings get an empty fourth word (no verification code
    yet: the shard gives one when it loads them, ``Shard.add_restored``); the session is
    marked swept, since its patients never agreed to no-show rules. The next commit writes
    the session as version 2.
    """
    if not isinstance(fields[14], bytes):
        raise ValueError("booking words are not bytes")
    old = _int64_array(fields[14])
    if len(old) % 3:
        raise ValueError("version 1 booking words are not a multiple of three")
    new = array("q")
    for i in range(0, len(old), 3):
        slot_no, state, at = unpack_meta(old[i + 2])
        if state == 3:
            state = CANCELLED_STATE
        new.extend((old[i], old[i + 1], pack_meta(slot_no, state, at), 0))
    # starts_at: v1 closed bookings at the first slot. swept: pre-lifecycle bookings were never
    # told about no-show rules, so their sessions are never swept (codes come at first load)
    return [2, *fields[1:13], fields[12], fields[13], True, _int64_bytes(new), b""]


def encode_rules(policy: Policy) -> bytes:
    return msgpack.packb([RULES_VERSION, policy.to_dict()], use_bin_type=True)


def legacy_bans(raw: bytes) -> dict[int, float] | None:
    """The blacklist kept inside a version 1 rules snapshot (None for version 2)."""
    try:
        fields = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException):
        return None
    if isinstance(fields, list) and len(fields) == 3 and fields[0] == 1:
        return {int(p): float(u) for p, u in fields[2].items()}
    return None


def decode_rules(raw: bytes, where: str = "policy") -> Policy:
    try:
        fields = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        if isinstance(fields, list) and len(fields) == 3 and fields[0] == 1:  # version 1
            return Policy(*(int(x) for x in fields[1]))  # its bans: see ``legacy_bans``
        if not isinstance(fields, list) or len(fields) != 2 or fields[0] != RULES_VERSION:
            raise ValueError("unknown policy shape or version")
        if not isinstance(fields[1], dict):
            raise ValueError("policy is not a map")
        return Policy.from_dict(fields[1], stored=True)
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as exc:
        raise SnapshotError(f"corrupt {where}: {exc}") from exc
