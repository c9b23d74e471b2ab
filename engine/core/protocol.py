"""The request protocol between the clients' mailboxes and the host actors (pure).

A request is a flat tuple ``(stamp, kind, shard_id, a, b, c)``: flat tuples, not objects, because
one crosses the process boundary for every booking (a batch is pickled whole) and a tuple costs
the least to build and to pickle. ``decide`` applies one request to its shard.
"""

from __future__ import annotations

from typing import Any

from engine.core.shard import Shard
from engine.outcomes import Conflict, NotFound, Outcome

# Request kinds. A request is a tuple (stamp, kind, shard_id, a, b, c):
#   BOOK    (stamp, BOOK, shard, session_id, patient, request_key)
#   RELEASE (stamp, RELEASE, shard, session_id, booking_no, patient or None)
#   CREATE  (stamp, CREATE, shard, SessionSpec, None, None)
#   STATE   (stamp, STATE, shard, session_id, None, None)
#   LOOKUP  (stamp, LOOKUP, shard, session_id, booking_no, None)
#   LIST    (stamp, LIST, shard, session_id, None, None)
#   PAY     (stamp, PAY, shard, session_id, booking_no, patient)
#   CHECK_IN(stamp, CHECK_IN, shard, session_id, booking_no, code)
#   SUSPEND (stamp, SUSPEND, shard, session_id, None, None)
#   JOIN    (stamp, JOIN, shard, session_id, patient, request_key)
#   LEAVE   (stamp, LEAVE, shard, session_id, patient, None)
BOOK, RELEASE, CREATE, STATE, LOOKUP, LIST = 1, 2, 3, 4, 5, 6
PAY, CHECK_IN, SUSPEND, JOIN, LEAVE = 7, 8, 9, 10, 11
Request = tuple[int, int, str, Any, Any, Any]


def decide(shard: Shard, kind: int, shard_id: str, a: Any, b: Any, c: Any, now: float) -> Outcome:
    """One request against its shard (pure: the shard is the only thing that changes)."""
    if kind == BOOK:
        return shard.book(a, b, c, now)
    if kind == RELEASE:
        return shard.release(a, b, c, now)
    if kind == PAY:
        return shard.pay(a, b, c, now)
    if kind == CHECK_IN:
        return shard.check_in(a, b, c, now)
    if kind == SUSPEND:
        return shard.suspend(a, now)
    if kind == JOIN:
        return shard.join_waitlist(a, b, c, now)
    if kind == LEAVE:
        return shard.leave_waitlist(a, b)
    if kind == CREATE:
        if a.shard_id != shard_id:
            return Conflict("session")
        return shard.create(a)
    if kind == STATE:
        return shard.state(a, now)
    if kind == LOOKUP:
        return shard.lookup(a, b)
    if kind == LIST:
        return shard.bookings_of(a)
    return NotFound("request kind")


def split_shard_id(shard_id: str) -> tuple[str, str]:
    hospital_id, _, date = shard_id.rpartition(":")
    return hospital_id, date
