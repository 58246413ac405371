"""How many parts an SMS text is sent in, as carriers count them, for the SMS fakes.

Written apart from Herald's own code on purpose: a fake that imported the code under test would
agree with its mistakes. Text made only of the GSM 03.38 alphabet goes 7 bits a character (160 in
one part, 153 a part once split, the extension characters counting twice); anything else goes as
UCS-2 (70 UTF-16 code units in one part, 67 a part once split).
"""

from __future__ import annotations

import math

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")


def is_gsm(text: str) -> bool:
    return all(c in GSM_BASIC or c in GSM_EXTENSION for c in text)


def sms_parts(text: str, *, unicode: bool | None = None) -> int:
    """Parts ``text`` is sent in; ``unicode`` forces (True) or forbids (False) UCS-2."""
    if unicode is None:
        unicode = not is_gsm(text)
    if unicode:
        units = len(text.encode("utf-16-le")) // 2
        return 1 if units <= 70 else math.ceil(units / 67)
    septets = sum(2 if c in GSM_EXTENSION else 1 for c in text)
    return 1 if septets <= 160 else math.ceil(septets / 153)
