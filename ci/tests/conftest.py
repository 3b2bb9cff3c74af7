"""Engine-free tests of the Dagger module: import it from ci/src with the pinned dagger-io."""

from __future__ import annotations

import os
import sys
from pathlib import Path

CI = Path(__file__).resolve().parents[1]
os.environ.setdefault("DAGGER_MAIN_OBJECT", "MlPipeline")
if str(CI / "src") not in sys.path:
    sys.path.insert(0, str(CI / "src"))
if str(CI.parent) not in sys.path:  # `tests` (the tier switch, the docker support) when only ci/tests is collected
    sys.path.append(str(CI.parent))


def pytest_configure(config: object) -> None:
    """A misspelt MLSHIP_REQUIRE_TIERS stops the session (also when only ci/tests is collected)."""
    from tests.conftest import required_tiers

    required_tiers()
