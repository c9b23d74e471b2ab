"""Analytics over records and sales: every figure of a small data set, computed by hand."""

import json
import subprocess
import sys

import pytest

from engine.backoffice.analytics import (
    FILL_BUCKETS,
    Group,
    age_band,
    fill_bucket,
    sell_out_band,
    summarize,
)
from engine.backoffice.record import Record, SessionSale

SLOT = 1_750_000_000.0  # every slot starts then; made_at = SLOT - lead
D = 86400.0
MON, TUE, SUN = "2025-06-02", "2025-06-03", "2025-06-08"


def rec(n, state, by, confirmed, age, lead, department, date, period) -> Record:
    return Record(
        booking_id=f"s{n}.{n}",
        session_id=f"s{n}",
        hospital_id="h1",
        department_id=department,
        doctor_id="doc",
        date=date,
        period=period,
        slot_no=1,
        slot_at=SLOT,
        patient_id=n,
        state=state,
        cancelled_by=by,
        made_at=0.0 if lead is None else SLOT - lead,
        age=age,
        was_confirmed=confirmed,
    )


# fmt: off
RECORDS = [
    #   state         by          conf   age  lead      department date period
    rec(0, "checked_in", "",         True,  17, D - 1,     "neuro",  MON, "AM"),
    rec(1, "no_show",    "",         True,  18, D,         "neuro",  MON, "AM"),
    rec(2, "no_show",    "",         True,  29, 3 * D - 1, "neuro",  MON, "PM"),
    rec(3, "checked_in", "",         True,  30, 3 * D,     "neuro",  TUE, "PM"),
    rec(4, "cancelled",  "patient",  True,  44, 7 * D - 1, "cardio", TUE, "AM"),
    rec(5, "checked_in", "",         True,  45, 7 * D,     "cardio", TUE, "AM"),
    rec(6, "no_show",    "",         True,  59, D - 1,     "cardio", MON, "EVENING"),
    rec(7, "checked_in", "",         True,  60, D,         "cardio", SUN, "AM"),
    rec(8, "cancelled",  "patient",  True,  74, 3 * D,     "neuro",  MON, "AM"),
    rec(9, "checked_in", "",         True,  75, 3 * D,     "neuro",  MON, "PM"),
    rec(10, "cancelled", "hospital", True,  80, D - 1,     "eye",    TUE, "AM"),  # suspension
    rec(11, "held",      "",         False, -1, None,      "eye",    TUE, "AM"),  # made_at unset
    rec(12, "cancelled", "patient",  False, -1, D - 1,     "eye",    TUE, "AM"),  # unpaid hold
    rec(13, "booked",    "",         True,  40, D,         "neuro",  MON, "AM"),
    rec(14, "checked_in", "",        True,  -1, D - 1,     "cardio", SUN, "PM"),
]
# fmt: on

T0 = 1_700_000_000.0
SALES = [
    #            id, department, capacity, taken, sold out (after opening), suspended
    SessionSale("s1", "h1", "cardio", "a", MON, "AM", 10, T0, T0 + D, 10, T0 + 3.5),
    SessionSale("s2", "h1", "cardio", "b", MON, "PM", 20, T0, T0 + D, 5, None),
    SessionSale("s3", "h1", "neuro", "c", TUE, "AM", 30, T0, T0 + D, 29, T0 + 3600),
    SessionSale("s4", "h1", "neuro", "d", TUE, "AM", 10, T0, T0 + D, 0, T0 + 1, suspended=True),
    SessionSale("s5", "h1", "eye", "e", SUN, "AM", 8, T0, T0 + D, 6, T0 - 5),  # clock skew
]


def row(key, records, confirmed, cancelled, visited, no_show) -> Group:
    return Group(key, records, confirmed, cancelled, visited, no_show)


@pytest.fixture(scope="module")
def report():
    return summarize(iter(RECORDS), iter(SALES))  # iterables, read once


def test_overall(report):
    # confirmed: 0-9, 13, 14 (10 is the hospital's, 11 and 12 never confirmed) = 12
    # cancelled: 4, 8 = 2 (12 was never confirmed); visited: 0,1,2,3,5,6,7,9,14 = 9; no-shows 1,2,6
    assert report.overall == row("overall", 15, 12, 2, 9, 3)
    assert report.overall.no_show_rate == 3 / 9
    assert report.overall.cancel_rate == 2 / 12


