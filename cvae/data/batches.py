"""Random training windows, an epoch at a time, from wherever is fastest for the device.

- CPU: cut from the memory-mapped shards in this process (only the window's bytes are read).
- CUDA, and the split fits in a quarter of the free GPU memory: the whole split is copied to the
  GPU once as uint8 and windows are cut there with a gather, so no worker or host copy is in the
  hot path (`DeviceSplit`).
- CUDA otherwise: DataLoader workers cut windows from the shards into pinned memory and the copy
  to the GPU overlaps the step.

Every epoch's draws come from generators seeded by (seed, epoch, rank), so a run resumed from an
epoch checkpoint sees the same batches, and distributed ranks see different ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from cvae.data.shards import Split, draw_windows, window_steps
from cvae.runtime import seeded_generator

Batch = tuple[torch.Tensor, torch.Tensor]  # frames (B, L, C, H, W) uint8, conditions (B, L, c)


class DeviceSplit:
    """A whole split on one device: frames (N, T, C, H, W) uint8 and normalised conditions."""

    def __init__(self, split: Split, device: torch.device):
        everything = np.arange(len(split))
        frames, conds = split.windows(everything, np.zeros_like(everything), split.seq_len)
        self.frames, self.conds = frames.to(device), conds.to(device)

    def __len__(self) -> int:
        return len(self.frames)

    def random_windows(self, batch: int, length: int, generator: torch.Generator,
                       first_gap: int = 0) -> Batch:
        indices, starts, gaps = draw_windows(len(self), self.frames.shape[1], batch, length,
                                             first_gap, generator)
        steps = window_steps(starts, length, gaps)  # (B, L)
        return self.frames[indices[:, None], steps], self.conds[indices[:, None], steps]


class _WorkerWindows(torch.utils.data.IterableDataset):
    """An epoch of batches for DataLoader workers: worker w makes batches w, w + W, ... (the
    loader returns them in order), each worker with its own generator."""

    def __init__(self, shards_dir: Path, batch: int, length: int, first_gap: int, steps: int,
                 keys: tuple):
        super().__init__()
        self.shards_dir, self.batch, self.length, self.first_gap, self.steps, self.keys = (
            shards_dir, batch, length, first_gap, steps, keys)

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        split = Split(self.shards_dir, "train")  # opened here: memory maps do not pickle
        generator = seeded_generator(*self.keys, worker)
        for _ in range(worker, self.steps, workers):
            yield split.random_windows(self.batch, self.length, generator, self.first_gap)


class TrainBatches:
    """`epoch(e)` yields `steps` batches of `batch` random windows of `length` frames, on
    `device`, for one rank (with `first_gap`, each window's first frame up to that many frames
    before the rest: `draw_windows`). `source` picks where windows are cut: `auto` (as the
    module says), `shards` (memory maps, this process), `device` (`DeviceSplit`) or `workers`
    (DataLoader)."""

    def __init__(self, shards_dir: Path, batch: int, length: int, steps: int, seed: int,
                 device: torch.device, rank: int = 0, workers: int = 2, source: str = "auto",
                 first_gap: int = 0):
        self.shards_dir, self.batch, self.length, self.steps = shards_dir, batch, length, steps
        self.first_gap = first_gap
        self.seed, self.device, self.rank, self.workers = seed, device, rank, workers
        split = Split(shards_dir, "train")
        if source == "auto" and device.type == "cuda":
            size = sum(f.nbytes + c.nbytes for f, c in zip(split.frames, split.conditions))
            source = "device" if fits_on_device(size, device) else "workers"
        # What cuts the windows: the split in this process, on the device, or (None) the workers.
        self.source = split
        if source == "device":
            self.source = DeviceSplit(split, device)
        elif source == "workers":
            self.source = None

    @property
    def where(self) -> str:
        """Where windows are cut, for the log."""
        if isinstance(self.source, DeviceSplit):
            return f"on {self.device} ({len(self.source)} sequences resident)"
        if self.source is None:
            return f"by {self.workers} DataLoader workers"
        return "from the memory-mapped shards"

    def epoch(self, epoch: int) -> Iterator[Batch]:
        keys = (self.seed, epoch, self.rank)
        if self.source is None:
            yield from self._from_workers(keys)
            return
        on_device = isinstance(self.source, DeviceSplit)
        generator = seeded_generator(*keys, device=self.device if on_device else "cpu")
        for _ in range(self.steps):
            frames, conds = self.source.random_windows(self.batch, self.length, generator,
                                                       self.first_gap)
            yield frames.to(self.device), conds.to(self.device)

    def _from_workers(self, keys: tuple) -> Iterator[Batch]:
        loader = torch.utils.data.DataLoader(
            _WorkerWindows(self.shards_dir, self.batch, self.length, self.first_gap, self.steps,
                           keys),
            batch_size=None, num_workers=self.workers, pin_memory=self.device.type == "cuda")
        for frames, conds in loader:
            yield (frames.to(self.device, non_blocking=True),
                   conds.to(self.device, non_blocking=True))


def fits_on_device(size: int, device: torch.device, share: float = 0.25) -> bool:
    """Whether `size` bytes take at most `share` of the device's free memory, leaving the rest
    to the model."""
    free, _ = torch.cuda.mem_get_info(device)
    return size <= share * free
