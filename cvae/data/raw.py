"""The raw dataset: what the `download` stage writes and `prepare` reads.

`raw/<split>/chunk-NNNN.npz`, each holding a few sequences in BAIR's layout:
  frames    (N, T, H, W, 3) uint8
  actions   (N, T, 4) float32
  positions (N, T, 3) float32
  seeds     (N,) int64, the generator seed of each sequence
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cvae.config import DataConfig

SPLITS = ("train", "val", "test")
CHUNK = 8  # sequences per chunk file: small enough to keep both cores busy to the end


def sequence_seed(base_seed: int, split: str, index: int) -> int:
    """Independent, reproducible seed of sequence `index` of `split`."""
    state = np.random.SeedSequence([base_seed, SPLITS.index(split), index]).generate_state(1)
    return int(state[0])


def download(cfg: DataConfig, out: Path, sample_dir: Path) -> None:
    """Fill `out` with the raw dataset chosen by `cfg.source`."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    if cfg.source == "sample":
        copy_sample(sample_dir, out)
    else:
        counts = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
        generate_sim_push(cfg, counts, out)


def copy_sample(sample_dir: Path, out: Path) -> None:
    for split in SPLITS:
        chunks = sorted((Path(sample_dir) / split).glob("chunk-*.npz"))
        if not chunks:
            raise FileNotFoundError(f"the committed sample has no {sample_dir}/{split}/chunk-*.npz")
        (out / split).mkdir(parents=True)
        for chunk in chunks:
            shutil.copy2(chunk, out / split / chunk.name)


def generate_sim_push(cfg: DataConfig, counts: dict[str, int], out: Path) -> None:
    """Render every split with pybullet, one chunk of sequences per task, on all cores."""
    tasks = [
        (split, start, min(CHUNK, count - start), cfg.seed, cfg.seq_len, cfg.image_size, out)
        for split, count in counts.items()
        for start in range(0, count, CHUNK)
    ]
    for split in counts:
        (out / split).mkdir(parents=True, exist_ok=True)
    workers = cfg.workers or os.cpu_count() or 1
    total = sum(counts.values())
    with ProcessPoolExecutor(workers) as pool, tqdm(total=total, desc="sim-push", unit="seq") as bar:
        for written in pool.map(_write_chunk, tasks):
            bar.update(written)


def _write_chunk(task) -> int:
    from cvae.data.sim_push import generate_sequence  # imported in the worker: pybullet is heavy

    split, start, count, base_seed, seq_len, image_size, out = task
    seeds = [sequence_seed(base_seed, split, start + i) for i in range(count)]
    sequences = [generate_sequence(seed, seq_len, image_size) for seed in seeds]
    arrays = {key: np.stack([s[key] for s in sequences]) for key in sequences[0]}
    save_npz_atomic(out / split / f"chunk-{start // CHUNK:04d}.npz", seeds=np.array(seeds), **arrays)
    return count


def save_npz_atomic(path: Path, **arrays) -> None:
    """Write then rename, so an interrupted run never leaves a truncated file under its name."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def read_split(raw_dir: Path, split: str):
    """Yield (frames, actions, positions) chunk by chunk, in order."""
    chunks = sorted((Path(raw_dir) / split).glob("chunk-*.npz"))
    if not chunks:
        raise FileNotFoundError(f"no raw chunks in {raw_dir}/{split}: run the download stage first")
    for chunk in chunks:
        with np.load(chunk) as data:
            yield data["frames"], data["actions"], data["positions"]
