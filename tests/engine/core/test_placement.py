"""Rendezvous placement (engine/core/placement.py): balanced, stable across processes, and
adding or removing a host moves only the shards it must."""

from __future__ import annotations

import os
import subprocess
import sys

from engine.core.placement import default_host, owner

SHARDS = [f"h{h}:2026-12-{d:02d}" for h in range(500) for d in range(1, 21)]  # 10,000


def test_shards_spread_evenly():
    for hosts in (2, 4, 7):
        counts = [0] * hosts
        for shard in SHARDS:
            counts[default_host(shard, hosts)] += 1
        expected = len(SHARDS) / hosts
        assert all(abs(c - expected) < 0.1 * expected for c in counts), counts


def test_a_new_host_takes_about_its_share_and_nothing_else_moves():
    before = {s: default_host(s, 4) for s in SHARDS}
    after = {s: default_host(s, 5) for s in SHARDS}
    moved = [s for s in SHARDS if before[s] != after[s]]
    assert all(after[s] == 4 for s in moved), "shards move only to the new host"
    assert 0.15 < len(moved) / len(SHARDS) < 0.25, len(moved)  # about 1/5


def test_a_removed_host_gives_its_shards_to_the_others_only():
    before = {s: default_host(s, 5) for s in SHARDS}
    after = {s: default_host(s, 4) for s in SHARDS}
    for shard in SHARDS:
        if before[shard] != 4:
            assert after[shard] == before[shard]
    taken = {after[s] for s in SHARDS if before[s] == 4}
    assert taken == {0, 1, 2, 3}, "spread over all the others"


def test_the_same_answer_in_another_process():
    """No dependence on Python's per-process string hashing."""
    script = (
        "from engine.core.placement import default_host;"
        "print([default_host(f'h{i}:2026-12-01', 5) for i in range(200)])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == str([default_host(f"h{i}:2026-12-01", 5) for i in range(200)])


def test_a_pin_overrides_the_default_unless_it_names_no_host_of_the_pool():
    shard = SHARDS[0]
    default = default_host(shard, 4)
    other = (default + 1) % 4
    assert owner(shard, {shard: other}, 4) == other
    assert owner(shard, {}, 4) == default
    assert owner(shard, {shard: 9}, 4) == default, "a pin to a host the pool no longer has"
