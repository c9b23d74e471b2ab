"""Demo data for ``slotengine up``: hospitals, departments, doctors, a week of sessions, and a
season of past bookings for the analytics.

Today's and tomorrow's sessions open at once; the rest of the week opens in two minutes, so
the demo shows ``not_open`` turning into ``open`` on its own.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any

from api.accounts.auth import Tokens, hash_password
from api.accounts.identity import mask_document, resident_check_character
from api.answers import LocalTime
from api.catalog.catalog import Catalog
from engine.backoffice.record_book import RecordBook
from engine.client import Engine
from engine.core.session import SessionSpec
from engine.outcomes import Created
from engine.tools.history import generate

HOSPITALS = {
    "北京协和医院": ["心内科", "消化内科", "内分泌科", "皮肤科"],
    "上海瑞金医院": ["心内科", "神经内科", "眼科"],
    "华西医院": ["呼吸内科", "骨科", "儿科"],
}
DOCTORS = [("王建国", "主任医师"), ("李秀英", "副主任医师"), ("张伟", "主治医师")]
PERIODS = {"AM": "08:00", "PM": "13:30"}
DEMO_PHONE, DEMO_PASSWORD = "+8613800000000", "demo-password"
SEED_PHONES = 10**8  # seeded patients' phones: +86 199 and 8 digits
HISTORY_PATIENTS = 10_000_000  # history's made-up patients are numbered from here


async def load(engine: Engine, catalog: Catalog, clock: LocalTime, days: int = 7) -> int:
    """Create the demo catalog unless the platform has hospitals already; sessions made."""
    if await catalog.hospitals():
        return 0
    now = time.time()
    today = datetime.now(clock.zone).date()
    made = 0
    for hospital_name, departments in HOSPITALS.items():
        hospital = await catalog.create_hospital({"name": hospital_name, "level": "三甲"})
        for department_name in departments:
            department = await catalog.create_department(
                {"hospital_id": hospital["id"], "name": department_name}
            )
            for doctor_name, title in DOCTORS[:2]:
                doctor = await catalog.create_doctor(
                    {
                        "department_id": department["id"],
                        "hospital_id": hospital["id"],
                        "name": doctor_name,
                        "title": title,
                    }
                )
                for day in range(days):
                    date = today + timedelta(days=day)
                    for period, first in PERIODS.items():
                        made += await _session(
                            engine,
                            catalog,
                            clock,
                            doctor,
                            date,
                            period,
                            first,
                            now + (0 if day < 2 else 120),
                        )
    return made


async def _session(engine, catalog, clock, doctor, date, period, first, opens_at) -> int:
    hour, minute = (int(x) for x in first.split(":"))
    starts = datetime(date.year, date.month, date.day, hour, minute, tzinfo=clock.zone)
    if starts.timestamp() <= opens_at:
        return 0  # already begun: nothing to book
    fee = 0 if period == "AM" else 2500  # afternoon and evening clinics take a fee (held first)
    session_id = await catalog.new_session_id()
    spec = SessionSpec(
        id=session_id,
        hospital_id=doctor["hospital_id"],
        department_id=doctor["department_id"],
        doctor_id=doctor["id"],
        date=date.isoformat(),
        period=period,
        capacity=30,
        first_slot_minute=hour * 60 + minute,
        slot_minutes=8,
        fee=fee,
        opens_at=opens_at,
        closes_at=starts.timestamp(),
        starts_at=starts.timestamp(),
    )
    if not isinstance(await engine.create_session(spec), Created):
        return 0
    doc: dict[str, Any] = {
        "id": session_id,
        "hospital_id": spec.hospital_id,
        "department_id": spec.department_id,
        "doctor_id": spec.doctor_id,
        "date": spec.date,
        "period": period,
        "capacity": 30,
        "first_slot_at": first,
        "slot_minutes": 8,
        "fee": fee,
        "opens_at_epoch": opens_at,
        "closes_at_epoch": spec.closes_at,
    }
    await catalog.add_session(doc)
    return 1


def resident_id(birth: date, seq: int, region: str = "110101") -> str:
    """A well-formed (made-up) resident ID number: region, birth date, sequence, check."""
    first17 = f"{region}{birth:%Y%m%d}{seq % 1000:03d}"
    return first17 + resident_check_character(first17)


def _seed_identity(k: int) -> tuple[str, str]:
    """(phone, resident ID number) of the k-th seeded patient: distinct for k < 10**8."""
    birth = date(1950, 1, 1) + timedelta(days=k % 20_000)
    return f"+86199{k:08d}", resident_id(birth, k // 20_000, region="110108")


async def demo_patient(catalog: Catalog, tokens: Tokens) -> tuple[int, str]:
    """The demo patient (created once) and a fresh token for them."""
    patient = await catalog.patient_by_phone(DEMO_PHONE)
    if patient is None:
        number = resident_id(date(1990, 1, 1), 123)
        patient_id = await catalog.register_patient(
            {
                "name": "演示患者",
                "phone": DEMO_PHONE,
                "id_type": "resident",
                "id_hash": tokens.hash_id(number),
                "id_masked": mask_document("resident", number),
                "birth_date": "1990-01-01",
                "password_hash": hash_password(DEMO_PASSWORD),
            }
        )
        assert patient_id is not None
    else:
        patient_id = patient["id"]
    return patient_id, tokens.issue(patient_id)


async def seed_patients(
    catalog: Catalog, tokens: Tokens, count: int, start: int | None = None
) -> list[tuple[int, str, str]]:
    """``count`` new patients (one shared password hash: these are load-test accounts), with
    valid phones (+86 199...) and resident ID numbers; (patient id, phone, token). ``start``:
    the first seed number (random by default, so runs do not collide)."""
    hashed = hash_password(DEMO_PASSWORD)
    start = random.randrange(SEED_PHONES - 4 * count) if start is None else start
    out = []
    k = start
    while len(out) < count and k < SEED_PHONES:
        phone, number = _seed_identity(k)
        k += 1
        patient_id = await catalog.register_patient(
            {
                "name": f"压测{k}",
                "phone": phone,
                "id_type": "resident",
                "id_hash": tokens.hash_id(number),
                "id_masked": mask_document("resident", number),
                "birth_date": number[6:10] + "-" + number[10:12] + "-" + number[12:14],
                "password_hash": hashed,
            }
        )
        if patient_id is not None:  # taken by an earlier run: try the next number
            out.append((patient_id, phone, tokens.issue(patient_id)))
    return out


async def load_history(
    catalog: Catalog, records: RecordBook, clock: LocalTime, days: int = 90, seed: int = 1
) -> int:
    """Past bookings of the demo doctors (``engine.history``: older patients keep their
    appointments more often, and so on) written straight into the records, so the analytics
    have a season to show. Their patients are made-up ids from 10,000,001 on: nobody who can
    log in. Records made."""
    hospitals = []
    for hospital in await catalog.hospitals():
        departments = []
        for department in await catalog.children("hospital", hospital["id"], "department"):
            doctors = await catalog.children("department", department["id"], "doctor")
            departments.append((department["id"], [d["id"] for d in doctors]))
        hospitals.append((hospital["id"], departments))
    yesterday = datetime.now(clock.zone).date() - timedelta(days=1)
    made, sales = generate(hospitals, days, yesterday, seed, clock.zone)
    made = [replace(r, patient_id=HISTORY_PATIENTS + r.patient_id) for r in made]
    for i in range(0, len(made), 5000):
        await records.put([(None, r) for r in made[i : i + 5000]], sales if i == 0 else ())
    return len(made)