def test_by_age_band_edges_included_below(report):
    assert report.age_band == (
        row("0-17", 1, 1, 0, 1, 0),  # 0 (17)
        row("18-29", 2, 2, 0, 2, 2),  # 1 (18), 2 (29)
        row("30-44", 3, 3, 1, 1, 0),  # 3 (30), 4 (44, cancelled), 13 (40, booked)
        row("45-59", 2, 2, 0, 2, 1),  # 5 (45), 6 (59, no-show)
        row("60-74", 2, 2, 1, 1, 0),  # 7 (60), 8 (74, cancelled)
        row("75+", 2, 1, 0, 1, 0),  # 9 (75), 10 (80, the hospital's: not confirmed)
        row("unknown", 3, 1, 0, 1, 0),  # 11, 12, 14
    )
    rates = [(g.no_show_rate, g.cancel_rate) for g in report.age_band]
    assert rates == [
        (0 / 1, 0 / 1),
        (2 / 2, 0 / 2),
        (0 / 1, 1 / 3),
        (1 / 2, 0 / 2),
        (0 / 1, 1 / 2),
        (0 / 1, 0 / 1),
        (0 / 1, 0 / 1),
    ]


def test_by_department_sorted_by_id(report):
    assert report.department == (
        row("cardio", 5, 5, 1, 4, 1),  # 4 (cancelled), 5, 6 (no-show), 7, 14
        row("eye", 3, 0, 0, 0, 0),  # 10, 11, 12: nothing confirmed, nobody visited
        row("neuro", 7, 7, 1, 5, 2),  # 0, 1 (ns), 2 (ns), 3, 8 (cancelled), 9, 13 (booked)
    )
    cardio, eye, neuro = report.department
    assert (cardio.no_show_rate, cardio.cancel_rate) == (1 / 4, 1 / 5)
    assert (eye.no_show_rate, eye.cancel_rate) == (None, None)
    assert (neuro.no_show_rate, neuro.cancel_rate) == (2 / 5, 1 / 7)


def test_by_weekday_every_day_listed(report):
    assert [g.key for g in report.weekday] == ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    mon, tue, *empty, sun = report.weekday
    assert mon == row("mon", 7, 7, 1, 5, 3)  # 0, 1, 2, 6, 8, 9, 13
    assert tue == row("tue", 6, 3, 1, 2, 0)  # 3, 4, 5, 10, 11, 12
    assert sun == row("sun", 2, 2, 0, 2, 0)  # 7, 14
    assert (mon.no_show_rate, mon.cancel_rate) == (3 / 5, 1 / 7)
    assert (tue.no_show_rate, tue.cancel_rate) == (0 / 2, 1 / 3)
    assert all(g == Group(g.key) and g.no_show_rate is g.cancel_rate is None for g in empty)


def test_by_period(report):
    assert report.period == (
        row("AM", 10, 7, 2, 4, 1),  # 0, 1, 4, 5, 7, 8, 10, 11, 12, 13
        row("PM", 4, 4, 0, 4, 1),  # 2, 3, 9, 14
        row("EVENING", 1, 1, 0, 1, 1),  # 6
    )
    assert [g.no_show_rate for g in report.period] == [1 / 4, 1 / 4, 1 / 1]
    assert [g.cancel_rate for g in report.period] == [2 / 7, 0 / 4, 0 / 1]


def test_by_lead_edges_go_to_the_longer_band(report):
    assert report.lead == (
        row("same day", 5, 3, 0, 3, 1),  # 0, 6, 10, 12, 14 (all 24 h - 1 s)
        row("1-2 days", 4, 4, 0, 3, 2),  # 1 (24 h), 2 (72 h - 1 s), 7, 13
        row("3-6 days", 4, 4, 2, 2, 0),  # 3 (72 h), 4 (7 d - 1 s), 8, 9
        row("7+ days", 1, 1, 0, 1, 0),  # 5 (7 d)
        row("unknown", 1, 0, 0, 0, 0),  # 11: made_at not set
    )
    assert [g.no_show_rate for g in report.lead] == [1 / 3, 2 / 3, 0 / 2, 0 / 1, None]
    assert [g.cancel_rate for g in report.lead] == [0 / 3, 0 / 4, 2 / 4, 0 / 1, None]


