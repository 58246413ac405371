"""The GSM 03.38 alphabet: text made only of it goes 7 bits a character; anything else must be
sent as UCS-2 (Unicode), or carriers turn the other characters into ``?``."""

from __future__ import annotations

ALPHABET = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
    "^{}\\[~]|€\f"  # the extension table (each costs two septets)
)


def is_gsm(text: str) -> bool:
    """Whether ``text`` can be sent in the GSM alphabet."""
    return ALPHABET.issuperset(text)
