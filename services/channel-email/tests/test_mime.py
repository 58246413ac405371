"""MimeWriter's bytes, read back by the standard library's parser as a receiving server would.

Every case undoes the SMTP transparency (the closing ``.`` line, doubled leading dots) and parses
the rest with ``BytesParser(policy=email.policy.default)``; the headers and the decoded bodies must
come back as given. A 7bit body comes back with CRLF line ends (the form RFC 5322 gives text; a
lone CR or LF is a line end too), and a single-part one with a line end after its last line, as
SMTP needs; a base64 body comes back byte for byte.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parseaddr

import hypothesis
import pytest
from hypothesis import strategies as st

from herald_channel_email.mime import MimeWriter, encoded_words, from_header, unstructured
from herald_channel_email.smtp import build_message
from herald_common.schemas import EmailContent, EmailDelivery

SENDER = "Herald <noreply@herald.example>"
LONG_LINE = "x" * 5000
BOUNDARY_LIKE = (
    "before\n--=_herald_{hex}\nContent-Type: text/html\n\n<script>x</script>\n--=_herald_{hex}--"
)

SETTINGS = hypothesis.settings(
    max_examples=300, deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)


def _delivery(
    subject: str = "Hello",
    text: str | None = "hi",
    html: str | None = None,
    correlation_id: str | None = None,
    to: str = "ada@example.com",
) -> EmailDelivery:
    delivery_id = uuid.uuid4()
    return EmailDelivery(
        id=delivery_id,
        to=to,
        content=EmailContent(
            subject=subject,
            text=text.replace("{hex}", delivery_id.hex) if text is not None else None,
            html=html.replace("{hex}", delivery_id.hex) if html is not None else None,
        ),
        created_at=datetime.now(UTC),
        correlation_id=correlation_id,
    )


def _lines(block: bytes) -> list[bytes]:
    """The lines of a DATA block, checked for what SMTP needs: CRLF only, no line over 998
    characters (a doubled dot aside), nothing that ends the data before its last line."""
    assert block.endswith(b"\r\n.\r\n")
    lines = block[:-2].split(b"\r\n")
    assert lines[-1] == b"."
    for line in lines[:-1]:
        assert b"\r" not in line
        assert b"\n" not in line
        assert line != b"."
        assert len(line) <= 998 + line.startswith(b"..")
    return lines[:-1]


def _parse(block: bytes) -> EmailMessage:
    unstuffed = [line[1:] if line.startswith(b".") else line for line in _lines(block)]
    message = BytesParser(policy=policy.default).parsebytes(b"\r\n".join(unstuffed) + b"\r\n")
    assert isinstance(message, EmailMessage)
    assert not message.defects
    return message


def _header_lines(block: bytes) -> list[bytes]:
    return block.split(b"\r\n\r\n", 1)[0].split(b"\r\n")


def _as_sent(text: str, encoding: str, single: bool) -> bytes:
    """What a body decodes to after the trip: see the module's docstring."""
    if encoding == "base64":
        return text.encode()
    sent = re.sub(r"\r\n|\r|\n", "\r\n", text)
    if single and not sent.endswith("\r\n"):
        sent += "\r\n"
    return sent.encode()


def _bodies(message: Message) -> list[tuple[str, bytes]]:
    """(content type, decoded body) of each leaf part, each checked to be utf-8 7bit or base64."""
    found = []
    for part in message.walk():
        if part.is_multipart():
            continue
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] in ("7bit", "base64")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found.append((part.get_content_type(), payload))
    return found


def _check(delivery: EmailDelivery, sender: str = SENDER) -> EmailMessage:
    """Parse what the writer makes of ``delivery`` and check it against the delivery."""
    writer = MimeWriter(sender)
    block = writer.data_block(delivery)
    message = _parse(block)
    content = delivery.content
    assert message["Subject"] == content.subject
    assert message["To"] == delivery.to
    assert message["From"].addresses[0].addr_spec == "noreply@herald.example"
    assert message["Message-ID"] == writer.message_id(delivery)
    assert message["Message-ID"] == f"<{delivery.id}@herald.example>"
    assert message["X-Herald-Notification-Id"] == str(delivery.id)
    assert message.get("X-Correlation-Id") == delivery.correlation_id
    assert message["MIME-Version"] == "1.0"
    assert message["Date"].datetime.tzinfo is not None
    for line in _header_lines(block):
        assert len(line) <= 998
    text, html = content.text, content.html
    if text and html:
        assert message.get_content_type() == "multipart/alternative"
        assert message.get_boundary() == f"=_herald_{delivery.id.hex}"
        [(plain_type, plain), (html_type, html_body)] = _bodies(message)
        parts = [p for p in message.walk() if not p.is_multipart()]
        assert (plain_type, html_type) == ("text/plain", "text/html")
        assert plain == _as_sent(text, parts[0]["Content-Transfer-Encoding"], single=False)
        assert html_body == _as_sent(html, parts[1]["Content-Transfer-Encoding"], single=False)
    else:
        [(content_type, body)] = _bodies(message)
        assert content_type == ("text/plain" if text else "text/html")
        sent = text or html or ""
        assert body == _as_sent(sent, message["Content-Transfer-Encoding"], single=True)
    return message


