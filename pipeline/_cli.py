"""What every stage shares: reading `params.yaml`, and ending on a user's error with its message
alone (one or two lines naming the thing), not a traceback."""
from __future__ import annotations

import os
import sys
from typing import Callable

from cvae.config import ConfigError, Params, load_params
from cvae.errors import UserError

TRACEBACK = "--traceback"  # or CVAE_TRACEBACK=1: the whole traceback, for developers


def params(path: str = "params.yaml") -> Params:
    try:
        return load_params(path)
    except ConfigError as error:
        sys.exit(f"params.yaml: {error}")


def run(main: Callable[[], None]) -> None:
    """Run a stage's `main`. A user's error (bad data or files, a full disk...) ends it with its
    message alone; anything else is a bug and keeps its traceback."""
    developer = TRACEBACK in sys.argv or bool(os.environ.get("CVAE_TRACEBACK"))
    if TRACEBACK in sys.argv:
        sys.argv.remove(TRACEBACK)
    try:
        main()
    except (UserError, FileNotFoundError) as error:
        if developer:
            raise
        sys.exit(f"error: {error}\n(run with {TRACEBACK} or CVAE_TRACEBACK=1 for the traceback)")
    except KeyboardInterrupt:
        if developer:
            raise
        sys.exit(130)  # Ctrl-C: the stage stops; what it had saved stays (see README)
