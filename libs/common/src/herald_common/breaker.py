"""A per-provider circuit breaker, in process: stop calling a provider that keeps failing.

    closed --threshold failures, no success between, within window--> open
    open --cooldown elapsed--> half_open                 (one trial call at a time)
    half_open --trial succeeds--> closed                 (failure count cleared)
    half_open --trial fails--> open                      (a new cooldown)

Each instance of a channel service keeps its own breakers: a provider that fails for one
instance fails for the others too, and each finds out within ``threshold`` calls, which is
cheaper than sharing state through the broker or the database.

A success clears the failure count, so the breaker opens on a *run* of failures. A pure count
within the window would trip a high-volume provider on its sporadic errors (5 timeouts in 30 s
is 0.02 % at 1,000 msg/s); a dead or throttling provider fails every call and trips it after
``threshold`` calls. A provider failing only part of the time keeps its breaker closed; the
failed attempts are retried and fail over one by one.

Which errors count is the caller's decision (``counts_as_failure`` for HTTP providers); the
breaker only hears ``record_success`` and ``record_failure``.

The open → half_open move is driven by time, so it happens when the breaker is next looked at
(``allow``, ``state``, ``retry_in``, ``reopens_at``) or when ``wait_until_trial``'s deadline
passes; listeners hear it then. A runtime that stopped consuming because every provider's
breaker is open awaits ``wait_until_trial`` on them to know when to start again.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

import structlog

log = structlog.get_logger("herald.breaker")

BreakerState = Literal["closed", "open", "half_open"]
Listener = Callable[[BreakerState, BreakerState], None]
"""Called with (old state, new state) on every transition, synchronously: do not block."""


def counts_as_failure(status: int | None, timed_out: bool) -> bool:
    """Whether one HTTP provider call counts towards its breaker.

    Timeouts, 5xx and 429 say the provider is down, overloaded or throttling us, so further
    calls would fail too. Other 4xx say this one request was wrong (a bad number, a revoked
    token): the provider is fine, and opening its breaker would stop good traffic. ``status``
    None without a timeout means no response at all (connection refused or reset, DNS): the
    provider is unreachable, which counts. Non-HTTP providers map their own errors (SMTP's
    4xx are the transient ones).
    """
    if timed_out or status is None:
        return True
    return status == 429 or status >= 500


class CircuitBreaker:
    """Closed, open or half-open; see the module docstring.

    ``clock`` is a monotonic clock in seconds (injected so tests move time by hand).
    ``trial_timeout`` (default: ``cooldown``) bounds how long a granted trial may stay
    unreported before another is allowed, so a trial whose caller vanished (cancelled, crashed
    task) cannot hold the breaker half-open for ever. A caller that was granted a call and then
    did not make it calls ``release``.
    """

    def __init__(
        self,
        threshold: int,
        window: float,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        name: str = "",
        on_change: Listener | None = None,
        trial_timeout: float | None = None,
    ) -> None:
        if threshold < 1 or window <= 0 or cooldown <= 0:
            raise ValueError("threshold must be >= 1, window and cooldown > 0")
        self.name = name
        self._threshold = threshold
        self._window = window
        self._cooldown = cooldown
        self._trial_timeout = cooldown if trial_timeout is None else trial_timeout
        self._clock = clock
        self._state: BreakerState = "closed"
        # Only the last `threshold` failures can decide an opening: the breaker opens when the
        # oldest of them is still within the window.
        self._failures: deque[float] = deque(maxlen=threshold)
        self._opened_at = 0.0
        self._trial_since: float | None = None
        self._listeners: list[Listener] = [on_change] if on_change is not None else []
        self._changed = asyncio.Event()

    # -- reading ------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        self._advance(self._clock())
        return self._state

    @property
    def failures(self) -> int:
        """Failures counting towards opening now (since the last success, within the window)."""
        now = self._clock()
        return sum(1 for t in self._failures if now - t < self._window)

    def reopens_at(self) -> float:
        """The clock time from which a call is allowed (now, when one is)."""
        now = self._clock()
        self._advance(now)
        if self._state == "open":
            return self._opened_at + self._cooldown
        if self._state == "half_open" and self._trial_since is not None:
            return self._trial_since + self._trial_timeout
        return now

    def retry_in(self) -> float:
        """Seconds until a call is allowed; 0 when one is."""
        return max(0.0, self.reopens_at() - self._clock())

    # -- the calls ----------------------------------------------------------------------------

    def allow(self) -> bool:
        """May a call go now? In half-open this grants the one trial (to the first caller)."""
        now = self._clock()
        self._advance(now)
        if self._state == "closed":
            return True
        if self._state == "half_open" and self._trial_since is None:
            self._trial_since = now
            return True
        return False

    def release(self) -> None:
        """A granted call was not made after all: free the trial without judging the provider."""
        self._trial_since = None
        self._signal()

    def record_success(self) -> None:
        """A call succeeded: clear the failure count; a half-open breaker closes."""
        self._failures.clear()
        now = self._clock()
        self._advance(now)
        # In the open state this is a call that started before the breaker opened: it does not
        # cut the cooldown short (the trial decides), so only half_open moves.
        if self._state == "half_open":
            self._trial_since = None
            self._move("closed")

    def record_failure(self) -> None:
        """A call failed in a way that counts (see ``counts_as_failure``)."""
        now = self._clock()
        self._advance(now)
        if self._state == "closed":
            self._failures.append(now)
            if len(self._failures) == self._threshold and now - self._failures[0] < self._window:
                self._open(now)
        elif self._state == "half_open":
            self._open(now)
        # Open: a late result of a call made before the breaker opened; the cooldown stands.

    async def wait_until_trial(self) -> None:
        """Return once a call would be allowed (it is not granted: ``allow`` still decides).

        Sleeps until the deadline or the next transition, whichever is first; never polls.
        """
        while True:
            delay = self.retry_in()
            if delay <= 0:
                return
            changed = self._changed
            try:
                async with asyncio.timeout(delay):
                    await changed.wait()
            except TimeoutError:
                pass

    # -- listeners ----------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- internals ----------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Apply what time alone changes: a cooldown that ended, a trial that was never told."""
        if self._state == "open" and now >= self._opened_at + self._cooldown:
            self._trial_since = None
            self._move("half_open")
        elif (
            self._state == "half_open"
            and self._trial_since is not None
            and now >= self._trial_since + self._trial_timeout
        ):
            log.warning("breaker trial never reported; allowing another", provider=self.name)
            self._trial_since = None
            self._signal()

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._trial_since = None
        self._failures.clear()
        self._move("open")

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old == new:
            return
        (log.warning if new == "open" else log.info)(
            "breaker " + new.replace("_", "-"), provider=self.name, was=old
        )
        self._signal()
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:
                # A broken listener must not leave the breaker half-moved or fail the call
                # that reported the result.
                log.exception("breaker listener failed", provider=self.name)

    def _signal(self) -> None:
        # Wake everyone in wait_until_trial, and give later waiters a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()
