"""API benchmark: wrk against the real servers, one table (README "Benchmarks").

    python -m benchmarks.api [--duration 10] [--connections 64] [--workers 2] [--repeats 3]

Needs ``wrk`` (Debian package) and PostgreSQL (``benchmarks/postgres.sh`` installs and starts
it, and this command stops it again). Every row runs the same number of uvicorn workers:
(a) a raw ASGI constant answer, the ceiling; (b) slotengine's sold-out fast path; (c) booking
through the full design with enough stock that most requests succeed; (d) the seed's two
answers behind a FastAPI route: a Redis Lua script, and a PostgreSQL conditional UPDATE.
Every booking variant is audited for oversell afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import ray

from api.accounts.auth import Tokens
from api.catalog.catalog import Catalog
from api.cli.demo_data import seed_patients
from api.services import shared_secret
from engine.core.session import SessionSpec
from engine.outcomes import Booked
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.embedded import free_port
from engine.tools.audit import audit

HERE = Path(__file__).parent
ADMIN = "bench-admin-token-0123456789"
# 10 hospitals x 167 doctor-sessions x 30 slots = 50,100 slots; 6,000 patients x 10 hospitals
# = 60,000 (patient, department-day) pairs: most requests of a 10 s run find stock and pass.
HOSPITALS, DOCTORS, CAPACITY, PATIENTS = 10, 167, 30, 6000


def wrk(url: str, plan: Path, duration: int, connections: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-s", str(HERE / "book.lua"), url],
        env={**os.environ, "BENCH_PLAN": str(plan)},
        capture_output=True,
        text=True,
        check=True,
    )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    p50, p99 = (
        int(x) / 1000 for x in re.search(r"LATENCY p50=(\d+) p99=(\d+)", out.stdout).groups()
    )  # type: ignore[union-attr]
    return rate, p50, p99


def start_server(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        args, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server {args} did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def uvicorn(target: str, port: int, workers: int, factory: bool = False) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        target,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
        *(["--factory"] if factory else []),
    ]


async def make_sessions(rt: Runtime, catalog: Catalog, date: str) -> list[list[str]]:
    """HOSPITALS hospitals with one department of DOCTORS sessions of CAPACITY slots each."""
    engine = rt.engine()
    by_hospital = []
    specs = []
    for h in range(HOSPITALS):
        ids = []
        for d in range(DOCTORS):
            sid = f"b{h}-{d}-{date}"
            spec = SessionSpec(
                id=sid,
                hospital_id=f"bh{h}",
                department_id=f"bh{h}-dep",
                doctor_id=f"bh{h}-doc{d}",
                date=date,
                period="AM",
                capacity=CAPACITY,
                first_slot_minute=480,
                slot_minutes=1,
            )
            specs.append(spec)
            await catalog.add_session(
                {
                    "id": sid,
                    "hospital_id": spec.hospital_id,
                    "department_id": spec.department_id,
                    "doctor_id": spec.doctor_id,
                    "date": date,
                    "period": "AM",
                    "capacity": CAPACITY,
                    "opens_at_epoch": 0.0,
                    "closes_at_epoch": None,
                }
            )
            ids.append(sid)
        by_hospital.append(ids)
    await asyncio.gather(*(engine.create_session(s) for s in specs))
    await engine.close()
    return by_hospital


def write_plan(path: Path, sessions: list[list[str]], tokens: list[str], seed: int) -> None:
    """Patient i % P at hospital (i // P) % H: each patient meets each hospital (one department
    each) once per cycle, so the day rules refuse only what a second cycle repeats."""
    rng = random.Random(seed)
    lines = []
    for i in range(len(tokens) * len(sessions)):
        hospital = sessions[(i // len(tokens)) % len(sessions)]
        lines.append(f"{rng.choice(hospital)} {tokens[i % len(tokens)]}")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    pg_dsn = (
        subprocess.run(
            ["bash", str(HERE / "postgres.sh")], capture_output=True, text=True, check=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    work = Path(tempfile.mkdtemp(prefix="slotengine-apibench-"))
    settings = Settings.from_env(
        None,
        hosts=1,
        host_cpus=1,
        data_dir=work,
        namespace="apibench",
        admin_token=ADMIN,
        rate_per_second=1e6,
        rate_burst=10**6,
    )
    rows: dict[str, list[tuple[float, float, float]]] = {}
    audits: dict[str, int] = {}
    rt = Runtime.start(settings)
    servers: list[subprocess.Popen[bytes]] = []
    try:
        url = rt.settings.redis_url
        assert url is not None

        async def prepare() -> tuple[list[str], str, Catalog]:
            engine = rt.engine()
            client, keys = engine.store.client, engine.store.keys
            secret = await shared_secret(rt.settings, client, keys)
            rows_ = await seed_patients(
                Catalog(client, keys), Tokens(secret, ADMIN, 86400), PATIENTS
            )
            await engine.close()
            return [t for _, _, t in rows_], secret, Catalog(client, keys)

        tokens, secret, _ = asyncio.run(prepare())
        env = {
            "SLOTENGINE_REDIS_URL": url,
            "SLOTENGINE_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
            "SLOTENGINE_ADMIN_TOKEN": ADMIN,
            "SLOTENGINE_NAMESPACE": "apibench",
            "SLOTENGINE_HOSTS": "1",
            "SLOTENGINE_RATE_PER_SECOND": "1000000",
            "SLOTENGINE_RATE_BURST": "1000000",
            "SLOTENGINE_ADDRESS_LIMITS": "off",  # wrk is one client address
            "BENCH_REDIS_URL": url,
            "BENCH_PG_DSN": pg_dsn,
            "BENCH_SECRET": secret,
        }
        ports = {name: free_port() for name in ("raw", "ours", "lua", "pg")}
        servers.append(
            start_server(
                uvicorn("benchmarks.apps:raw", ports["raw"], args.workers), env, ports["raw"]
            )
        )
        servers.append(
            start_server(
                [
                    sys.executable,
                    "-m",
                    "api.cli",
                    "serve",
                    "--port",
                    str(ports["ours"]),
                    "--workers",
                    str(args.workers),
                ],
                env,
                ports["ours"],
            )
        )
        print("servers up; preparing data", flush=True)
        # (b) one sold-out session: everyone is refused by the fast path
        soldout_plan = work / "soldout.txt"

        async def sell_out() -> str:
            engine = rt.engine()
            client, keys = engine.store.client, engine.store.keys
            spec = SessionSpec(
                id="soldout",
                hospital_id="bs",
                department_id="bs-dep",
                doctor_id="bs-doc",
                date="2030-06-01",
                period="AM",
                capacity=1,
                first_slot_minute=480,
                slot_minutes=1,
            )
            await engine.create_session(spec)
            await Catalog(client, keys).add_session(
                {
                    "id": "soldout",
                    "hospital_id": "bs",
                    "department_id": "bs-dep",
                    "doctor_id": "bs-doc",
                    "date": "2030-06-01",
                    "period": "AM",
                    "capacity": 1,
                    "opens_at_epoch": 0.0,
                    "closes_at_epoch": None,
                }
            )
            assert isinstance(await engine.book("soldout", 1, "first"), Booked)
            await engine.close()
            return "soldout"

        asyncio.run(sell_out())
        soldout_plan.write_text("".join(f"soldout {t}\n" for t in tokens))
        time.sleep(1.5)  # the workers hear of the sell-out and learn its holder
        for _ in range(args.repeats):
            rows.setdefault("a", []).append(
                wrk(
                    f"http://127.0.0.1:{ports['raw']}",
                    soldout_plan,
                    args.duration,
                    args.connections,
                )
            )
            rows.setdefault("b", []).append(
                wrk(
                    f"http://127.0.0.1:{ports['ours']}",
                    soldout_plan,
                    args.duration,
                    args.connections,
                )
            )
        # (c) full design with stock; (d) the baselines on the same sessions and plan
        for name in ("lua", "pg"):
            command = uvicorn(f"benchmarks.apps:{name}", ports[name], args.workers, factory=True)
            servers.append(start_server(command, env, ports[name]))
        for r in range(args.repeats):
            date = (datetime.date(2031, 1, 1) + datetime.timedelta(days=r)).isoformat()

            async def sessions_for(date: str = date) -> list[list[str]]:
                engine = rt.engine()
                made = await make_sessions(
                    rt, Catalog(engine.store.client, engine.store.keys), date
                )
                for ids in made:  # the same stock for the Lua baseline
                    for sid in ids:
                        await engine.store.client.set(f"lua:{sid}:stock", CAPACITY)
                await engine.close()
                return made

            sessions = asyncio.run(sessions_for())
            pg_setup(pg_dsn, [s for ids in sessions for s in ids])
            plan = work / f"plan-{r}.txt"
            write_plan(plan, sessions, tokens, seed=r)
            time.sleep(1.0)
            rows.setdefault("c", []).append(
                wrk(f"http://127.0.0.1:{ports['ours']}", plan, args.duration, args.connections)
            )
            rows.setdefault("d1", []).append(
                wrk(f"http://127.0.0.1:{ports['lua']}", plan, args.duration, args.connections)
            )
            rows.setdefault("d2", []).append(
                wrk(f"http://127.0.0.1:{ports['pg']}", plan, args.duration, args.connections)
            )
            audits["c"] = audits.get("c", 0) + asyncio.run(engine_oversold(rt))
            audits["d1"] = audits.get("d1", 0) + asyncio.run(lua_oversold(url, sessions))
            audits["d2"] = audits.get("d2", 0) + pg_oversold(pg_dsn)
        booked = asyncio.run(booked_count(rt))
    finally:
        for proc in servers:
            stop(proc)
        rt.stop()
        subprocess.run(["bash", str(HERE / "postgres.sh"), "stop"], check=False)
    print_table(args, rows, audits, booked)


def pg_setup(dsn: str, sessions: list[str]) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS stock (session_id text PRIMARY KEY, "
            "remaining int NOT NULL, capacity int NOT NULL)"
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS booking (id bigserial PRIMARY KEY, "
            "session_id text NOT NULL, patient_id bigint NOT NULL, "
            "request_id text NOT NULL)"
        )
        await conn.executemany(
            "INSERT INTO stock VALUES ($1, $2, $2) ON CONFLICT DO NOTHING",
            [(s, CAPACITY) for s in sessions],
        )
        await conn.close()

    asyncio.run(go())


def pg_oversold(dsn: str) -> int:
    import asyncpg

    async def go() -> int:
        conn = await asyncpg.connect(dsn)
        bad = await conn.fetchval(
            "SELECT count(*) FROM stock s WHERE s.remaining < 0 OR s.capacity - s.remaining <> "
            "(SELECT count(*) FROM booking b WHERE b.session_id = s.session_id)"
        )
        await conn.close()
        return int(bad)

    return asyncio.run(go())


async def lua_oversold(url: str, sessions: list[list[str]]) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    bad = 0
    for sid in (s for ids in sessions for s in ids):
        left = int(await client.get(f"lua:{sid}:stock"))
        pushed = await client.llen(f"lua:{sid}:patients")
        bad += left < 0 or left + pushed != CAPACITY
    await client.aclose()
    return bad


async def engine_oversold(rt: Runtime) -> int:
    engine = rt.engine()
    report = await audit(engine.store)
    await engine.close()
    return len(report.problems)


async def booked_count(rt: Runtime) -> int:
    engine = rt.engine()
    report = await audit(engine.store)
    await engine.close()
    return report.booked


def print_table(args, rows, audits, booked) -> None:  # type: ignore[no-untyped-def]
    import platform

    from benchmarks.engine import machine

    def med(key: str, i: int) -> float:
        return statistics.median(r[i] for r in rows[key])

    names = {
        "a": "(a) raw ASGI constant answer (ceiling)",
        "b": "(b) slotengine sold-out fast path",
        "c": "(c) slotengine booking, full design",
        "d1": "(d) FastAPI + Redis Lua script per request",
        "d2": "(d) FastAPI + PostgreSQL conditional UPDATE",
    }
    best_d = max(med("d1", 0), med("d2", 0))
    out = [
        f"machine: {machine()}",
        f"Python {platform.python_version()}, Ray {ray.__version__}; wrk -t2 -c{args.connections} "
        f"-d{args.duration}s on the same 2 cores; {args.workers} uvicorn workers per row; "
        f"medians of {args.repeats}",
        "",
        "| row | req/s | p50 ms | p99 ms | oversold | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, name in names.items():
        ratio = ""
        if key == "b":
            ratio = f"{med('b', 0) / med('a', 0):.0%} of (a)"
        elif key == "c":
            ratio = f"{med('c', 0) / best_d:.2f}x the better (d)"
        bad = audits.get(key, "")
        out.append(
            f"| {name} | {med(key, 0):,.0f} | {med(key, 1):.2f} | {med(key, 2):.2f} | "
            f"{bad} | {ratio} |"
        )
    out.append("")
    out.append(
        f"slotengine bookings in Redis after all runs: {booked:,} (audit clean: "
        f"{audits.get('c', 0) == 0})"
    )
    table = "\n".join(out)
    print(table)
    results = Path("benchmarks/results")
    results.mkdir(parents=True, exist_ok=True)
    (results / "api.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
