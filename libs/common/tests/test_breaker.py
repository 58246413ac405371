"""The circuit breaker's decisions, driven by a fake clock (no broker, no provider)."""

from __future__ import annotations

import asyncio
import time

import pytest

from herald_common.breaker import BreakerState, CircuitBreaker, counts_as_failure


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


Changes = list[tuple[BreakerState, BreakerState]]


def make(
    threshold: int = 3, window: float = 10.0, cooldown: float = 30.0, **kwargs: float
) -> tuple[CircuitBreaker, FakeClock, Changes]:
    clock = FakeClock()
    changes: Changes = []
    breaker = CircuitBreaker(
        threshold,
        window,
        cooldown,
        clock,
        name="test",
        on_change=lambda old, new: changes.append((old, new)),
        **kwargs,
    )
    return breaker, clock, changes


def state(breaker: CircuitBreaker) -> BreakerState:
    # Through a call, so that mypy does not narrow the property from one assert to the next.
    return breaker.state


def fail(breaker: CircuitBreaker, clock: FakeClock, times: int, every: float = 0.0) -> None:
    for _ in range(times):
        breaker.record_failure()
        clock.advance(every)


def test_threshold_failures_within_the_window_open_it() -> None:
    breaker, clock, changes = make(threshold=3)
    fail(breaker, clock, 2, every=1.0)
    assert state(breaker) == "closed"
    assert breaker.allow()
    assert breaker.failures == 2
    breaker.record_failure()
    assert state(breaker) == "open"
    assert not breaker.allow()
    assert changes == [("closed", "open")]


def test_old_failures_slide_out_of_the_window() -> None:
    breaker, clock, _ = make(threshold=3, window=10.0)
    breaker.record_failure()  # t=0
    clock.advance(5.0)
    breaker.record_failure()  # t=5
    clock.advance(6.0)
    assert breaker.failures == 1  # the one at t=0 is 11 s old
    breaker.record_failure()  # t=11: three failures, but over 11 s
    assert state(breaker) == "closed"
    clock.advance(1.0)
    breaker.record_failure()  # t=12: 5, 11, 12 are within 10 s
    assert state(breaker) == "open"


def test_a_failure_exactly_window_old_no_longer_counts() -> None:
    breaker, clock, _ = make(threshold=2, window=10.0)
    breaker.record_failure()
    clock.advance(10.0)
    breaker.record_failure()
    assert state(breaker) == "closed"


def test_a_success_resets_the_count() -> None:
    breaker, clock, _ = make(threshold=3)
    fail(breaker, clock, 2)
    breaker.record_success()
    assert breaker.failures == 0
    fail(breaker, clock, 2)
    assert state(breaker) == "closed"  # 4 failures, but never 3 in a row
    breaker.record_failure()
    assert state(breaker) == "open"


def test_open_counts_down_to_the_trial() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=30.0)
    breaker.record_failure()
    assert breaker.retry_in() == pytest.approx(30.0)
    assert breaker.reopens_at() == pytest.approx(clock.now + 30.0)
    clock.advance(12.0)
    assert breaker.retry_in() == pytest.approx(18.0)
    assert state(breaker) == "open"


def test_late_results_do_not_move_an_open_breaker() -> None:
    # Calls that started before the breaker opened report while it is open.
    breaker, clock, changes = make(threshold=1, cooldown=30.0)
    breaker.record_failure()
    clock.advance(20.0)
    breaker.record_failure()  # does not restart the cooldown
    breaker.record_success()  # does not cut it short
    assert state(breaker) == "open"
    assert breaker.retry_in() == pytest.approx(10.0)
    assert changes == [("closed", "open")]


def test_after_the_cooldown_exactly_one_trial_at_a_time() -> None:
    breaker, clock, changes = make(threshold=1, cooldown=30.0)
    breaker.record_failure()
    clock.advance(30.0)
    assert state(breaker) == "half_open"
    assert changes[-1] == ("open", "half_open")
    assert breaker.retry_in() == 0.0
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # everyone else waits for its result
    assert not breaker.allow()
    assert breaker.retry_in() > 0.0


def test_the_cooldown_ends_on_allow_too_without_reading_state() -> None:
    breaker, clock, changes = make(threshold=1, cooldown=30.0)
    breaker.record_failure()
    clock.advance(31.0)
    assert breaker.allow()
    assert changes == [("closed", "open"), ("open", "half_open")]


def test_a_trial_success_closes_it_with_a_clean_count() -> None:
    breaker, clock, changes = make(threshold=2, cooldown=30.0)
    fail(breaker, clock, 2)
    clock.advance(30.0)
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) == "closed"
    assert breaker.allow()
    assert breaker.allow()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    breaker.record_failure()
    assert state(breaker) == "closed"  # the failures before opening are forgotten