def test_sales(report):
    sales = report.sales
    assert (sales.sessions, sales.suspended) == (4, 1)  # s4 is left out
    # fills: s1 10/10, s2 5/20, s3 29/30, s5 6/8; mean = (1 + 1/4 + 29/30 + 3/4) / 4 = 89/120
    assert sales.mean_fill_rate == 89 / 120
    assert sales.fill_by_department == (
        ("cardio", 2, 5 / 8),  # (1 + 1/4) / 2
        ("eye", 1, 3 / 4),
        ("neuro", 1, 29 / 30),
    )
    # 1/4 is the edge of 25-50%, 3/4 of 75-99%
    assert sales.fill_buckets == (
        ("0-25%", 0),
        ("25-50%", 1),
        ("50-75%", 0),
        ("75-99%", 2),
        ("100%", 1),
    )
    # sold out: s1 after 3.5 s, s3 after 1 h, s5 after -5 s → 0; s2 never
    assert (sales.sold_out, sales.not_sold_out) == (3, 1)
    assert sales.median_sell_out == 3.5  # of [0, 3.5, 3600]
    assert sales.p90_sell_out == 3600  # nearest rank: the ceil(0.9 * 3) = 3rd
    assert sales.sell_out_buckets == (
        ("< 1 s", 1),
        ("1-10 s", 1),
        ("10-60 s", 0),
        ("1-10 min", 0),
        ("10-60 min", 0),
        ("1-24 h", 1),  # exactly 1 h
        ("> 1 day", 0),
    )


def test_empty_input_gives_none_rates_and_empty_sales():
    report = summarize([], [])
    assert report.overall == Group("overall")
    assert report.overall.no_show_rate is None
    assert report.overall.cancel_rate is None
    assert report.department == ()
    assert [g.key for g in report.lead] == ["same day", "1-2 days", "3-6 days", "7+ days"]
    assert report.sales.mean_fill_rate is None
    assert report.sales.median_sell_out is None
    assert report.sales.p90_sell_out is None
    assert report.sales.fill_buckets == tuple((b, 0) for b in FILL_BUCKETS)


def test_p90_by_nearest_rank():
    sales = [
        SessionSale(f"s{i}", "h", "d", "x", MON, "AM", 1, T0, T0 + D, 1, T0 + i)
        for i in range(1, 21)
    ]
    report = summarize([], sales)
    assert report.sales.median_sell_out == 10.5  # (10 + 11) / 2
    assert report.sales.p90_sell_out == 18  # the 18th of 20


@pytest.mark.parametrize(
    ("age", "band"),
    [
        (-1, "unknown"),
        (0, "0-17"),
        (17, "0-17"),
        (18, "18-29"),
        (29, "18-29"),
        (30, "30-44"),
        (45, "45-59"),
        (60, "60-74"),
        (74, "60-74"),
        (75, "75+"),
        (110, "75+"),
    ],
)
def test_age_band(age, band):
    assert age_band(age) == band


@pytest.mark.parametrize(
    ("seconds", "band"),
    [
        (0, "< 1 s"),
        (0.999, "< 1 s"),
        (1, "1-10 s"),
        (10, "10-60 s"),
        (60, "1-10 min"),
        (600, "10-60 min"),
        (3599.9, "10-60 min"),
        (3600, "1-24 h"),
        (86400, "> 1 day"),
    ],
)
def test_sell_out_band(seconds, band):
    assert sell_out_band(seconds) == band


@pytest.mark.parametrize(
    ("rate", "bucket"),
    [
        (0, "0-25%"),
        (0.2499, "0-25%"),
        (0.25, "25-50%"),
        (0.5, "50-75%"),
        (0.75, "75-99%"),
        (0.99, "75-99%"),
        (1, "100%"),
    ],
)
def test_fill_bucket(rate, bucket):
    assert fill_bucket(rate) == bucket


def test_to_dict_is_json(report):
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) == {"overall", "dimensions", "sales"}
    assert list(data["dimensions"]) == ["age_band", "department", "weekday", "period", "lead"]
    assert data["overall"] == {
        "key": "overall",
        "records": 15,
        "confirmed": 12,
        "cancelled": 2,
        "visited": 9,
        "no_show": 3,
        "no_show_rate": 3 / 9,
        "cancel_rate": 2 / 12,
    }
    assert data["dimensions"]["department"][1]["no_show_rate"] is None
    assert data["sales"]["fill_by_department"][0] == {
        "department_id": "cardio",
        "sessions": 2,
        "mean_fill_rate": 5 / 8,
    }
    assert data["sales"]["sell_out_buckets"][5] == {"bucket": "1-24 h", "sessions": 1}
    assert data["sales"]["p90_sell_out_seconds"] == 3600


def test_pure_no_services_no_plotting():
    code = (
        "import sys, engine.backoffice.analytics, engine.tools.history; "
        "print(sorted({'ray', 'redis', 'asyncio', 'matplotlib'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
