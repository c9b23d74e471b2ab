"""``slotengine loadtest`` as a capacity tester runs it: locust in several processes against
real API workers on a real engine, one audit at the end over every process's
acknowledgements, locust's HTML report beside report.md."""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys

import httpx
import orjson
import pytest

from tests.api.fastpath.test_http import patients, workers  # noqa: F401 (a fixture)
from tests.api.helpers import make_catalog


@pytest.mark.timeout(600)
def test_two_locust_processes_share_the_patients_and_are_audited_once(runtime, workers, tmp_path):  # noqa: F811
    async def prepare():
        async with httpx.AsyncClient(base_url=workers[0], timeout=30) as client:
            await make_catalog(client, capacity=30, doctors=4)
        return await patients(runtime, 200)

    rows = asyncio.run(prepare())
    seeded = tmp_path / "patients.csv"
    with seeded.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["patient_id", "phone", "token"])
        writer.writerows((pid, "", token) for pid, token in rows)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "SLOTENGINE_REDIS_URL": runtime.settings.redis_url,
        "SLOTENGINE_NAMESPACE": runtime.settings.namespace,
    }
    command = [
        sys.executable, "-m", "api.cli", "loadtest", "--host", workers[0], "--users", "200",
        "--spawn-seconds", "2", "--run-time", "8", "--patients-csv", str(seeded),
        "--out", str(out), "--processes", "2",
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "2 locust processes" in report
    assert "audit" in report.lower() and "PROBLEM" not in report
    assert (out / "locust.html").stat().st_size > 10_000, "locust's HTML report is written"
    acks = [orjson.loads(line) for line in (out / "acknowledged.jsonl").read_bytes().splitlines()]
    assert 0 < len(acks) <= 4 * 2 * 30  # booked, never beyond the sessions' slots
    by_patient = [a["patient_id"] for a in acks]
    print(f"{len(acks)} acknowledged, {len(set(by_patient))} patients")
    assert len(by_patient) == len(set(by_patient)), "each patient played by one process only"
    # each process plays its own half: more patients booked than one half holds (the
    # four target sessions have 120 slots for 200 patients)
    assert len(set(by_patient)) > len(rows) // 2
