"""Reading a CSV upload as it arrives: rows come out while the body is still streaming in, so a
million-row file never sits in memory whole.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first recipient row 2
(blank lines count, and are skipped). A record may span lines (a quoted field with line breaks
in it): text goes to the ``csv`` module only in whole records, found by counting quotes (a record
ends at a line feed outside quotes, where the quotes seen so far are even). Records end in LF or
CRLF.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import AsyncIterator

MAX_RECORD = 256 * 1024
"""Characters of one record; a longer one (an unclosed quote swallowing the file) fails."""

_QUOTE_OR_LF = re.compile(r'["\n]')


class CsvError(ValueError):
    """The upload cannot be read on as CSV: not UTF-8, or a record that never ends."""


async def csv_rows(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, list[str]]]:
    """(row number, fields) for every non-blank record of the UTF-8 CSV in ``chunks``, the
    header included (row 1); a BOM at the start is dropped."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    pending, odd, row = "", False, 0
    async for chunk in chunks:
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise CsvError(f"row {row + 1}: not UTF-8 ({exc.reason})") from None
        complete, pending, odd = _split(pending, text, odd)
        for fields in _parse(complete, row):
            row += 1
            if fields:
                yield row, fields
        if len(pending) > MAX_RECORD:
            raise CsvError(
                f"row {row + 1} is longer than {MAX_RECORD} characters (an unclosed quote?)"
            )
    try:
        pending += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise CsvError(f"row {row + 1}: ends inside a UTF-8 character") from None
    if odd:
        raise CsvError(f"row {row + 1}: a quoted field is never closed")
    for fields in _parse(pending, row):
        row += 1
        if fields:
            yield row, fields


def _split(pending: str, text: str, odd: bool) -> tuple[str, str, bool]:
    """``pending + text`` cut after its last line feed outside quotes: (whole records, the rest,
    whether the rest is inside quotes). ``odd`` says whether ``pending`` is."""
    cut = -1
    for match in _QUOTE_OR_LF.finditer(text):
        if match.group() == '"':
            odd = not odd
        elif not odd:
            cut = match.end()
    if cut < 0:
        return "", pending + text, odd
    return pending + text[:cut], text[cut:], odd


def _parse(records: str, before: int) -> list[list[str]]:
    if not records:
        return []
    reader = csv.reader(io.StringIO(records, newline=""), strict=True)
    parsed: list[list[str]] = []
    try:
        for fields in reader:
            parsed.append(fields)
    except csv.Error as exc:
        raise CsvError(f"row {before + len(parsed) + 1}: {exc}") from None
    return parsed
