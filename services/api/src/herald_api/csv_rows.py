"""Reading a CSV upload as it arrives: rows come out while the body is still streaming in, so a
million-row file never sits in memory whole.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first recipient row 2
(blank lines count, and are skipped). Records end in LF or CRLF. The ``csv`` module parses
everything: each chunk's whole lines go to it, and a record it finds unfinished at their end (a
quoted field with line breaks in it) is carried over to the next chunk, so its quoting rules
(a quote inside an unquoted field is just a character) are the only ones that apply.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import AsyncIterator

MAX_RECORD = 256 * 1024
"""Characters of one record; a longer one (an unclosed quote swallowing the file) fails."""


class CsvError(ValueError):
    """The upload cannot be read on as CSV: not UTF-8, or a record that never ends."""


async def csv_rows(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, list[str]]]:
    """(row number, fields) for every non-blank record of the UTF-8 CSV in ``chunks``, the
    header included (row 1); a BOM at the start is dropped."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")("strict")
    pending, row = "", 0
    async for chunk in chunks:
        try:
            text = pending + decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise CsvError(f"near row {row + 1}: not UTF-8 ({exc.reason})") from None
        cut = text.rfind("\n") + 1
        records, pending = _records(text[:cut], row, final=False)
        pending += text[cut:]
        for fields in records:
            row += 1
            if fields:
                yield row, fields
        if len(pending) > MAX_RECORD:
            raise CsvError(
                f"row {row + 1} is longer than {MAX_RECORD} characters (an unclosed quote, or "
                "lines that do not end in LF or CRLF?)"
            )
    try:
        pending += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise CsvError(f"row {row + 1}: the upload ends inside a UTF-8 character") from None
    records, _ = _records(pending, row, final=True)
    for fields in records:
        row += 1
        if fields:
            yield row, fields


def _records(text: str, before: int, *, final: bool) -> tuple[list[list[str]], str]:
    """The whole records of ``text`` and the text of an unfinished last one ('' if none).
    ``final``: there is no more text, so an unfinished record is an error."""
    if not text:
        return [], ""
    lines = text.split("\n")
    lines = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    reader = csv.reader(lines, strict=True)
    records: list[list[str]] = []
    consumed = 0
    try:
        for fields in reader:
            records.append(fields)
            consumed = reader.line_num
    except csv.Error as exc:
        if final or "unexpected end of data" not in str(exc):
            row = before + len(records) + 1
            reason = "a quoted field is never closed" if "end of data" in str(exc) else exc
            raise CsvError(f"row {row}: {reason}") from None
        return records, "".join(lines[consumed:])
    return records, ""
