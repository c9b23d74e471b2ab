"""Failures of the engine (business answers are outcomes, see ``outcomes.py``).

SlotEngineError
├── SnapshotError        a stored snapshot cannot be decoded (corrupt, unknown version)
├── StoreUnavailable     Redis cannot be reached or did not confirm a write
│   ├── Fenced           a newer host owns the shard; this host must not write it
│   └── CommitUncertain  a commit's round trip failed after it may have been sent
├── RedisServerError     the embedded Redis server could not be started
├── HisUnavailable       the HIS or social insurance did not answer (network, timeout, 5xx,
│                        429): worth retrying later
├── HisRejected          the HIS or social insurance refused the call (4xx): retrying will not
│                        help; carries the remote's code and message
└── EgressRefused        we refuse to call an address (loopback, private, link-local, ...;
                         see ``backoffice/egress.py``): final until an admin changes the
                         link or the allow list
"""

from __future__ import annotations


class SlotEngineError(Exception):
    """Base of every failure raised by slotengine."""


class SnapshotError(SlotEngineError):
    """A snapshot is corrupt, truncated, or of an unknown version."""


class StoreUnavailable(SlotEngineError):
    """The store could not be read or did not confirm a write."""


class Fenced(StoreUnavailable):
    """A write was refused because a newer epoch owns the shard."""


class CommitUncertain(StoreUnavailable):
    """A commit's round trip failed once it may have been sent: Redis may or may not have run
    it. ``Store.settle`` finds out (and fences the shard so that it cannot run later)."""


class NotDurable(StoreUnavailable):
    """A commit ran on the master, but Redis did not confirm within the deadline that it
    reached the AOF the durability level asks for (``WAITAOF``): it may be lost in a crash or
    a failover, so what it decided is answered ``OutcomeUnknown``."""


class DurabilityError(SlotEngineError):
    """The durability asked for (``SLOTENGINE_DURABILITY``) cannot be kept by this Redis: the
    platform refuses to start rather than acknowledge what it cannot keep."""


class RedisServerError(SlotEngineError):
    """The embedded Redis server could not be found or started."""


class HisUnavailable(SlotEngineError):
    """The HIS or social-insurance system could not be reached, timed out, or answered 5xx or
    429: the call may or may not have taken effect, and is worth retrying later."""


class HisRejected(SlotEngineError):
    """The HIS or social-insurance system refused the call (a 4xx other than 429): sending it
    again will not help."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message)  # all in args, so it pickles (e.g. across Ray)
        self.status, self.code, self.message = status, code, message

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


class EgressRefused(SlotEngineError):
    """The server will not call this address: not http(s), no host, or a name or address in a
    network it must not reach (loopback, private, link-local such as the cloud metadata
    service, ...) and not allowed by ``his_allow_networks``. Not the remote's answer (no call
    was made); sending again will not help until an admin changes the link or the allow list."""

    code = "address_not_allowed"

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(host, reason)  # all in args, so it pickles
        self.host, self.reason = host, reason

    def __str__(self) -> str:
        return f"{self.code}: {self.host} {self.reason}"
