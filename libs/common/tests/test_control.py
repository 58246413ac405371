"""Queue control's decisions, without a broker: what a command says, and which one wins."""

from __future__ import annotations

from typing import Any, cast

import pytest

from herald_common.control import ChannelControl, ControlCommand, command_body, parse_command
from herald_common.topology import Topology


class _Worker:
    channel = "email"

    def __init__(self) -> None:
        self.paused = False
        self.changes: list[bool] = []
        self.in_flight = 0
        self.sent = 0

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        self.changes.append(paused)

    def retry_queues(self) -> list[str]:
        return []

    def breaker_states(self) -> dict[str, str]:
        return {}


def _control(worker: _Worker) -> ChannelControl:
    return ChannelControl(
        worker,
        connection=cast(Any, None),
        pool=cast(Any, None),
        topology=Topology("t"),
        interval=5,
    )


def test_a_command_round_trips() -> None:
    command = ControlCommand("sms", True, 7)
    assert parse_command(command_body(command)) == command


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"channel": "fax", "paused": true, "generation": 1}', "channel must be"),
        (b'{"channel": "email", "paused": "yes", "generation": 1}', "paused must be"),
        (b'{"channel": "email", "paused": true}', "generation must be"),
        (b'{"channel": "email", "paused": true, "generation": true}', "generation must be"),
        (b'{"channel": "email", "paused": true, "generation": 0}', "generation must be"),
    ],
)
def test_a_malformed_command_says_what_is_wrong(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_command(body)


def test_only_a_newer_change_is_obeyed() -> None:
    worker = _Worker()
    control = _control(worker)
    control._obey(ControlCommand("email", False, 0))  # never paused: the state at start
    control._obey(ControlCommand("email", True, 4))  # the pause's command
    # A heartbeat's read taken before the pause committed, applied after the command: ignored.
    control._obey(ControlCommand("email", False, 3))
    assert worker.paused is True
    control._obey(ControlCommand("email", False, 5))  # the resume
    control._obey(ControlCommand("email", True, 4))  # a late copy of the pause: ignored
    assert worker.paused is False
    assert worker.changes == [False, True, False]


def test_another_channels_command_is_not_obeyed() -> None:
    worker = _Worker()
    control = _control(worker)
    control._obey(ControlCommand("sms", True, 9))
    assert worker.changes == []
