"""Analytics over booking records and session sales: who misses visits, who cancels, how fast
doctor-sessions sell. Pure and synchronous; the caller chooses which records to read.

Definitions (the tests compute them by hand, so they are exact):

- A record *reached the visit* if its state is in ``VISITED`` (``checked_in`` or ``no_show``).
- **No-show rate** of a group = no_show / (checked_in + no_show); None when that is 0.
- A *confirmed booking* is a record with ``was_confirmed`` true, except one cancelled by the
  hospital (a suspension is not the patient's doing).
- A *patient cancellation* is a record in state ``cancelled``, ``cancelled_by`` ``"patient"``,
  ``was_confirmed`` true. **Cancellation rate** = patient cancellations / confirmed bookings;
  None when there are no confirmed bookings.
- Groups: ``age_band`` (0-17, 18-29, 30-44, 45-59, 60-74, 75+; ``unknown`` for a negative age),
  ``department`` (department_id, sorted), ``weekday`` of the visit date (mon..sun), ``period``
  (AM, PM, EVENING) and ``lead`` = slot_at - made_at: ``same day`` (< 24 h), ``1-2 days``
  (< 72 h), ``3-6 days`` (< 7 d), ``7+ days``; ``unknown`` when made_at is not set (≤ 0).
  Every band of a fixed dimension is listed, even when empty; ``unknown`` only when used.
- Sales: suspended sessions are left out of every sales figure (only counted). **Fill rate** of
  a session = taken / capacity (at most 1); buckets 0-25% [0, .25), 25-50% [.25, .5), 50-75%
  [.5, .75), 75-99% [.75, 1), 100%. **Time to sell out** = sold_out_at - opens_at (at least 0)
  for sessions with ``sold_out_at`` set; median as ``statistics.median``, p90 by nearest rank
  (the ⌈0.9·n⌉-th smallest). Buckets: < 1 s, 1-10 s, 10-60 s, 1-10 min, 10-60 min, 1-24 h,
  > 1 day, each including its lower edge.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from engine.backoffice.record import BY_HOSPITAL, BY_PATIENT, VISITED, Record, SessionSale

HOUR, DAY = 3600.0, 86400.0
UNKNOWN = "unknown"
# (label, upper bound, exclusive); the last band has none
AGE_BANDS = (("0-17", 18), ("18-29", 30), ("30-44", 45), ("45-59", 60), ("60-74", 75))
OLDEST = "75+"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PERIODS = ("AM", "PM", "EVENING")
LEAD_BANDS = (("same day", DAY), ("1-2 days", 3 * DAY), ("3-6 days", 7 * DAY))
LONGEST_LEAD = "7+ days"
FILL_BUCKETS = ("0-25%", "25-50%", "50-75%", "75-99%", "100%")
SELL_OUT_BANDS = (
    ("< 1 s", 1.0),
    ("1-10 s", 10.0),
    ("10-60 s", 60.0),
    ("1-10 min", 600.0),
    ("10-60 min", HOUR),
    ("1-24 h", DAY),
)
SLOWEST = "> 1 day"
DIMENSIONS = ("age_band", "department", "weekday", "period", "lead")

_FIXED: dict[str, tuple[str, ...]] = {
    "age_band": (*(label for label, _ in AGE_BANDS), OLDEST),
    "weekday": WEEKDAYS,
    "period": PERIODS,
    "lead": (*(label for label, _ in LEAD_BANDS), LONGEST_LEAD),
}


def age_band(age: int) -> str:
    if age < 0:
        return UNKNOWN
    return next((label for label, below in AGE_BANDS if age < below), OLDEST)


def lead_band(record: Record) -> str:
    if record.made_at <= 0:
        return UNKNOWN
    lead = record.slot_at - record.made_at
    return next((label for label, below in LEAD_BANDS if lead < below), LONGEST_LEAD)


def fill_bucket(rate: float | Fraction) -> str:
    if rate >= 1:
        return FILL_BUCKETS[-1]
    return FILL_BUCKETS[min(int(rate * 4), 3)]


def sell_out_band(seconds: float) -> str:
    return next((label for label, below in SELL_OUT_BANDS if seconds < below), SLOWEST)


@dataclass(frozen=True, slots=True)
class Group:
    """The counts of one group of records, and the two rates derived from them."""

    key: str
    records: int = 0
    confirmed: int = 0  # was_confirmed, not cancelled by the hospital
    cancelled: int = 0  # cancelled by the patient after being confirmed
    visited: int = 0  # checked_in + no_show
    no_show: int = 0

    @property
    def no_show_rate(self) -> float | None:
        return self.no_show / self.visited if self.visited else None

    @property
    def cancel_rate(self) -> float | None:
        return self.cancelled / self.confirmed if self.confirmed else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "records": self.records,
            "confirmed": self.confirmed,
            "cancelled": self.cancelled,
            "visited": self.visited,
            "no_show": self.no_show,
            "no_show_rate": self.no_show_rate,
            "cancel_rate": self.cancel_rate,
        }


@dataclass(frozen=True, slots=True)
class Sales:
    """Fill rate and time to sell out over the sessions that were not suspended."""

    sessions: int = 0
    suspended: int = 0
    mean_fill_rate: float | None = None
    fill_by_department: tuple[tuple[str, int, float], ...] = ()  # (department, sessions, mean)
    fill_buckets: tuple[tuple[str, int], ...] = ()  # (bucket, sessions)
    sold_out: int = 0
    not_sold_out: int = 0
    median_sell_out: float | None = None  # seconds
    p90_sell_out: float | None = None  # seconds
    sell_out_buckets: tuple[tuple[str, int], ...] = ()  # (bucket, sessions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions,
            "suspended": self.suspended,
            "mean_fill_rate": self.mean_fill_rate,
            "fill_by_department": [
                {"department_id": d, "sessions": n, "mean_fill_rate": m}
                for d, n, m in self.fill_by_department
            ],
            "fill_buckets": [{"bucket": b, "sessions": n} for b, n in self.fill_buckets],
            "sold_out": self.sold_out,
            "not_sold_out": self.not_sold_out,
            "median_sell_out_seconds": self.median_sell_out,
            "p90_sell_out_seconds": self.p90_sell_out,
            "sell_out_buckets": [{"bucket": b, "sessions": n} for b, n in self.sell_out_buckets],
        }


@dataclass(frozen=True, slots=True)
class Report:
    """What ``summarize`` found: an overall row, rows per dimension, and the sales."""

    overall: Group
    age_band: tuple[Group, ...] = ()
    department: tuple[Group, ...] = ()
    weekday: tuple[Group, ...] = ()
    period: tuple[Group, ...] = ()
    lead: tuple[Group, ...] = ()
    sales: Sales = field(default_factory=Sales)

    def rows(self, dimension: str) -> tuple[Group, ...]:
        if dimension not in DIMENSIONS:
            raise KeyError(dimension)
        return getattr(self, dimension)

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "dimensions": {d: [g.to_dict() for g in self.rows(d)] for d in DIMENSIONS},
            "sales": self.sales.to_dict(),
        }


OVERALL = "overall"
SEP = "\t"  # in a daily tally's field names: dimension, key, metric index


def row_of(r: Record) -> tuple[int, int, int, int, int]:
    """A record's counts: (records, confirmed, cancelled by the patient, visited, no_show)."""
    confirmed = r.was_confirmed and r.cancelled_by != BY_HOSPITAL
    cancelled = r.state == "cancelled" and r.cancelled_by == BY_PATIENT and r.was_confirmed
    return (1, int(confirmed), int(cancelled), int(r.state in VISITED), int(r.state == "no_show"))