def _encoding(message: Message) -> list[str]:
    return [str(p["Content-Transfer-Encoding"]) for p in message.walk() if not p.is_multipart()]


# -- cases the brief names, one by one -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "html", "encodings"),
    [
        ("hi", None, ["7bit"]),
        (None, "<p>hi</p>", ["7bit"]),
        ("hi", "<b>hi</b>", ["7bit", "7bit"]),
        ("café crème", "<p>日本語のメール</p>", ["base64", "base64"]),
        ("emoji 😀 and ✓", None, ["base64"]),
        ("ascii text", "<p>naïve</p>", ["7bit", "base64"]),
        (LONG_LINE, "<p>short</p>", ["base64", "7bit"]),
        ("x" * 998 + "\n" + "y" * 998, None, ["7bit"]),  # 998 is still a line
        ("x" * 999, None, ["base64"]),
        (".hidden\n.\n..two\nend", None, ["7bit"]),
        (".", None, ["7bit"]),
        ("line\n.\r\n.\rlast.", "<p>\n.\n</p>", ["7bit", "7bit"]),
        ("windows\r\nline ends\r\n", None, ["7bit"]),
        ("trailing line end\n", "<p>x</p>\n", ["7bit", "7bit"]),
        (" ", None, ["7bit"]),
        ("\n", None, ["7bit"]),
        ("", "<p></p>", ["7bit"]),  # no text: the HTML alone
        ("nul \0 byte", None, ["base64"]),
        (BOUNDARY_LIKE, f"<p>{BOUNDARY_LIKE}</p>", ["base64", "base64"]),
        (BOUNDARY_LIKE, None, ["7bit"]),  # no boundary in a single part
    ],
)
def test_bodies_come_back_as_given(
    text: str | None, html: str | None, encodings: list[str]
) -> None:
    message = _check(_delivery(text=text, html=html))
    assert _encoding(message) == encodings


def test_a_typical_mail_has_the_headers_of_the_standard_librarys() -> None:
    delivery = _delivery(
        subject="Votre reçu n° 42", text="Hello " * 50, html="<p>" + "Hi " * 200 + "</p>"
    )
    delivery = delivery.model_copy(update={"correlation_id": "corr-1"})
    ours = _check(delivery)
    theirs = BytesParser(policy=policy.default).parsebytes(
        build_message(delivery, SENDER).as_bytes()
    )
    names = ["From", "To", "Subject", "Message-ID", "X-Herald-Notification-Id", "X-Correlation-Id"]
    assert [str(ours[n]) for n in names] == [str(theirs[n]) for n in names]
    assert [t for t, _ in _bodies(ours)] == [t for t, _ in _bodies(theirs)]
    assert [b.replace(b"\r\n", b"\n") for _, b in _bodies(ours)] == [b for _, b in _bodies(theirs)]


@pytest.mark.parametrize(
    "subject",
    [
        "Hello",
        "Réservation confirmée pour le 12 décembre à l'hôtel",
        "東京の天気予報、明日は晴れのち曇り、降水確率は二十パーセントです" * 3,
        "😀" * 249,  # 996 bytes... of 4-byte characters
        "é" * 998,
        "a" + " b" * 498,
        "word " * 199 + "end",
        "two  spaces  " * 30 + "end",
        "x" * 998,  # no space to fold at: encoded-words instead
        "=?utf-8?q?not_an_encoded_word?=",
        "  spaces  at  both  ends  ",
        "tab\there",
    ],
)
def test_subjects_come_back_as_given_in_short_lines(subject: str) -> None:
    delivery = _delivery(subject=subject)
    _check(delivery)
    block = MimeWriter(SENDER).data_block(delivery)
    for line in _header_lines(block):
        assert len(line) <= 78, line


