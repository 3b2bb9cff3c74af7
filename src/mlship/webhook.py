"""The webhook's contract, shared by the settings and the notifier: what it can be told about, where its URL is.

A leaf (it imports nothing of mlship): `settings` validates `[tool.mlship.notify]` against it
and `notify` sends by it, without either importing the other at module level.
"""

from __future__ import annotations

NOTIFY_EVENTS = ("gate", "deploy", "rollback", "failover", "drift", "canary")
"""What a webhook can be told about (`[tool.mlship.notify] events` picks among them)."""

WEBHOOK_ENV = "MLSHIP_WEBHOOK_URL"
"""The webhook URL is a secret: it is read from this variable only, never from a file."""
