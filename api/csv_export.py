"""The one CSV writer of every CSV the project serves (records export, the day list).

Spreadsheets run a cell that starts with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return
before one) as a formula: a patient named ``=HYPERLINK(...)`` would reach the desk's
spreadsheet as a link. Such text cells get a leading apostrophe (OWASP's advice for CSV
injection); numbers are left as they are. Every file starts with a UTF-8 BOM so spreadsheet
programs read the Chinese names.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

BOM = "\ufeff"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """A cell a spreadsheet will show as text, never run."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    """A whole CSV file (with its BOM) of ``rows`` under ``columns``."""
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([safe_cell(row.get(c, "")) for c in columns])
    return out.getvalue()


async def csv_stream(
    columns: Sequence[str], chunks: AsyncIterator[list[dict[str, Any]]]
) -> AsyncIterator[str]:
    """The same, streamed a chunk of rows at a time."""
    out = io.StringIO()
    writer = csv.writer(out)
    out.write(BOM)
    writer.writerow(columns)
    async for chunk in chunks:
        for row in chunk:
            writer.writerow([safe_cell(row.get(c, "")) for c in columns])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
    yield out.getvalue()
