"""One deploy of a fake release in a process of its own, so a test can kill it (`kill -9`).

`python deploy_once.py ROOT PORT VERSION [VERIFY_S [STRATEGY]]` builds the same controller as
the tests' `local_controller(ROOT, port=PORT)` and deploys `fake://card-fraud/VERSION`; exit 0
deployed, 1 rolled back. STRATEGY (default bluegreen) may be canary or shadow. With
MLSHIP_FAULT_AT=<step> the deploy kills itself at that step.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from mlship.errors import PipelineRejected
from tests.support.deploy_doubles.harness import fake_release, local_controller


def main() -> int:
    root, port, version = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    ctl = local_controller(root, port=port, verify_window_s=float(sys.argv[4]) if len(sys.argv) > 4 else 1.0)
    try:
        ctl.deploy(fake_release(version), strategy=sys.argv[5] if len(sys.argv) > 5 else "bluegreen")
    except PipelineRejected as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
