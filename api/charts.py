"""Charts of an analytics report (``engine.analytics.Report``) as SVG or PNG.

Drawn with matplotlib's object-oriented API: a fresh ``Figure`` per chart and never pyplot,
so there is no global figure state and no GUI backend (saving picks the SVG or Agg renderer).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Literal

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from engine.backoffice.analytics import Group, Report

SIZE = (6.0, 3.5)  # inches
DPI = 100
NO_SHOW_COLOUR, CANCEL_COLOUR, SALES_COLOUR = "#4c72b0", "#dd8452", "#55a868"
Format = Literal["svg", "png"]


def render(report: Report, name: str, fmt: Format = "svg") -> bytes:
    """The chart ``name`` (one of ``CHARTS``) of ``report``; KeyError for an unknown name."""
    draw = _CHARTS[name]
    if fmt not in ("svg", "png"):
        raise ValueError(f"fmt must be svg or png, got {fmt!r}")
    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    draw(figure.subplots(), report)
    out = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    figure.savefig(out, format=fmt, metadata=metadata)
    return out.getvalue()


def _rates(
    ax: Axes, rows: Sequence[Group], overall: Group, *, cancel: bool, what: str, label: str
) -> None:
    """Bars of a rate per group, in percent, each labelled with its denominator (n=)."""
    shown = [g for g in rows if g.records]  # bands nobody fell into are left out
    values = [100 * ((g.cancel_rate if cancel else g.no_show_rate) or 0.0) for g in shown]
    counts = [g.confirmed if cancel else g.visited for g in shown]
    bars = ax.bar([g.key for g in shown], values, color=CANCEL_COLOUR if cancel else NO_SHOW_COLOUR)
    ax.bar_label(bars, labels=[f"n={n}" for n in counts], fontsize=7, padding=2)
    rate = overall.cancel_rate if cancel else overall.no_show_rate
    name = "Cancellation rate" if cancel else "No-show rate"
    ax.set_title(f"{name} by {what}" + ("" if rate is None else f" (overall {rate:.1%})"))
    ax.set_xlabel(label)
    ax.set_ylabel(
        "patient cancellations / confirmed" if cancel else "no-shows / (checked in + no-shows)",
        fontsize=8,
    )
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10]))
    ax.yaxis.set_major_formatter(PercentFormatter(100, decimals=0))
    ax.set_ylim(0, max(values, default=0.0) * 1.2 or 10.0)
    if len(shown) > 6:
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    if not shown:
        _no_data(ax)


def _counts(ax: Axes, buckets: Sequence[tuple[str, int]]) -> None:
    bars = ax.bar([b for b, _ in buckets], [n for _, n in buckets], color=SALES_COLOUR)
    ax.bar_label(bars, labels=[f"n={n}" for _, n in buckets], fontsize=7, padding=2)
    ax.set_ylabel("doctor-sessions")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max((n for _, n in buckets), default=0) * 1.2 or 1.0)
    ax.tick_params(axis="x", labelsize=8)


def _fill_rate(ax: Axes, report: Report) -> None:
    sales = report.sales
    _counts(ax, sales.fill_buckets)
    mean = "" if sales.mean_fill_rate is None else f", mean {sales.mean_fill_rate:.0%}"
    ax.set_title(f"Fill rate of {sales.sessions} doctor-sessions{mean}")
    ax.set_xlabel("slots taken / capacity (suspended sessions left out)")


def _time_to_sell_out(ax: Axes, report: Report) -> None:
    sales = report.sales
    _counts(ax, sales.sell_out_buckets)
    title = "Time to sell out after release"
    if sales.median_sell_out is not None and sales.p90_sell_out is not None:
        median, p90 = _duration(sales.median_sell_out), _duration(sales.p90_sell_out)
        title += f": median {median}, p90 {p90}"
    ax.set_title(title)
    ax.set_xlabel(f"{sales.sold_out} sold out, {sales.not_sold_out} never sold out")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center")
    ax.set_xticks([])
    ax.set_yticks([])


def _rate_chart(dimension: str, what: str, label: str, *, cancel: bool = False):
    def draw(ax: Axes, report: Report) -> None:
        rows = report.rows(dimension)
        _rates(ax, rows, report.overall, cancel=cancel, what=what, label=label)

    return draw


_CHARTS: dict[str, Callable[[Axes, Report], None]] = {
    "no_show_by_age": _rate_chart("age_band", "age", "age band (years, on the visit date)"),
    "no_show_by_department": _rate_chart("department", "department", "department"),
    "no_show_by_weekday": _rate_chart("weekday", "weekday", "weekday of the visit"),
    "no_show_by_period": _rate_chart("period", "period", "period of the day"),
    "no_show_by_lead": _rate_chart("lead", "lead time", "booked this long before the slot"),
    "cancel_by_age": _rate_chart(
        "age_band", "age", "age band (years, on the visit date)", cancel=True
    ),
    "fill_rate": _fill_rate,
    "time_to_sell_out": _time_to_sell_out,
}
CHARTS: tuple[str, ...] = tuple(_CHARTS)