def groups_of(r: Record, weekday: str | None = None) -> tuple[str, ...]:
    """The record's group in each of ``DIMENSIONS``."""
    if weekday is None:
        weekday = WEEKDAYS[dt.date.fromisoformat(r.date).weekday()]
    return (age_band(r.age), r.department_id, weekday, r.period, lead_band(r))


def tally_delta(old: Record | None, new: Record) -> dict[str, int]:
    """What a record's change adds to its day's tally (field → increment; none are 0). The
    fields are ``dimension<TAB>key<TAB>metric``, with dimension ``overall`` for the total."""
    out: dict[str, int] = {}
    for record, sign in ((new, 1), (old, -1)):
        if record is None:
            continue
        row = row_of(record)
        pairs = zip(DIMENSIONS, groups_of(record), strict=True)
        for dimension, key in ((OVERALL, OVERALL), *pairs):
            for i, value in enumerate(row):
                if value:
                    name = f"{dimension}{SEP}{key}{SEP}{i}"
                    out[name] = out.get(name, 0) + sign * value
    return {name: value for name, value in out.items() if value}


class Tally:
    """The record side of a report: added to a chunk of records at a time, or from the
    daily tallies the records indexer keeps (``tally_delta``)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, list[int]]] = {d: {} for d in DIMENSIONS}
        self.overall = [0, 0, 0, 0, 0]
        self._weekday_of: dict[str, str] = {}

    def add(self, records: Iterable[Record]) -> None:
        counts, overall, weekday_of = self.counts, self.overall, self._weekday_of
        for r in records:
            row = row_of(r)
            weekday = weekday_of.get(r.date)
            if weekday is None:
                weekday = weekday_of[r.date] = WEEKDAYS[dt.date.fromisoformat(r.date).weekday()]
            for dimension, key in zip(DIMENSIONS, groups_of(r, weekday), strict=True):
                counts_ = counts[dimension].setdefault(key, [0, 0, 0, 0, 0])
                for i, value in enumerate(row):
                    counts_[i] += value
            for i, value in enumerate(row):
                overall[i] += value

    def add_tally(self, fields: dict[str, int]) -> None:
        """Add one day's tally (field → count, as ``tally_delta`` names them)."""
        for name, value in fields.items():
            dimension, key, metric = name.split(SEP)
            i = int(metric)
            if dimension == OVERALL:
                self.overall[i] += value
            elif dimension in self.counts:
                self.counts[dimension].setdefault(key, [0, 0, 0, 0, 0])[i] += value

    def report(self, sales: Iterable[SessionSale]) -> Report:
        counts = {d: {k: v for k, v in c.items() if v[0]} for d, c in self.counts.items()}
        rows = {d: _rows(d, counts[d]) for d in DIMENSIONS}
        return Report(Group(OVERALL, *self.overall), **rows, sales=_sales(sales))


