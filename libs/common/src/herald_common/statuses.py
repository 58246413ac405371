"""Groups of notification statuses the services agree on, and the PostgreSQL NOTIFY channels
that wake the dispatcher's loops."""

from __future__ import annotations

CANCELABLE = ("scheduled", "queued", "retrying")
"""Statuses a notification can be canceled in: nothing is being sent for it at the moment."""

FINAL = ("sent", "failed", "canceled")
"""Statuses a notification does not leave by itself (a redrive or a late truth may move it)."""

IN_FLIGHT = ("scheduled", "queued", "sending", "retrying")
"""Statuses of a notification not finished yet (a campaign with one is not finished)."""

OUTBOX_CHANNEL = "herald_outbox"
"""NOTIFY channel of the outbox relay: rows due at once that nobody else will publish."""

CAMPAIGNS_CHANNEL = "herald_campaigns"
"""NOTIFY channel of the campaign runner: a campaign accepted, resumed or canceled."""
