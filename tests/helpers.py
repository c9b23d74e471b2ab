"""Shared test helpers: things tests all over the project need, kept out of any one test module.

- ``spec`` makes a doctor-session's definition (``SessionSpec``) from defaults, with only what
  a test is about given.
- ``resident_id`` makes a valid resident ID number (居民身份证) to register a test patient with.
- ``resident_candidates`` is the attacker's count: how many valid resident ID numbers are
  consistent with a masked form and what else is known of the patient.

Both compute the GB 11643 check character from the standard's own definition (ISO 7064
MOD 11-2: weights 2^(18-i) mod 11, the whole weighted sum ≡ 1 mod 11), not with ``api.identity``,
so they check it rather than repeat it.
"""

from __future__ import annotations

import calendar
import datetime
from collections.abc import Iterator
from typing import Any

from engine.core.session import SessionSpec

_WEIGHTS = tuple(2 ** (17 - i) % 11 for i in range(17))  # 7, 9, 10, 5, 8, 4, 2, 1, 6, ...
_CHECK_VALUE = {str(v): v for v in range(10)} | {"X": 10}
_DATES = range(6, 14)
_NOT_DATES = (0, 1, 2, 3, 4, 5, 14, 15, 16)
EARLIEST = datetime.date(1900, 1, 1)
LATEST = datetime.date(2030, 12, 31)


SPEC_DEFAULTS: dict[str, Any] = {
    "id": "s1",
    "hospital_id": "h1",
    "department_id": "d1",
    "doctor_id": "doc1",
    "date": "2026-12-01",
    "period": "AM",
    "capacity": 3,
    "first_slot_minute": 8 * 60,
    "slot_minutes": 10,
}


def spec(**overrides: Any) -> SessionSpec:
    """A doctor-session definition: a morning of three 10-minute slots from 08:00 on
    2026-12-01 at h1, free and open from the epoch, but for what is given."""
    return SessionSpec(**{**SPEC_DEFAULTS, **overrides})


def _check_character(first17: str) -> str:
    value = (1 - sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))) % 11
    return "X" if value == 10 else str(value)


def resident_id(birth: datetime.date, seq: int = 123, region: str = "110101") -> str:
    """A valid 18-character resident ID number for someone born on ``birth``: ``region``, the
    birth date, the 3-digit sequence ``seq`` (odd for a man, even for a woman) and the right
    check character. Vary ``seq`` (or ``region``) to make different patients of one birth date.
    """
    if len(region) != 6 or not region.isdigit() or region[0] == "0":
        raise ValueError("a region is 6 digits, the first not 0")
    if not 0 <= seq <= 999:
        raise ValueError("a sequence number is 0-999")
    first17 = f"{region}{birth:%Y%m%d}{seq:03d}"
    return first17 + _check_character(first17)


def resident_candidates(
    shown: str,
    birth_year: int | None = None,
    birth_date: datetime.date | None = None,
    sex: str | None = None,
) -> int:
    """How many valid resident ID numbers fit ``shown`` and what else is known, counted exactly.

    ``shown`` has 18 characters: ``*`` is unknown, anything else must match exactly. A valid
    number has a region whose first digit is 1-9, a real date between 1900-01-01 and 2030-12-31
    in characters 7-14 and the right check character; any digits elsewhere. Known besides:
    ``birth_year``, or the whole ``birth_date``, and ``sex`` (``"M"``: the 17th digit is odd,
    ``"F"``: even).

    The positions outside the date contribute to the weighted sum independently of the date, so
    their residues mod 11 are counted once (dynamic programming, 11 counters); then each
    candidate date adds its own part, and the check character decides which residue is needed.
    """
    if len(shown) != 18:
        raise ValueError("a resident ID mask has 18 characters")
    if sex not in (None, "M", "F"):
        raise ValueError('sex is "M", "F" or None')
    s = shown.upper()

    ways = [1] + [0] * 10  # ways[r]: fillings of the non-date positions with weighted sum ≡ r
    for i in _NOT_DATES:
        digits: range | list[int] = range(1, 10) if i == 0 else range(10)
        if s[i] != "*":
            digits = [int(s[i])] if s[i] in "0123456789" and int(s[i]) in digits else []
        if i == 16 and sex is not None:
            digits = [d for d in digits if d % 2 == (1 if sex == "M" else 0)]
        following = [0] * 11
        for residue, count in enumerate(ways):
            for d in digits:
                following[(residue + d * _WEIGHTS[i]) % 11] += count
        ways = following

    if s[17] == "*":
        needed = None
    elif s[17] in _CHECK_VALUE:
        needed = (1 - _CHECK_VALUE[s[17]]) % 11  # the first 17's weighted sum must be this
    else:
        return 0

    first, last = EARLIEST, LATEST
    if birth_year is not None:
        first = max(first, datetime.date(birth_year, 1, 1))
        last = min(last, datetime.date(birth_year, 12, 31))
    if birth_date is not None:
        first, last = max(first, birth_date), min(last, birth_date)
    total = 0
    for born in _dates_matching(s[6:14], first, last):
        digits = f"{born:%Y%m%d}"
        part = sum(int(c) * _WEIGHTS[i] for i, c in zip(_DATES, digits, strict=True)) % 11
        total += sum(ways) if needed is None else ways[(needed - part) % 11]
    return total


def _dates_matching(
    pattern: str, first: datetime.date, last: datetime.date
) -> Iterator[datetime.date]:
    """The dates from ``first`` to ``last`` whose YYYYMMDD fits ``pattern`` (``*``: any digit),
    narrowed year, then month, then day, so a mostly known date costs only a few steps."""

    def fits(value: int, width: int, part: str) -> bool:
        return all(p in ("*", c) for p, c in zip(part, f"{value:0{width}d}", strict=True))

    for year in range(first.year, last.year + 1):
        if not fits(year, 4, pattern[:4]):
            continue
        for month in range(1, 13):
            if not fits(month, 2, pattern[4:6]):
                continue
            for day in range(1, calendar.monthrange(year, month)[1] + 1):
                if (
                    fits(day, 2, pattern[6:])
                    and first <= (born := datetime.date(year, month, day)) <= last
                ):
                    yield born
