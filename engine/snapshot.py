"""Versioned msgpack snapshots of a doctor-session and of a shard's rule state.

A session snapshot is one msgpack array: the catalog facts, then the booking words (patient,
request key, packed slot/state/expiry per booking) as raw little-endian int64 bytes. Strings
shared by many sessions (hospital, department, date, period) are interned on load.
Anything that does not decode to exactly this shape raises
``SnapshotError`` naming the key and the reason; a snapshot is never half-loaded.
"""

from __future__ import annotations

import math
import sys
from array import array

import msgpack

from .errors import SnapshotError
from .session import DoctorSession, SessionSpec
from .shard import Policy

SESSION_VERSION = 1
RULES_VERSION = 1
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
            session.suspended,
            _int64_bytes(session.bookings),
        ],
        use_bin_type=True,
    )


def decode_session(raw: bytes, where: str = "session snapshot") -> DoctorSession:
    """Rebuild a doctor-session; ``SnapshotError`` on anything but a valid snapshot."""
    try:
        fields = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        if not isinstance(fields, list) or not fields:
            raise ValueError("not a msgpack array")
        if fields[0] != SESSION_VERSION:
            raise ValueError(f"unknown snapshot version {fields[0]!r}")
        if len(fields) != 15:
            raise ValueError(f"expected 15 fields, got {len(fields)}")
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
            suspended,
            bookings,
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
        for name, value in (("opens_at", opens_at), ("closes_at", closes_at)):
            if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
                raise ValueError(f"{name} is not a finite number")
        if type(suspended) is not bool:
            raise ValueError("suspended is not a boolean")
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
        )
        if not isinstance(bookings, bytes):
            raise ValueError("booking words are not bytes")
        session = DoctorSession(spec, suspended=bool(suspended))
        session.restore(_int64_array(bookings))
        return session
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SnapshotError(f"corrupt {where}: {exc}") from exc


def encode_rules(policy: Policy, blacklist: dict[int, float]) -> bytes:
    return msgpack.packb(
        [
            RULES_VERSION,
            [policy.hospital_day_limit, policy.department_day_limit, policy.hold_seconds],
            blacklist,
        ],
        use_bin_type=True,
    )


def decode_rules(raw: bytes, where: str = "rules snapshot") -> tuple[Policy, dict[int, float]]:
    try:
        fields = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        if not isinstance(fields, list) or len(fields) != 3 or fields[0] != RULES_VERSION:
            raise ValueError("unknown rules snapshot shape or version")
        _, limits, blacklist = fields
        policy = Policy(*(int(x) for x in limits))
        if not isinstance(blacklist, dict):
            raise ValueError("blacklist is not a map")
        return policy, {int(p): float(u) for p, u in blacklist.items()}
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise SnapshotError(f"corrupt {where}: {exc}") from exc
