"""The ``slotengine`` command.

slotengine demo     start Redis (embedded unless configured), a local Ray and the host
                    pool, release a catalog of doctor-sessions, play a flash crowd through
                    the engine, audit Redis, print what happened, and stop everything
slotengine audit    check the invariants against the Redis of SLOTENGINE_REDIS_URL
slotengine ops      the actor cluster: status, where a shard lives (api/cli/ops.py)
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import statistics
import sys
import time
from collections import Counter

import click

from api.cli.joining import platform_redis_url, pool_env, pool_words, url_file_of
from api.cli.ops import ops
from api.cli.redis_cluster import redis_cluster
from engine.outcomes import Booked
from engine.runtime import Runtime
from engine.settings import Settings
from engine.store.embedded import masked_url, private_file
from engine.store.notices import patient_notices, recent_notices
from engine.store.shards import Store
from engine.tools.audit import audit
from engine.tools.crowd import catalog, plan, play


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="log what the engine does")
def main(verbose: bool) -> None:
    """slotengine: the booking core of an internet hospital appointment platform."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)


@main.command()
@click.option("--requests", default=20_000, show_default=True, help="booking requests in the crowd")
@click.option("--patients", default=4_000, show_default=True, help="distinct patients")
@click.option("--submitters", default=256, show_default=True, help="concurrent submitters")
@click.option("--hospitals", default=5, show_default=True)
@click.option("--sessions", default=10, show_default=True, help="doctor-sessions per hospital")
@click.option("--capacity", default=30, show_default=True, help="slots per doctor-session")
@click.option("--seed", default=None, type=int, help="replay a crowd")
def demo(
    requests: int,
    patients: int,
    submitters: int,
    hospitals: int,
    sessions: int,
    capacity: int,
    seed: int | None,
) -> None:
    """Release doctor-sessions and let a flash crowd (抢号) at them."""
    settings = Settings.from_env()
    seed = seed if seed is not None else int(time.time()) % 100_000
    click.echo(
        f"starting: Redis {settings.redis_url or 'embedded (' + str(settings.data_dir) + ')'}"
        f", Ray {settings.ray_address or 'local'}, {pool_words(settings)}"
    )
    started = time.perf_counter()
    with Runtime.start(settings) as rt:
        click.echo(
            f"ready in {time.perf_counter() - started:.1f}s; "
            f"Redis at {masked_url(rt.settings.redis_url or '')}"
        )
        asyncio.run(_demo(rt, requests, patients, submitters, hospitals, sessions, capacity, seed))
    click.echo("stopped everything this command started")


async def _demo(
    rt: Runtime,
    requests: int,
    patients: int,
    submitters: int,
    hospitals: int,
    sessions: int,
    capacity: int,
    seed: int,
) -> None:
    engine = rt.engine()
    prefix = f"demo{seed}-"
    specs = catalog(hospitals, sessions, capacity, opens_at=time.time(), prefix=prefix)
    specs += catalog(1, 2, capacity, opens_at=time.time(), fee=1500, prefix=prefix + "paid-")
    created = await asyncio.gather(*(engine.create_session(s) for s in specs))
    click.echo(
        f"released {len(specs)} doctor-sessions x {capacity} slots "
        f"= {len(specs) * capacity} slots at {len({s.hospital_id for s in specs})} hospitals "
        f"({Counter(type(c).__name__ for c in created)})"
    )
    crowd = plan(specs, requests, patients, seed=seed)
    click.echo(
        f"flash crowd: {len(crowd)} requests from {patients} patients, "
        f"{submitters} concurrent submitters (seed {seed})"
    )
    t0 = time.perf_counter()
    answers = await play(engine, crowd, submitters)
    seconds = time.perf_counter() - t0
    latencies = sorted(a.answered_at - a.sent_at for a in answers)
    kinds = Counter(type(a.outcome).__name__ for a in answers)
    repeats = sum(1 for a in answers if isinstance(a.outcome, Booked) and a.outcome.repeat)
    click.echo(
        f"answered {len(answers)} in {seconds:.2f}s = {len(answers) / seconds:,.0f} req/s; "
        f"p50 {statistics.median(latencies) * 1e3:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.1f} ms"
    )
    for kind, n in kinds.most_common():
        extra = (
            f" ({repeats} of them repeats answered with the first booking)"
            if kind == "Booked"
            else ""
        )
        click.echo(f"  {kind:<20} {n:>7}{extra}")
    stats = engine.batch_stats()
    click.echo(
        f"mailboxes: {stats['calls']:.0f} host calls, {stats['mean_batch']:.1f} requests per call"
    )
    report = await audit(engine.store)
    click.echo(report.summary())
    for problem in report.problems[:20]:
        click.echo(f"  PROBLEM {problem}", err=True)
    sample = next((a for a in answers if isinstance(a.outcome, Booked)), None)
    if sample is not None:
        click.echo(f"e.g. patient {sample.request.patient}: {sample.outcome}")
    await engine.close()
    if not report.ok:
        sys.exit(1)


