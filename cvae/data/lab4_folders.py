"""The 2024 lab's dance folders: read them (data.source: lab4-folders), and write them (sim-dance
renders into this layout, so one reader serves both sources).

    <root>/train/train_img/<n>.png     one numbered run of frames, cut into clips of train_vi_len
    <root>/train/train_label/<n>.png   the pose label image of each frame, same numbers
    <root>/val/val_img/<n>.png         a run of frames, cut into sequences of val_vi_len
    <root>/val/val_label/<n>.png
    <root>/test/test_img/<i>/<n>.png   sequence i: its first frame only (the course), or every
                                       frame (sim-dance: then its predictions can be scored)
    <root>/test/test_label/<i>/<n>.png every label of sequence i

Files and sequence folders are ordered by the number in their name (`2.png` before `10.png`).
Every image is 64 (W) x 32 (H) RGB; anything else stops with the file's name (`LayoutError`).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from cvae.data.files import read_rgb
from cvae.errors import DataError

HEIGHT, WIDTH = 32, 64
SPLITS = ("train", "val", "test")
SEE = "see cvae/data/lab4_folders.py for the layout"


class LayoutError(DataError):
    """The dance folders, or one of their files, are not in the course's layout."""


def numbered(paths) -> list[Path]:
    """Paths sorted by the last number in their name (files without one stop with an error)."""
    def key(path: Path) -> int:
        digits = re.findall(r"\d+", path.stem)
        if not digits:
            raise LayoutError(f"{path}: no number in the name to order it by: rename it "
                              "(<n>.png) or move it out")
        return int(digits[-1])
    return sorted(paths, key=key)


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise LayoutError(f"{folder} is missing ({SEE})")
    files = numbered(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise LayoutError(f"{folder} holds no images (.png, .jpg): {SEE}")
    return files


def load_images(files: list[Path]) -> np.ndarray:
    """(n, H, W, 3) uint8; an image of another size, or one that cannot be read, names its
    file."""
    out = np.empty((len(files), HEIGHT, WIDTH, 3), np.uint8)
    for k, file in enumerate(files):
        out[k] = read_rgb(file, WIDTH, HEIGHT)
    return out


def split_pairs(root: Path, split: str) -> list[tuple[list[Path], list[Path]]]:
    """(image files, label files) of every sequence of `split`, checked to correspond: a run of
    frames for train and val (cut into sequences later), one pair per folder for test."""
    root = Path(root) / split
    if split != "test":
        runs = [(images_in(root / f"{split}_img"), images_in(root / f"{split}_label"))]
    else:
        img_root, label_root = root / "test_img", root / "test_label"
        for folder in (img_root, label_root):
            if not folder.is_dir():
                raise LayoutError(f"{folder} is missing ({SEE})")
        names = [p.name for p in numbered(p for p in label_root.iterdir() if p.is_dir())]
        if not names:
            raise LayoutError(f"{label_root} holds no sequence folders (<i>/): {SEE}")
        unlabelled = sorted({p.name for p in img_root.iterdir() if p.is_dir()} - set(names))
        if unlabelled:
            name = unlabelled[0]
            raise LayoutError(f"{img_root / name} has no labels ({label_root / name} is "
                              "missing): add them, or move the folder out")
        runs = [(images_in(img_root / name), images_in(label_root / name)) for name in names]
    for images, labels in runs:
        folder = images[0].parent
        if split != "test" and len(images) != len(labels):
            raise LayoutError(f"{folder}: {len(images)} images but {len(labels)} labels in "
                              f"{labels[0].parent}: every frame needs its label, same number")
        if split == "test" and len(images) not in (1, len(labels)):
            raise LayoutError(f"{folder}: {len(images)} images for {len(labels)} labels in "
                              f"{labels[0].parent} (expected the first frame only, or all)")
    return runs


def read_sequences(root: Path, train_vi_len: int, val_vi_len: int):
    """Yield (split, frames (T, H, W, 3), labels (T', H, W, 3)) uint8 for every sequence. Train
    and val runs are cut into consecutive sequences of their length (a remainder is dropped);
    test sequences keep theirs, with T = 1 when only the first frame is given."""
    lengths = {"train": train_vi_len, "val": val_vi_len}
    runs = {split: split_pairs(root, split) for split in SPLITS}  # check every folder first
    for split in SPLITS:
        for images, labels in runs[split]:
            if split == "test":
                yield split, load_images(images), load_images(labels)
                continue
            n = lengths[split]
            if len(images) < n:
                key = "train_vi_len" if split == "train" else "val_vi_len"
                raise LayoutError(f"{images[0].parent}: {len(images)} frames, fewer than one "
                                  f"sequence of data.dance.{key} = {n}: lower it, or add frames")
            for start in range(0, len(images) - n + 1, n):
                yield (split, load_images(images[start : start + n]),
                       load_images(labels[start : start + n]))


def write_sequences(root: Path, split: str, sequences, first_index: int = 0) -> int:
    """Write (frames, labels) pairs of `split` in the layout; train/val continue one numbered
    run from `first_index` (returned: the next number), test gets one folder per sequence
    starting at folder `first_index`."""
    root = Path(root) / split
    for frames, labels in sequences:
        if split == "test":
            img_dir, label_dir = root / "test_img" / str(first_index), root / "test_label" / str(first_index)
            numbers, first_index = range(len(frames)), first_index + 1
        else:
            img_dir, label_dir = root / f"{split}_img", root / f"{split}_label"
            numbers, first_index = range(first_index, first_index + len(frames)), first_index + len(frames)
        img_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for n, frame, label in zip(numbers, frames, labels):
            Image.fromarray(frame).save(img_dir / f"{n}.png")
            Image.fromarray(label).save(label_dir / f"{n}.png")
    return first_index
