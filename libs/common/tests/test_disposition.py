"""What follows an attempt, decided without a broker."""

from __future__ import annotations

import random

import pytest

from herald_common.disposition import NextStep, dispose
from herald_common.settings import RetryPolicy

POLICY = RetryPolicy(delays=(1, 5, 30), max_attempts=3)


@pytest.mark.parametrize(
    ("result", "attempt", "first", "expected"),
    [
        ("sent", 1, 1, NextStep("sent")),
        ("transient_failure", 1, 1, NextStep("retry", delay=1)),
        ("transient_failure", 2, 1, NextStep("retry", delay=5)),
        ("transient_failure", 3, 1, NextStep("dead_letter", reason="retries_exhausted")),
        ("permanent_failure", 1, 1, NextStep("dead_letter", reason="permanent_failure")),
        # A redrive starts a generation at attempt 4 with a fresh budget.
        ("transient_failure", 4, 4, NextStep("retry", delay=1)),
        ("transient_failure", 6, 4, NextStep("dead_letter", reason="retries_exhausted")),
    ],
)
def test_next_step(result: str, attempt: int, first: int, expected: NextStep) -> None:
    assert dispose(result, attempt=attempt, first_attempt=first, policy=POLICY) == expected  # type: ignore[arg-type]


def test_a_retry_after_picks_the_tier_that_covers_it() -> None:
    step = dispose("transient_failure", attempt=1, first_attempt=1, policy=POLICY, retry_after=4)
    assert step == NextStep("retry", delay=5)


def test_jitter_only_lengthens() -> None:
    jittered = RetryPolicy(delays=(10,), max_attempts=5, jitter=0.2)
    rng = random.Random(7)
    delays = {
        dispose("transient_failure", attempt=1, first_attempt=1, policy=jittered, rng=rng).delay
        for _ in range(50)
    }
    assert delays == {10.0, 11.0, 12.0}
