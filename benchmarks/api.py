"""API benchmark: wrk against the real servers, one table (README "Benchmarks").

    python -m benchmarks.api [--duration 10] [--connections 64] [--workers 2] [--repeats 3]

Needs ``wrk`` (Debian package) and PostgreSQL (``benchmarks/postgres.sh`` installs and starts
it, and this command stops it again). Every row runs the same number of uvicorn workers:
(a) a raw ASGI constant answer, the ceiling; (b) slotengine's sold-out fast path; (c) booking
through the full design; (d) the seed's two answers behind a FastAPI route: a Redis Lua script,
and a PostgreSQL conditional UPDATE; (e) the Lua script behind a raw ASGI front as lean as
ours. Every booking variant is audited for oversell afterwards.

Honest counts: a booking row's "booked/s" counts only ``201`` answers, and every row prints its
status mix. The stock and the patients are sized so that every request of a run can get a slot
(``STOCK`` below): each patient books each department of each hospital on each date once, in
round-robin over the group's sessions, so neither the stock nor the day rules refuse anything
before a run has sent 360,000 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ray

from api.accounts.auth import Tokens
from api.catalog.catalog import Catalog, session_document
from api.cli.demo_data import seed_patients
from api.services import shared_secret
from engine.core.session import SessionSpec
from engine.outcomes import Booked
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.embedded import free_port
from engine.store.keys import Keys
from engine.tools.audit import audit

HERE = Path(__file__).parent
ADMIN = "bench-admin-token-0123456789"
# STOCK: 10 hospitals x 2 departments (the default hospital_day_limit) x 3 dates, 200
# doctor-sessions of 30 slots in each department-date: 12,000 sessions, 360,000 slots a run; 6,000
# patients book each department-date once (department_day_limit 1): 360,000 bookings allowed.
HOSPITALS, DEPARTMENTS, DATES, SESSIONS, CAPACITY, PATIENTS = 10, 2, 3, 200, 30, 6000
THREADS = 2  # wrk -t
LUA_PREFIXES = ("lua", "lua_raw")  # each Lua server books its own copy of the stock


GROUPS = ("API workers", "host actor", "courier", "dispatcher", "Redis", "Ray itself", "wrk")


def cpu_by_process(api_pids: set[int], redis_port: int) -> dict[str, float]:
    """CPU seconds (user + system) each group of processes has used so far, read from /proc
    through psutil: the API workers (``api_pids``), the actors by their Ray process titles,
    the Redis server by its port and Ray's own processes (raylet, GCS, idle workers). wrk is
    counted apart (``resource.getrusage`` of the children)."""
    import psutil

    out = dict.fromkeys(GROUPS, 0.0)
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            command = " ".join(proc.info["cmdline"] or [])
            times = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if proc.info["pid"] in api_pids:
            group = "API workers"
        elif command.startswith("ray::Host"):
            group = "host actor"
        elif command.startswith("ray::Courier"):
            group = "courier"
        elif command.startswith("ray::Dispatcher"):
            group = "dispatcher"
        elif "valkey-server" in command or "redis-server" in command:
            if f":{redis_port}" not in command:
                continue
            group = "Redis"
        elif command.startswith("ray::") or any(
            part in command for part in ("raylet", "gcs_server", "log_monitor", "dashboard")
        ):
            group = "Ray itself"
        else:
            continue
        out[group] += times.user + times.system
    return out


def settle(url: str, keys: Any, limit: float = 120.0) -> float:
    """Wait until the courier has carried out the outbox and indexed every changed session
    (the work a booking leaves behind it), so that a row is charged all of it; seconds waited."""
    import redis

    client = redis.Redis.from_url(url)
    started = time.monotonic()
    try:
        while time.monotonic() - started < limit:
            groups = client.xinfo_groups(keys.outbox) if client.exists(keys.outbox) else []
            behind = sum(int(g.get("lag") or 0) + int(g.get("pending") or 0) for g in groups)
            for doorbell in client.scan_iter(match=keys.outbox_doorbell(0)[:-1] + "*"):
                behind += client.zcard(doorbell)  # shards' streams not yet emptied
            behind += client.scard(keys.changed_sessions) + client.scard(keys.changed_claimed)
            if behind == 0:
                break
            time.sleep(0.2)
    finally:
        client.close()
    return time.monotonic() - started


def children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Run:
    """One wrk run: answers/s, latency percentiles (ms), how many answers had each status,
    and how long it ran (s)."""

    rate: float
    p50: float
    p99: float
    statuses: dict[int, int]
    seconds: float
    cpu: dict[str, float] | None = None  # CPU seconds by process group during the run
    behind: float = 0.0  # seconds the back office took to catch up after the run

    def per_answer(self, group: str, status: int | None = 201) -> float:
        """CPU microseconds of ``group`` per answer with ``status`` (None: per any answer)."""
        assert self.cpu is not None
        count = sum(self.statuses.values()) if status is None else self.statuses.get(status, 0)
        return self.cpu[group] / max(count, 1) * 1e6

    @property
    def booked(self) -> float:
        """201 answers per second."""
        return self.statuses.get(201, 0) / self.seconds


def wrk(
    url: str,
    plan: Path,
    duration: int,
    connections: int,
    measure: Any = None,
    then: Any = None,
) -> Run:
    """One wrk run; ``measure`` (a function answering CPU seconds by group) is read before
    and after (after ``then``, which waits for the work the run left behind), to charge each
    process group its share."""
    before = measure() if measure else None
    wrk_before = children_cpu()
    out = subprocess.run(
        [
            "wrk",
            f"-t{THREADS}",
            f"-c{connections}",
            f"-d{duration}s",
            "-s",
            str(HERE / "book.lua"),
            url,
        ],
        env={**os.environ, "BENCH_PLAN": str(plan), "BENCH_THREADS": str(THREADS)},
        capture_output=True,
        text=True,
        check=True,
    )
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    p50, p99 = (
        int(x) / 1000 for x in re.search(r"LATENCY p50=(\d+) p99=(\d+)", out.stdout).groups()
    )  # type: ignore[union-attr]
    seconds = int(re.search(r"DURATION us=(\d+)", out.stdout).group(1)) / 1e6  # type: ignore[union-attr]
    mix = re.search(r"STATUS ?(.*)", out.stdout).group(1).split()  # type: ignore[union-attr]
    statuses = {int(k): int(v) for k, v in (x.split("=") for x in mix)}
    cpu = None
    behind = then() if then is not None else 0.0
    if measure is not None:
        after = measure()
        cpu = {g: after[g] - before[g] for g in GROUPS if g != "wrk"}
        cpu["wrk"] = children_cpu() - wrk_before
    return Run(rate, p50, p99, statuses, seconds, cpu, behind)


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


async def make_sessions(rt: Runtime, catalog: Catalog, dates: list[str]) -> list[list[str]]:
    """The groups of doctor-sessions (``STOCK``): for each hospital, department and date,
    SESSIONS sessions of CAPACITY slots, open now."""
    engine = rt.engine()
    groups: list[list[str]] = []
    specs = []
    for h in range(HOSPITALS):
        for dep in range(DEPARTMENTS):
            for date in dates:
                ids = []
                for d in range(SESSIONS):
                    spec = SessionSpec(
                        id=f"b{h}-{dep}-{d}-{date}",
                        hospital_id=f"bh{h}",
                        department_id=f"bh{h}-dep{dep}",
                        doctor_id=f"bh{h}-dep{dep}-doc{d}",
                        date=date,
                        period="AM",
                        capacity=CAPACITY,
                        first_slot_minute=480,
                        slot_minutes=1,
                    )
                    specs.append(spec)
                    ids.append(spec.id)
                groups.append(ids)
    for spec in specs:
        await catalog.add_session(session_document(spec))
    for i in range(0, len(specs), 1000):
        await asyncio.gather(*(engine.create_session(s) for s in specs[i : i + 1000]))
    await engine.close()
    return groups


def bench_settings(work: Path) -> Settings:
    """The platform the HTTP benchmarks run: one host, limits out of the way."""
    return Settings.from_env(
        None,
        hosts=1,
        host_cpus=1,
        data_dir=work,
        namespace="apibench",
        admin_token=ADMIN,
        rate_per_second=1e6,
        rate_burst=10**6,
    )


def server_env(url: str) -> dict[str, str]:
    """What a ``slotengine serve`` joining the benchmark's platform is given."""
    return {
        "SLOTENGINE_REDIS_URL": url,
        "SLOTENGINE_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        "SLOTENGINE_ADMIN_TOKEN": ADMIN,
        "SLOTENGINE_NAMESPACE": "apibench",
        "SLOTENGINE_HOSTS": "1",
        "SLOTENGINE_RATE_PER_SECOND": "1000000",
        "SLOTENGINE_RATE_BURST": "1000000",
        "SLOTENGINE_ADDRESS_LIMITS": "off",  # wrk is one client address
    }


