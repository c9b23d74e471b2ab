"""The no-show sweep ends a session: nothing is booked, held or promoted after it (pure)."""

from engine.core.shard import Shard
from engine.outcomes import Booked, Closed, Waitlisted
from tests import helpers

START = 1_900_000_000.0


def test_after_the_sweep_nobody_is_promoted_to_a_hold_they_cannot_pay():
    spec = helpers.spec(
        doctor_id="doc",
        date="2030-03-17",
        capacity=1,
        fee=500,
        opens_at=START - 86400,
        closes_at=START + 86400,
        starts_at=START,
    )
    shard = Shard("h1:2030-03-17", "h1", "2030-03-17")
    shard.create(spec)
    held = shard.book("s1", 1, 1, START - 600)
    assert isinstance(held, Booked)
    assert held.hold_expires_at == START  # ends by the first slot
    assert isinstance(shard.join_waitlist("s1", 2, 2, START - 20), Waitlisted)
    shard.take_changes()
    shard.tick(START + 3600)  # past the end + grace: the sweep, though booking closes later
    events = shard.take_changes().events
    kinds = [(e[1], e[2]) for e in events if e[0] == "notice"]
    assert ("expired", 1) in kinds
    assert ("waitlist_ended", 2) in kinds
    assert not any(k == "waitlist_promoted" for k, _ in kinds)
    assert isinstance(shard.book("s1", 3, 3, START + 3700), Closed)
