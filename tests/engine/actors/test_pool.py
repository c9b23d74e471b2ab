"""The host pool on a real local Ray: hosts take a ``slot_host`` place each, a pool the cluster
has no places for is refused at once, and a local start never joins a stale cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import ray

from engine.actors.pool import PoolError, start_pool


def test_each_host_takes_one_place(runtime):
    resource = runtime.settings.host_resource
    assert resource == "slot_host"
    total = ray.cluster_resources()[resource]
    deadline = time.monotonic() + 10
    while ray.available_resources().get(resource, 0) > total - len(runtime.hosts):
        assert time.monotonic() < deadline, "the hosts hold no places"
        time.sleep(0.1)
    assert ray.available_resources().get(resource, 0) == total - len(runtime.hosts)


def test_a_pool_the_cluster_has_no_places_for_is_refused_with_what_to_do(
    ray_local, redis_server, settings_for
):
    places = int(ray.cluster_resources()["slot_host"])
    settings = settings_for(redis_server.url, hosts=places + 1)
    started = time.monotonic()
    with pytest.raises(PoolError, match="--resources") as refused:
        start_pool(settings)
    assert time.monotonic() - started < 5, "refused at once, not at the start's deadline"
    assert f"at most {places}" in str(refused.value)
    with pytest.raises(ValueError):  # nothing was started
        ray.get_actor(f"{settings.namespace}-host-0", namespace=settings.namespace)


def test_a_local_start_ignores_a_stale_cluster_address(tmp_path):
    """``up`` with no SLOTENGINE_RAY_ADDRESS starts its own Ray even where the environment (or
    a stale ``/tmp/ray`` file) names a dead cluster, and offers a place for every host."""
    script = textwrap.dedent(
        """
        import sys
        import ray
        from engine.runtime import init_ray
        from engine.settings import Settings
        settings = Settings.from_env({}, hosts=3, data_dir=sys.argv[1])
        assert init_ray(settings), "started its own"
        print(ray.cluster_resources().get("slot_host"))
        ray.shutdown()
        """
    )
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}  # nothing listens there
    env.pop("SLOTENGINE_RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "3.0"
