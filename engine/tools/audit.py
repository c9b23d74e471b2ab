"""The auditor: read the truth from Redis and check the invariants of DESIGN.md.

Used by the tests after every concurrent run, by ``slotengine demo``, and by the load tests.
It reads snapshots without taking ownership (no epoch bump), so it can run beside live hosts.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from engine.core.policy import Policy
from engine.core.session import ENDED_STATES, STATE_NAMES, Extra, unpack_meta
from engine.errors import SnapshotError
from engine.store.outbox import Outbox
from engine.store.payments import SandboxGateway
from engine.store.shards import Store


@dataclass(frozen=True, slots=True)
class StoredBooking:
    booking_id: str
    session_id: str
    patient: int
    request: int
    slot_no: int
    state: str
    fee: int = 0
    paid: bool = False
    refunded: int = 0


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
    money_in: int = 0  # fen taken by the gateway
    money_back: int = 0  # fen refunded by the gateway
    outbox_pending: int = 0  # entries the courier has not carried out yet
    made: dict[str, int] = field(default_factory=dict)  # session → bookings ever made
    forgotten_payments: int = 0  # payments of bookings compacted so long ago their key is gone

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        status = "OK" if self.ok else f"{len(self.problems)} PROBLEMS"
        return (
            f"audit {status}: {self.sessions} sessions, capacity {self.capacity}, "
            f"free {self.free}, held {self.held}, booked {self.booked}, ended {self.ended}; "
            f"paid {self.money_in} fen, refunded {self.money_back}, kept "
            f"{self.money_in - self.money_back}, outbox pending {self.outbox_pending}"
        )


async def audit(store: Store) -> AuditReport:
    """Check invariants 1 (no slot twice, ≤ capacity), 4 (one booking per request),
    5 (day limits of each hospital's policy), 6 (free + held + booked = capacity), and that
    money is conserved (``audit_money``)."""
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
            occupying = sum(1 for no in range(s.count) if s.booking(no)[2] not in ENDED_STATES)
            if (
                len(live) > s.spec.capacity
                or occupying != len(live)
                or s.free + s.held_back + occupying != s.spec.capacity
            ):
                report.problems.append(f"{s.id}: stock not conserved")
            kept = list(s.forgotten_rows())
            for no in range(s.count):
                base = 4 * no
                kept.append((*s.bookings[base : base + 4], s.number_of(no)))
            pairs = Counter((patient, request) for patient, request, *_ in kept)
            for (patient, request), n in pairs.items():
                if n > 1:
                    report.problems.append(f"{s.id}: request {request} of {patient} booked {n}x")
            for patient, request, meta, word, number in kept:
                slot_no, state, _ = unpack_meta(meta)
                extra = Extra.unpack(word)
                bid = f"{s.id}.{number}"
                report.bookings[bid] = StoredBooking(
                    bid,
                    s.id,
                    patient,
                    request,
                    slot_no,
                    STATE_NAMES[state],
                    s.spec.fee,
                    extra.paid,
                    extra.refunded,
                )
                if state not in ENDED_STATES:
                    per_patient.setdefault(patient, []).append(s.spec.department_id)
            report.made[s.id] = s.made
        for patient, departments in per_patient.items():
            if len(departments) > policy.hospital_day_limit:
                report.problems.append(f"{shard_id}: patient {patient} has {len(departments)}")
            worst = max(Counter(departments).values())
            if worst > policy.department_day_limit:
                report.problems.append(f"{shard_id}: patient {patient} has {worst} in a department")
    await audit_money(store, report)
    return report


async def audit_money(store: Store, report: AuditReport) -> None:
    """Money is conserved: for every payment the gateway took, paid = refunded + kept, the
    payer is the booking's patient, and (once the outbox is empty) the gateway refunded exactly
    what the engine decided; a payment the engine never took was refunded in full."""
    gateway = SandboxGateway(store.client, store.keys)
    report.outbox_pending = await Outbox(store.client, store.keys).backlog()
    settled = report.outbox_pending == 0
    for booking_id, payment in (await gateway.ledger()).items():
        report.money_in += payment.amount
        report.money_back += payment.refunded
        booking = report.bookings.get(booking_id)
        if booking is None:
            session_id, _, number = booking_id.rpartition(".")
            if number.isdigit() and int(number) < report.made.get(session_id, 0):
                report.forgotten_payments += 1  # compacted long ago, its key gone: not checkable
                continue
            report.problems.append(f"payment for unknown booking {booking_id}")
            continue
        if payment.account != booking.patient or payment.amount != booking.fee:
            report.problems.append(f"{booking_id}: payment does not match the booking")
        if not 0 <= payment.refunded <= payment.amount:
            report.problems.append(f"{booking_id}: refunded more than was paid")
        if not settled or booking.state == "held":  # a payment may be on its way to the engine
            continue
        expected = booking.refunded if booking.paid else payment.amount
        if payment.refunded != expected:
            report.problems.append(
                f"{booking_id}: gateway refunded {payment.refunded}, the engine says {expected}"
            )
