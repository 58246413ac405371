"""The email as it goes after SMTP's DATA, written directly as bytes.

Herald sends one shape of mail: a subject, and a text body, an HTML body or both (then
multipart/alternative, text first). The standard library's ``email`` package builds a tree of
objects for it, then a generator walks the tree, folds every header and encodes every part, and the
result still had to be dot-stuffed: most of the email service's CPU. ``MimeWriter`` writes the same
message in one pass, ready for the wire (RFC 5321 4.5.2): CRLF line ends, a dot at the start of a
line doubled, and the closing ``.`` line.

- Headers: From, To, Subject, Date, Message-ID ``<{id}@{domain}>``, X-Herald-Notification-Id,
  X-Correlation-Id (when set), MIME-Version. A value that is not plain printable ASCII is sent as
  RFC 2047 encoded-words (B, UTF-8), so no value can carry a line break (header injection); long
  values are folded, every line within 78 characters where a value allows, never over 998.
- Bodies: 7bit when the text is ASCII, has no line over 998 characters and (in a multipart mail)
  does not contain the boundary; otherwise base64 in lines of 76. Both declare ``charset="utf-8"``.
  7bit sends line ends as CRLF, as RFC 5322 has them; base64 carries the text's bytes unchanged.
"""

from __future__ import annotations

import binascii
import re
import time
from email.utils import formatdate, parseaddr

from herald_common.schemas import EmailDelivery

NOTIFICATION_HEADER = "X-Herald-Notification-Id"

LINE_LIMIT = 998
"""Characters a line may have without its CRLF (RFC 5321 4.5.3.1.6, RFC 5322 2.1.1)."""
FOLD_WIDTH = 78
"""Characters a header line should not exceed (RFC 5322 2.1.1)."""

_WORD_START = "=?utf-8?b?"
_WORD_END = "?="
_WORD_BYTES = (75 - len(_WORD_START) - len(_WORD_END)) // 4 * 3
"""UTF-8 bytes in an encoded-word of the longest length, 75 characters (RFC 2047 2): 45."""

_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")
"""A display name that needs no quoting: atoms (RFC 5322 3.2.3) and spaces."""
_NOT_IN_ADDRESS = re.compile(r"[\x00-\x20\x7f<>]")
_DOMAIN = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+|\[[\x21-\x5a\x5e-\x7e]+\]")
"""What may follow the "@" of a Message-ID (RFC 5322 3.6.4: dot-atom-text or a literal)."""
_LONG_LINE = re.compile(rf"[^\n]{{{LINE_LIMIT + 1}}}")


def _plain(value: str) -> bool:
    """``value`` can go in a header as it is: printable ASCII (no line break, no control), no
    encoded-word look-alike (a reader would decode it), no space at either end (lost in
    transit or when read)."""
    return (
        value.isascii()
        and value.isprintable()
        and "=?" not in value
        and value[:1] != " "
        and value[-1:] != " "
    )


