"""The replay tier: run the Dagger module's lazy chains on the local Docker engine (see docs/ci.md).

It reuses the docker tier's helpers (tests/docker/support.py), so the repository root must
be importable even when only ci/tests is collected.
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[3])
if _REPO not in sys.path:
    sys.path.append(_REPO)
