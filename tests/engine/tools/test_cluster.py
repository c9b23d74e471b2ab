"""Rebalancing plans (engine/tools/cluster.py ``plan_moves``): pure, on made-up loads."""

from __future__ import annotations

import random

from engine.tools.cluster import plan_moves


def apply(load, moves):
    load = dict(load)
    for shard_id, was, to in moves:
        assert load[shard_id][0] == was, "a move starts where the shard is"
        load[shard_id] = (to, load[shard_id][1])
    return load


def per_host(load, hosts, by):
    totals = {h: 0.0 for h in hosts}
    for index, rate in load.values():
        totals[index] += 1 if by == "count" else rate
    return totals


def test_by_count_the_hosts_end_within_one_shard():
    load = {f"h{i}:2026-12-01": (0, 0.0) for i in range(13)}  # everything on host 0
    moves = plan_moves(load, [0, 1, 2, 3], "count", 100)
    totals = per_host(apply(load, moves), [0, 1, 2, 3], "count")
    assert max(totals.values()) - min(totals.values()) <= 1
    assert len(moves) == 13 - 4, "no shard moves twice, none needlessly"


def test_by_rate_the_busiest_host_ends_within_one_and_a_half_of_the_idlest():
    rng = random.Random(3)
    load = {f"h{i}:2026-12-01": (rng.choice([0, 0, 0, 1]), rng.uniform(1, 100)) for i in range(40)}
    moves = plan_moves(load, [0, 1, 2], "rate", 100)
    totals = per_host(apply(load, moves), [0, 1, 2], "rate")
    assert max(totals.values()) <= 1.5 * min(totals.values()), totals


def test_a_bounded_round_and_nothing_moves_when_balanced():
    load = {f"h{i}:2026-12-01": (0, 0.0) for i in range(10)}
    assert len(plan_moves(load, [0, 1], "count", 2)) == 2
    even = {f"h{i}:2026-12-01": (i % 2, 5.0) for i in range(10)}
    assert plan_moves(even, [0, 1], "count", 10) == []
    assert plan_moves(even, [0, 1], "rate", 10) == []


def test_one_hot_shard_that_cannot_be_split_stays_put():
    load = {"hot:2026-12-01": (0, 1000.0), "cold:2026-12-01": (1, 1.0)}
    assert plan_moves(load, [0, 1], "rate", 10) == [], "moving it only moves the imbalance"
