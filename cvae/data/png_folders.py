"""The course's pre-converted BAIR layout:

    <root>/{train,validate,test}/<traj>/<k>/{0..29}.png
                                            actions.csv               30 rows of 4 values
                                            endeffector_positions.csv 30 rows of 3 values

Sequences are read in natural order (`traj_2` before `traj_10`, `9` before `10`). Anything that
is not as expected stops with the folder or file at fault.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from cvae.data.files import read_rgb
from cvae.errors import DataError

SPLIT_FOLDERS = {"train": "train", "val": "validate", "test": "test"}


class LayoutError(DataError):
    """The folder tree or one of its files is not in the course's layout."""


def natural_key(path: Path):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def sequence_dirs(root: Path, split: str) -> list[Path]:
    folder = Path(root) / SPLIT_FOLDERS[split]
    if not folder.is_dir():
        raise LayoutError(f"{folder} is missing: expected <root>/{{train,validate,test}}/<traj>/<k>/")
    dirs = [seq for traj in sorted(folder.iterdir(), key=natural_key) if traj.is_dir()
            for seq in sorted(traj.iterdir(), key=natural_key) if seq.is_dir()]
    if not dirs:
        raise LayoutError(f"{folder} has no <traj>/<k>/ sequence folders")
    return dirs


def read_sequence(folder: Path, seq_len: int, image_size: int = 64):
    """frames (T, H, W, 3) uint8, actions (T, 4), positions (T, 3) float32 of one folder."""
    frames = np.empty((seq_len, image_size, image_size, 3), np.uint8)
    for t in range(seq_len):
        path = folder / f"{t}.png"
        if not path.is_file():
            raise LayoutError(_missing_frame(folder, t, seq_len))
        frames[t] = read_rgb(path, image_size, image_size)
    actions = _read_csv(folder / "actions.csv", seq_len, 4)
    positions = _read_csv(folder / "endeffector_positions.csv", seq_len, 3)
    return frames, actions, positions


def _missing_frame(folder: Path, t: int, seq_len: int) -> str:
    """Why frame `t` is missing: the sequences are shorter than data.seq_len, or one is."""
    if t > 0 and not any((folder / f"{k}.png").is_file() for k in range(t, seq_len)):
        return (f"data.seq_len is {seq_len}, but {folder} has frames 0..{t - 1}.png only: set "
                f"data.seq_len to {t} or less")
    return f"{folder / f'{t}.png'} is missing (expected frames 0..{seq_len - 1}.png)"


def _read_csv(path: Path, rows: int, columns: int) -> np.ndarray:
    if not path.is_file():
        raise LayoutError(f"{path} is missing")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as error:
        raise LayoutError(f"{path}: not a table of numbers ({error})") from error
    if table.shape[1] != columns or table.shape[0] < rows:
        raise LayoutError(f"{path} is {table.shape[0]}x{table.shape[1]}, "
                          f"expected {rows} rows of {columns} values")
    table = table[:rows]
    if not np.isfinite(table).all():  # one NaN would make every training loss NaN
        row, column = np.argwhere(~np.isfinite(table))[0]
        raise LayoutError(f"{path}: row {row + 1} (step {row}), column {column + 1} is "
                          f"{table[row, column]}: every value must be a finite number")
    return table


def write_sequence(folder: Path, frames, actions, positions) -> None:
    """One sequence in the course's layout: the inverse of `read_sequence`."""
    folder.mkdir(parents=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t}.png")
    np.savetxt(folder / "actions.csv", actions, delimiter=",", fmt="%.9g")
    np.savetxt(folder / "endeffector_positions.csv", positions, delimiter=",", fmt="%.9g")


def read_sequences(root: Path, seq_len: int):
    """Yield (split, (frames, actions, positions)) for every sequence, split by split."""
    for split in SPLIT_FOLDERS:
        for folder in sequence_dirs(root, split):
            yield split, read_sequence(folder, seq_len)
