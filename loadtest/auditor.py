"""After a load run: read the truth from Redis and fail loudly on anything wrong.

Checks the engine's invariants (no slot twice, ≤ capacity, stock conserved, one booking per
request, the day rules) and that every booking a client was told about (201 or 200) is in
Redis with the same patient and slot.

    python -m loadtest.auditor acknowledged.jsonl      # exit 1 on any problem
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from engine.settings import Settings
from engine.store.shards import Store
from engine.tools.audit import AuditReport, audit


@dataclass(frozen=True, slots=True)
class Ack:
    booking_id: str
    session_id: str
    patient_id: int
    slot_no: int


def read_acks(path: Path) -> list[Ack]:
    acks = []
    if path.exists():
        for line in path.read_bytes().splitlines():
            if line.strip():
                d = orjson.loads(line)
                patient = int(d["patient_id"])
                acks.append(Ack(d["booking_id"], d["session_id"], patient, d["slot_no"]))
    return acks


async def check(store: Store, acks: Iterable[Ack]) -> AuditReport:
    """The engine audit plus: every acknowledged booking exists, with that patient and slot."""
    report = await audit(store)
    seen: dict[str, Ack] = {}
    for ack in acks:
        stored = report.bookings.get(ack.booking_id)
        if stored is None:
            report.problems.append(f"acknowledged {ack.booking_id} is missing from Redis")
        elif (stored.patient, stored.slot_no) != (ack.patient_id, ack.slot_no):
            report.problems.append(
                f"{ack.booking_id}: told patient {ack.patient_id} slot {ack.slot_no}, "
                f"Redis has patient {stored.patient} slot {stored.slot_no}"
            )
        earlier = seen.setdefault(ack.booking_id, ack)
        if earlier.patient_id != ack.patient_id:
            report.problems.append(f"{ack.booking_id} was acknowledged to two patients")
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = Settings.from_env()
    url = settings.redis_url
    url_file = settings.data_dir / "redis" / "redis.url"
    if url is None and url_file.exists():
        url = url_file.read_text().strip()
    if url is None:
        print("set SLOTENGINE_REDIS_URL", file=sys.stderr)
        return 2
    acks = read_acks(Path(argv[0])) if argv else []

    async def go() -> AuditReport:
        store = Store.from_url(url, settings.namespace, cluster=settings.redis_cluster)
        try:
            return await check(store, acks)
        finally:
            await store.close()

    report = asyncio.run(go())
    print(f"{report.summary()}; {len(acks)} acknowledged bookings checked")
    for problem in report.problems[:50]:
        print(f"PROBLEM: {problem}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
