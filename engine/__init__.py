"""slotengine's engine: doctor-session actors on a Ray host pool, group commit to Redis.

The public API, exported lazily (importing ``engine.core.session`` does not load Ray through
this module)::

    from engine import Engine, Runtime, Settings, Policy, SessionSpec, Booked, SoldOut

The tree (arrows only point down; ``docs/architecture.md`` draws the booking's path):

- ``core/``: the pure, synchronous domain (session, shard, policy, snapshot, clock, protocol,
  placement): no ray, redis or asyncio;
- ``store/``: Redis (keys, the shards' snapshots and commits, payments, notices, dead letters,
  the embedded server);
- ``backoffice/``: records, analytics, the HIS link and its deliveries;
- ``actors/``: the Ray shells (host, courier, dispatcher) and their pool;
- ``tools/``: the crowd, the demo history and the auditor;
- here: ``settings``, ``errors``, ``outcomes``, ``client`` (the mailboxes: ``Engine``) and
  ``runtime`` (bring-up: ``Runtime``).
"""

from __future__ import annotations

import importlib
from typing import Any

_OUTCOMES = (
    "Blacklisted",
    "Booked",
    "BookingInfo",
    "Bookings",
    "BookOutcome",
    "CheckedIn",
    "CheckInOutcome",
    "Closed",
    "Conflict",
    "Created",
    "DepartmentDayLimit",
    "Done",
    "Forbidden",
    "HospitalDayLimit",
    "JoinOutcome",
    "LeaveOutcome",
    "LeftWaitlist",
    "Locked",
    "NotFound",
    "NotOpen",
    "NotPayable",
    "NotSoldOut",
    "NotVisitDay",
    "Outcome",
    "OutcomeUnknown",
    "Paid",
    "PayOutcome",
    "Refusal",
    "Released",
    "ReleaseOutcome",
    "SessionState",
    "SoldOut",
    "Stored",
    "SuspendDone",
    "Suspended",
    "SuspendOutcome",
    "TooLate",
    "Unavailable",
    "Waitlisted",
    "WaitlistFull",
    "WrongCode",
    "WrongState",
)
_ERRORS = (
    "CommitUncertain",
    "EgressRefused",
    "Fenced",
    "HisRejected",
    "HisUnavailable",
    "RedisServerError",
    "SlotEngineError",
    "SnapshotError",
    "StoreUnavailable",
)
_WHERE = {
    "Engine": "engine.client",
    "Runtime": "engine.runtime",
    "Settings": "engine.settings",
    "Policy": "engine.core.policy",
    "SessionSpec": "engine.core.session",
    **dict.fromkeys(_OUTCOMES, "engine.outcomes"),
    **dict.fromkeys(_ERRORS, "engine.errors"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (module ``__getattr__``, PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return __all__
