"""Charts of an analytics report: every chart renders as SVG and PNG, from real-looking data."""

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from zoneinfo import ZoneInfo

import pytest

from api.charts import CHARTS, render
from engine.backoffice.analytics import summarize
from engine.tools.history import generate

HOSPITALS = [("h1", [(f"dep{d}", [f"dep{d}-doc{k}" for k in range(3)]) for d in range(3)])]


@pytest.fixture(scope="module")
def report():
    zone = ZoneInfo("Asia/Shanghai")
    return summarize(*generate(HOSPITALS, 28, dt.date(2025, 6, 30), 5, zone, patients=2000))


def test_the_chart_names():
    assert CHARTS == (
        "no_show_by_age",
        "no_show_by_department",
        "no_show_by_weekday",
        "no_show_by_period",
        "no_show_by_lead",
        "cancel_by_age",
        "fill_rate",
        "time_to_sell_out",
    )


@pytest.mark.parametrize("name", CHARTS)
def test_svg(report, name):
    svg = render(report, name, "svg")
    assert svg.startswith((b"<?xml", b"<svg"))
    assert b"<svg" in svg
    assert b"<script" not in svg


@pytest.mark.parametrize("name", CHARTS)
def test_png(report, name):
    png = render(report, name, "png")
    assert png.startswith(b"\x89PNG")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (600, 350)  # 6 x 3.5 inches at 100 dpi


def test_an_empty_report_still_draws():
    empty = summarize([], [])
    for name in CHARTS:
        assert render(empty, name, "png").startswith(b"\x89PNG")


def test_unknown_chart_or_format(report):
    with pytest.raises(KeyError):
        render(report, "no_show_by_star_sign", "svg")
    with pytest.raises(ValueError):
        render(report, "fill_rate", "gif")  # type: ignore[arg-type]


def test_threads_can_draw_at_once(report):
    with ThreadPoolExecutor(2) as pool:
        pngs = list(pool.map(lambda name: render(report, name, "png"), CHARTS * 2))
    assert pngs[: len(CHARTS)] == pngs[len(CHARTS) :]
