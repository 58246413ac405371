from __future__ import annotations

import pytest
from pydantic import ValidationError

from herald_common.settings import RetryPolicy, WorkerSettings


def test_retry_delays_come_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HERALD_RETRY_DELAYS", "1, 5,30")
    monkeypatch.setenv("HERALD_RETRY_MAX_ATTEMPTS", "4")
    policy = WorkerSettings().retry_policy()
    assert policy == RetryPolicy(delays=(1, 5, 30), max_attempts=4)


@pytest.mark.parametrize("value", ["", "1,-5", "0", "a,b"])
def test_bad_retry_delays_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HERALD_RETRY_DELAYS", value)
    with pytest.raises(ValidationError):
        WorkerSettings()


def test_delay_for_walks_the_tiers_and_honours_retry_after() -> None:
    policy = RetryPolicy(delays=(1, 5, 30), max_attempts=10)
    assert [policy.delay_for(n) for n in (1, 2, 3, 4, 9)] == [1, 5, 30, 30, 30]
    assert policy.delay_for(1, retry_after=3) == 5  # the first tier that covers it
    assert policy.delay_for(1, retry_after=0.5) == 1  # never shorter than the tier
    assert policy.delay_for(1, retry_after=3600) == 30  # capped at the longest tier
