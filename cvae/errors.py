"""Errors that are the user's to fix (bad settings, data, files, a full disk), not bugs. The
stages print their message alone, one or two lines naming the thing (`pipeline._cli.run`)."""
from __future__ import annotations

import contextlib
import errno
import shutil
from pathlib import Path


class UserError(Exception):
    """A problem with the user's settings, data, files or machine; the message says what and
    where, and what to do where that is known."""


class DataError(UserError, ValueError):
    """Input data that is missing, damaged or not in the expected layout."""


@contextlib.contextmanager
def writing(path: Path, needed: int, then: str = "run again", dest: Path | None = None):
    """Within: writing about `needed` bytes to `path` (to be renamed `dest`, if given). If that
    fails on a disk that lacks the space, the partial file is removed and a UserError says so;
    any other failure is left as it is (a permission error names its file already)."""
    path = Path(path)
    try:
        yield
    except (OSError, RuntimeError) as error:  # torch and numpy report ENOSPC without its errno
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free
        if getattr(error, "errno", None) != errno.ENOSPC and needed < free:
            raise
        raise UserError(f"the disk is full: writing {dest or path} needs about "
                        f"{needed / 2**20:.0f} MiB, {free / 2**20:.0f} MiB are free on its file "
                        f"system. Free some space and {then}") from error