def summarize(records: Iterable[Record], sales: Iterable[SessionSale]) -> Report:
    """The report over ``records`` and ``sales`` (definitions in the module docstring)."""
    tally = Tally()
    tally.add(records)
    return tally.report(sales)


def _rows(dimension: str, counts: dict[str, list[int]]) -> tuple[Group, ...]:
    fixed = _FIXED.get(dimension)
    if fixed is None:
        keys = sorted(counts)
    else:
        keys = [*fixed, *([UNKNOWN] if UNKNOWN in counts else [])]
        keys += sorted(set(counts) - set(keys))  # e.g. a period this module does not know
    return tuple(Group(key, *counts.get(key, ())) for key in keys)


def _sales(sales: Iterable[SessionSale]) -> Sales:
    suspended = 0
    fills: list[Fraction] = []
    by_department: dict[str, list[Fraction]] = {}
    seconds: list[float] = []
    for s in sales:
        if s.suspended:
            suspended += 1
            continue
        fill = min(Fraction(s.taken, s.capacity), Fraction(1)) if s.capacity > 0 else Fraction(0)
        fills.append(fill)
        by_department.setdefault(s.department_id, []).append(fill)
        if s.sold_out_at is not None:
            seconds.append(max(0.0, s.sold_out_at - s.opens_at))
    fill_counts = dict.fromkeys(FILL_BUCKETS, 0)
    for fill in fills:
        fill_counts[fill_bucket(fill)] += 1
    band_counts = dict.fromkeys((*(label for label, _ in SELL_OUT_BANDS), SLOWEST), 0)
    for value in seconds:
        band_counts[sell_out_band(value)] += 1
    seconds.sort()
    return Sales(
        sessions=len(fills),
        suspended=suspended,
        mean_fill_rate=_mean(fills),
        fill_by_department=tuple(
            (d, len(f), _mean(f) or 0.0) for d, f in sorted(by_department.items())
        ),
        fill_buckets=tuple(fill_counts.items()),
        sold_out=len(seconds),
        not_sold_out=len(fills) - len(seconds),
        median_sell_out=statistics.median(seconds) if seconds else None,
        p90_sell_out=seconds[-(-9 * len(seconds) // 10) - 1] if seconds else None,
        sell_out_buckets=tuple(band_counts.items()),
    )


def _mean(values: list[Fraction]) -> float | None:
    """The exact mean, rounded once to a float (so tests can compare with ==)."""
    return float(sum(values, Fraction(0)) / len(values)) if values else None
