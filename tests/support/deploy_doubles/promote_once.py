"""One promotion in a process of its own, so a test can kill it (`kill -9`).

`python promote_once.py ROOT KIND` builds the fake-server controller for the project at ROOT
(`harness.fake_controller` on its settings) and runs `--promote-KIND` (shadow or canary); exit 0
promoted, the error's exit code otherwise. With MLSHIP_FAULT_AT=<step> it kills itself at that step.
Like the CLI it starts the promotion guard (mlship.deploy.guard), which switches back if it dies.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from mlship.errors import MlshipError
from mlship.settings import load_settings
from tests.support.deploy_doubles.harness import fake_controller


def main() -> int:
    root, kind = Path(sys.argv[1]), sys.argv[2]
    _, ctl = fake_controller(load_settings(cwd=root))
    ctl.schedule_retirement = True  # detached helpers (the promotion guard) are started, as by the CLI
    try:
        ctl.promote_shadow() if kind == "shadow" else ctl.promote_canary()
    except MlshipError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
