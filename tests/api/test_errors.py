"""The error codes are one registry (``api/errors.py``), and the README's table says exactly what
it holds (no services)."""

from __future__ import annotations

import re
from pathlib import Path

from api.answers import REFUSALS
from api.errors import CODES

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_table() -> dict[str, int]:
    """code → status, from the error table under "The HTTP API"."""
    text = README.read_text().split("## The HTTP API", 1)[1].split("\n## ", 1)[0]
    out: dict[str, int] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[1].isdigit():
            for code in re.findall(r"`([a-z_]+)`", cells[0]):
                out[code] = int(cells[1])
    return out


def test_every_code_the_readme_lists_is_a_code_the_api_answers_with_that_status():
    table = readme_table()
    assert {c: s for c, s in table.items() if c not in CODES} == {}
    assert {c: s for c, s in table.items() if CODES[c].status != s} == {}


def test_every_code_the_api_answers_is_in_the_readme():
    assert sorted(set(CODES) - set(readme_table())) == []


def test_every_outcome_refusal_is_a_registered_code():
    unregistered = [o for o, (code, _) in REFUSALS.items() if CODES.get(code.code) is not code]
    assert unregistered == []
