"""Demo history: seeded, realistic past booking records and session sales, for the demo and
the analytics charts. Pure: the same arguments give the same data.

What it imitates (the seed article: reported no-show rates run from 10% to 50%, and older
patients keep appointments more often than young ones):

- Each doctor works a fixed set of AM (08:00) / PM (13:30) sessions a week, with a capacity of
  10-40 slots every 5-15 minutes and a fee of 0 or some fen. Sessions open 7 days before the
  visit at 15:00 local time (the 114 rule, ``Policy()``'s defaults), and close when they start.
- Popular doctors sell out seconds after release; others fill over hours or days, or not at all.
  A slot a patient gives back in a session that sold out is usually booked again.
- Patients have a fixed age, drawn once per patient id (adult-heavy, with children).
- No-show probability falls with age (about 27% at 18-29, 6% at 75+), rises with lead time, is
  higher on Mondays and in the afternoon, and differs by department. Patient cancellations
  (about 5-15%, only before the cutoff, refunded in full) follow weaker versions of the same.
- About 1% of sessions are suspended by the hospital: every booking is cancelled and refunded.

Every booking is paid when it has a fee. A no-show is refunded (``Policy.no_show_refund``).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from engine.backoffice.record import BY_HOSPITAL, BY_PATIENT, VISITED, Record, SessionSale
from engine.core.policy import Policy

Hospitals = Sequence[tuple[str, Sequence[tuple[str, Sequence[str]]]]]

FIRST_SLOT = {"AM": (8, 0), "PM": (13, 30)}
FEES = (0, 0, 0, 500, 1000, 2500, 5000, 10000)  # fen
# (low, high, weight): patients' ages, drawn once per patient
AGES = ((0, 17, 14), (18, 29, 20), (30, 44, 26), (45, 59, 19), (60, 74, 14), (75, 94, 7))
# no-show and cancellation factors
NO_SHOW_BY_AGE = ((18, 0.1), (30, 0.22), (45, 0.14), (60, 0.09), (75, 0.065), (200, 0.05))
CANCEL_BY_AGE = ((18, 0.09), (30, 0.12), (45, 0.10), (60, 0.08), (75, 0.07), (200, 0.06))
NO_SHOW_BY_LEAD = ((86400, 0.65), (3 * 86400, 0.9), (7 * 86400, 1.2), (math.inf, 1.3))
CANCEL_BY_LEAD = ((86400, 0.5), (3 * 86400, 0.9), (7 * 86400, 1.15), (math.inf, 1.2))
MONDAY, PM = 1.25, 1.15  # no-show factors; cancellations take the square root
SUSPENDED = 0.01


def generate(
    hospitals: Hospitals,
    days: int,
    end_date: dt.date,
    seed: int,
    zone: dt.tzinfo,
    patients: int = 20_000,
) -> tuple[list[Record], list[SessionSale]]:
    """Records and sales of every session of ``hospitals`` (``(hospital_id, [(department_id,
    [doctor_id, ...]), ...])``) on the ``days`` visit dates up to and including ``end_date``.

    Patients are ids 1..``patients``. Sales come date by date; records session by session, in
    booking order."""
    if patients < 100:
        raise ValueError("patients must be at least 100 (a session takes up to ~60 of them)")
    rng = random.Random(seed)
    world = _World(rng, Policy(), zone, [_age(rng) for _ in range(patients + 1)], patients)
    doctors: list[_Doctor] = []
    for hospital_id, departments in hospitals:
        for department_id, doctor_ids in departments:
            factor = rng.uniform(0.75, 1.3)
            doctors += [_doctor(rng, hospital_id, department_id, d, factor) for d in doctor_ids]
    records: list[Record] = []
    sales: list[SessionSale] = []
    for offset in range(days - 1, -1, -1):
        day = end_date - dt.timedelta(days=offset)
        for doctor in doctors:
            for period in FIRST_SLOT:
                if (day.weekday(), period) not in doctor.rota or rng.random() < 0.04:
                    continue  # not on the rota, or on leave
                sale, made = _Session(world, doctor, day, period).run()
                sales.append(sale)
                records += made
    return records, sales


@dataclass(frozen=True, slots=True)
class _World:
    rng: random.Random
    policy: Policy
    zone: dt.tzinfo
    ages: list[int]  # by patient id
    patients: int


@dataclass(frozen=True, slots=True)
class _Doctor:
    hospital_id: str
    department_id: str
    doctor_id: str
    capacity: int
    minutes: int  # between slots
    fee: int
    popularity: float  # demand over capacity: ≥ 3 sells out in seconds, 1-3 in hours or days
    rota: frozenset[tuple[int, str]]  # (weekday, period)
    no_show_factor: float  # the department's


def _age(rng: random.Random) -> int:
    low, high, _ = rng.choices(AGES, weights=[w for *_, w in AGES])[0]
    return rng.randint(low, high)


def _doctor(
    rng: random.Random, hospital: str, department: str, doctor: str, factor: float
) -> _Doctor:
    minutes = rng.choice((5, 6, 8, 10, 12, 15))
    capacity = rng.randint(10, min(40, 240 // minutes))
    kind = rng.random()
    if kind < 0.2:
        popularity = rng.uniform(3.5, 10)
    elif kind < 0.5:
        popularity = rng.uniform(1.0, 2.8)
    else:
        popularity = rng.uniform(0.25, 1.0)
    slots = [(d, p) for d in range(5) for p in FIRST_SLOT] + [(5, "AM")]
    rota = frozenset(rng.sample(slots, rng.randint(2, 6)))
    fee = rng.choice(FEES)
    return _Doctor(hospital, department, doctor, capacity, minutes, fee, popularity, rota, factor)


def _factor(table: tuple[tuple[float, float], ...], value: float) -> float:
    return next(f for below, f in table if value < below)


class _Session:
    """One past doctor-session played out: when its slots sold, then each booking's fate."""

    def __init__(self, world: _World, doctor: _Doctor, day: dt.date, period: str) -> None:
        self.world, self.doctor, self.day, self.period = world, doctor, day, period
        self.rng = world.rng
        hour, minute = FIRST_SLOT[period]
        start = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=world.zone)
        self.starts_at = start.timestamp()
        self.opens_at = world.policy.opens_at(day, world.zone)
        self.cutoff = world.policy.cancel_cutoff(day, world.zone)
        ends_at = self.starts_at + doctor.capacity * doctor.minutes * 60
        self.swept_at = ends_at + 60 * world.policy.no_show_grace_minutes
        self.id = f"hist-{doctor.doctor_id}-{day:%Y%m%d}-{period}"
        monday = day.weekday() == 0
        self.demand = doctor.popularity * (1.15 if monday else 0.95)
        self.demand *= math.exp(self.rng.gauss(0, 0.2))
        self.no_show = doctor.no_show_factor * (MONDAY if monday else 1.0)
        self.no_show *= PM if period == "PM" else 1.0
        self.cancel = math.sqrt(self.no_show)

    def slot_at(self, slot: int) -> float:
        return self.starts_at + (slot - 1) * self.doctor.minutes * 60

    def run(self) -> tuple[SessionSale, list[Record]]:
        rng, opens, last = self.rng, self.opens_at, self.starts_at - 60
        capacity = self.doctor.capacity
        sold_out_at: float | None = None
        if self.demand >= 1:
            if self.demand >= 3:  # seconds after release
                span = min(max(math.exp(rng.gauss(math.log(3), 0.8)), 0.3), 9.0)
            else:  # log-interpolated: 10 s at demand 3, most of the window at demand 1
                share = (3 - self.demand) / 2
                span = 10 * (0.95 * (last - opens) / 10) ** share
            sold_out_at = opens + span
            times = sorted(opens + span * rng.random() ** 1.5 for _ in range(capacity - 1))
            times.append(sold_out_at)
        else:
            count = min(round(capacity * self.demand), capacity - 1)
            times = sorted(self._unhurried(opens, last) for _ in range(count))
        suspended_at = None
        if rng.random() < SUSPENDED:
            suspended_at = rng.uniform(times[-1] if times else opens, last)
        patients: set[int] = set()
        queue = [(at, slot) for slot, at in enumerate(times, 1)]
        made: list[tuple[float, int, int, str, str, float]] = []
        while queue:  # (made_at, slot) → (made_at, slot, patient, state, by, changed_at)
            at, slot = queue.pop()
            patient = self._patient(patients)
            if suspended_at is not None:
                made.append((at, slot, patient, "cancelled", BY_HOSPITAL, suspended_at))
                continue
            state, changed = self._fate(patient, at, slot, sold_out_at)
            by = BY_PATIENT if state == "cancelled" else ""
            made.append((at, slot, patient, state, by, changed))
            if by and sold_out_at is not None:  # demand left: the slot is booked again
                again = changed + rng.expovariate(1 / (60 if self.demand >= 3 else 6 * 3600))
                if again < last and rng.random() < min(0.95, 0.3 + (self.demand - 1) / 2):
                    queue.append((again, slot))
        made.sort()
        records = [self._record(n, *booking) for n, booking in enumerate(made)]
        sale = SessionSale(
            session_id=self.id,
            hospital_id=self.doctor.hospital_id,
            department_id=self.doctor.department_id,
            doctor_id=self.doctor.doctor_id,
            date=self.day.isoformat(),
            period=self.period,
            capacity=capacity,
            opens_at=opens,
            starts_at=self.starts_at,
            taken=sum(r.state in VISITED for r in records),
            sold_out_at=sold_out_at,
            suspended=suspended_at is not None,
        )
        return sale, records

    def _unhurried(self, opens: float, last: float) -> float:
        """A booking time in a session that never sells out: the rush after release, a steady
        trickle, or the last day."""
        rng, kind, window = self.rng, self.rng.random(), last - opens
        if kind < 0.35:
            return opens + min(rng.expovariate(1 / (3 * 3600)), window)
        if kind < 0.7:
            return opens + rng.random() * window
        return last - rng.random() * min(window, 30 * 3600)

    def _patient(self, taken: set[int]) -> int:
        while True:  # one booking per patient per session
            patient = self.rng.randint(1, self.world.patients)
            if patient not in taken:
                taken.add(patient)
                return patient

    def _fate(
        self, patient: int, made_at: float, slot: int, sold_out_at: float | None
    ) -> tuple[str, float]:
        """(state, changed_at) of one booking: cancelled, a no-show, or checked in."""
        rng, age = self.rng, self.world.ages[patient]
        slot_at = self.slot_at(slot)
        lead = slot_at - made_at
        # a sold-out session's cancellations come after its sell-out, so sold_out_at holds
        earliest = max(made_at, sold_out_at or 0.0) + 60
        cancel = _factor(CANCEL_BY_AGE, age) * _factor(CANCEL_BY_LEAD, lead) * self.cancel
        if earliest < self.cutoff and rng.random() < cancel:
            return "cancelled", rng.uniform(earliest, self.cutoff)
        no_show = _factor(NO_SHOW_BY_AGE, age) * _factor(NO_SHOW_BY_LEAD, lead) * self.no_show
        if rng.random() < min(0.9, no_show):
            return "no_show", self.swept_at
        return "checked_in", max(made_at + 30, slot_at - rng.uniform(0, 2700))

    def _record(
        self, n: int, made_at: float, slot: int, patient: int, state: str, by: str, at: float
    ) -> Record:
        doctor = self.doctor
        paid = doctor.fee > 0
        return Record(
            booking_id=f"{self.id}.{n}",
            session_id=self.id,
            hospital_id=doctor.hospital_id,
            department_id=doctor.department_id,
            doctor_id=doctor.doctor_id,
            date=self.day.isoformat(),
            period=self.period,
            slot_no=slot,
            slot_at=self.slot_at(slot),
            patient_id=patient,
            state=state,
            cancelled_by=by,
            fee=doctor.fee,
            paid=paid,
            refunded=doctor.fee if paid and state != "checked_in" else 0,
            made_at=made_at,
            changed_at=at,
            age=self.world.ages[patient],
            was_confirmed=True,
        )
