"""Analytics through the real stack: bookings swept as no-shows by the moved clock show up in
the figures (by age band, with the sale's fill rate), as charts, and on the admin page."""

from __future__ import annotations

from datetime import date

import pytest

from tests.api.helpers import admin_headers, book, make_catalog, move_clock_to, new_patient, visit


async def test_no_shows_reach_the_figures_and_the_charts(http, app):
    cat = await make_catalog(http, capacity=3, doctors=2)
    hid, h = cat["hospital"], admin_headers()
    people = [await new_patient(http, birth=date(1990, 1, 1)) for _ in range(3)]
    ids = []
    for _, auth in people[:2]:
        r = await book(http, cat["sessions"][0], auth)
        assert r.status_code == 201
        ids.append(r.json()["booking_id"])
    assert (await book(http, cat["sessions"][1], people[2][1])).status_code == 201
    await move_clock_to(http, visit(cat, "13:00"))  # past the sweep: all three are no-shows
    await app.app.state.services.engine.drain_outbox()

    params = {"hospital": hid, "from": cat["date"], "to": cat["date"]}
    r = await http.get("/v1/admin/analytics", params=params, headers=h)
    assert r.status_code == 200, r.text
    report = r.json()
    overall = report["overall"]
    assert (overall["records"], overall["visited"], overall["no_show"]) == (3, 3, 3)
    assert overall["no_show_rate"] == 1.0
    assert overall["cancel_rate"] == 0.0
    ages = {row["key"]: row for row in report["dimensions"]["age_band"]}
    assert ages["30-44"]["no_show"] == 3
    assert ages["75+"]["visited"] == 0
    assert [row["key"] for row in report["dimensions"]["period"] if row["records"]] == ["AM"]
    sales = report["sales"]
    assert sales["sessions"] == 2
    assert sales["sold_out"] == 0
    assert abs(sales["mean_fill_rate"] - (2 / 3 + 1 / 3) / 2) < 1e-9

    # while the tallies are being made (after an upgrade) the records themselves are read
    records = app.app.state.services.records
    await records.client.delete(records.keys.tally_version)
    wider = {**params, "from": "2026-01-01"}  # another range: not the report kept above
    fallback = (await http.get("/v1/admin/analytics", params=wider, headers=h)).json()
    assert fallback["overall"] == overall
    assert fallback["dimensions"] == report["dimensions"]

    for fmt, media, magic in (("svg", "image/svg+xml", b"<svg"), ("png", "image/png", b"PNG")):
        chart = await http.get(
            f"/v1/admin/analytics/charts/no_show_by_age.{fmt}", params=params, headers=h
        )
        assert chart.status_code == 200
        assert chart.headers["content-type"] == media
        assert magic in chart.content[:400]
    missing = await http.get("/v1/admin/analytics/charts/nope.svg", params=params, headers=h)
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    bad = await http.get(
        "/v1/admin/analytics", params={"from": "2026-12-02", "to": "2026-12-01"}, headers=h
    )
    assert bad.status_code == 422
    years = await http.get(
        "/v1/admin/analytics", params={"from": "2020-01-01", "to": "2026-12-01"}, headers=h
    )
    assert years.status_code == 422
    assert years.json()["code"] == "invalid_request"
    assert (await http.get("/v1/admin/analytics")).status_code == 401
    page = await http.get("/admin")
    assert page.status_code == 200
    assert "Authorization" in page.text


@pytest.mark.parametrize(
    "to", ["0", "1000000000", "2026-1-5", "20261205"], ids=["zero", "seconds", "short", "bare"]
)
async def test_a_date_not_written_yyyy_mm_dd_is_invalid_request(http, to):
    """A count of seconds is no date (pydantic alone would take it as one)."""
    r = await http.get("/v1/admin/analytics", params={"to": to}, headers=admin_headers())
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request"