def encoded_words(value: str, first: int) -> list[str]:
    """``value`` as RFC 2047 encoded-words (B, UTF-8): the first at most ``first`` characters
    long, the others 75; no character split between two words. Readers decode them and ignore
    the folding between them, so ``value`` comes back exactly."""
    data = value.encode("utf-8")
    size = max(4, (first - len(_WORD_START) - len(_WORD_END)) // 4 * 3)
    words: list[str] = []
    start, length = 0, len(data)
    while start < length:
        end = start + size
        if end < length:
            while data[end] & 0xC0 == 0x80:  # a continuation byte: cut before its character
                end -= 1
        encoded = binascii.b2a_base64(data[start:end], newline=False).decode("ascii")
        words.append(f"{_WORD_START}{encoded}{_WORD_END}")
        start, size = end, _WORD_BYTES
    return words


def _fold_plain(line: str, name_length: int) -> str | None:
    """A plain header line folded before spaces (unfolding restores it exactly), each
    line within ``FOLD_WIDTH`` where the words allow; None if one would exceed ``LINE_LIMIT``."""
    if len(line) <= FOLD_WIDTH:
        return line
    lines: list[str] = []
    start = 0
    while len(line) - start > FOLD_WIDTH:
        cut = _break_before(line, start, name_length)
        if cut is None:
            break
        lines.append(line[start:cut])
        start = cut
    lines.append(line[start:])
    if max(map(len, lines)) > LINE_LIMIT:
        return None
    return "\r\n".join(lines)


def _break_before(line: str, start: int, name_length: int) -> int | None:
    """Where to fold the line from ``start``: before the last run of spaces that starts within
    ``FOLD_WIDTH``, else before the first one after; None if there is none. (Never at the end:
    a plain value does not end in a space, so the next line has more than spaces.)"""
    lowest = max(start, name_length + 1) + 1  # never inside "Name: "
    cut = line.rfind(" ", lowest, start + FOLD_WIDTH + 1)
    while cut != -1 and line[cut - 1] == " ":
        cut = line.rfind(" ", lowest, cut)
    if cut != -1:
        return cut
    cut = line.find(" ", start + FOLD_WIDTH + 1)
    while cut != -1 and line[cut - 1] == " ":
        cut = line.find(" ", cut + 1)
    return None if cut == -1 else cut


def unstructured(name: str, value: str) -> str:
    """The header ``name: value`` (lines joined by CRLF, none at the end) for free text: as it is
    when plain, folded at spaces when long, else as encoded-words one to a line."""
    if _plain(value):
        folded = _fold_plain(f"{name}: {value}", len(name))
        if folded is not None:
            return folded
    return f"{name}: " + "\r\n ".join(encoded_words(value, FOLD_WIDTH - len(name) - 2))


def from_header(sender: str) -> str:
    """The From header for ``sender`` ("Name <address>" or an address): the display name plain,
    quoted or as encoded-words; the address with anything that could end it or the line dropped."""
    name, address = parseaddr(sender)
    address = _NOT_IN_ADDRESS.sub("", address)
    if not name:
        return f"From: {address}"
    if _plain(name):
        if not _ATOMS.fullmatch(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        folded = _fold_plain(f"From: {name} <{address}>", len("From"))
        if folded is not None:
            return folded
    words = encoded_words(name, FOLD_WIDTH - len("From: "))
    lines = "\r\n ".join(words)
    space = " " if len(words[-1]) + len(address) + 4 <= FOLD_WIDTH else "\r\n "
    return f"From: {lines}{space}<{address}>"


def message_domain(sender: str) -> str:
    """The domain of Message-ID: the sender's, or ``herald.local`` when it has none fit for it."""
    domain = parseaddr(sender)[1].rpartition("@")[2]
    return domain if _DOMAIN.fullmatch(domain) else "herald.local"


_date = ("", -1)


def _now() -> str:
    """The Date header's value for this second (formatted once a second)."""
    global _date
    second = int(time.time())
    if _date[1] != second:
        _date = (formatdate(second, usegmt=True), second)
    return _date[0]


def _part(text: str, subtype: str, boundary: str | None) -> bytes:
    """A body with its Content-Type and Content-Transfer-Encoding headers and the blank line,
    dot-stuffed, with CRLF line ends; it ends with CRLF only if the text ends with a line end."""
    if text.isascii() and "\0" not in text and (boundary is None or boundary not in text):
        body = text.replace("\r\n", "\n").replace("\r", "\n")
        if len(body) <= LINE_LIMIT or _LONG_LINE.search(body) is None:
            if body[:1] == ".":
                body = "." + body
            body = body.replace("\n.", "\n..").replace("\n", "\r\n")
            return _HEAD_7BIT[subtype] + body.encode("ascii")
    encoded = binascii.b2a_base64(text.encode("utf-8"), newline=False)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return _HEAD_BASE64[subtype] + b"\r\n".join(lines)


_HEAD_7BIT = {
    subtype: f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: 7bit\r\n\r\n".encode("ascii")
    for subtype in ("plain", "html")
}
_HEAD_BASE64 = {
    subtype: f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
    "Content-Transfer-Encoding: base64\r\n\r\n".encode("ascii")
    for subtype in ("plain", "html")
}


class MimeWriter:
    """Writes each delivery as the bytes that follow DATA; the parts that depend only on the
    sender (the From header, the Message-ID domain) are made once."""

    def __init__(self, sender: str) -> None:
        self.domain = message_domain(sender)
        self._from = from_header(sender)

    def message_id(self, delivery: EmailDelivery) -> str:
        """The Message-ID: stable across retries, so a receiving system can recognise a repeat."""
        return f"<{delivery.id}@{self.domain}>"

    def data_block(self, delivery: EmailDelivery, date: str | None = None) -> bytes:
        """The message as sent after DATA, through its closing ``.`` line."""
        content = delivery.content
        headers = [
            self._from,
            "To: " + _NOT_IN_ADDRESS.sub("", str(delivery.to)),
            unstructured("Subject", content.subject),
            "Date: " + (date or _now()),
            f"Message-ID: <{delivery.id}@{self.domain}>",
            f"{NOTIFICATION_HEADER}: {delivery.id}",
        ]
        if delivery.correlation_id:
            headers.append(unstructured("X-Correlation-Id", delivery.correlation_id))
        headers.append("MIME-Version: 1.0\r\n")
        head = "\r\n".join(headers).encode("utf-8")
        text, html = content.text, content.html
        if text and html:
            # Our own boundary: the generator's random one was checked against the whole body
            # with a regex compiled per mail. A part that contains it is sent in base64, whose
            # alphabet has no "_", so it cannot occur in the parts.
            boundary = f"=_herald_{delivery.id.hex}"
            delimiter = f"\r\n--{boundary}\r\n".encode("ascii")
            return b"".join(
                (
                    head,
                    f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
                    f"--{boundary}\r\n".encode("ascii"),
                    _part(text, "plain", boundary),
                    delimiter,
                    _part(html, "html", boundary),
                    f"\r\n--{boundary}--\r\n.\r\n".encode("ascii"),
                )
            )
        part = _part(text or html or "", "plain" if text else "html", None)
        end = b".\r\n" if part.endswith(b"\r\n") else b"\r\n.\r\n"
        return b"".join((head, part, end))
