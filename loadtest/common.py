"""What the locust files share: seeded patients, target sessions, the acknowledgement log."""

from __future__ import annotations

import csv
import itertools
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson


def patients() -> list[tuple[int, str]]:
    """(patient id, token) rows from ``slotengine seed`` (SLOTENGINE_PATIENTS_CSV)."""
    path = Path(os.environ.get("SLOTENGINE_PATIENTS_CSV", "patients.csv"))
    with path.open() as f:
        return [(int(r["patient_id"]), r["token"]) for r in csv.DictReader(f)]


class Tokens:
    """Hands each simulated user its own patient, round robin; with ``share`` (a function
    answering this locust process's index and the number of processes) only this process's
    share of the patients, so no two processes play the same patient. The share is asked at
    the first ``take``: a locust worker learns its index from the master after it starts."""

    def __init__(self, share: Callable[[], tuple[int, int]] = lambda: (0, 1)) -> None:
        self.all = patients()
        self.share = share
        self.rows: list[tuple[int, str]] | None = None
        self._next: Iterator[tuple[int, str]] | None = None
        self._lock = threading.Lock()

    def take(self) -> tuple[int, str]:
        with self._lock:
            if self._next is None:
                index, processes = self.share()
                self.rows = self.all[index::processes] or self.all
                self._next = itertools.cycle(self.rows)
            return next(self._next)


def process_share(environment) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """(this process's index, the number of load processes) under locust's ``--processes``
    or a distributed run (SLOTENGINE_LOAD_PROCESSES processes in all); (0, 1) alone."""
    processes = int(os.environ.get("SLOTENGINE_LOAD_PROCESSES", "1"))
    index = getattr(environment.runner, "worker_index", 0)
    return (index % processes, processes) if processes > 1 else (0, 1)


class Acks:
    """Every booking a client was told about (201/200), for the auditor (JSON lines)."""

    def __init__(self) -> None:
        path = Path(os.environ.get("SLOTENGINE_ACKS", "acknowledged.jsonl"))
        self._file = path.open("ab")
        self._lock = threading.Lock()

    def record(self, patient_id: int, body: dict) -> None:
        line = orjson.dumps({**body, "patient_id": patient_id}) + b"\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()


def target_sessions(host: str) -> list[str]:
    """SLOTENGINE_SESSIONS (comma-separated), else the first four open doctor-sessions of the
    first department: a popular doctor's release."""
    listed = os.environ.get("SLOTENGINE_SESSIONS")
    if listed:
        return listed.split(",")

    def get(path: str):  # type: ignore[no-untyped-def]
        with urllib.request.urlopen(host.rstrip("/") + path, timeout=10) as r:
            return orjson.loads(r.read())

    hospital = get("/v1/hospitals")[0]["id"]
    department = get(f"/v1/hospitals/{hospital}/departments")[0]["id"]
    sessions = get(f"/v1/departments/{department}/sessions")
    return [s["id"] for s in sessions if s["status"] in ("open", "sold_out")][:4]


def pay(client, headers: dict[str, str], booking_id: str) -> None:  # type: ignore[no-untyped-def]
    """Pay a held booking; a 409 with a code (the hold expired first, the money went back) is
    an answer, not an error."""
    with client.post(
        f"/v1/bookings/{booking_id}/payment",
        headers=headers,
        name="/v1/bookings/[id]/payment",
        catch_response=True,
    ) as r:
        if r.status_code == 200 or (r.status_code == 409 and "code" in r.json()):
            r.success()
        else:
            r.failure(f"{r.status_code} {r.text[:200]}")


def join_waitlist(  # type: ignore[no-untyped-def]
    client, headers: dict[str, str], session_id: str, request_id: str, answers: tuple[int, ...]
) -> None:
    """Join a session's waitlist; ``answers`` are the statuses that count as answers."""
    with client.post(
        f"/v1/sessions/{session_id}/waitlist",
        json={"request_id": request_id},
        headers=headers,
        name="/v1/sessions/[id]/waitlist",
        catch_response=True,
    ) as r:
        if r.status_code in answers:
            r.success()
        else:
            r.failure(f"{r.status_code} {r.text[:200]}")
