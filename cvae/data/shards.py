"""Tensor shards: the only form of the data that training and evaluation read.

`shards/<split>/frames-NNNNN.npy`      (n, T, 3, H, W) uint8, channels first as torch wants them
`shards/<split>/conditions-NNNNN.npy`  robot track: (n, T, 7) float32, action (4) then
                                       end-effector position (3); dance track: (n, T, 3, H, W)
                                       uint8 pose label images
`shards/meta.json`                     track, counts, shapes, condition mean/std (robot, train
                                       split), the sha256 of every shard, and its own (`checksum`)

On the dance track the splits differ in length (training clips, long validation and test
sequences), and a test split of the course's folders has only each sequence's first frame:
`frame_lengths` and `condition_lengths` in meta.json say so per split.

Plain `.npy` files: self-describing and memory-mapped with `np.load(mmap_mode="r")`, so a batch of
windows touches only the bytes it needs and nothing is decoded while training. The prepare stage
writes them (`cvae.data.prepare`); this module reads them. A stage checks the splits it reads
against meta.json's sha256s first (`verify_shards`), so damaged shards stop it with their name.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cvae.data.files import file_sha256, meta_checksum
from cvae.errors import DataError

REBUILD = "restore them: dvc repro (it checks the shards out again or re-runs prepare)"


def read_meta(shards_dir: Path) -> dict:
    """meta.json, checked against its own checksum (where prepare wrote one)."""
    path = Path(shards_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the prepare stage first")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}): {REBUILD}") from None
    if not isinstance(meta, dict) or "shards" not in meta:
        raise DataError(f"{path} is not a shards description (no 'shards'): {REBUILD}")
    if "checksum" in meta and meta["checksum"] != meta_checksum(meta):
        raise DataError(f"{path} was changed after prepare wrote it (its checksum does not "
                        f"match): {REBUILD}")
    return meta


def verify_shards(shards_dir: Path, meta: dict, splits) -> None:
    """Every shard file of `splits` against the sha256 that meta.json holds for it, on all
    cores: a damaged, truncated or replaced shard stops here with its name, not later with a
    different number (benchmarks/verify_shards.py measures the cost)."""
    shards_dir = Path(shards_dir)
    expected = {shards_dir / split / name: digest for split in splits
                for entry in meta["shards"][split] for name, digest in entry["sha256"].items()}
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # hashlib lets go of the GIL
        found = dict(zip(expected, pool.map(_sha256_if_there, expected)))
    for file, digest in expected.items():
        if found[file] != digest:
            what = "is missing" if found[file] is None else (
                f"is damaged or was changed (its sha256 is not the one {shards_dir / 'meta.json'} "
                "recorded)")
            raise DataError(f"{file} {what}: {REBUILD}")


def _sha256_if_there(path: Path) -> str | None:
    return file_sha256(path) if path.is_file() else None


class Split:
    """One split's sequences, memory-mapped. Indexing cuts windows without loading sequences."""

    def __init__(self, shards_dir: Path, split: str):
        meta = read_meta(shards_dir)
        folder = Path(shards_dir) / split
        self.frames = [np.load(folder / f["frames"], mmap_mode="r") for f in meta["shards"][split]]
        self.conditions = [np.load(folder / f["conditions"], mmap_mode="r") for f in meta["shards"][split]]
        self.label_images = meta.get("track") == "dance"
        if not self.label_images:
            self.mean = torch.tensor(meta["condition_mean"], dtype=torch.float32)
            self.std = torch.tensor(meta["condition_std"], dtype=torch.float32)
        sizes = [len(f) for f in self.frames]
        self.offsets = np.cumsum([0] + sizes)
        self.seq_len = self.frames[0].shape[1] if sizes else 0
        # The dance track's course test split holds first frames only, beside all the labels.
        self.condition_len = self.conditions[0].shape[1] if sizes else 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def windows(self, indices, starts, length: int, gaps=None) -> tuple[torch.Tensor, ...]:
        """Frames (B, L, 3, H, W) uint8 and conditions of the windows `[start, start + length)`
        of sequences `indices`: normalised vectors (B, L, 7), or label images (B, L, 3, H, W)
        uint8. (Where a split stores fewer frames than conditions, only those come back.) With
        `gaps`, window i's frames after its first are `gaps[i]` frames further on
        (`window_steps`)."""
        frames, conds = [], []
        steps = None if gaps is None else window_steps(torch.as_tensor(starts), length,
                                                       torch.as_tensor(gaps)).numpy()
        for row, (index, start) in enumerate(zip(np.asarray(indices), np.asarray(starts))):
            shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
            local = int(index - self.offsets[shard])
            # A slice reads one run of bytes; a window with a gap reads its frames one by one.
            at = slice(start, start + length) if steps is None else steps[row]
            frames.append(self.frames[shard][local, at])
            conds.append(self.conditions[shard][local, at])
        conds = torch.from_numpy(np.stack(conds))
        if not self.label_images:
            conds = (conds - self.mean) / self.std
        return torch.from_numpy(np.stack(frames)), conds

    def random_windows(self, batch: int, length: int, generator: torch.Generator,
                       first_gap: int = 0):
        indices, starts, gaps = draw_windows(len(self), self.seq_len, batch, length, first_gap,
                                             generator)
        return self.windows(indices, starts, length, gaps)


def draw_windows(count: int, seq_len: int, batch: int, length: int, first_gap: int,
                 generator: torch.Generator):
    """`batch` random windows of `length` frames in `count` sequences of `seq_len`: (sequence
    indices, starts, gaps), each (batch,), on the generator's device. With `first_gap`, each
    window's frames after its first start a further 0..first_gap frames on (uniform, per
    window; `gaps`, else None): the dance track's first frame, far from the frames it predicts,
    as in a long rollout."""
    device = generator.device
    indices = torch.randint(count, (batch,), generator=generator, device=device)
    if not first_gap:
        starts = torch.randint(seq_len - length + 1, (batch,), generator=generator, device=device)
        return indices, starts, None
    gaps = torch.randint(first_gap + 1, (batch,), generator=generator, device=device)
    room = seq_len - length - gaps + 1  # the starts that keep the window inside its sequence
    starts = (torch.rand(batch, generator=generator, device=device) * room).long()
    return indices, starts, gaps


def window_steps(starts: torch.Tensor, length: int, gaps: torch.Tensor | None = None):
    """The frame numbers (B, L) of windows from `draw_windows`."""
    steps = starts[:, None] + torch.arange(length, device=starts.device)
    if gaps is not None:
        steps[:, 1:] += gaps[:, None]
    return steps