def test_a_trial_failure_opens_it_for_a_new_cooldown() -> None:
    breaker, clock, changes = make(threshold=2, cooldown=30.0)
    fail(breaker, clock, 2)
    clock.advance(30.0)
    assert breaker.allow()
    clock.advance(2.0)
    breaker.record_failure()
    assert state(breaker) == "open"
    assert breaker.retry_in() == pytest.approx(30.0)
    assert changes[-1] == ("half_open", "open")
    clock.advance(30.0)
    assert breaker.allow()  # the next trial


def test_release_frees_a_trial_that_was_not_made() -> None:
    breaker, clock, changes = make(threshold=1, cooldown=5.0)
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()
    breaker.release()
    assert state(breaker) == "half_open"
    assert breaker.allow()
    assert changes[-1] == ("open", "half_open")


def test_a_trial_that_never_reports_is_given_up_after_trial_timeout() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=5.0, trial_timeout=20.0)
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()
    clock.advance(19.0)
    assert not breaker.allow()
    assert breaker.retry_in() == pytest.approx(1.0)
    clock.advance(1.0)
    assert breaker.allow()


def test_a_listener_that_raises_does_not_stop_the_transition() -> None:
    clock = FakeClock()
    heard: Changes = []

    def broken(old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("boom")

    breaker = CircuitBreaker(1, 10.0, 5.0, clock, on_change=broken)
    breaker.add_listener(lambda old, new: heard.append((old, new)))
    breaker.record_failure()
    assert state(breaker) == "open"
    assert heard == [("closed", "open")]


@pytest.mark.parametrize(
    ("threshold", "window", "cooldown"), [(0, 1.0, 1.0), (1, 0.0, 1.0), (1, 1.0, 0.0)]
)
def test_nonsense_settings_are_refused(threshold: int, window: float, cooldown: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        CircuitBreaker(threshold, window, cooldown)


@pytest.mark.parametrize(
    ("status", "timed_out", "counts"),
    [
        (None, True, True),  # timeout
        (None, False, True),  # no response: refused, reset, DNS
        (500, False, True),
        (503, False, True),
        (429, False, True),  # throttled
        (400, False, False),  # this request was wrong, not the provider
        (401, False, False),
        (404, False, False),
        (408, False, False),
        (200, False, False),
        (202, False, False),
        (200, True, True),  # a body that took too long still timed out
    ],
)
def test_counts_as_failure(status: int | None, timed_out: bool, counts: bool) -> None:
    assert counts_as_failure(status, timed_out) is counts


# -- waiting for a trial (asyncio) ---------------------------------------------------------------


async def test_wait_until_trial_returns_at_once_when_closed() -> None:
    breaker = CircuitBreaker(1, 10.0, 5.0)
    await asyncio.wait_for(breaker.wait_until_trial(), timeout=1.0)


async def test_wait_until_trial_sleeps_to_the_end_of_the_cooldown() -> None:
    # A real clock with a short cooldown: the runtime's case, where nothing else looks at the
    # breaker while its consumer is cancelled, and the wait itself must bring half-open.
    changes: Changes = []
    breaker = CircuitBreaker(
        1, 10.0, 0.2, time.monotonic, on_change=lambda old, new: changes.append((old, new))
    )
    breaker.record_failure()
    await asyncio.wait_for(breaker.wait_until_trial(), timeout=5.0)
    assert changes == [("closed", "open"), ("open", "half_open")]
    assert breaker.allow()


async def test_wait_until_trial_wakes_on_the_trial_result_not_on_a_timer() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=5.0, trial_timeout=3600.0)
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()  # the trial is out; others wait for its result
    waiters = [asyncio.create_task(breaker.wait_until_trial()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)
    breaker.record_success()
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=1.0)
    assert state(breaker) == "closed"


async def test_wait_until_trial_keeps_waiting_when_the_trial_fails() -> None:
    breaker, clock, _ = make(threshold=1, cooldown=5.0, trial_timeout=3600.0)
    breaker.record_failure()
    clock.advance(5.0)
    assert breaker.allow()
    waiter = asyncio.create_task(breaker.wait_until_trial())
    await asyncio.sleep(0.05)
    breaker.record_failure()  # open again: the waiter now sleeps out the new cooldown
    await asyncio.sleep(0.05)
    assert not waiter.done()
    breaker.release()  # any transition wakes it to recompute; time has not moved
    await asyncio.sleep(0.05)
    assert not waiter.done()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
