"""Tensor shards: the only form of the data that training and evaluation read.

`shards/<split>/frames-NNNNN.npy`      (n, T, 3, H, W) uint8, channels first as torch wants them
`shards/<split>/conditions-NNNNN.npy`  (n, T, 7) float32: action (4) then end-effector position (3)
`shards/meta.json`                     counts, shapes, condition mean/std (train split), sha256s

Plain `.npy` files: self-describing and memory-mapped with `np.load(mmap_mode="r")`, so a batch of
windows touches only the bytes it needs and nothing is decoded while training.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cvae.data.raw import SPLITS, read_split

CONDITION_NAMES = ["action_dx", "action_dy", "action_dz", "gripper", "ee_x", "ee_y", "ee_z"]


def prepare(raw_dir: Path, out: Path, shard_size: int, source: str) -> dict:
    """Convert `raw_dir` into shards in `out`. Writes to a temporary folder first, so an
    interrupted run leaves no half-written shard folder behind."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    splits = {split: _write_split(raw_dir, split, tmp / split, shard_size) for split in SPLITS}
    mean, std = _condition_stats(tmp / "train")
    meta = {
        "source": source,
        "counts": {split: info["count"] for split, info in splits.items()},
        "frame_shape": splits["train"]["frame_shape"],
        "condition_names": CONDITION_NAMES,
        "condition_mean": mean.tolist(),
        "condition_std": std.tolist(),
        "shards": {split: info["files"] for split, info in splits.items()},
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return meta


def _write_split(raw_dir: Path, split: str, out: Path, shard_size: int) -> dict:
    out.mkdir(parents=True)
    files, frames_buf, conds_buf, count, frame_shape = [], [], [], 0, None

    def flush():
        frames = np.concatenate(frames_buf)
        conds = np.concatenate(conds_buf)
        index = len(files)
        names = (f"frames-{index:05d}.npy", f"conditions-{index:05d}.npy")
        np.save(out / names[0], frames)
        np.save(out / names[1], conds)
        files.append({
            "frames": names[0], "conditions": names[1], "count": len(frames),
            "sha256": {name: _sha256(out / name) for name in names},
        })
        frames_buf.clear()
        conds_buf.clear()

    for frames, actions, positions in tqdm(read_split(raw_dir, split), desc=f"prepare {split}"):
        frames = np.ascontiguousarray(frames.transpose(0, 1, 4, 2, 3))  # (N, T, 3, H, W)
        conds = np.concatenate([actions, positions], axis=-1).astype(np.float32)  # (N, T, 7)
        frame_shape = list(frames.shape[1:])
        for i in range(len(frames)):  # sequence by sequence, so shards have exact sizes
            frames_buf.append(frames[i : i + 1])
            conds_buf.append(conds[i : i + 1])
            count += 1
            if len(frames_buf) == shard_size:
                flush()
    if frames_buf:
        flush()
    return {"count": count, "files": files, "frame_shape": frame_shape}


def _condition_stats(train_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over all train steps, for normalising conditions.
    A constant dimension (e.g. a gripper never toggled) gets std 1 instead of 0."""
    conds = np.concatenate([np.load(p).reshape(-1, 7) for p in sorted(train_dir.glob("conditions-*"))])
    mean, std = conds.mean(0, dtype=np.float64), conds.std(0, dtype=np.float64)
    return mean, np.where(std > 1e-8, std, 1.0)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_meta(shards_dir: Path) -> dict:
    path = Path(shards_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the prepare stage first")
    return json.loads(path.read_text())


class Split:
    """One split's sequences, memory-mapped. Indexing cuts windows without loading sequences."""

    def __init__(self, shards_dir: Path, split: str):
        meta = read_meta(shards_dir)
        folder = Path(shards_dir) / split
        self.frames = [np.load(folder / f["frames"], mmap_mode="r") for f in meta["shards"][split]]
        self.conditions = [np.load(folder / f["conditions"], mmap_mode="r") for f in meta["shards"][split]]
        self.mean = torch.tensor(meta["condition_mean"], dtype=torch.float32)
        self.std = torch.tensor(meta["condition_std"], dtype=torch.float32)
        sizes = [len(f) for f in self.frames]
        self.offsets = np.cumsum([0] + sizes)
        self.seq_len = self.frames[0].shape[1] if sizes else 0

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def windows(self, indices, starts, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames (B, L, 3, H, W) uint8 and normalised conditions (B, L, 7) of the windows
        `[start, start + length)` of sequences `indices`."""
        frames, conds = [], []
        for index, start in zip(np.asarray(indices), np.asarray(starts)):
            shard = int(np.searchsorted(self.offsets, index, side="right")) - 1
            local = int(index - self.offsets[shard])
            frames.append(self.frames[shard][local, start : start + length])
            conds.append(self.conditions[shard][local, start : start + length])
        conds = (torch.from_numpy(np.stack(conds)) - self.mean) / self.std
        return torch.from_numpy(np.stack(frames)), conds

    def random_windows(self, batch: int, length: int, generator: torch.Generator):
        indices = torch.randint(len(self), (batch,), generator=generator)
        starts = torch.randint(self.seq_len - length + 1, (batch,), generator=generator)
        return self.windows(indices, starts, length)
