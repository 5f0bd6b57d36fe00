"""Reading files that the user or an earlier stage supplied: checksums, and images as 8-bit RGB.

Both name the file at fault in their errors: a stage that stops on one says which file it was.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from cvae.errors import DataError

CHUNK = 1 << 20
# Pillow's modes of one channel of 16 (or 32) bits: a 16-bit grey PNG opens as one of these
WIDE_GREY = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=f"sha256 {path.name}", leave=False,
                                     disable=size < 1 << 30) as bar:  # a bar only where it waits
        while block := f.read(CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def meta_checksum(meta: dict) -> str:
    """The sha256 of a JSON description without its own `checksum` entry (shards/meta.json)."""
    rest = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


class ImageError(DataError):
    """An image that cannot be read, or not as the layout expects."""


def read_rgb(path: Path, width: int, height: int) -> np.ndarray:
    """The image at `path` as (height, width, 3) uint8 RGB.

    Grey, palette and 16-bit images are converted without loss of what 8 bits can hold (a
    16-bit channel keeps its high byte, as Pillow does for 16-bit RGB); an alpha channel is
    dropped where every pixel is opaque, and an image with transparent pixels is refused (its
    colours there are not defined). Anything unreadable stops with the file's name."""
    try:
        with Image.open(path) as image:
            if image.size != (width, height):
                raise ImageError(f"{path}: {image.size[0]} x {image.size[1]} pixels (W x H), "
                                 f"expected {width} x {height}")
            return _as_rgb(image, path)
    except (ImageError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # each names the file and says what is wrong
    except UnidentifiedImageError as error:
        raise ImageError(f"{path}: not an image Pillow can read ({error}): replace or remove "
                         "it") from None
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's ways of a damaged file
        raise ImageError(f"{path}: the image is damaged or cut short ({error}): replace or "
                         "remove it") from None


def _as_rgb(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode in WIDE_GREY:
        values = np.asarray(image).astype(np.uint32)
        if values.max(initial=0) > 0xFFFF:
            raise ImageError(f"{path}: {image.mode} values above 16 bits: save it as 8-bit RGB")
        grey = (values >> 8).astype(np.uint8)  # (H, W): the high byte
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode == "F":
        raise ImageError(f"{path}: floating-point pixels: save it as 8-bit RGB")
    if "A" in image.mode or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"))
        if (rgba[:, :, 3] < 255).any():
            raise ImageError(f"{path}: has transparent pixels ({image.mode}): save it without "
                             "transparency (8-bit RGB)")
        return np.ascontiguousarray(rgba[:, :, :3])
    return np.asarray(image.convert("RGB"))
