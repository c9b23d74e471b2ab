"""A hospital's rules as data: fee tiers, local cutoffs, validation and the ban judge (pure)."""

import datetime as dt
import random
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.policy import (
    CANCEL,
    DAY,
    NO_SHOW,
    SAME_DAY_CANCEL,
    Ban,
    BanRule,
    Conduct,
    FeeTier,
    Policy,
    Violation,
    judge,
    local_date,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_YORK = ZoneInfo("America/New_York")
SECOND = 1 / 60  # in minutes
STARTS = 1_796_083_200.0  # 2026-12-01T00:00:00Z = 08:00 in Shanghai
T0 = 1_800_000_000.0


def utc(*args: int) -> float:
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


# railway-style: ≥ 8 days free, ≥ 48 h 5 %, ≥ 24 h 10 %, later 20 %
RAILWAY = Policy.from_dict(
    {
        "fee_tiers": [
            {"minutes_before": 1440, "fee_percent": 10},  # given out of order on purpose
            {"minutes_before": 8 * 1440, "fee_percent": 0},
            {"minutes_before": 0, "fee_percent": 20},
            {"minutes_before": 2880, "fee_percent": 5},
        ]
    }
)
# no tier at 0: closer than the last threshold still pays the last tier
NO_ZERO_TIER = Policy(fee_tiers=(FeeTier(120, 0), FeeTier(30, 50)))


# ----- fee tiers ---------------------------------------------------------------------------


def test_from_dict_sorts_the_tiers_largest_threshold_first():
    assert [t.minutes_before for t in RAILWAY.fee_tiers] == [8 * 1440, 2880, 1440, 0]


@pytest.mark.parametrize(
    ("policy", "minutes_before", "kept"),
    [
        (RAILWAY, 30 * 1440, 0),
        (RAILWAY, 8 * 1440 + SECOND, 0),
        (RAILWAY, 8 * 1440, 0),
        (RAILWAY, 8 * 1440 - SECOND, 5),
        (RAILWAY, 2880 + SECOND, 5),
        (RAILWAY, 2880, 5),
        (RAILWAY, 2880 - SECOND, 10),
        (RAILWAY, 1440 + SECOND, 10),
        (RAILWAY, 1440, 10),
        (RAILWAY, 1440 - SECOND, 20),
        (RAILWAY, SECOND, 20),
        (RAILWAY, 0, 20),
        (RAILWAY, -SECOND, 20),  # after the visit started: the last tier
        (NO_ZERO_TIER, 120 + SECOND, 0),
        (NO_ZERO_TIER, 120, 0),
        (NO_ZERO_TIER, 120 - SECOND, 50),
        (NO_ZERO_TIER, 30, 50),
        (NO_ZERO_TIER, 30 - SECOND, 50),
        (NO_ZERO_TIER, 0, 50),
        (Policy(), 10_000, 0),  # the default: cancelling is free
        (Policy(), -10_000, 0),
    ],
)
def test_kept_percent_at_each_tier_boundary(policy, minutes_before, kept):
    assert policy.kept_percent(minutes_before) == kept


@pytest.mark.parametrize(
    ("fee", "seconds_before", "refund"),
    [
        (1000, 8 * DAY + 1, 1000),
        (1000, 8 * DAY, 1000),
        (1000, 8 * DAY - 1, 950),
        (1000, 2 * DAY + 1, 950),
        (1000, 2 * DAY, 950),
        (1000, 2 * DAY - 1, 900),
        (1000, DAY + 1, 900),
        (1000, DAY, 900),
        (1000, DAY - 1, 800),
        (1000, 1, 800),
        (1000, 0, 800),
        (1000, -1, 800),
        (999, 2 * DAY, 950),  # kept 49.95 → 49: the fraction goes to the patient
        (1, DAY - 1, 1),  # kept 0.2 → 0
        (0, DAY - 1, 0),
    ],
)
def test_refund_for_cancel_at_each_tier_boundary(fee, seconds_before, refund):
    now = STARTS - seconds_before
    assert RAILWAY.refund_for_cancel(fee, True, STARTS, now) == refund
    assert RAILWAY.refund_for_cancel(fee, False, STARTS, now) == 0  # nothing paid, nothing back


def test_tier_order_does_not_matter_when_built_directly():
    direct = Policy(fee_tiers=(FeeTier(0, 20), FeeTier(1440, 0)))
    assert direct.kept_percent(2000) == 0


# ----- local cutoffs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "visit", "zone", "cutoff", "opens"),
    [
        # the defaults: cancel until 16:00 the day before, open 7 days before at 15:00
        (Policy(), "2026-12-01", SHANGHAI, utc(2026, 11, 30, 8), utc(2026, 11, 24, 7)),
        (Policy(), "2026-12-01", dt.UTC, utc(2026, 11, 30, 16), utc(2026, 11, 24, 15)),
        # across a month and a year
        (Policy(), "2027-01-01", SHANGHAI, utc(2026, 12, 31, 8), utc(2026, 12, 25, 7)),
        # on the visit day itself, at local midnight (the day before in UTC)
        (
            Policy(cancel_days_before=0, cancel_until="00:00", window_days=1, release_at="00:00"),
            "2026-12-01",
            SHANGHAI,
            utc(2026, 11, 30, 16),
            utc(2026, 11, 29, 16),
        ),
        (
            Policy(cancel_days_before=2, cancel_until="23:59", window_days=90, release_at="08:30"),
            "2026-12-01",
            SHANGHAI,
            utc(2026, 11, 29, 15, 59),
            utc(2026, 9, 2, 0, 30),
        ),
        # the day after daylight saving time ended: the cutoff is on standard time (UTC-5)
        (Policy(), "2026-11-02", NEW_YORK, utc(2026, 11, 1, 21), utc(2026, 10, 26, 19)),
    ],
)
def test_cancel_cutoff_and_opens_at_are_local_times(policy, visit, zone, cutoff, opens):
    day = dt.date.fromisoformat(visit)
    assert policy.cancel_cutoff(day, zone) == cutoff
    assert policy.opens_at(day, zone) == opens