@main.command(name="audit")
def audit_command() -> None:
    """Check every invariant against the configured Redis (SLOTENGINE_REDIS_URL)."""
    settings = Settings.from_env()
    if settings.redis_url is None:
        raise click.UsageError("set SLOTENGINE_REDIS_URL to the Redis to audit")

    async def go() -> bool:
        store = Store.of(settings)
        report = await audit(store)
        await store.close()
        click.echo(report.summary())
        for problem in report.problems:
            click.echo(f"  PROBLEM {problem}")
        return report.ok

    sys.exit(0 if asyncio.run(go()) else 1)


@main.command()
@click.option("--limit", default=50, show_default=True, help="newest first")
@click.option("--patient", default=None, type=int, help="only this patient's")
def notices(limit: int, patient: int | None) -> None:
    """Print the notifications sent (the default sender's record in SLOTENGINE_REDIS_URL)."""
    settings = Settings.from_env()
    if settings.redis_url is None:
        raise click.UsageError("set SLOTENGINE_REDIS_URL to the Redis to read")

    async def go() -> list[dict]:
        store = Store.of(settings)
        try:
            if patient is not None:
                return (await patient_notices(store.client, store.keys, patient))[:limit]
            return await recent_notices(store.client, store.keys, limit)
        finally:
            await store.close()

    for n in asyncio.run(go()):
        when = datetime.datetime.fromtimestamp(n["at"]).isoformat(timespec="seconds")
        click.echo(f"{when}  {n['kind']:<18} patient {n['patient_id']:<8} {n['booking_id']}")


# ----- the platform: API workers on the engine ---------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--workers", default=2, show_default=True, help="uvicorn workers (Ray drivers)")
@click.option("--demo/--no-demo", default=True, show_default=True, help="load demo data")
@click.option(
    "--his/--no-his",
    default=True,
    show_default=True,
    help="with --demo: run the simulated HIS (port + 100) and link the demo hospitals to it",
)
def up(host: str, port: int, workers: int, demo: bool, his: bool) -> None:
    """Run the platform: Redis, Ray, the host pool, the API workers (Ctrl-C stops all)."""
    import os
    import secrets

    import ray

    settings = Settings.from_env()
    generated = settings.admin_token is None
    admin_token = settings.admin_token or secrets.token_urlsafe(24)
    update: dict[str, object] = {"admin_token": admin_token}
    if demo and his:  # the simulated HIS runs on loopback, where HIS links may not point
        update["his_allow_networks"] = (*settings.his_allow_networks, "127.0.0.1/32")
    settings = settings.model_copy(update=update)
    if not settings.address_limits:
        click.echo(
            "WARNING: SLOTENGINE_ADDRESS_LIMITS=off: no per-client-address limits "
            "(for capacity tests from one machine; never in production)",
            err=True,
        )
    if settings.movable_clock:
        click.echo("WARNING: SLOTENGINE_MOVABLE_CLOCK is on (tests and demos only)", err=True)
    click.echo("starting Redis, Ray and the host pool ...")
    with Runtime.start(settings) as rt:
        url = rt.settings.redis_url
        assert url is not None
        if rt.redis is not None:  # for seed/loadtest/audit; it holds the password: owner only
            private_file(url_file_of(rt.settings), url)
        os.environ.update(
            {
                "SLOTENGINE_REDIS_URL": url,
                "SLOTENGINE_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
                "SLOTENGINE_ADMIN_TOKEN": admin_token,
                **pool_env(rt.settings),
                "SLOTENGINE_NAMESPACE": rt.settings.namespace,
                "SLOTENGINE_HIS_ALLOW_NETWORKS": ",".join(rt.settings.his_allow_networks),
            }
        )
        if workers > 1:
            import tempfile

            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="slotengine-prom-")
        his_url, his_process = None, None
        if demo and his:
            his_url, his_process = _start_his("127.0.0.1", port + 100)  # never exposed
        patient_token = asyncio.run(_prepare(rt, demo, his_url))
        base = f"http://{host}:{port}"
        click.echo(f"slotengine is up at {base}  (docs: {base}/docs)")
        where = f" (full URL in {url_file_of(rt.settings)})" if rt.redis is not None else ""
        kind = "Redis Cluster:" if rt.settings.redis_cluster else "Redis:       "
        click.echo(f"  {kind} {masked_url(url)}{where}")
        if generated:  # one the operator chose is not echoed to logs
            click.echo(f"  admin token: {admin_token}  (generated)")
        if patient_token:
            click.echo(f"  demo patient token: {patient_token}")
            click.echo(f"  try: curl {base}/v1/hospitals")
        if his_url:
            click.echo(f"  simulated HIS: {his_url}  (demo hospitals deliver to it)")
        click.echo(f"  back office analytics: {base}/admin")
        click.echo("Ctrl-C stops everything")
        try:
            _serve(host, port, workers)
        finally:
            if his_process is not None:
                his_process.terminate()
                his_process.wait(10)
    click.echo("stopped everything this command started")


