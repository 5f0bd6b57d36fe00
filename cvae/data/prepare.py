"""Stage `prepare`: the sequences raw/ points to -> tensor shards + meta.json (the format is in
`cvae.data.shards`)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cvae.data.files import file_sha256, meta_checksum
from cvae.data.raw import SPLITS, read_manifest, read_sequences
from cvae.errors import DataError, writing

CONDITION_NAMES = ["action_dx", "action_dy", "action_dz", "gripper", "ee_x", "ee_y", "ee_z"]


def prepare(raw_dir: Path, out: Path, shard_size: int, seq_len: int,
            skip_bad_records: bool = False) -> dict:
    """Convert the sequences that `raw_dir` points to into shards in `out`.

    Writes to a temporary folder renamed at the end, and removes it on any error, so `out` is
    either complete or untouched."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        meta = _write_shards(raw_dir, tmp, shard_size, seq_len, skip_bad_records)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return meta


def _write_shards(raw_dir: Path, out: Path, shard_size: int, seq_len: int,
                  skip_bad_records: bool) -> dict:
    writers = {split: ShardWriter(out / split, shard_size) for split in SPLITS}
    losses = {}  # file -> bair.Loss: what skip_bad_records went on without
    source = read_manifest(raw_dir)
    sequences = read_sequences(raw_dir, seq_len, skip_bad_records, losses)
    for split, frames, conditions in tqdm(sequences, desc="prepare", unit="seq"):
        writers[split].add(frames, conditions)
    for split, writer in writers.items():
        writer.close()
        if writer.count == 0:
            where = os.path.normpath(Path(raw_dir) / source["path"])
            raise DataError(f"{where}: the {split} split has no readable sequences"
                            + (f" (lost: {_lost_summary(losses)})" if losses else ""))
    train = writers["train"]
    meta = {
        "track": "dance" if train.image_conditions else "robot",
        "source": source,
        "counts": {split: w.count for split, w in writers.items()},
        "bad_records": {split: sum(loss.bad_records for loss in losses.values()
                                   if loss.split == split) for split in SPLITS},
        # Sequences that files' names state but the shards do not hold, by split and file.
        "lost": {split: {name: {"sequences": loss.sequences, "damage": loss.damage}
                         for name, loss in losses.items() if loss.split == split}
                 for split in SPLITS},
        "frame_shape": [train.lengths[0], 3, *train.frame_size],
        "frame_lengths": {split: w.lengths[0] for split, w in writers.items()},
        "condition_lengths": {split: w.lengths[1] for split, w in writers.items()},
        "shards": {split: w.files for split, w in writers.items()},
    }
    if train.image_conditions:
        meta["condition_names"] = ["label_image"]
    else:
        mean, std = _condition_stats(out / "train")
        meta.update(condition_names=CONDITION_NAMES, condition_mean=mean.tolist(),
                    condition_std=std.tolist())
    meta["checksum"] = meta_checksum(meta)  # read_meta notices any later edit
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    if losses:
        print(f"data.skip_bad_records: went on without {_lost_summary(losses)} "
              "(shards/meta.json: lost)")
    return meta


def _lost_summary(losses: dict) -> str:
    """Per file: `3 sequence(s) of test (x.tar:.../traj_0_to_7.tfrecords: <damage>)`."""
    return "; ".join(f"{loss.sequences} sequence(s) of {loss.split} ({name}: "
                     f"{', '.join(loss.damage)})" for name, loss in losses.items())


class ShardWriter:
    """Collects one split's sequences and writes them `shard_size` at a time. Every sequence
    of a split has the same lengths (frames, conditions): a shard is one array."""

    def __init__(self, folder: Path, shard_size: int):
        self.folder, self.shard_size = folder, shard_size
        self.folder.mkdir(parents=True)
        self.frames, self.conditions, self.files, self.count = [], [], [], 0
        self.frame_size = self.lengths = None
        self.image_conditions = False

    def add(self, frames: np.ndarray, conditions: np.ndarray) -> None:
        """frames (T, H, W, 3) uint8; conditions (T, 7) vectors or (T', H, W, 3) label images."""
        lengths = (len(frames), len(conditions))
        if self.lengths not in (None, lengths):
            raise DataError(f"{self.folder.name}: a sequence of {lengths[0]} frames and "
                             f"{lengths[1]} conditions among ones of {self.lengths[0]} and "
                             f"{self.lengths[1]}: every sequence of a split must match")
        self.lengths = lengths
        self.frames.append(frames.transpose(0, 3, 1, 2))  # channels first, as torch wants
        self.image_conditions = conditions.ndim == 4
        if self.image_conditions:
            self.conditions.append(conditions.transpose(0, 3, 1, 2))
        else:
            self.conditions.append(conditions.astype(np.float32))
        self.frame_size = list(frames.shape[1:3])
        self.count += 1
        if len(self.frames) == self.shard_size:
            self._flush()

    def close(self) -> None:
        if self.frames:
            self._flush()

    def _flush(self) -> None:
        index = len(self.files)
        names = (f"frames-{index:05d}.npy", f"conditions-{index:05d}.npy")
        for name, arrays in zip(names, (self.frames, self.conditions)):
            array = np.stack(arrays)
            with writing(self.folder / name, array.nbytes):
                np.save(self.folder / name, array)
        self.files.append({
            "frames": names[0], "conditions": names[1], "count": len(self.frames),
            "sha256": {name: file_sha256(self.folder / name) for name in names},
        })
        self.frames, self.conditions = [], []


def _condition_stats(train_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over all train steps, for normalising conditions.
    A constant dimension (e.g. a gripper never toggled) gets std 1 instead of 0."""
    conds = np.concatenate([np.load(p).reshape(-1, 7) for p in sorted(train_dir.glob("conditions-*"))])
    mean, std = conds.mean(0, dtype=np.float64), conds.std(0, dtype=np.float64)
    return mean, np.where(std > 1e-8, std, 1.0)
