"""Waiting for an event, never for a fixed time: a poll of the event itself, bounded by a deadline.

The deadline bounds a hang; it is not a timing assertion, so it is generous (a loaded 2-core
machine must not reach it by accident).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], what: str, timeout_s: float = 30.0, interval_s: float = 0.02) -> T:
    """The first truthy value `predicate` returns; AssertionError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