def write_plan(path: Path, groups: list[list[str]], tokens: list[str]) -> None:
    """``P G S``, then the P patients' tokens, then the G groups' S sessions each. Request i
    is patient i % P in group (i // P) % G, at the group's session (i % P) % S: each patient
    books once in each group, each session gets P / S patients (``book.lua``)."""
    lines = [f"{len(tokens)} {len(groups)} {len(groups[0])}", *tokens]
    lines += [sid for group in groups for sid in group]
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
    settings = bench_settings(work)
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
            **server_env(url),
            "BENCH_REDIS_URL": url,
            "BENCH_PG_DSN": pg_dsn,
            "BENCH_SECRET": secret,
        }
        ports = {name: free_port() for name in ("raw", "ours", "lua", "pg", "lua_raw")}
        procs: dict[str, subprocess.Popen[bytes]] = {}
        redis_port = int(url.rsplit(":", 1)[1].split("/")[0])
        keys = Keys(settings.namespace)

        def measure(name: str) -> Any:
            """CPU by process group, the server ``name``'s processes as the API workers."""

            def read() -> dict[str, float]:
                import psutil

                server = psutil.Process(procs[name].pid)
                pids = {server.pid, *(c.pid for c in server.children(recursive=True))}
                return cpu_by_process(pids, redis_port)

            return read

        procs["raw"] = start_server(
            uvicorn("benchmarks.apps:raw", ports["raw"], args.workers), env, ports["raw"]
        )
        procs["ours"] = start_server(
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
        servers.extend(procs.values())
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
            await Catalog(client, keys).add_session(session_document(spec))
            assert isinstance(await engine.book("soldout", 1, "first"), Booked)
            await engine.close()
            return "soldout"

        asyncio.run(sell_out())
        write_plan(soldout_plan, [["soldout"]], tokens)
        time.sleep(1.5)  # the workers hear of the sell-out and learn its holder
        for _ in range(args.repeats):
            rows.setdefault("a", []).append(
                wrk(
                    f"http://127.0.0.1:{ports['raw']}",
                    soldout_plan,
                    args.duration,
                    args.connections,
                    measure("raw"),
                    lambda: settle(url, keys),
                )
            )
            rows.setdefault("b", []).append(
                wrk(
                    f"http://127.0.0.1:{ports['ours']}",
                    soldout_plan,
                    args.duration,
                    args.connections,
                    measure("ours"),
                    lambda: settle(url, keys),
                )
            )
        # (c) full design with stock; (d) the baselines on the same sessions and plan
        for name in ("lua", "pg", "lua_raw"):
            command = uvicorn(f"benchmarks.apps:{name}", ports[name], args.workers, factory=True)
            own = {**env, "BENCH_LUA_PREFIX": name}
            procs[name] = start_server(command, own, ports[name])
            servers.append(procs[name])
        for r in range(args.repeats):
            first = datetime.date(2031, 1, 1) + datetime.timedelta(days=r * DATES)
            dates = [(first + datetime.timedelta(days=k)).isoformat() for k in range(DATES)]

            async def sessions_for(dates: list[str] = dates) -> list[list[str]]:
                engine = rt.engine()
                made = await make_sessions(
                    rt, Catalog(engine.store.client, engine.store.keys), dates
                )
                pipe = engine.store.client.pipeline(transaction=False)
                for sid in (s for ids in made for s in ids):  # the same stock for the scripts
                    for prefix in LUA_PREFIXES:
                        pipe.set(f"{prefix}:{sid}:stock", CAPACITY)
                await pipe.execute()
                await engine.close()
                return made

            sessions = asyncio.run(sessions_for())
            pg_setup(pg_dsn, [s for ids in sessions for s in ids], fresh=r == 0)
            plan = work / f"plan-{r}.txt"
            write_plan(plan, sessions, tokens)
            time.sleep(3.0)  # the workers hear of the new sessions
            rows.setdefault("c", []).append(
                wrk(
                    f"http://127.0.0.1:{ports['ours']}",
                    plan,
                    args.duration,
                    args.connections,
                    measure("ours"),
                    lambda: settle(url, keys),
                )
            )
            rows.setdefault("d1", []).append(
                wrk(
                    f"http://127.0.0.1:{ports['lua']}",
                    plan,
                    args.duration,
                    args.connections,
                    measure("lua"),
                    lambda: settle(url, keys),
                )
            )
            rows.setdefault("d2", []).append(
                wrk(
                    f"http://127.0.0.1:{ports['pg']}",
                    plan,
                    args.duration,
                    args.connections,
                    measure("pg"),
                    lambda: settle(url, keys),
                )
            )
            rows.setdefault("e", []).append(
                wrk(
                    f"http://127.0.0.1:{ports['lua_raw']}",
                    plan,
                    args.duration,
                    args.connections,
                    measure("lua_raw"),
                    lambda: settle(url, keys),
                )
            )
            audits["c"] = audits.get("c", 0) + asyncio.run(engine_oversold(rt))
            audits["d1"] = audits.get("d1", 0) + asyncio.run(lua_oversold(url, sessions, "lua"))
            audits["e"] = audits.get("e", 0) + asyncio.run(lua_oversold(url, sessions, "lua_raw"))
            audits["d2"] = audits.get("d2", 0) + pg_oversold(pg_dsn)
        booked = asyncio.run(booked_count(rt))
    finally:
        for proc in servers:
            stop(proc)
        rt.stop()
        subprocess.run(["bash", str(HERE / "postgres.sh"), "stop"], check=False)
    print_table(args, rows, audits, booked)


def pg_setup(dsn: str, sessions: list[str], fresh: bool = False) -> None:
    """The sessions' stock in PostgreSQL; ``fresh``: first empty what an earlier benchmark
    left (the server outlives a run, and the session ids repeat)."""
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        if fresh:
            await conn.execute("DROP TABLE IF EXISTS stock, booking")
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


async def lua_oversold(url: str, sessions: list[list[str]], prefix: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    ids = [s for group in sessions for s in group]
    pipe = client.pipeline(transaction=False)
    for sid in ids:
        pipe.get(f"{prefix}:{sid}:stock")
        pipe.llen(f"{prefix}:{sid}:patients")
    answers = await pipe.execute()
    await client.aclose()
    pairs = zip(answers[::2], answers[1::2], strict=True)
    return sum(int(left) < 0 or int(left) + pushed != CAPACITY for left, pushed in pairs)


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

    def med(key: str, what: str) -> float:
        return statistics.median(getattr(r, what) for r in rows[key])

    def mix(key: str) -> str:
        total: Counter[int] = Counter()
        for r in rows[key]:
            total.update(r.statuses)
        answers = sum(total.values())
        return " ".join(f"{s}: {n / answers:.1%}" for s, n in sorted(total.items()))

    names = {
        "a": "(a) raw ASGI constant answer (ceiling)",
        "b": "(b) slotengine sold-out fast path",
        "c": "(c) slotengine booking, full design",
        "d1": "(d) FastAPI + Redis Lua script per request",
        "d2": "(d) FastAPI + PostgreSQL conditional UPDATE",
        "e": "(e) raw ASGI front + Redis Lua script per request",
    }
    out = [
        f"machine: {machine()}",
        f"Python {platform.python_version()}, Ray {ray.__version__}; wrk -t{THREADS} "
        f"-c{args.connections} -d{args.duration}s on the same 2 cores; {args.workers} uvicorn "
        f"workers per row; medians of {args.repeats}; booked/s counts 201 answers only",
        "",
        "| row | answers/s | booked/s | p50 ms | p99 ms | statuses | oversold | ratio |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for key, name in names.items():
        ratio = ""
        if key == "b":
            ratio = f"{med('b', 'rate') / med('a', 'rate'):.0%} of (a)"
        elif key == "c":
            ratio = (
                f"{med('c', 'booked') / med('d1', 'booked'):.2f}x (d) Lua, "
                f"{med('c', 'booked') / med('e', 'booked'):.2f}x (e)"
            )
        booked_rate = "" if key in ("a", "b") else f"{med(key, 'booked'):,.0f}"
        out.append(
            f"| {name} | {med(key, 'rate'):,.0f} | {booked_rate} | "
            f"{med(key, 'p50'):.2f} | {med(key, 'p99'):.2f} | {mix(key)} | "
            f"{audits.get(key, '')} | {ratio} |"
        )
    out += [
        "",
        "CPU microseconds by process, per booking (a 201; per answer in (a) and (b)), "
        "read from /proc before and after each run (medians):",
        "",
        "| row | " + " | ".join(GROUPS) + " | total |",
        "| --- |" + " ---: |" * (len(GROUPS) + 1),
    ]
    for key, name in names.items():
        status = None if key in ("a", "b") else 201
        cells = [statistics.median(r.per_answer(g, status) for r in rows[key]) for g in GROUPS]
        out.append(
            f"| {name} | " + " | ".join(f"{c:,.0f}" for c in cells) + f" | {sum(cells):,.0f} |"
        )
    out.append("")
    out.append(
        "the back office (outbox carried, records indexed) caught up "
        f"{med('c', 'behind'):.1f} s after the end of a (c) run (median)"
    )
    out.append(
        f"slotengine bookings in Redis after all runs: {booked:,} (audit clean: "
        f"{audits.get('c', 0) == 0})"
    )
    table = "\n".join(out)
    print(table)
    results = Path("benchmarks/results")
    results.mkdir(parents=True, exist_ok=True)
    (results / f"api-{args.workers}w.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
