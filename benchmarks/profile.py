"""Where a booking's CPU goes: py-spy on every process that works for it, under wrk.

    python -m benchmarks.profile [--workers 1] [--duration 15] [--top 25]

Runs the booking row of ``benchmarks.api`` (the full design, stock for the whole run) and,
while wrk drives it, records each process with ``py-spy record`` (the API workers, the host
actor, the courier): collapsed stacks go to ``benchmarks/results/profile-<process>.txt`` (for
a flame graph: ``flamegraph.pl``, or speedscope), and the table printed is each process's
functions by the share of samples they are on the stack of ("inclusive"), own code first.
py-spy needs ptrace; where it is refused, ``python -m benchmarks.api`` still gives the CPU
per booking by process, read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil
import ray

from api.accounts.auth import Tokens
from api.catalog.catalog import Catalog
from api.cli.demo_data import seed_patients
from api.services import shared_secret
from benchmarks.api import (
    ADMIN,
    CAPACITY,
    DATES,
    PATIENTS,
    bench_settings,
    make_sessions,
    server_env,
    settle,
    start_server,
    stop,
    write_plan,
    wrk,
)
from engine.runtime import Runtime
from engine.store.embedded import free_port
from engine.store.keys import Keys

RESULTS = Path("benchmarks/results")


def targets(server: psutil.Process) -> dict[str, int]:
    """The processes to record: each API worker, the host, the courier."""
    found: dict[str, int] = {}
    workers = [
        c
        for c in server.children(recursive=True)
        if "multiprocessing" in " ".join(c.cmdline())  # uvicorn's worker processes
    ]
    for i, worker in enumerate(workers or [server]):  # one worker: the server itself
        found[f"api-worker-{i}"] = worker.pid
    for proc in psutil.process_iter(["pid", "cmdline"]):
        command = " ".join(proc.info["cmdline"] or [])
        for title, name in (("ray::Host", "host"), ("ray::Courier", "courier")):
            if command.startswith(title):
                found[name] = proc.info["pid"]
    return found


def summarize(path: Path, top: int) -> list[tuple[str, float]]:
    """(function, share of samples it is on the stack of), from py-spy's collapsed stacks: the
    project's own functions (``engine/``, ``api/``) first, then the libraries'; frames on
    nearly every sample (the process's scaffolding: Ray's worker loop, uvicorn, click) left
    out."""
    on_stack: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        for frame in set(stack.split(";")):
            on_stack[frame] += n
    shares = [(frame, n / max(total, 1)) for frame, n in on_stack.most_common()]
    shares = [(f, share) for f, share in shares if share < SCAFFOLDING or own(f)]
    return sorted(shares, key=lambda x: (not own(x[0]), -x[1]))[:top]


SCAFFOLDING = 0.9  # a library frame on this share of the samples or more is the process's frame


def own(frame: str) -> bool:
    return "(engine/" in frame or "(api/" in frame


def host_counters(rt: Runtime) -> dict[str, float]:
    """The hosts' counters summed (calls, requests, commits, their seconds)."""
    totals: dict[str, float] = {}
    for info in ray.get([h.info.remote() for h in rt.hosts], timeout=30):
        for name, value in info.items():
            if isinstance(value, int | float) and name not in ("index", "started_at"):
                totals[name] = totals.get(name, 0) + value
    return totals


def redis_stats(url: str, reset: bool = False) -> dict[str, dict[str, float]]:
    """Redis's own cost by command (``INFO commandstats``); ``reset`` starts the count."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        if reset:
            client.config_resetstat()
            return {}
        return {
            name.removeprefix("cmdstat_"): stats
            for name, stats in client.info("commandstats").items()
        }
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    work = Path(tempfile.mkdtemp(prefix="slotengine-profile-"))
    settings = bench_settings(work)
    rt = Runtime.start(settings)
    server = None
    try:
        url = rt.settings.redis_url
        assert url is not None

        async def prepare() -> tuple[list[str], list[list[str]]]:
            engine = rt.engine()
            client, keys = engine.store.client, engine.store.keys
            secret = await shared_secret(rt.settings, client, keys)
            rows = await seed_patients(
                Catalog(client, keys), Tokens(secret, ADMIN, 86400), PATIENTS
            )
            dates = [f"2031-01-0{1 + k}" for k in range(DATES)]
            groups = await make_sessions(rt, Catalog(client, keys), dates)
            await engine.close()
            return [t for _, _, t in rows], groups

        tokens, groups = asyncio.run(prepare())
        env = server_env(url)
        port = free_port()
        command = [sys.executable, "-m", "api.cli", "serve", "--port", str(port)]
        server = start_server([*command, "--workers", str(args.workers)], env, port)
        plan = work / "plan.txt"
        write_plan(plan, groups, tokens)
        time.sleep(3.0)
        found = targets(psutil.Process(server.pid))
        RESULTS.mkdir(parents=True, exist_ok=True)
        spies = {
            name: subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(args.duration),
                    "--rate",
                    "200",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(RESULTS / f"profile-{name}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for name, pid in found.items()
        }
        before = host_counters(rt)
        redis_stats(url, reset=True)
        run = wrk(f"http://127.0.0.1:{port}", plan, args.duration, args.connections)
        after = host_counters(rt)
        during = {k: v - before.get(k, 0) for k, v in after.items()}
        settle(url, Keys(settings.namespace))
        commands = redis_stats(url)
        for name, proc in spies.items():
            _, err = proc.communicate(timeout=60)
            if proc.returncode:
                print(f"py-spy on {name} failed: {err.decode()[-300:]}")
        print(
            f"{run.booked:,.0f} bookings/s ({run.statuses}), {args.workers} workers, "
            f"{CAPACITY} slots a session; py-spy at 200 Hz, non-blocking"
        )
        calls, commits = during["calls"] or 1, during["commits"] or 1
        print(
            f"hosts: {during['calls'] / args.duration:,.0f} calls/s, "
            f"{during['requests'] / calls:.1f} requests a call, "
            f"{during['commits'] / args.duration:,.0f} commits/s, "
            f"{during['shard_writes'] / commits:.1f} shards a commit, "
            f"decide {1e6 * during['decide_seconds'] / calls:.0f} us and "
            f"commit {1e6 * during['commit_seconds'] / calls:.0f} us a call; garbage "
            f"collection {during['gc_seconds']:.2f} s, {during['gc_full']:.0f} full, the "
            f"longest {1e3 * after['gc_longest']:.0f} ms"
        )
        spent = sum(c["usec"] for c in commands.values()) or 1
        print(
            f"redis: {spent / max(run.booked * args.duration, 1):.1f} us of commands a booking "
            "(INFO commandstats, the run and the back office's catch-up), by command:"
        )
        for name, c in sorted(commands.items(), key=lambda kv: -kv[1]["usec"])[:8]:
            print(
                f"  {c['usec'] / spent:6.1%}  {name}: {c['calls']:,} calls, "
                f"{c['usec_per_call']:.1f} us a call"
            )
        for name in found:
            path = RESULTS / f"profile-{name}.txt"
            if not path.exists():
                continue
            print(f"\n{name}: share of samples on the stack")
            for frame, share in summarize(path, args.top):
                print(f"  {share:6.1%}  {frame[:150]}")
    finally:
        if server is not None:
            stop(server)
        rt.stop()


if __name__ == "__main__":
    main()
