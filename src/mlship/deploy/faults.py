"""A test hook for crash consistency: kill this process at a named step of a deploy.

`MLSHIP_FAULT_AT=<step>` makes the deploy SIGKILL itself when it reaches that step — no
cleanup, no `finally`, exactly like `kill -9` or a lost CI runner. The fault-injection
tests and the blue-green benchmark use it to prove that the next command recovers with no
failed request. It is read here and nowhere else; unset, it does nothing.
"""

from __future__ import annotations

import os
import signal

FAULT_VAR = "MLSHIP_FAULT_AT"
STEPS = ("idle-started", "smoke-passed", "switched", "mid-verification", "verified")
"""The step boundaries of a deploy, in order."""


def checkpoint(step: str) -> None:
    """SIGKILL the current process if MLSHIP_FAULT_AT names `step`."""
    if os.environ.get(FAULT_VAR) == step:
        os.kill(os.getpid(), signal.SIGKILL)
