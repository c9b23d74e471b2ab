"""The demo history generator: deterministic, internally consistent, and showing the patterns."""

import datetime as dt
import re
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest

from engine.backoffice.analytics import summarize
from engine.backoffice.record import VISITED
from engine.core.policy import Policy
from engine.tools.history import generate

ZONE = ZoneInfo("Asia/Shanghai")
END = dt.date(2025, 6, 30)
DAYS = 56
HOSPITALS = [
    (f"h{h}", [(f"h{h}-dep{d}", [f"h{h}-dep{d}-doc{k}" for k in range(3)]) for d in range(4)])
    for h in range(3)
]
SESSION_ID = re.compile(r"hist-(.+)-(\d{8})-(AM|PM)")


@pytest.fixture(scope="module")
def history():
    return generate(HOSPITALS, DAYS, END, seed=11, zone=ZONE, patients=5000)


@pytest.fixture(scope="module")
def report(history):
    return summarize(*history)


def test_same_seed_same_history(history):
    small = HOSPITALS[:1]
    first = generate(small, 14, END, seed=3, zone=ZONE, patients=500)
    assert first == generate(small, 14, END, seed=3, zone=ZONE, patients=500)
    assert first != generate(small, 14, END, seed=4, zone=ZONE, patients=500)
    records, sales = history
    assert len(records) > 10_000
    assert len(sales) > 500


def test_sessions_follow_the_114_rule(history):
    _, sales = history
    policy = Policy()
    for sale in sales:
        doctor, day, period = SESSION_ID.fullmatch(sale.session_id).groups()
        assert (doctor, day, period) == (sale.doctor_id, sale.date.replace("-", ""), sale.period)
        assert END - dt.timedelta(days=DAYS - 1) <= dt.date.fromisoformat(sale.date) <= END
        start = dt.datetime.fromtimestamp(sale.starts_at, ZONE)
        assert (start.date().isoformat(), f"{start:%H:%M}") == (
            sale.date,
            "08:00" if period == "AM" else "13:30",
        )
        assert sale.opens_at == policy.opens_at(start.date(), ZONE)  # 7 days before, 15:00
        assert 10 <= sale.capacity <= 40
    assert len({s.session_id for s in sales}) == len(sales)


def test_records_are_consistent(history):
    records, sales = history
    policy = Policy()
    sale_of = {s.session_id: s for s in sales}
    by_session = defaultdict(list)
    age_of: dict[int, int] = {}
    for r in records:
        by_session[r.session_id].append(r)
        sale = sale_of[r.session_id]
        assert (r.hospital_id, r.department_id, r.doctor_id, r.date, r.period) == (
            sale.hospital_id,
            sale.department_id,
            sale.doctor_id,
            sale.date,
            sale.period,
        )
        assert r.state in ("checked_in", "no_show", "cancelled")
        assert r.was_confirmed
        assert 1 <= r.slot_no <= sale.capacity
        assert r.slot_at >= sale.starts_at
        assert sale.opens_at <= r.made_at <= r.slot_at
        assert r.made_at <= r.changed_at
        assert r.paid == (r.fee > 0)
        assert 0 <= r.age <= 120
        assert age_of.setdefault(r.patient_id, r.age) == r.age
        if r.state == "cancelled":
            assert r.cancelled_by == ("hospital" if sale.suspended else "patient")
            assert r.refunded == r.fee  # in full: before the cutoff, or a suspension
            if r.cancelled_by == "patient":
                assert r.changed_at <= policy.cancel_cutoff(dt.date.fromisoformat(r.date), ZONE)
            assert r.changed_at < sale.starts_at
        else:
            assert not sale.suspended
            assert r.cancelled_by == ""
            assert r.refunded == (r.fee if r.state == "no_show" else 0)  # no-shows refunded
            assert r.changed_at > sale.opens_at
    for session_id, made in by_session.items():
        sale = sale_of[session_id]
        assert [r.booking_id for r in made] == [f"{session_id}.{n}" for n in range(len(made))]
        assert [r.made_at for r in made] == sorted(r.made_at for r in made)
        assert len({r.patient_id for r in made}) == len(made)  # one booking per patient
        assert sale.taken == sum(r.state in VISITED for r in made)
        _check_occupancy(sale, made)


def _check_occupancy(sale, made):
    """Slots are never double-booked, and sold_out_at is the first time all were taken."""
    slot_at: dict[int, float] = {}
    holder: dict[int, float] = {}  # slot → until when its last booking held it
    events = []
    for r in made:
        assert slot_at.setdefault(r.slot_no, r.slot_at) == r.slot_at
        assert r.made_at >= holder.get(r.slot_no, 0.0)
        until = r.changed_at if r.state == "cancelled" else float("inf")
        holder[r.slot_no] = until
        events += [(r.made_at, 1), (until, -1)]
    occupied, full_at = 0, None
    for at, change in sorted(events, key=lambda e: (e[0], e[1])):
        occupied += change
        assert occupied <= sale.capacity
        if occupied == sale.capacity and full_at is None:
            full_at = at
    assert full_at == sale.sold_out_at


def test_suspended_sessions(history):
    _, sales = history
    suspended = [s for s in sales if s.suspended]
    assert 0 < len(suspended) < 0.05 * len(sales)
    assert all(s.taken == 0 for s in suspended)


def test_no_show_falls_with_age_and_stays_in_the_reported_range(report):
    ages = {g.key: g for g in report.age_band}
    assert ages["75+"].no_show_rate < 0.5 * ages["18-29"].no_show_rate
    assert 0.2 <= ages["18-29"].no_show_rate <= 0.35
    assert 0.03 <= ages["75+"].no_show_rate <= 0.1
    assert 0.10 <= report.overall.no_show_rate <= 0.50
    assert 0.05 <= report.overall.cancel_rate <= 0.15
    assert ages["75+"].cancel_rate < ages["18-29"].cancel_rate


def test_no_show_rises_with_lead_on_mondays_and_in_the_afternoon(report):
    lead = {g.key: g.no_show_rate for g in report.lead}
    assert lead["same day"] < lead["3-6 days"]
    days = {g.key: g.no_show_rate for g in report.weekday}
    assert days["mon"] > sum(days[d] for d in ("tue", "wed", "thu", "fri")) / 4
    period = {g.key: g.no_show_rate for g in report.period}
    assert period["PM"] > period["AM"]
    by_department = [g.no_show_rate for g in report.department]
    assert max(by_department) - min(by_department) > 0.03


def test_sessions_sell_out_in_seconds_hours_or_never(report):
    buckets = dict(report.sales.sell_out_buckets)
    assert buckets["< 1 s"] + buckets["1-10 s"] > 0  # sold out within 10 s of release
    assert buckets["1-24 h"] + buckets["> 1 day"] > 0
    assert report.sales.not_sold_out > 0
    assert 0.3 < report.sales.mean_fill_rate < 0.95


def test_patients_must_be_enough():
    with pytest.raises(ValueError):
        generate(HOSPITALS, 1, END, seed=1, zone=ZONE, patients=10)
