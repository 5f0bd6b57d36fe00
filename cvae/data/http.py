"""Download one large file over HTTP: streamed, resumable, size- and checksum-checked.

The bytes go to `<dest>.part` and only a complete, verified file is renamed to `dest`, so an
interrupted download never looks finished. Re-running resumes the `.part` with an HTTP Range
request; a server that ignores Range gets the file from the start again.

A file that fails its check is never deleted: `dest` may be the user's own copy, and a complete
`.part` of the wrong checksum may be right and the expected checksum wrong (a typo would otherwise
cost a whole download). The message says which file and what to do.
"""
from __future__ import annotations

import os
from pathlib import Path

import requests
from tqdm import tqdm

from cvae.data.files import file_sha256
from cvae.errors import UserError

CHUNK = 1 << 16  # what an interrupted read can lose
# A dropped or stalled connection: worth resuming. Anything else is an answer to report.
RETRYABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class DownloadError(UserError, RuntimeError):
    """The host is unreachable or answered something other than the expected file."""


def fetch(url: str, dest: Path, size: int, sha256: str = "", attempts: int = 3,
          timeout: float = 30.0) -> Path:
    """Make `dest` the `size`-byte file at `url`; a complete `dest` is only verified."""
    dest = Path(dest)
    if dest.exists():
        _check(dest, size, sha256, "if data.bair is wrong, correct it; to download the file again, "
               "move this one away")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _resume(url, part, size, timeout)
            break
        except RETRYABLE as error:
            if attempt == attempts:
                raise DownloadError(
                    f"cannot download {url}: {error}. Re-run to resume from "
                    f"{part.stat().st_size if part.exists() else 0} bytes, or download the file "
                    f"yourself and put it at {dest}"
                ) from error
        except requests.RequestException as error:  # a redirect loop, a bad URL...: no retry
            raise DownloadError(f"cannot download {url} (data.bair.url): "
                                f"{str(error).rstrip('.')}. Check the URL, or download the "
                                f"file yourself and put it at {dest}") from None
    _check(part, size, sha256, "if data.bair.sha256 is wrong, correct it and re-run; if the "
           "download is damaged, delete the file and re-run")
    os.replace(part, dest)
    return dest


def _resume(url: str, part: Path, size: int, timeout: float) -> None:
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()  # our download of a longer file (another data.bair.bytes): start again
        have = 0
    if have == size:
        return
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if response.status_code == 206:
            mode = "ab"
        elif response.status_code == 200:
            have, mode = 0, "wb"  # the server ignored Range: start over
        else:
            raise DownloadError(f"{url} answered HTTP {response.status_code} {response.reason}")
        offered = response.headers.get("Content-Length")
        if offered is not None and have + int(offered) != size:
            raise DownloadError(
                f"{url} offers {have + int(offered)} bytes, expected {size} (data.bair.bytes): "
                "not the file this pipeline expects"
            )
        with open(part, mode) as f, tqdm(total=size, initial=have, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=part.name) as bar:
            for block in response.iter_content(CHUNK):
                f.write(block)
                bar.update(len(block))
    got = part.stat().st_size
    if got < size:
        raise requests.ConnectionError(f"the connection closed after {got} of {size} bytes")


def _check(path: Path, size: int, sha256: str, what_to_do: str) -> None:
    """Stop, leaving `path` as it is, unless it has `size` bytes and (if given) that sha256."""
    got = path.stat().st_size
    if got != size:
        raise DownloadError(f"{path} has {got} bytes, not data.bair.bytes = {size}. Left as it "
                            f"is: {what_to_do}")
    if sha256 and (digest := file_sha256(path)) != sha256.lower():
        raise DownloadError(f"{path}: sha256 {digest} is not data.bair.sha256 = {sha256}. Left "
                            f"as it is: {what_to_do}")
