"""The API as platforms meet it: real uvicorn worker processes over real HTTP.

Two API worker processes join the test's Ray and Redis (as ``slotengine serve`` does), so the
fast path and its pub/sub are exercised across processes.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest
import ray

from api.accounts.auth import Tokens
from api.catalog.catalog import Catalog
from api.cli.demo_data import seed_patients
from api.services import shared_secret
from engine.store.embedded import free_port
from loadtest.auditor import Ack, check
from tests.api.helpers import ADMIN, admin_headers, make_catalog


@pytest.fixture
def workers(runtime, tmp_path):
    env = {
        **os.environ,
        "SLOTENGINE_REDIS_URL": runtime.settings.redis_url,
        "SLOTENGINE_REDIS_CLUSTER": "1" if runtime.settings.redis_cluster else "",
        "SLOTENGINE_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "SLOTENGINE_ADMIN_TOKEN": ADMIN,
        "SLOTENGINE_NAMESPACE": runtime.settings.namespace,
        "SLOTENGINE_HOSTS": str(runtime.settings.hosts),
        "SLOTENGINE_RATE_PER_SECOND": "1000",
        "SLOTENGINE_RATE_BURST": "1000",
        "SLOTENGINE_ADDRESS_LIMITS": "off",  # the test crowd comes from one address
    }
    procs, urls = [], []
    for i in range(2):
        port = free_port()
        log = open(tmp_path / f"worker{i}.log", "wb")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "1"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        deadline = time.time() + 90
        for url in urls:
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError((tmp_path / "worker0.log").read_text()[-2000:])
                time.sleep(0.3)
        yield urls
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


async def patients(runtime, count: int) -> list[tuple[int, str]]:
    """(patient id, token) for ``count`` new patients, made straight in Redis (fast)."""
    engine = runtime.engine()
    client, keys = engine.store.client, engine.store.keys
    tokens = Tokens(await shared_secret(runtime.settings, client, keys), ADMIN, 3600)
    rows = await seed_patients(Catalog(client, keys), tokens, count)
    await engine.close()
    return [(pid, token) for pid, _, token in rows]


@pytest.mark.timeout(600)
async def test_flash_crowd_over_http_is_audited(runtime, workers, tmp_path):
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=workers[0], timeout=30) as admin_client:
        cats = [await make_catalog(admin_client, capacity=30, doctors=5) for _ in range(2)]
    sessions = [s for c in cats for s in c["sessions"]]
    crowd = await patients(runtime, 400)
    plan = []
    for n in range(5_200):
        patient, token = rng.choice(crowd)
        rid = f"r{rng.randrange(3)}"  # patients come back with the same request ids
        plan.append((rng.choice(sessions), patient, token, rid, workers[n % 2]))
    answers: list[tuple[int, int, dict]] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)

    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def submitter(share):
            for sid, patient, token, rid, base in share:
                r = await client.post(
                    f"{base}/v1/sessions/{sid}/bookings",
                    json={"request_id": f"{sid}-{rid}"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                answers.append((r.status_code, patient, r.json()))

        started = time.perf_counter()
        try:
            await asyncio.gather(*(submitter(plan[i::200]) for i in range(200)))
        except httpx.TransportError as exc:  # say what the servers saw
            logs = [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
            raise AssertionError(f"{exc!r} after {len(answers)} answers; {logs}") from exc
        seconds = time.perf_counter() - started
    codes = Counter((status, body.get("code")) for status, _, body in answers)
    print(f"{len(answers)} answers in {seconds:.1f}s: {dict(codes)}")
    assert len(answers) == 5_200
    failures = [body for status, _, body in answers if status >= 500]
    assert not failures, (codes, failures[:3])
    assert set(codes) <= {
        (201, None),
        (200, None),
        (409, "sold_out"),
        (422, "department_day_limit"),
        (422, "hospital_day_limit"),
    }
    acks = [
        Ack(b["booking_id"], b["session_id"], patient, b["slot_no"])
        for status, patient, b in answers
        if status in (200, 201)
    ]
    assert codes[(201, None)] == 30 * len(sessions)  # every slot sold, once
    engine = runtime.engine()
    report = await check(engine.store, acks)
    await engine.close()
    print(report.summary())
    assert report.ok, report.problems
    assert report.booked == 30 * len(sessions)


async def test_released_slot_is_bookable_again_in_every_worker(runtime, workers):
    async with httpx.AsyncClient(timeout=30) as client:
        cat = await make_catalog(
            httpx.AsyncClient(base_url=workers[0], timeout=30), capacity=1, doctors=1
        )
        sid = cat["sessions"][0]
        (_, token_a), (_, token_b) = await patients(runtime, 2)
        auth_a, auth_b = ({"Authorization": f"Bearer {t}"} for t in (token_a, token_b))
        booked = await client.post(
            f"{workers[0]}/v1/sessions/{sid}/bookings", json={"request_id": "a"}, headers=auth_a
        )
        assert booked.status_code == 201

        async def fast_hits(url: str) -> float:
            text = (await client.get(f"{url}/metrics", headers=admin_headers())).text
            lines = [
                ln
                for ln in text.splitlines()
                if ln.startswith('slotengine_fast_path_answers_total{code="sold_out"}')
            ]
            return float(lines[0].split()[-1]) if lines else 0.0

        for url in workers:  # every worker learns the sell-out and answers it from the fast path
            for _ in range(50):
                before = await fast_hits(url)
                r = await client.post(
                    f"{url}/v1/sessions/{sid}/bookings", json={"request_id": "b"}, headers=auth_b
                )
                assert r.status_code == 409
                assert r.json()["code"] == "sold_out"
                if await fast_hits(url) > before:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"{url} never answered sold_out from its fast path")

        cancelled = await client.post(
            f"{workers[0]}/v1/bookings/{booked.json()['booking_id']}/cancel", headers=auth_a
        )
        assert cancelled.status_code == 200
        released_at = time.perf_counter()
        while True:  # the other worker lets the request through within a second
            r = await client.post(
                f"{workers[1]}/v1/sessions/{sid}/bookings", json={"request_id": "b"}, headers=auth_b
            )
            if r.status_code == 201:
                break
            assert time.perf_counter() - released_at < 1.0, "worker 1 still says sold out"
            await asyncio.sleep(0.02)
        print(f"bookable again in the other worker after {time.perf_counter() - released_at:.3f}s")
        assert r.json()["slot_no"] == 1


@pytest.mark.timeout(900)
async def test_schemathesis_finds_no_server_errors(runtime, workers):
    """Property-based requests from the app's own OpenAPI document: never a 5xx."""
    async with httpx.AsyncClient(base_url=workers[0], timeout=30) as client:
        await make_catalog(client, capacity=5, doctors=1)
    [(_, token)] = await patients(runtime, 1)
    runs = [
        ("^/v1/(sessions|bookings|me|patients|auth|hospitals|departments)", token),
        ("^/v1/admin/", ADMIN),
    ]
    for paths, bearer in runs:
        done = await asyncio.to_thread(
            subprocess.run,
            [
                os.path.join(os.path.dirname(sys.executable), "schemathesis"),
                "run",
                f"{workers[0]}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "25",
                "--seed",
                "1",
                "-H",
                f"Authorization: Bearer {bearer}",
                "--request-timeout",
                "20",
                "--include-path-regex",
                paths,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        print(done.stdout[-30000:])
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
