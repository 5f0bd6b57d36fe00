"""What every stage shares: reading `params.yaml`, removing the numbers a run is about to replace,
and ending on a user's error with its message alone (one or two lines naming the thing), not a
traceback."""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import Callable

from cvae.config import ConfigError, Params, load_params, read_yaml
from cvae.errors import UserError

TRACEBACK = "--traceback"  # or CVAE_TRACEBACK=1: the whole traceback, for developers
PIPELINE = Path(__file__).resolve().parents[1] / "dvc.yaml"
# What to do about an operating system's error, by its errno
ADVICE = {
    errno.EACCES: "check the permissions of the file and its folder",
    errno.EPERM: "check the permissions of the file and its folder",
    errno.EROFS: "the file system is read-only: work in a writable copy",
    errno.ENOSPC: "the disk is full: free some space and run again",
    errno.ELOOP: "a symbolic link on the way points back into itself: fix or remove it",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a folder was expected there",
    errno.EISDIR: "a file was expected there",
    errno.EIO: "the disk could not read or write it: check the disk",
}


def params(path: str = "params.yaml") -> Params:
    try:
        return load_params(path)
    except ConfigError as error:
        sys.exit(f"error: {path}: {error}")


def forget_results_below(stage: str, pipeline: Path = PIPELINE) -> None:
    """Remove the metrics files of `stage` and every stage after it in dvc.yaml. A stage that
    runs makes their numbers another run's; left in place, a stopped or killed run (a queued
    experiment's above all, whose folder starts with the committed files) would show them in
    `dvc exp show` beside its own params."""
    stages = list(read_yaml(pipeline)["stages"].items())
    names = [name for name, _ in stages]
    for _, stage_def in stages[names.index(stage):]:
        for entry in stage_def.get("metrics", []):
            Path(next(iter(entry)) if isinstance(entry, dict) else entry).unlink(missing_ok=True)


def run(main: Callable[[], None]) -> None:
    """Run a stage's `main`. A user's error (bad data or files, a full disk...) ends it with its
    message alone; anything else is a bug and keeps its traceback."""
    developer = TRACEBACK in sys.argv or bool(os.environ.get("CVAE_TRACEBACK"))
    if TRACEBACK in sys.argv:
        sys.argv.remove(TRACEBACK)
    try:
        main()
    except (UserError, OSError) as error:
        if developer:
            raise
        sys.exit(f"error: {_message(error)}\n(run with {TRACEBACK} or CVAE_TRACEBACK=1 for the "
                 "traceback)")
    except KeyboardInterrupt:
        if developer:
            raise
        sys.exit(130)  # Ctrl-C: the stage stops; what it had saved stays (see README)


def _message(error: Exception) -> str:
    """A user's error as one line: ours say it all; the system's get the file, what is wrong
    and what to do."""
    if not isinstance(error, OSError) or error.filename is None:
        return str(error)
    where = f"{error.filename} -> {error.filename2}" if error.filename2 else error.filename
    advice = ADVICE.get(error.errno, "")
    return f"{where}: {error.strerror}{': ' + advice if advice else ''}"