@pytest.mark.parametrize(
    ("epoch", "zone", "date"),
    [
        (utc(2026, 11, 30, 15, 59, 59), SHANGHAI, "2026-11-30"),
        (utc(2026, 11, 30, 16), SHANGHAI, "2026-12-01"),
        (utc(2026, 11, 30, 16), dt.UTC, "2026-11-30"),
        (utc(2026, 12, 1, 15, 59, 59), SHANGHAI, "2026-12-01"),
        (utc(2026, 12, 1, 16), SHANGHAI, "2026-12-02"),
    ],
)
def test_local_date(epoch, zone, date):
    assert local_date(epoch, zone) == date


# ----- validation ----------------------------------------------------------------------------


def test_from_dict_keeps_the_base_for_missing_fields_and_round_trips():
    base = Policy(hold_seconds=600, ban_days=(7,), ban_scope="platform")
    changed = Policy.from_dict({"hospital_day_limit": 3}, base=base)
    assert changed == Policy(hold_seconds=600, ban_days=(7,), ban_scope="platform",
                             hospital_day_limit=3)  # fmt: skip
    assert Policy.from_dict({}) == Policy()
    assert Policy.from_dict(RAILWAY.to_dict()) == RAILWAY
    assert Policy.from_dict(changed.to_dict()) == changed


@pytest.mark.parametrize(
    "values",
    [
        {"bogus": 1},
        {"hospital_day_limit": 2, "hold_secs": 60},
        {"hospital_day_limit": "2"},
        {"hospital_day_limit": 2.0},
        {"hospital_day_limit": True},
        {"hospital_day_limit": None},
        {"hold_seconds": 0},
        {"hold_seconds": 7 * 86400 + 1},
        {"window_days": 91},
        {"no_show_refund": 1},
        {"no_show_refund": "yes"},
        {"release_at": "1500"},
        {"release_at": "24:00"},
        {"cancel_until": "7:30"},
        {"cancel_until": "07:60"},
        {"ban_scope": "city"},
        {"ban_scope": None},
        {"fee_tiers": []},
        {"fee_tiers": [{"minutes_before": "x", "fee_percent": 10}]},
        {"fee_tiers": [{"minutes_before": 10, "fee_percent": 101}]},
        {"fee_tiers": [{"minutes_before": -1, "fee_percent": 10}]},
        {"ban_rules": [{"kind": "late", "count": 1, "window_days": 30}]},
        {"ban_rules": [{"kind": NO_SHOW, "count": 0, "window_days": 30}]},
        {"ban_rules": [{"kind": NO_SHOW, "count": 1, "window_days": 3661}]},
        {"ban_days": []},
        {"ban_days": [0]},
        {"ban_days": [30] * 11},
        {"check_in_max_tries": 16},  # wrong tries are kept in 4 bits
        {"waitlist_limit": 0},
        # wrong types that escape as other exceptions, or slip through
        {"release_at": 1500},
        {"ban_days": "30"},
        {"ban_days": 30},
        {"fee_tiers": None},
        {"fee_tiers": [5]},
        {"fee_tiers": [{"minutes_before": 10}]},
        {"ban_days": [30.5]},
        {"fee_tiers": [{"minutes_before": 30.7, "fee_percent": 10}]},
        {"fee_tiers": [{"minutes_before": True, "fee_percent": 10}]},
    ],
    ids=repr,
)
def test_from_dict_refuses_bad_values_with_value_error(values):
    with pytest.raises(ValueError):
        Policy.from_dict(values)


