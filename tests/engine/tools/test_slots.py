"""The cross-slot watcher (engine/tools/slots.py): the MONITOR feed parsed as Redis writes it,
and, on a real Redis, each kind of cross-slot unit found — a script's undeclared key, a
transaction, a WATCH before it, a multi-key command — while one-slot units pass."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
import redis
from click.testing import CliRunner

from api.cli import main
from engine.store.embedded import EmbeddedRedis
from engine.tools.slots import parse, template, watch


@pytest.fixture
def own_redis(tmp_path):
    """A Redis of these tests' own: they make cross-slot units on purpose, and the session's
    Redis is watched for them (``tests/conftest.py``)."""
    with EmbeddedRedis(tmp_path / "redis") as server:
        yield server


def test_a_monitor_line_parses_with_its_escapes():
    line = b'1796278368.6162 [0 127.0.0.1:50078] "SET" "p:{a}:x" "a \\"b\\"\\\\ \\x01\\n"'
    client, args = parse(line)
    assert client == "127.0.0.1:50078"
    assert args == [b"SET", b"p:{a}:x", b'a "b"\\ \x01\n']
    assert parse(rb'1.5 [0 lua] "get" "k"') == ("lua", [b"get", b"k"])
    assert parse(b"garbage") is None


def test_a_family_drops_the_namespace_and_stars_ids():
    assert template(b"t12:{h1:2026-12-03}:s:s17") == "{*}:s:*"
    assert template(b"t12:payment:s1.0") == "payment:*"
    assert template(b"t12:records:changed") == "records:changed"


def findings_while(url: str, work) -> list[dict]:
    out = io.StringIO()
    watcher = threading.Thread(target=watch, args=(url, out, 2.0))
    watcher.start()
    time.sleep(0.5)
    work(redis.Redis.from_url(url))
    watcher.join()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_each_kind_of_cross_slot_unit_is_found_and_one_slot_ones_pass(own_redis):
    def work(r: redis.Redis) -> None:
        r.eval("redis.call('SET', KEYS[1], 1) return redis.call('SET', 'w:other', 2)", 1, "w:a")
        r.eval("redis.call('SET', KEYS[1], 1) return redis.call('SET', 'w:{t}:b', 2)", 1, "w:{t}:a")
        with r.pipeline(transaction=True) as pipe:
            pipe.set("w:x", 1)
            pipe.incr("w:y")
            pipe.execute()
        with r.pipeline(transaction=True) as pipe:
            pipe.watch("w:z")
            pipe.multi()
            pipe.set("w:{z}:copy", 1)
            pipe.execute()
        with r.pipeline(transaction=True) as pipe:
            pipe.set("w:{t}:x", 1)
            pipe.incr("w:{t}:y")
            pipe.execute()
        with r.pipeline(transaction=False) as pipe:  # not a transaction: each command alone
            pipe.set("w:p", 1)
            pipe.set("w:q", 1)
            pipe.execute()
        r.delete("w:x", "w:y")
        r.zunionstore("w:u", ["w:u1", "w:u2"])
        r.mget("w:{t}:x", "w:{t}:y")

    found = findings_while(own_redis.url, work)
    assert [(f["kind"], f["command"], f["keys"]) for f in found] == [
        ("script", "EVAL", ["w:a", "w:other"]),
        ("multi", "MULTI", ["w:x", "w:y"]),
        ("multi", "MULTI", ["w:z", "w:{z}:copy"]),
        ("command", "DEL", ["w:x", "w:y"]),
        ("command", "ZUNIONSTORE", ["w:u", "w:u1", "w:u2"]),
    ]


def test_ops_cross_slot_lists_what_it_saw_and_fails_only_then(own_redis):
    env = {"SLOTENGINE_REDIS_URL": own_redis.url}
    clean = CliRunner().invoke(main, ["ops", "cross-slot", "--seconds", "1"], env=env)
    assert clean.exit_code == 0, clean.output
    assert "0 cross-slot in 1 s" in clean.output

    def later() -> None:
        time.sleep(0.5)
        r = redis.Redis.from_url(own_redis.url)
        for _ in range(3):
            r.delete("c:x", "c:y")

    threading.Thread(target=later).start()
    found = CliRunner().invoke(main, ["ops", "cross-slot", "--seconds", "1.5"], env=env)
    assert found.exit_code == 1, found.output
    assert "3  command DEL        x y" in found.output
    assert "3 cross-slot in 1.5 s" in found.output