def _start_his(host: str, port: int):
    """The simulated HIS as its own process; (url, process)."""
    import subprocess
    import sys
    import time

    import httpx

    process = subprocess.Popen(
        [sys.executable, "-m", "api.his_sim", "--host", host, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{host}:{port}"
    try:
        for _ in range(100):
            if process.poll() is not None:  # it exited (e.g. the port is taken)
                break
            try:
                answer = httpx.get(f"{url}/his/stats", timeout=1)
                if answer.status_code == 200 and "calls" in answer.json():
                    process, started = None, process
                    return url, started
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
    finally:
        if process is not None:  # not started: leave nothing behind
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    click.echo("the simulated HIS did not start; going on without it")
    return None, None


async def _prepare(rt: Runtime, demo: bool, his_url: str | None = None) -> str | None:
    from api.accounts.auth import Tokens
    from api.answers import LocalTime
    from api.catalog.catalog import Catalog
    from api.cli.demo_data import demo_patient, load, load_history
    from api.services import shared_secret
    from engine.backoffice.deliveries import Deliveries
    from engine.backoffice.record_book import RecordBook

    engine = rt.engine()
    try:
        client, keys = engine.store.client, engine.store.keys
        secret = await shared_secret(rt.settings, client, keys)
        tokens = Tokens(secret, rt.settings.admin_token or "", rt.settings.token_days * 86400)
        if not demo:
            return None
        catalog, clock = Catalog(client, keys), LocalTime(rt.settings.timezone)
        made = await load(engine, catalog, clock)
        if made:
            click.echo(f"demo data: {made} doctor-sessions over the next week")
            book = RecordBook(client, keys)
            await book.ensure_tallies()  # new data: the tallies are ours before history is put
            past = await load_history(catalog, book, clock)
            click.echo(f"demo data: {past:,} past bookings (90 days) for the analytics")
        if his_url:
            deliveries = Deliveries(client, keys)
            for hospital in await catalog.hospitals():
                config = {"his_url": his_url, "insurance_url": his_url, "pull": True}
                await deliveries.configure(hospital["id"], config)
        return (await demo_patient(Catalog(client, keys), tokens))[1]
    finally:
        await engine.close()


def _serve(host: str, port: int, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        timeout_graceful_shutdown=5,
        # longer than the idle timeout of the proxies and pooled clients in front (60 s is
        # common): with uvicorn's 5 s, a client reusing a connection the server is closing
        # gets a reset instead of an answer
        timeout_keep_alive=65,
    )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("--workers", default=2, show_default=True)
def serve(host: str, port: int, workers: int) -> None:
    """Run API workers only, joining a running platform (SLOTENGINE_RAY_ADDRESS,
    SLOTENGINE_REDIS_URL, SLOTENGINE_ADMIN_TOKEN)."""
    settings = Settings.from_env()
    missing = [
        n for n in ("redis_url", "ray_address", "admin_token") if getattr(settings, n) is None
    ]
    if missing:
        raise click.UsageError("set " + ", ".join(f"SLOTENGINE_{m.upper()}" for m in missing))
    _serve(host, port, workers)


@main.command()
@click.option("--patients", default=1000, show_default=True)
@click.option("--out", default="patients.csv", show_default=True, type=click.Path())
def seed(patients: int, out: str) -> None:
    """Create patients and their tokens in bulk (for load tests); write them to a CSV file."""
    count = _seed(Settings.from_env(), patients, out)
    click.echo(f"{count} patients with tokens written to {out}")


def _seed(settings: Settings, patients: int, out: str) -> int:
    import csv

    from api.accounts.auth import Tokens
    from api.catalog.catalog import Catalog
    from api.cli.demo_data import seed_patients
    from api.services import shared_secret
    from engine.store.keys import Keys

    url = platform_redis_url(settings)

    async def go() -> list[tuple[int, str, str]]:
        from engine.store.connect import async_client

        client = async_client(url, cluster=settings.redis_cluster)
        keys = Keys(settings.namespace)
        try:
            secret = await shared_secret(settings, client, keys)
            tokens = Tokens(secret, "unused-admin-token", settings.token_days * 86400)
            return await seed_patients(Catalog(client, keys), tokens, patients)
        finally:
            await client.aclose()

    rows = asyncio.run(go())
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["patient_id", "phone", "token"])
        writer.writerows(rows)
    return len(rows)


@main.command()
@click.option(
    "--scenario", type=click.Choice(["flash", "browse"]), default="flash", show_default=True
)
@click.option("--host", default="http://127.0.0.1:8000", show_default=True)
@click.option("--users", default=2000, show_default=True, help="simulated patients")
@click.option("--spawn-seconds", default=3.0, show_default=True, help="all users arrive within")
@click.option("--run-time", default=30, show_default=True, help="seconds")
@click.option("--patients-csv", default=None, help="from slotengine seed; default: seed now")
@click.option("--out", default="loadtest-results", show_default=True, type=click.Path())
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="locust worker processes on this machine (one process tops out near 1k req/s a core)",
)
def loadtest(
    scenario: str,
    host: str,
    users: int,
    spawn_seconds: float,
    run_time: int,
    patients_csv: str | None,
    out: str,
    processes: int,
) -> None:
    """Run a locust scenario headless against a running platform, then audit Redis once over
    every process's acknowledgements; locust's HTML report goes beside report.md."""
    import csv
    import os
    import subprocess
    from pathlib import Path

    import loadtest as package
    from loadtest.auditor import check, read_acks

    settings = Settings.from_env()
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    acks = folder / "acknowledged.jsonl"
    acks.unlink(missing_ok=True)
    if patients_csv is None:
        patients_csv = str(folder / "patients.csv")
        click.echo(f"seeding {users} patients ...")
        _seed(settings, users, patients_csv)
    script = Path(package.__file__).parent / (
        "flash_crowd.py" if scenario == "flash" else "browse_and_book.py"
    )
    env = {
        **os.environ,
        "SLOTENGINE_PATIENTS_CSV": patients_csv,
        "SLOTENGINE_ACKS": str(acks),
        "SPIKE_USERS": str(users),
        "SPIKE_SECONDS": str(spawn_seconds),
        "HOLD_SECONDS": str(max(1.0, run_time - spawn_seconds)),
        "SLOTENGINE_LOAD_PROCESSES": str(processes),
    }
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(script),
        "--headless",
        "--host",
        host,
        "--csv",
        str(folder / "locust"),
        "--only-summary",
        "--run-time",
        f"{run_time}s",
        "--stop-timeout",
        "5",
        "--html",
        str(folder / "locust.html"),
    ]
    if processes > 1:  # a master and N workers, each its own process and core
        command += ["--processes", str(processes)]
    if scenario == "browse":
        command += ["-u", str(users), "-r", str(max(1.0, users / spawn_seconds))]
    click.echo(
        f"locust: {scenario} scenario, {users} users within {spawn_seconds}s, {run_time}s, "
        f"{processes} process{'es' if processes > 1 else ''}"
    )
    started = time.time()
    subprocess.run(command, env=env, check=False, timeout=run_time + 120)
    seconds = time.time() - started

    async def audit_run():  # type: ignore[no-untyped-def]
        store = Store.from_url(
            platform_redis_url(settings), settings.namespace, cluster=settings.redis_cluster
        )
        try:
            return await check(store, read_acks(acks))
        finally:
            await store.close()

    report = asyncio.run(audit_run())
    rows = list(csv.DictReader((folder / "locust_stats.csv").open()))
    lines = [
        f"# load test: {scenario}, {users} users, {run_time}s against {host}, "
        f"{processes} locust process{'es' if processes > 1 else ''}",
        "",
        "| request | count | failures | median ms | p99 ms | req/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['Name']} | {r['Request Count']} | {r['Failure Count']} | "
            f"{r['Median Response Time']} | {r['99%']} | {float(r['Requests/s']):.0f} |"
        )
    lines += ["", f"{len(read_acks(acks))} bookings acknowledged to clients", report.summary()]
    lines += [
        "",
        f"locust's HTML report (requests/s, latency, failures over time): {folder}/locust.html",
    ]
    lines += [f"- PROBLEM: {p}" for p in report.problems[:50]]
    text = "\n".join(lines) + "\n"
    (folder / "report.md").write_text(text)
    click.echo(text)
    click.echo(f"({seconds:.0f}s; CSVs and report in {folder}/)")
    sys.exit(0 if report.ok else 1)


main.add_command(ops)
main.add_command(redis_cluster)

if __name__ == "__main__":
    main()