@pytest.mark.parametrize(
    "make",
    [
        lambda: FeeTier(-1, 0),
        lambda: FeeTier(0, 101),
        lambda: BanRule("late", 1, 30),
        lambda: BanRule(NO_SHOW, 101, 30),
        lambda: BanRule(NO_SHOW, 1, 0),
        lambda: Policy(department_day_limit=0),
        lambda: Policy(fee_tiers=()),
        lambda: Policy(fee_tiers=(FeeTier(0, 0),) * 21),
        lambda: Policy(ban_rules=(BanRule(NO_SHOW, 1, 1),) * 11),
        lambda: Policy(no_show_grace_minutes=1441),
        lambda: Policy(booking_closes_minutes=-1),
        lambda: Policy(cancel_days_before=31),
    ],
)
def test_direct_construction_validates_too(make):
    with pytest.raises(ValueError):
        make()


# ----- the judge: violations → bans ----------------------------------------------------------


def no_shows(*days: float) -> list[Violation]:
    return [Violation(T0 + d * DAY, NO_SHOW, f"b{i}") for i, d in enumerate(days)]


def bans(*spans: tuple[float, float, str]) -> list[Ban]:
    return [Ban(T0 + a * DAY, T0 + b * DAY, cause) for a, b, cause in spans]


BEIJING_114 = Policy()  # 1 no-show in 365 days → 30 / 60 / 90 days
WEIYI = Policy(ban_rules=(BanRule(NO_SHOW, 3, 365),), ban_days=(30,))  # 3 in 365 → 30 days


@pytest.mark.parametrize(
    ("policy", "days", "expected"),
    [
        (BEIJING_114, [], []),
        (BEIJING_114, [0], [(0, 30, "b0")]),
        # escalating, and the last length repeats
        (BEIJING_114, [0, 100], [(0, 30, "b0"), (100, 160, "b1")]),
        (BEIJING_114, [0, 100, 200], [(0, 30, "b0"), (100, 160, "b1"), (200, 290, "b2")]),
        (
            BEIJING_114,
            [0, 100, 200, 300],
            [(0, 30, "b0"), (100, 160, "b1"), (200, 290, "b2"), (300, 390, "b3")],
        ),
        # a ban earned while banned starts when the current one ends
        (BEIJING_114, [0, 10], [(0, 30, "b0"), (30, 90, "b1")]),
        (BEIJING_114, [0, 10, 20], [(0, 30, "b0"), (30, 90, "b1"), (90, 180, "b2")]),
        # "within a year" counts bans that started in the 365 days before the violation
        (BEIJING_114, [0, 364], [(0, 30, "b0"), (364, 424, "b1")]),
        (BEIJING_114, [0, 365], [(0, 30, "b0"), (365, 395, "b1")]),
        (BEIJING_114, [0, 200, 600], [(0, 30, "b0"), (200, 260, "b1"), (600, 630, "b2")]),
        # 微医: three no-shows in 365 days
        (WEIYI, [0, 10], []),
        (WEIYI, [0, 10, 20], [(20, 50, "b2")]),
        (WEIYI, [0, 10, 20, 60, 70], [(20, 50, "b2")]),  # counting restarts after a ban
        (WEIYI, [0, 10, 20, 60, 70, 80], [(20, 50, "b2"), (80, 110, "b5")]),
        (WEIYI, [0, 10, 20, 25, 30, 35], [(20, 50, "b2"), (50, 80, "b5")]),
        (WEIYI, [0, 100, 364], [(364, 394, "b2")]),
        (WEIYI, [0, 100, 365], []),  # the first one just left the window
        (WEIYI, [0, 200, 400], []),
    ],
)
def test_judge_no_show_rules(policy, days, expected):
    violations = no_shows(*days)
    conduct = judge(violations, policy)
    assert conduct.bans == bans(*expected)
    assert conduct.violations == violations
    shuffled = violations[:]
    random.Random(len(days)).shuffle(shuffled)
    assert judge(shuffled, policy) == conduct  # the record's order does not matter


