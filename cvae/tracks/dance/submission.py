"""The 2024 lab's submission CSV: one row per frame of every test sequence, in order, sequence by
sequence (frame 0, the given first frame, included, as the course's generator writes it).

    id,0,1,...,6143
    0,<6144 integers>

`id` counts rows from 0. The pixels are the frame (3, 32, 64) flattened channel by channel,
row by row, each `rint(x * 255)` of the prediction x in [0, 1] (round half to even, as
`np.rint`), so 0..255.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SHAPE = (3, 32, 64)
PIXELS = int(np.prod(SHAPE))  # 6144


def write_submission(path: Path, predictions: np.ndarray) -> int:
    """Write predictions (sequences, T, 3, 32, 64), already uint8 `rint(x * 255)` (as
    `cvae.samples.to_uint8` makes them), as the CSV; returns the row count."""
    if predictions.dtype != np.uint8 or predictions.shape[2:] != SHAPE:
        raise ValueError(f"predictions must be uint8 (sequences, T, {', '.join(map(str, SHAPE))}),"
                         f" got {predictions.dtype} {predictions.shape}")
    rows = predictions.reshape(-1, PIXELS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(",".join(["id", *map(str, range(PIXELS))]) + "\n")
        table = np.column_stack([np.arange(len(rows)), rows])
        np.savetxt(f, table, fmt="%d", delimiter=",")
    tmp.replace(path)  # a kill mid-write leaves no half file behind
    return len(rows)


def read_submission(path: Path, expected_rows: int | None = None) -> np.ndarray:
    """Read a submission back, checking its form: the header, integer pixels in 0..255, ids
    0..n-1 in order and, if given, the row count. Returns the frames (n, 3, 32, 64) uint8."""
    table = pd.read_csv(path)
    columns = ["id", *map(str, range(PIXELS))]
    if list(table.columns) != columns:
        raise ValueError(f"{path}: {len(table.columns)} columns; expected `id` then "
                         f"{PIXELS} pixel columns named 0..{PIXELS - 1}")
    if not all(pd.api.types.is_integer_dtype(t) for t in table.dtypes):
        raise ValueError(f"{path}: every value must be an integer")
    if not np.array_equal(table["id"].to_numpy(), np.arange(len(table))):
        raise ValueError(f"{path}: ids must count rows from 0")
    if expected_rows is not None and len(table) != expected_rows:
        raise ValueError(f"{path}: {len(table)} rows, expected {expected_rows} (one per frame "
                         "of every test sequence)")
    pixels = table[columns[1:]].to_numpy()
    if pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255:
        raise ValueError(f"{path}: pixel values outside 0..255")
    return pixels.astype(np.uint8).reshape(-1, *SHAPE)
