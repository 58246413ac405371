"""What happens to a notification after an attempt: a pure decision, tested without a broker.

``sent`` ends it; a transient failure with attempts left in the budget goes to a retry tier
(the delay picked by the retry policy, honouring a provider's Retry-After); a permanent failure
or a spent budget is dead-lettered with the reason.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from .schemas import AttemptResult
from .settings import RetryPolicy


@dataclass(frozen=True)
class NextStep:
    kind: Literal["sent", "retry", "dead_letter"]
    delay: float | None = None
    """Seconds to the next attempt (its tier's TTL), for a retry."""
    reason: str | None = None
    """Why it is dead-lettered: ``permanent_failure`` or ``retries_exhausted``."""


def dispose(
    result: AttemptResult,
    *,
    attempt: int,
    first_attempt: int,
    policy: RetryPolicy,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> NextStep:
    """Decide for attempt number ``attempt`` of the generation that began at ``first_attempt``
    (a redrive starts a new one, with a fresh budget)."""
    if result == "sent":
        return NextStep("sent")
    tried = attempt - first_attempt + 1
    if result == "transient_failure" and tried < policy.max_attempts:
        return NextStep("retry", delay=policy.delay_for(tried, retry_after, rng))
    reason = "permanent_failure" if result == "permanent_failure" else "retries_exhausted"
    return NextStep("dead_letter", reason=reason)
