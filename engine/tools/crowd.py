"""A synthetic flash crowd (抢号) for the demo, the tests and the benchmarks.

``plan`` is pure: a reproducible list of booking requests from a seed. ``play`` sends them
through an engine from concurrent asyncio submitters (each awaits its answer before its next
request) and records every answer. ``CrowdDriver`` is a Ray actor that plays a share of a crowd
from its own process, so several drivers submit at once, as several API workers would.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import time
from dataclasses import dataclass

import ray
from ray.actor import ActorHandle

from engine.core.session import SessionSpec
from engine.outcomes import Outcome
from engine.settings import Settings

BEIJING = datetime.timezone(datetime.timedelta(hours=8))


@dataclass(frozen=True, slots=True)
class CrowdRequest:
    session_id: str
    patient: int
    request_id: str


@dataclass(frozen=True, slots=True)
class Answer:
    request: CrowdRequest
    outcome: Outcome
    sent_at: float
    answered_at: float


def catalog(
    hospitals: int = 5,
    sessions_per_hospital: int = 10,
    capacity: int = 30,
    date: str | None = None,
    opens_at: float = 0.0,
    fee: int = 0,
    prefix: str = "",
) -> list[SessionSpec]:
    """Doctor-sessions of ``hospitals`` hospitals on one date (default: a week from today):
    two doctors per department, AM at 08:00 and PM at 13:30 Beijing time."""
    if date is None:
        date = (datetime.date.today() + datetime.timedelta(days=7)).isoformat()
    day = datetime.date.fromisoformat(date)

    def at(minute: int) -> float:
        start = datetime.datetime(day.year, day.month, day.day, tzinfo=BEIJING)
        return start.timestamp() + minute * 60

    return [
        SessionSpec(
            id=f"{prefix}h{h}-{date}-{k}",
            hospital_id=f"{prefix}h{h}",
            department_id=f"{prefix}h{h}-d{k // 2}",
            doctor_id=f"{prefix}h{h}-doc{k}",
            date=date,
            period="AM" if k % 2 == 0 else "PM",
            capacity=capacity,
            first_slot_minute=8 * 60 if k % 2 == 0 else 13 * 60 + 30,
            slot_minutes=8,
            fee=fee,
            opens_at=opens_at,
            closes_at=at(8 * 60 if k % 2 == 0 else 13 * 60 + 30),
            starts_at=at(8 * 60 if k % 2 == 0 else 13 * 60 + 30),
        )
        for h in range(hospitals)
        for k in range(sessions_per_hospital)
    ]


def plan(
    sessions: list[SessionSpec],
    requests: int,
    patients: int,
    seed: int,
    repeat_rate: float = 0.15,
    cold: dict[str, int] | None = None,
) -> list[CrowdRequest]:
    """Requests on ``sessions``, shuffled: patients that come back with the same request id,
    and patients that try several sessions of one hospital-day (so the day rules bite).

    ``cold`` maps a session id to a number of fresh patients who each ask for it once and
    nothing else: those sessions end with exactly that many bookings.
    """
    rng = random.Random(seed)
    cold = cold or {}
    hot = [s.id for s in sessions if s.id not in cold]
    out: list[CrowdRequest] = []
    mine: dict[int, list[CrowdRequest]] = {}
    for n in range(requests - sum(cold.values())):
        patient = rng.randrange(patients)
        earlier = mine.get(patient)
        if earlier and rng.random() < repeat_rate:
            out.append(rng.choice(earlier))
            continue
        request = CrowdRequest(rng.choice(hot), patient, f"r{seed}-{n}")
        mine.setdefault(patient, []).append(request)
        out.append(request)
    fresh = 10**9
    for session_id, count in cold.items():
        for _ in range(count):
            fresh += 1
            out.append(CrowdRequest(session_id, fresh, f"cold-{fresh}"))
    rng.shuffle(out)
    return out


async def play(engine: object, requests: list[CrowdRequest], submitters: int) -> list[Answer]:
    """Send ``requests`` from ``submitters`` concurrent closed-loop submitters."""
    answers: list[Answer] = []

    async def submitter(share: list[CrowdRequest]) -> None:
        for r in share:
            sent = time.time()
            outcome = await engine.book(r.session_id, r.patient, r.request_id)  # type: ignore[attr-defined]
            answers.append(Answer(r, outcome, sent, time.time()))

    await asyncio.gather(*(submitter(requests[i::submitters]) for i in range(submitters)))
    return answers


@ray.remote(num_cpus=0)
class CrowdDriver:
    """A separate driver process with its own engine client and mailboxes."""

    def __init__(self, settings: Settings, hosts: list[ActorHandle]) -> None:
        self.settings = settings
        self.hosts = hosts

    async def play(self, requests: list[CrowdRequest], submitters: int) -> list[Answer]:
        from engine.client import Engine

        engine = Engine(self.settings, self.hosts)
        try:
            return await play(engine, requests, submitters)
        finally:
            await engine.close()
