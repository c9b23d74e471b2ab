"""slotengine's engine: doctor-session actors on a Ray host pool, group commit to Redis.

The pure core (``session``, ``shard``, ``snapshot``, ``outcomes``) imports neither ray, redis
nor asyncio; the shells (``store``, ``host``, ``pool``, ``client``, ``runtime``) do.
"""

from .outcomes import (
    Blacklisted,
    Booked,
    Closed,
    Conflict,
    Created,
    DepartmentDayLimit,
    Done,
    Forbidden,
    HospitalDayLimit,
    NotFound,
    NotOpen,
    Released,
    SessionState,
    SoldOut,
    Suspended,
    Unavailable,
)
from .policy import Policy
from .session import DoctorSession, SessionSpec, shard_id_of
from .settings import Settings
from .shard import Shard

__all__ = [
    "Blacklisted",
    "Booked",
    "Closed",
    "Conflict",
    "Created",
    "DepartmentDayLimit",
    "DoctorSession",
    "Done",
    "Forbidden",
    "HospitalDayLimit",
    "NotFound",
    "NotOpen",
    "Policy",
    "Released",
    "SessionSpec",
    "SessionState",
    "Settings",
    "Shard",
    "SoldOut",
    "Suspended",
    "Unavailable",
    "shard_id_of",
]
