"""The worker's stock view on its own (no services): order, holders, alternatives."""

from api.answers import LocalTime
from api.fastpath.availability import Availability


def view_with(*sessions):
    av = Availability(LocalTime("Asia/Shanghai"))
    for sid, date, status, remaining in sessions:
        doc = {
            "id": sid,
            "hospital_id": "h",
            "department_id": "d",
            "doctor_id": f"doc-{sid}",
            "date": date,
            "period": "AM",
            "capacity": 2,
            "opens_at_epoch": 0.0,
        }
        av.add(doc)
        av.update(sid, status, remaining, 0)
    return av


def test_older_news_never_overwrites_newer():
    av = view_with(("s1", "2030-01-01", "open", 2))
    av.update("s1", "open", 0 + 1, 3)
    av.update("s1", "sold_out", 0, 2)  # arrives late: ignored
    assert (av.sessions["s1"].status, av.sessions["s1"].remaining) == ("open", 1)


def caller(patient: int):
    """The fast path's check for a caller whose token is valid: a holder or not."""
    return lambda holders: patient if patient in holders else None


def test_a_holder_is_sent_to_the_engine_and_stale_holder_lists_are_refused():
    av = view_with(("s1", "2030-01-01", "open", 2), ("s2", "2030-01-02", "open", 2))
    av.update("s1", "sold_out", 0, 2)
    assert av.fast_refusal("s1", 1.0, caller(7)) is None  # holders not known yet: engine
    assert "s1" in av.missing_holders
    av.set_holders("s1", 1, frozenset({7}))  # a list from an older version: refused
    assert av.sessions["s1"].holders is None
    av.set_holders("s1", 2, frozenset({7, 8}))
    assert av.fast_refusal("s1", 1.0, caller(7)) is None  # a holder: to the engine
    code, body, kind = av.fast_refusal("s1", 1.0, caller(9))
    assert (code, kind) == (409, "sold_out")
    assert b'"session_id":"s2"' in body
    av.update("s1", "sold_out", 0, 4)  # a cancel and a booking in one commit: new holders
    assert av.sessions["s1"].holders is None
    assert av.fast_refusal("s1", 1.0, caller(9)) is None


def test_alternatives_prefer_the_same_date_then_the_nearest():
    av = view_with(
        ("s1", "2030-01-10", "sold_out", 0),
        ("far", "2030-01-20", "open", 1),
        ("near", "2030-01-11", "open", 1),
        ("same", "2030-01-10", "open", 2),
        ("gone", "2030-01-10", "sold_out", 0),
    )
    av.set_holders("s1", 0, frozenset())
    ids = [a["session_id"] for a in av.alternatives(av.sessions["s1"], 1.0)]
    assert ids == ["same", "near", "far"]
