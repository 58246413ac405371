"""The claim decision table, as a pure function: no broker, no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from herald_common.ledger import AttemptState, Claim, ClaimDecision, StoredResult, decide

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
MINE = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
THEIRS = uuid.UUID("00000000-0000-4000-8000-0000000000bb")
SENT = StoredResult("sent", None, "smtp", "m-1", NOW - timedelta(seconds=3), NOW, False)


def claim(
    *, redelivered: bool, token: uuid.UUID = MINE, attempt: int = 1, first_attempt: int = 1
) -> Claim:
    return Claim(
        ID, attempt, redelivered, "smtp", token=token, lease_seconds=25, first_attempt=first_attempt
    )


def leased(
    token: uuid.UUID, *, expires_in: float, stored: StoredResult | None = None
) -> AttemptState:
    return AttemptState(
        status="sending",
        token=token,
        started_at=NOW - timedelta(seconds=1),
        lease_expires_at=NOW + timedelta(seconds=expires_in),
        stored=stored,
    )


def one(item: Claim, state: AttemptState | None) -> ClaimDecision:
    states = {} if state is None else {(ID, item.attempt): state}
    [decision] = decide([item], states, NOW)
    return decision


QUEUED = AttemptState(status="queued")


@pytest.mark.parametrize(
    ("item", "state", "action", "write", "duplicate"),
    [
        # Nothing stored: send, inserting the attempt.
        (claim(redelivered=False), QUEUED, "send", "insert", False),
        (claim(redelivered=True), QUEUED, "send", "insert", False),
        # No such notification.
        (claim(redelivered=False), None, "unknown", "none", False),
        # Our own claim committed, its reply lost, the claim resubmitted: carry on.
        (claim(redelivered=False), leased(MINE, expires_in=20), "send", "none", False),
        (claim(redelivered=True), leased(MINE, expires_in=20), "send", "none", False),
        (
            claim(redelivered=False),
            leased(MINE, expires_in=20, stored=SENT),
            "replay",
            "none",
            False,
        ),
        # Another delivery holds a live lease: a redelivered copy waits, a fresh one is skipped.
        (claim(redelivered=True), leased(THEIRS, expires_in=20), "wait", "none", False),
        (claim(redelivered=False), leased(THEIRS, expires_in=20), "skip", "none", False),
        # The lease ran out without a result: the redelivered copy takes over, as a possible
        # duplicate; a fresh copy leaves it to the holder's own (redelivered) message.
        (claim(redelivered=True), leased(THEIRS, expires_in=-1), "send", "take_over", True),
        (claim(redelivered=False), leased(THEIRS, expires_in=-1), "skip", "none", False),
        # A result is stored: replayed by a redelivered copy, a fresh copy skipped.
        (
            claim(redelivered=True),
            leased(THEIRS, expires_in=20, stored=SENT),
            "replay",
            "none",
            False,
        ),
        (
            claim(redelivered=False),
            leased(THEIRS, expires_in=-1, stored=SENT),
            "skip",
            "none",
            False,
        ),
        # A final notification with an unfinished attempt is skipped.
        (claim(redelivered=True), AttemptState(status="canceled"), "skip", "none", False),
        (claim(redelivered=True), AttemptState(status="failed"), "skip", "none", False),
        # An attempt of an older generation (a redrive moved first_attempt past it).
        (
            claim(redelivered=True, attempt=3),
            AttemptState(status="queued", first_attempt=4),
            "skip",
            "none",
            False,
        ),
        (
            claim(redelivered=True, attempt=3),
            AttemptState(
                status="sending",
                first_attempt=4,
                token=THEIRS,
                stored=SENT,
                started_at=NOW,
                lease_expires_at=NOW,
            ),
            "skip",
            "none",
            False,
        ),
        # The generation's own first attempt goes ahead.
        (
            claim(redelivered=False, attempt=4, first_attempt=4),
            AttemptState(status="queued", first_attempt=4),
            "send",
            "insert",
            False,
        ),
    ],
)
def test_one_claim(
    item: Claim, state: AttemptState | None, action: str, write: str, duplicate: bool
) -> None:
    decision = one(item, state)
    assert (decision.action, decision.write, decision.possible_duplicate) == (
        action,
        write,
        duplicate,
    ), decision


def test_a_waiting_copy_is_told_when_the_lease_runs_out() -> None:
    decision = one(claim(redelivered=True), leased(THEIRS, expires_in=20))
    assert decision.wait_until == NOW + timedelta(seconds=20)


def test_a_retry_after_a_maybe_delivered_attempt_is_marked() -> None:
    item = Claim(ID, 2, False, "smtp", token=MINE, lease_seconds=25, possible_duplicate=True)
    decision = one(item, QUEUED)
    assert (decision.action, decision.possible_duplicate) == ("send", True)


def test_a_fresh_copy_before_the_redelivered_original_in_one_batch_sends_once() -> None:
    """The fresh copy comes first in the batch, but the redelivered original is decided first:
    it takes the abandoned attempt over, and the fresh copy is skipped."""
    fresh = claim(redelivered=False, token=uuid.uuid4())
    original = claim(redelivered=True, token=uuid.uuid4())
    decisions = decide([fresh, original], {(ID, 1): leased(THEIRS, expires_in=-1)}, NOW)
    assert [d.action for d in decisions] == ["skip", "send"]
    assert decisions[1].possible_duplicate


def test_two_fresh_copies_in_one_batch_send_once() -> None:
    first = claim(redelivered=False, token=uuid.uuid4())
    second = claim(redelivered=False, token=uuid.uuid4())
    decisions = decide([first, second], {(ID, 1): QUEUED}, NOW)
    assert [d.action for d in decisions] == ["send", "skip"]


def test_a_redelivered_copy_behind_a_fresh_send_in_one_batch_waits_for_it() -> None:
    fresh = claim(redelivered=False, token=uuid.uuid4())
    redelivered = claim(redelivered=True, token=uuid.uuid4())
    decisions = decide([redelivered, fresh], {(ID, 1): QUEUED}, NOW)
    # The redelivered copy is decided first and sends; the fresh one is then skipped.
    assert [d.action for d in decisions] == ["send", "skip"]
    two_redelivered = decide(
        [redelivered, claim(redelivered=True, token=uuid.uuid4())], {(ID, 1): QUEUED}, NOW
    )
    assert [d.action for d in two_redelivered] == ["send", "wait"]


def test_a_resubmitted_batch_finds_its_own_claims() -> None:
    """The claim committed, the reply was lost, the same claims come again: each resumes."""
    items = [claim(redelivered=False, token=uuid.uuid4()) for _ in range(1)]
    first = decide(items, {(ID, 1): QUEUED}, NOW)
    assert [d.action for d in first] == ["send"]
    stored = {(ID, 1): leased(items[0].token, expires_in=25)}
    again = decide(items, stored, NOW + timedelta(seconds=1))
    assert [d.action for d in again] == ["send"]


def test_a_retry_of_an_older_generation_numbered_like_the_redrive_is_fenced_off() -> None:
    """Attempt 3 was in flight when the redrive set first_attempt to 4; its retry is numbered 4
    too, but carries its own generation (first attempt 1): only the redrive's message claims."""
    state = {(ID, 4): AttemptState(status="queued", first_attempt=4)}
    old = Claim(ID, 4, False, "smtp", token=uuid.uuid4(), lease_seconds=25, first_attempt=1)
    new = Claim(ID, 4, False, "smtp", token=uuid.uuid4(), lease_seconds=25, first_attempt=4)
    assert [d.action for d in decide([old, new], state, NOW)] == ["skip", "send"]
