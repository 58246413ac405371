from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from herald_common.settings import RetryPolicy, WorkerSettings


def test_retry_delays_come_comma_separated_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HERALD_RETRY_DELAYS", "1, 5,30")
    monkeypatch.setenv("HERALD_RETRY_MAX_ATTEMPTS", "4")
    policy = WorkerSettings().retry_policy()
    assert policy == RetryPolicy(delays=(1, 5, 30), max_attempts=4, jitter=0.2)


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


def test_jitter_spreads_retries_over_fixed_ttl_siblings_of_each_tier() -> None:
    policy = RetryPolicy(delays=(1, 5), max_attempts=5, jitter=0.2)
    assert policy.tier_delays() == [1, 1.1, 1.2, 5, 5.5, 6]
    rng = random.Random(7)
    drawn = [policy.delay_for(2, rng=rng) for _ in range(300)]
    assert set(drawn) == {5, 5.5, 6}  # never shorter than the tier, at most 20% longer
    assert min(drawn.count(v) for v in (5, 5.5, 6)) > 50
    assert RetryPolicy(delays=(1, 5), max_attempts=5).tier_delays() == [1, 5]