def test_a_line_break_in_a_header_value_starts_no_header() -> None:
    # The API refuses these; the writer must not depend on it.
    sneaky = "Hi\r\nBcc: victim@example.com\nX-Evil: 1"
    delivery = EmailDelivery.model_construct(
        id=uuid.uuid4(),
        to="ada@example.com\r\nBcc: other@example.com",
        content=EmailContent.model_construct(subject=sneaky, text="hi", html=None),
        created_at=datetime.now(UTC),
        correlation_id="c\r\nX-Evil: 2",
        metadata={},
    )
    writer = MimeWriter("Herald\r\nX-Evil: 3 <noreply@herald.example>\r\nX-Evil: 4")
    message = _parse(writer.data_block(delivery))
    assert "Bcc" not in message
    assert "X-Evil" not in message
    assert message["Subject"] == sneaky
    assert message["X-Correlation-Id"] == "c\r\nX-Evil: 2"


@pytest.mark.parametrize(
    ("sender", "display_name"),
    [
        ("Herald <noreply@herald.example>", "Herald"),
        ("noreply@herald.example", ""),
        ('"Herald, Inc." <noreply@herald.example>', "Herald, Inc."),
        ('"Say \\"hi\\"" <noreply@herald.example>', 'Say "hi"'),
        ("Hérald Ünïcode <noreply@herald.example>", "Hérald Ünïcode"),
        ("通知サービス" * 12 + " <noreply@herald.example>", "通知サービス" * 12),
    ],
)
def test_the_sender(sender: str, display_name: str) -> None:
    message = _check(_delivery(), sender=sender)
    assert message["From"].addresses[0].addr_spec == "noreply@herald.example"
    # Decoded as RFC 2047 6.2 says, ignoring the folding between encoded-words: the standard
    # library's address parser puts a space there (its own output does not come back either).
    header = from_header(sender)
    assert header.startswith("From: ")
    assert all(len(line) <= 78 for line in header.split("\r\n"))
    unfolded = header.removeprefix("From: ").replace("\r\n", "")
    decoded = parseaddr(str(make_header(decode_header(unfolded))))
    assert decoded == (display_name, "noreply@herald.example")


def test_the_domain_of_message_id() -> None:
    delivery = _delivery()
    assert MimeWriter("Herald <x@mail.example.org>").message_id(delivery) == (
        f"<{delivery.id}@mail.example.org>"
    )
    assert MimeWriter("Herald <noreply@>").message_id(delivery) == f"<{delivery.id}@herald.local>"


def test_encoded_words_never_split_a_character() -> None:
    for text in ("é" * 100, "日本" * 60, "😀" * 50, "a😀" * 50):
        words = encoded_words(text, 60)
        assert all(len(word) <= 75 for word in words)
        header = BytesParser(policy=policy.default).parsebytes(
            unstructured("Subject", text).encode() + b"\r\n\r\n"
        )
        assert header["Subject"] == text


# -- properties ----------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    ["a", "Z", " ", ".", "..", "\n", "\r", "\r\n", "\t", "é", "日", "😀", "--", "=_herald_", "=?"]
)
_BODIES = st.lists(_PIECES | st.text(max_size=12), max_size=60).map("".join)
_SUBJECTS = st.text(min_size=1, max_size=998) | st.lists(_PIECES, min_size=1, max_size=300).map(
    "".join
)


@SETTINGS
@hypothesis.given(
    subject=_SUBJECTS,
    text=_BODIES,
    html=st.none() | _BODIES,
    correlation_id=st.none() | st.from_regex(r"[\x21-\x7e]{1,128}", fullmatch=True),
)
def test_any_mail_comes_back_as_given(
    subject: str, text: str, html: str | None, correlation_id: str | None
) -> None:
    hypothesis.assume(text or html)
    _check(_delivery(subject=subject, text=text, html=html, correlation_id=correlation_id))


@SETTINGS
@hypothesis.given(value=st.text(min_size=1, max_size=998))
def test_any_header_value_comes_back_within_998(value: str) -> None:
    header = unstructured("Subject", value)
    assert all(len(line) <= 998 for line in header.split("\r\n"))
    parsed = BytesParser(policy=policy.default).parsebytes(header.encode() + b"\r\n\r\n")
    assert list(parsed.keys()) == ["Subject"]
    assert parsed["Subject"] == value