def cancels(*entries: tuple[float, str, bool]) -> list[Violation]:
    """(day, booking id, same day?): a same-day cancellation is both kinds at once."""
    out = []
    for day, booking, same_day in entries:
        out.append(Violation(T0 + day * DAY, CANCEL, booking))
        if same_day:
            out.append(Violation(T0 + day * DAY, SAME_DAY_CANCEL, booking))
    return out


MIXED = Policy(
    ban_rules=(BanRule(CANCEL, 3, 30), BanRule(SAME_DAY_CANCEL, 2, 90)), ban_days=(7, 14)
)


def test_judge_mixed_cancel_rules_by_hand():
    record = cancels(
        (0, "b1", False),
        (5, "b2", True),
        (10, "b3", False),  # 3rd cancel in 30 days → 7 days from day 10; slate wiped
        (12, "b4", True),  # 1 cancel and 1 same-day since the slate
        (15, "b5", True),  # 2nd same-day since day 10 → 14 days (2nd ban), after the 1st
        (50, "b6", False),  # cancels since day 23: b6
        (52, "b7", True),  # b6 b7; same-day since day 15: b7
        (53, "b8", False),  # b6 b7 b8 → 3rd ban within a year: 14 days (the last repeats)
    )
    conduct = judge(record, MIXED)
    assert conduct.bans == bans((10, 17, "b3"), (17, 31, "b5"), (53, 67, "b8"))
    assert conduct.banned_until(T0 + 60 * DAY) == T0 + 67 * DAY
    assert conduct.banned_until(T0 + 67 * DAY) is None
    until_day_15 = judge([v for v in record if v.at <= T0 + 15 * DAY], MIXED)
    assert until_day_15.bans == conduct.bans[:2]
    assert until_day_15.banned_until(T0 + 16 * DAY) == T0 + 31 * DAY
    assert until_day_15.banned_until(T0 + 40 * DAY) is None


def test_one_same_day_cancellation_earns_one_ban_even_if_both_rules_fire():
    policy = Policy(
        ban_rules=(BanRule(CANCEL, 1, 30), BanRule(SAME_DAY_CANCEL, 1, 30)), ban_days=(7, 14)
    )
    assert judge(cancels((0, "b1", True)), policy).bans == bans((0, 7, "b1"))


def test_kinds_without_a_rule_earn_nothing():
    assert judge(cancels((0, "b1", True), (1, "b2", True)), BEIJING_114).bans == []


@pytest.mark.parametrize(
    ("bans_", "now", "until"),
    [
        ([], T0, None),
        ([Ban(T0, T0 + 10, "b")], T0 + 9, T0 + 10),
        ([Ban(T0, T0 + 10, "b")], T0 + 10, None),
        ([Ban(T0, T0 + 10, "b"), Ban(T0 + 10, T0 + 30, "c")], T0 + 5, T0 + 30),
    ],
)
def test_banned_until(bans_, now, until):
    assert Conduct([], bans_).banned_until(now) == until


@settings(max_examples=300, deadline=None, print_blob=True)
@given(
    policy=st.sampled_from([BEIJING_114, WEIYI, MIXED]),
    record=st.lists(
        st.tuples(st.integers(0, 1000), st.sampled_from([NO_SHOW, CANCEL, SAME_DAY_CANCEL])),
        max_size=40,
    ),
)
def test_bans_never_overlap_and_have_the_policy_lengths(policy, record):
    violations = [Violation(T0 + d * DAY, k, f"b{i}") for i, (d, k) in enumerate(record)]
    conduct = judge(violations, policy)
    assert conduct == judge(violations[::-1], policy)
    causes = {v.booking_id: v for v in violations}
    last_until = float("-inf")
    for ban in conduct.bans:
        assert ban.start >= last_until, "a ban earned while banned starts when the last ends"
        assert ban.start >= causes[ban.cause].at
        assert (ban.until - ban.start) / DAY in policy.ban_days
        last_until = ban.until
    assert len(conduct.bans) <= len(violations)


def test_two_no_shows_swept_at_the_same_moment_earn_two_bans():
    """One tick can sweep the AM and the PM session together (after a host was down)."""
    t = T0
    both = [Violation(t, NO_SHOW, "am.0"), Violation(t, NO_SHOW, "pm.0")]
    assert [round((b.until - b.start) / DAY) for b in judge(both, BEIJING_114).bans] == [30, 60]
