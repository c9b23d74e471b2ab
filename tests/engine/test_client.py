"""Pure helpers of the client side (no services)."""

import pytest

from engine.client import parse_booking_id, request_key


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("s12.0", ("s12", 0)),
        ("h0-2026-12-01-3.17", ("h0-2026-12-01-3", 17)),
        ("a.b.5", ("a.b", 5)),
        ("s12", None),
        (".5", None),
        ("s12.", None),
        ("s12.-1", None),
        ("s12.²", None),
        ("s12." + "9" * 5000, None),
        ("s12.1234567890123", None),
        ("s12.01", None),  # one booking, one id: the payment records are keyed by it
        ("s12.00", None),
    ],
)
def test_parse_booking_id(text, parsed):
    assert parse_booking_id(text) == parsed


def test_request_key_is_stable_and_int64():
    assert request_key("r-1") == request_key("r-1") != request_key("r-2")
    assert -(2**63) <= request_key("x" * 1000) < 2**63
