"""`python -m mlship.deploy.router`: run the router (or, with --supervise, its supervisor)."""

import sys

from mlship.deploy.router.process import main

if __name__ == "__main__":
    sys.exit(main())
