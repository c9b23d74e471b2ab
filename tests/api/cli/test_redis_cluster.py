"""``slotengine redis-cluster up`` as an operator runs it: 3 masters and 3 replicas of the
wheel's valkey-server, built through redis-py, answering a cluster client; a write confirmed
in a replica's AOF (``WAITAOF 1 1``, the engine's ``durability=replica``); Ctrl-C stops every
node; started again from its folder it is the same cluster, with its data."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import psutil
import redis

from api.cli.redis_cluster import URL_FILE


def start(folder) -> tuple[subprocess.Popen, list[str]]:
    up = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "redis-cluster", "up", "--data", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(up.stdout), daemon=True).start()
    deadline = time.monotonic() + 90
    while not any("Ctrl-C stops it" in line for line in lines):
        assert up.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "".join(lines)
        time.sleep(0.1)
    return up, lines


def stop(up: subprocess.Popen) -> float:
    nodes = psutil.Process(up.pid).children(recursive=True)
    assert len(nodes) == 6, nodes
    began = time.monotonic()
    up.send_signal(signal.SIGINT)
    up.wait(timeout=30)
    _, alive = psutil.wait_procs(nodes, timeout=10)
    assert not alive, f"nodes left running: {alive}"
    return time.monotonic() - began


def test_a_local_cluster_serves_survives_a_restart_and_stops_on_ctrl_c(tmp_path):
    folder = tmp_path / "cluster"
    up, lines = start(folder)
    try:
        assert "3 masters, 3 replicas" in "".join(lines)
        assert folder.joinpath(URL_FILE).stat().st_mode & 0o077 == 0, "owner only"
        url = folder.joinpath(URL_FILE).read_text().strip()
        assert url.split("@")[0].split(":")[-1] not in "".join(lines), "no password printed"
        client = redis.RedisCluster.from_url(url)
        info = client.cluster_info(target_nodes=redis.RedisCluster.RANDOM)
        assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == 16384
        nodes = list(client.cluster_nodes().values())
        masters = [n for n in nodes if "master" in n["flags"]]
        replicas = [n for n in nodes if "slave" in n["flags"]]
        assert (len(masters), len(replicas)) == (3, 3)
        assert {r["master_id"] for r in replicas} == {m["node_id"] for m in masters}
        for i in range(300):  # every master holds some of them
            client.set(f"k{i}", i)
        sizes = [client.dbsize(target_nodes=node) for node in client.get_primaries()]
        assert len(sizes) == 3 and all(size > 0 for size in sizes) and sum(sizes) == 300, sizes
        node = client.get_node_from_key("k7")
        password = url.split("@")[0].rsplit(":", 1)[1]
        master = redis.Redis(host=node.host, port=node.port, password=password)
        master.set("k7", "seven")  # and on the same connection: in a replica's AOF?
        assert master.execute_command("WAITAOF", 1, 1, 2000) == [1, 1]
        master.close()
        client.close()
    finally:
        took = stop(up)
    print(f"the cluster stopped {took:.1f} s after Ctrl-C")

    up, _ = start(folder)  # the same folder: the same cluster, its data kept
    try:
        client = redis.RedisCluster.from_url(folder.joinpath(URL_FILE).read_text().strip())
        assert [client.get(f"k{i}") for i in (0, 7, 299)] == [b"0", b"seven", b"299"]
        client.close()
    finally:
        stop(up)
