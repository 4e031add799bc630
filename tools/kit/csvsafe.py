"""CSV cells a spreadsheet will not run: values starting with ``= + - @`` (or a tab or carriage
return) are formulas to Excel, LibreOffice and Google Sheets, so a customer name such as
``=HYPERLINK("http://evil","Click")`` in an export would become a live link or worse.

Such a text cell is written with a leading apostrophe (OWASP's advice: the spreadsheet shows the
text as typed). Numbers stay numbers: a negative amount such as ``-12.50`` is data, not a formula.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?\d+(?:\.\d+)?$")


def neutralise(value: Any) -> Any:
    """``value`` as safe for a CSV cell (non-text values are returned unchanged)."""
    if (
        isinstance(value, str)
        and value.startswith(FORMULA_STARTS)
        and not _PLAIN_NUMBER.match(value)
    ):
        return "'" + value
    return value


def safe_row(row: Iterable[Any]) -> list[Any]:
    return [neutralise(v) for v in row]


def write_rows(writer: Any, rows: Iterable[Sequence[Any]]) -> None:
    """``writer.writerows`` with every cell neutralised."""
    for row in rows:
        writer.writerow(safe_row(row))


def safe_writer(fh: Any) -> Any:
    """A ``csv.writer`` whose ``writerow``/``writerows`` neutralise every cell."""
    return _SafeWriter(csv.writer(fh))


class _SafeWriter:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._inner.writerow(safe_row(row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)
