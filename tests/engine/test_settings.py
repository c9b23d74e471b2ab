"""The one settings object: the durability levels and their deadline."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from engine.settings import Settings
from engine.store.shards import Durability


def test_durability_is_local_by_default_and_replica_when_asked():
    assert Settings.from_env({}).durability == "local"
    replica = Settings.from_env({"SLOTENGINE_DURABILITY": "replica"})
    assert Durability.of(replica.durability, replica.durability_wait_ms) == Durability(1, 0, 500)
    assert Durability.of("replica-received", 500) == Durability(0, 1, 500)
    with pytest.raises(ValidationError):
        Settings.from_env({"SLOTENGINE_DURABILITY": "memory"})


def test_the_wait_for_durability_fits_in_the_round_trip():
    short = Settings.from_env({"SLOTENGINE_REDIS_TIMEOUT": "0.5"})
    assert (short.durability_wait_ms, short.durability_wait) == (500, 400)
    assert Settings.from_env({}).durability_wait == 500


def test_a_waitaof_reply_keeps_the_promise_only_with_enough_copies():
    local, replica, received = Durability(0), Durability(1), Durability(0, 1)
    assert local.met([[1, 0]]) and replica.met([[1, 1]]) and replica.met([[1, 2]])
    assert not replica.met([[1, 0]]) and not local.met([[0, 0]])
    assert not local.met([Exception("ERR WAITAOF cannot be used when appendonly is disabled")])
    assert received.met([[1, 0], 1]) and not received.met([[1, 0], 0])
    assert not received.met([[0, 0], 1])
