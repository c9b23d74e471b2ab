"""``slotengine redis-cluster up``: a Redis Cluster on this machine (``engine/store/
local_cluster.py``), its data under the data folder, until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click

from api.cli.joining import CLUSTER_URL_FILE as URL_FILE
from engine.settings import Settings
from engine.store.embedded import masked_url, private_file
from engine.store.local_cluster import LocalCluster


@click.group(name="redis-cluster")
def redis_cluster() -> None:
    """A local Redis Cluster (masters and replicas of valkey-server) to try the engine on."""


@redis_cluster.command(name="up")
@click.option("--masters", default=3, show_default=True, type=click.IntRange(1, 16))
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(0, 2))
@click.option(
    "--data",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="where the nodes keep their data [default: <SLOTENGINE_DATA_DIR>/redis-cluster]",
)
def up(masters: int, replicas: int, data: Path | None) -> None:
    """Start the cluster (again from its folder if it was made before) and keep it until
    Ctrl-C; the URL of one of its nodes, with the password, goes to a file only you read."""
    folder = data or Settings.from_env().data_dir / "redis-cluster"
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    cluster = LocalCluster(folder, masters=masters, replicas=replicas)
    with cluster:
        private_file(folder / URL_FILE, cluster.url)
        ports = ", ".join(str(n.port) for n in cluster.nodes)
        click.echo(f"redis cluster up: {masters} masters, {masters * replicas} replicas")
        click.echo(f"  nodes on 127.0.0.1: {ports}")
        click.echo(f"  URL: {masked_url(cluster.url)}  (full URL in {folder / URL_FILE})")
        click.echo("Ctrl-C stops it", nl=True)
        while not stop.wait(0.5):
            pass
    click.echo("stopped the cluster's nodes")
