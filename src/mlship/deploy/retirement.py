"""Retiring the previous color when the rollback window ends (design.md, blue-green step 6).

The controller schedules a detached retirement process after each switch (`mlship.deploy.retire`
runs it) and, past the window, a later command reaps what is left; `down` waits for a retirement
that holds the lock. The previous color is stopped only while it is still the previous color of
the same release.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from mlship.deploy import process
from mlship.deploy.context import ControllerBase
from mlship.deploy.lock import LockHeld
from mlship.deploy.release import DeployState, other
from mlship.deploy.targets.base import ColorFailed

RETIREMENT_WAIT_S = 15.0
"""How long `down` waits for a retirement that holds the deploy lock (it holds it for seconds)."""


class Retirement(ControllerBase):
    """The previous color's end: scheduled, reaped, or retired by the retirement process."""

    def _lock_after_retirement(self, wait_s: float = RETIREMENT_WAIT_S) -> contextlib.ExitStack:
        """The deploy lock, waiting (up to `wait_s`) while our own retirement process holds it.

        A retirement holds the lock only while it stops the previous color and records it (a few
        seconds at most); `down` racing it should wait for it, not fail. Any other holder (a
        deploy, a rollback) is reported at once, as before.
        """
        deadline = time.monotonic() + wait_s
        while True:
            stack = contextlib.ExitStack()
            try:
                stack.enter_context(self._lock())
                return stack
            except LockHeld:
                retire = self.store.load().retire
                if retire is None or not process.ours(retire) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def _reap(self, state: DeployState) -> None:
        """Past the rollback window, stop the previous color (rollback then means a full deploy)."""
        if state.live is None or state.previous_until is None or time.time() < state.previous_until:
            return
        if self._canary(state) is not None or self._shadow(state) is not None:
            return
        idle = other(state.live)
        self.target.stop(idle)
        state.colors.pop(idle, None)
        state.previous_until = None
        self.store.save(state)

    def retire(self, color: str, uri: str, until: float) -> str:
        """Stop `color` if it is still the previous color of the same release and its window is over.

        Called by the retirement process (mlship.deploy.retire) under the deploy lock; a later
        deploy or rollback changed the state, so it is then a no-op.
        """
        with self._lock():
            state = self.store.load()
            release = state.colors.get(color)
            if state.live is None or state.live == color or release is None or release.uri != uri:
                return f"not retiring {color}: it is live or runs another release now"
            if state.previous_until != until or time.time() < until:
                return f"not retiring {color}: a later switch moved the rollback window"
            if self._canary(state) is not None or self._shadow(state) is not None:
                return f"not retiring {color}: a canary or shadow is running"
            self.target.stop(color)
            state.colors.pop(color, None)
            state.previous_until = None
            state.retire = None
            self.store.save(state)
            return f"retired {color} ({release.label}): the rollback window ended; {state.live} stays live"

    def _schedule_retire(self, state: DeployState) -> None:
        """Replace any scheduled retirement with one for the current previous color (if any)."""
        if state.retire is not None:
            process.cancel(state.retire)
            state.retire = None
        if not self.schedule_retirement or state.live is None or state.previous_until is None:
            return
        color = other(state.live)
        release = state.colors.get(color)
        if release is None or self._canary(state) is not None or self._shadow(state) is not None:
            return
        extra = {"color": color, "uri": release.uri, "until": state.previous_until}
        try:
            handle = self._detached(process.RETIRE_MODULE, process.RETIRE_SPEC, "retire.log", extra)
        except ColorFailed as exc:  # the switch stands; the next deploy/rollback still reaps it (`_reap`)
            with (self.store.dir / "retire.log").open("a") as log:
                log.write(f"cannot schedule the retirement of {color}: {exc}\n")
            return
        state.retire = {**handle, "color": color, "until": state.previous_until}

    def _retire_info(self, state: DeployState) -> dict[str, Any] | None:
        if state.live is None or state.previous_until is None or other(state.live) not in state.colors:
            return None
        record = state.retire or {}
        return {
            "color": other(state.live),
            "at": state.previous_until,
            "scheduled": bool(record) and process.ours(record),
        }
