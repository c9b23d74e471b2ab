"""``slotengine up`` as an operator runs it, joined to a real multi-node Ray cluster: Ctrl-C
after a worker node died stops everything it started within 10 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest

from engine.store.embedded import free_port

pytestmark = pytest.mark.multinode


@pytest.mark.timeout(300)
def test_ctrl_c_after_a_node_loss_stops_everything_within_10_s(ray_cluster, tmp_path):
    node = ray_cluster.add_node(num_cpus=1, resources={"up_host": 2})
    port = free_port()
    env = {
        **os.environ,
        "SLOTENGINE_RAY_ADDRESS": ray_cluster.address,
        "SLOTENGINE_HOST_RESOURCE": "up_host",  # the hosts land on the node that will die
        "SLOTENGINE_HOSTS": "2",
        "SLOTENGINE_HOST_CPUS": "0.25",
        "SLOTENGINE_NAMESPACE": "upnode",
        "SLOTENGINE_DATA_DIR": str(tmp_path),
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "up", "--port", str(port), "--workers", "1", "--no-his"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(up.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any("slotengine is up" in line for line in lines):
            assert up.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        token = next(ln.split(":", 1)[1].strip() for ln in lines if "demo patient token" in ln)
        base = f"http://127.0.0.1:{port}"
        while True:  # "up" is printed just before the API workers start listening
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert up.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.2)
        answer = httpx.post(
            f"{base}/v1/sessions/s1/bookings",
            json={"request_id": "before-the-loss"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 201, answer.text
        started = psutil.Process(up.pid).children(recursive=True)

        ray_cluster.remove_node(node, allow_graceful=False)
        time.sleep(2.0)
        answer = httpx.get(f"{base}/v1/hospitals", timeout=30)  # the API still answers
        assert answer.status_code == 200

        stopping = time.monotonic()
        up.send_signal(signal.SIGINT)
        up.wait(timeout=10)
        took = time.monotonic() - stopping
        print(f"up stopped {took:.1f} s after Ctrl-C")
        reader.join(5)
        assert "stopped everything this command started" in "".join(lines), "".join(lines)
        left = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert left == [], f"left running: {left}"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
