"""The auditor: read the truth from Redis and check the invariants of DESIGN.md.

Used by the tests after every concurrent run, by ``slotengine demo``, and by the load tests.
It reads snapshots without taking ownership (no epoch bump), so it can run beside live hosts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .errors import SnapshotError
from .policy import Policy
from .session import ENDED_STATES, STATE_NAMES
from .store import Store


@dataclass(frozen=True, slots=True)
class StoredBooking:
    booking_id: str
    session_id: str
    patient: int
    request: int
    slot_no: int
    state: str


@dataclass(slots=True)
class AuditReport:
    sessions: int = 0
    capacity: int = 0
    free: int = 0
    held: int = 0
    booked: int = 0
    ended: int = 0
    bookings: dict[str, StoredBooking] = field(default_factory=dict)
    live_per_session: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        status = "OK" if self.ok else f"{len(self.problems)} PROBLEMS"
        return (
            f"audit {status}: {self.sessions} sessions, capacity {self.capacity}, "
            f"free {self.free}, held {self.held}, booked {self.booked}, ended {self.ended}"
        )


async def audit(store: Store) -> AuditReport:
    """Check invariants 1 (no slot twice, ≤ capacity), 4 (one booking per request),
    5 (day limits of each hospital's policy) and 6 (free + held + booked = capacity)."""
    report = AuditReport()
    policies: dict[str, Policy] = {}
    for shard_id in await store.shard_ids():
        hospital_id = shard_id.rpartition(":")[0]
        if hospital_id not in policies:
            policies[hospital_id] = await store.policy(hospital_id)
        policy = policies[hospital_id]
        try:
            sessions = await store.read_shard_sessions(shard_id)
        except SnapshotError as exc:  # includes "slot held twice"
            report.problems.append(f"{shard_id}: {exc}")
            continue
        per_patient: dict[int, list[str]] = {}
        for s in sessions:
            report.sessions += 1
            report.capacity += s.spec.capacity
            report.free += s.free
            report.held += s.held
            report.booked += s.booked
            report.ended += s.ended
            live = s.live_bookings()
            report.live_per_session[s.id] = len(live)
            if len(live) > s.spec.capacity or s.free + s.held + s.booked != s.spec.capacity:
                report.problems.append(f"{s.id}: stock not conserved")
            pairs = Counter(zip(s.patients, s.requests, strict=True))
            for (patient, request), n in pairs.items():
                if n > 1:
                    report.problems.append(f"{s.id}: request {request} of {patient} booked {n}x")
            for no in range(s.count):
                patient, slot_no, state, _ = s.booking(no)
                bid = s.booking_id(no)
                report.bookings[bid] = StoredBooking(
                    bid, s.id, patient, s.request_of(no), slot_no, STATE_NAMES[state]
                )
                if state not in ENDED_STATES:
                    per_patient.setdefault(patient, []).append(s.spec.department_id)
        for patient, departments in per_patient.items():
            if len(departments) > policy.hospital_day_limit:
                report.problems.append(f"{shard_id}: patient {patient} has {len(departments)}")
            worst = max(Counter(departments).values())
            if worst > policy.department_day_limit:
                report.problems.append(f"{shard_id}: patient {patient} has {worst} in a department")
    return report
