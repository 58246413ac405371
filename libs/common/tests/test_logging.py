from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from herald_common.logging import mask


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("to ada.lovelace@example.com now", "to a***@example.com now"),
        ("sms to +447700900123", "sms to ***23"),
        ("call +1 415 555 2671 please", "call ***71 please"),
        ("amqp://guest:s3cret@rabbit:5672/", "amqp://***@rabbit:5672/"),
        ("postgresql://herald:pw@db/herald", "postgresql://***@db/herald"),
    ],
)
def test_personal_data_and_secrets_are_masked(text: str, expected: str) -> None:
    assert mask(text) == expected


def test_identifiers_and_numbers_are_left_alone() -> None:
    for _ in range(200):
        notification_id = str(uuid.uuid4())
        assert mask(notification_id) == notification_id
    for kept in ("attempt 3 of 5", "2026-11-24T06:22:12.334144Z", "port 5672", "took 12345 ms"):
        assert mask(kept) == kept


def test_every_log_line_is_masked() -> None:
    """In a process of its own, as a service logs: configuration is process-wide."""
    program = (
        "import structlog\n"
        "from herald_common.logging import configure_logging\n"
        "configure_logging('test', fmt='json')\n"
        "structlog.get_logger().info('sending', to='grace@example.org',"
        " extra={'phone': '+15551234567'})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=30
    )
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["to"] == "g***@example.org"
    assert line["extra"] == {"phone": "***67"}
    assert line["message"] == "sending"
    assert line["service"] == "test"
