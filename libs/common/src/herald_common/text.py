"""Making text from outside (providers, queue messages) safe to store and log.

PostgreSQL stores neither NUL characters (in ``text`` or ``jsonb``) nor lone surrogates (they have
no UTF-8 form). Lone surrogates appear when a library decodes bytes with ``surrogateescape``, as
aiosmtplib does with a server that answers in Latin-1 (``550 Empfänger unbekannt``): those map back
to the byte they stood for, read as Latin-1, which is what such a server almost always meant.
"""

from __future__ import annotations

import re
from typing import Any

_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def safe_text(text: str) -> str:
    """``text`` with escaped bytes read as Latin-1, and control characters (but tab, CR and LF)
    and other lone surrogates replaced by U+FFFD."""
    if text.isascii() and text.isprintable():
        return text
    text = _ESCAPED_BYTE.sub(lambda m: chr(ord(m.group()) - 0xDC00), text)
    return _UNSAFE.sub("\ufffd", text)


def safe_json(value: Any) -> Any:
    """A JSON-like value with every string (keys included) made safe by ``safe_text``."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, bytes):
        return safe_text(value.decode("utf-8", errors="replace"))
    if isinstance(value, dict):
        return {safe_text(str(k)): safe_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe_json(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return safe_text(str(value))
