"""The `download` stage: make the sequences that `data.source` names available to `prepare`.

Every source ends as `raw/source.json`, which says where the sequences are and in which format:
  {"format": "tfrecords", "path": ...}    BAIR's TFRecord tree, as a tar or a folder
  {"format": "png-folders", "path": ...}  the course's PNG layout
  {"format": "lab4-folders", "path": ...} the 2024 lab's dance layout (frames + label images)
plus what identifies the content (size, checksum, file listing), so that DVC re-runs `prepare`
when the content changes. Paths are relative to raw/, so the file is the same on every machine.
(The folders of bair-png and lab4-folders are deps of the download stage in dvc.yaml, so DVC
re-runs it, and this listing, when their files change.)

  sim-push  renders the set with pybullet into raw/ as a BAIR tree (one format for all sources)
  sample    the committed tar data/bair-sample.tar (simulated sequences in BAIR's real format)
  bair      the published tar, downloaded (resumably) to data.bair.tar and read in place; or
            the extracted tree, when data.bair.tar is a folder
  bair-png  the course's folders at data.bair_png.root, read in place
  sim-dance renders the dance set with pybullet into raw/ in the 2024 lab's layout
  lab4-folders  the 2024 lab's dance folders at data.dance.root, read in place
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cvae.config import DataConfig
from cvae.data import bair, lab4_folders, png_folders
from cvae.data.files import file_sha256
from cvae.data.http import fetch

SPLITS = ("train", "val", "test")
CHUNK = 8  # sequences per generator task: small enough to keep every core busy to the end
MANIFEST = "source.json"


def sequence_seed(base_seed: int, split: str, index: int) -> int:
    """Independent, reproducible seed of sequence `index` of `split`."""
    state = np.random.SeedSequence([base_seed, SPLITS.index(split), index]).generate_state(1)
    return int(state[0])


def download(cfg: DataConfig, out: Path, sample_tar: Path) -> dict:
    """Fill `out` with the source chosen by `cfg.source`; returns the manifest."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if cfg.source == "sim-push":
        generate_sim_push(cfg, {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}, out)
        manifest = {"format": "tfrecords", "path": "."}
    elif cfg.source == "sample":
        manifest = tar_manifest(Path(sample_tar), out, sha256="")
    elif cfg.source == "bair" and Path(cfg.bair.tar).is_dir():
        manifest = bair_folder_manifest(Path(cfg.bair.tar), out)
    elif cfg.source == "bair":
        tar = fetch(cfg.bair.url, Path(cfg.bair.tar), cfg.bair.bytes, cfg.bair.sha256)
        manifest = tar_manifest(tar, out, cfg.bair.sha256)  # fetch verified it
    elif cfg.source == "bair-png":
        root = Path(cfg.bair_png.root)
        manifest = {"format": "png-folders", "path": os.path.relpath(root, out),
                    **png_listing(root)}
    elif cfg.source == "sim-dance":
        generate_sim_dance(cfg, {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test},
                           out)
        manifest = {"format": "lab4-folders", "path": ".", **dance_lengths(cfg)}
    else:  # lab4-folders
        root = Path(cfg.dance.root)
        manifest = {"format": "lab4-folders", "path": os.path.relpath(root, out),
                    **dance_lengths(cfg), **lab4_listing(root)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def tar_manifest(tar: Path, out: Path, sha256: str) -> dict:
    if not tar.is_file():
        raise FileNotFoundError(f"{tar} is missing")
    return {"format": "tfrecords", "path": os.path.relpath(tar, out), "size": tar.stat().st_size,
            "sha256": sha256 or file_sha256(tar), "sequences": named_counts(tar)}


def bair_folder_manifest(root: Path, out: Path) -> dict:
    """An extracted BAIR tree: its files' counts and a digest of their names, sizes and mtimes."""
    digest = hashlib.sha256()
    for _, name in bair.files(root):
        _add_file(digest, root / name, root)
    return {"format": "tfrecords", "path": os.path.relpath(root, out),
            "sequences": named_counts(root), "listing_sha256": digest.hexdigest()}


def named_counts(path: Path) -> dict[str, int]:
    """Sequences per split that the TFRecord files' names state (the tar's end is checked too)."""
    counts = Counter()
    for split, name in bair.files(path):
        counts[split] += bair.sequences_named(name)
    return {split: counts[split] for split in SPLITS}


def png_listing(root: Path) -> dict:
    """Sequence counts and a digest of every file's name, size and mtime: checks the layout
    up front and changes whenever a file does, without reading the images."""
    digest, counts = hashlib.sha256(), {}
    for split in SPLITS:
        dirs = png_folders.sequence_dirs(root, split)
        counts[split] = len(dirs)
        for folder in tqdm(dirs, desc=f"list {split}", unit="seq", leave=False):
            for file in sorted(folder.iterdir()):
                _add_file(digest, file, root)
    return {"counts": counts, "listing_sha256": digest.hexdigest()}


def dance_lengths(cfg: DataConfig) -> dict:
    return {"train_vi_len": cfg.dance.train_vi_len, "val_vi_len": cfg.dance.val_vi_len}


def lab4_listing(root: Path) -> dict:
    """Checks the dance layout up front (every error before any image is read) and digests
    every file's name, size and mtime, so DVC sees any change to the folders."""
    digest, counts = hashlib.sha256(), {}
    for split in SPLITS:
        runs = lab4_folders.split_pairs(root, split)
        counts[split] = sum(len(images) for images, _ in runs)
        for file in (f for run in runs for files in run for f in files):
            _add_file(digest, file, root)
    return {"image_counts": counts, "listing_sha256": digest.hexdigest()}


def _add_file(digest, file: Path, root: Path) -> None:
    """A file's name, size and mtime into a listing digest: changes whenever the file does."""
    stat = file.stat()
    digest.update(f"{file.relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())


def read_manifest(raw_dir: Path) -> dict:
    path = Path(raw_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the download stage first")
    return json.loads(path.read_text())


def read_sequences(raw_dir: Path, seq_len: int, skip_bad_records: bool = False,
                   losses: dict | None = None):
    """Yield (split, frames (T, H, W, 3) uint8, conditions) for every sequence the manifest
    points to. Conditions are (T, 7) float vectors on the robot track (action, then end-effector
    position) and (T, H, W, 3) uint8 label images on the dance track. What TFRecord files lose
    (with `skip_bad_records`) goes into `losses` (see `bair.read_sequences`)."""
    manifest = read_manifest(raw_dir)
    path = Path(os.path.normpath(Path(raw_dir) / manifest["path"]))  # no raw/../ in messages
    if manifest["format"] == "lab4-folders":
        yield from lab4_folders.read_sequences(path, manifest["train_vi_len"],
                                               manifest["val_vi_len"])
        return
    if manifest["format"] == "png-folders":
        robot = png_folders.read_sequences(path, seq_len)
    else:
        robot = bair.read_sequences(path, seq_len, skip_bad_records, losses)
    for split, (frames, actions, positions) in robot:
        yield split, frames, np.concatenate([actions, positions], axis=-1)


def generate_sim_push(cfg: DataConfig, counts: dict[str, int], out: Path) -> None:
    """Render every split with pybullet on all cores, written as BAIR TFRecord files."""
    tasks = [(split, start, min(CHUNK, count - start), cfg.seed, cfg.seq_len, cfg.image_size)
             for split, count in counts.items() for start in range(0, count, CHUNK)]
    workers = cfg.workers or os.cpu_count() or 1
    pending = {split: [] for split in counts}  # sequences not yet in a file
    files = Counter()

    def flush(split: str) -> None:
        bair.write_tree(out, split, files[split], pending[split])
        files[split] += 1
        pending[split] = []

    with ProcessPoolExecutor(workers) as pool, \
            tqdm(total=sum(counts.values()), desc="sim-push", unit="seq") as bar:
        for (split, *_), sequences in zip(tasks, pool.map(_render_chunk, tasks)):
            pending[split].extend(sequences)
            bar.update(len(sequences))
            if len(pending[split]) == bair.PER_FILE:
                flush(split)
    for split in counts:
        if pending[split]:
            flush(split)


def _render_chunk(task) -> list:
    from cvae.data.sim_push import generate_sequence  # imported in the worker: pybullet is heavy

    split, start, count, base_seed, seq_len, image_size = task
    sequences = []
    for i in range(count):
        seq = generate_sequence(sequence_seed(base_seed, split, start + i), seq_len, image_size)
        sequences.append((seq["frames"], seq["actions"], seq["positions"]))
    return sequences


def generate_sim_dance(cfg: DataConfig, counts: dict[str, int], out: Path) -> None:
    """Render every split's dance sequences on all cores, written in the lab's folder layout:
    training clips of train_vi_len frames, validation and test sequences of val_vi_len."""
    lengths = {"train": cfg.dance.train_vi_len, "val": cfg.dance.val_vi_len,
               "test": cfg.dance.val_vi_len}
    tasks = [(sequence_seed(cfg.seed, split, i), lengths[split])
             for split, count in counts.items() for i in range(count)]
    splits = [split for split, count in counts.items() for _ in range(count)]
    next_index = Counter()
    with ProcessPoolExecutor(cfg.workers or os.cpu_count() or 1) as pool, \
            tqdm(total=sum(c * lengths[s] for s, c in counts.items()), desc="sim-dance",
                 unit="frame") as bar:
        # chunksize: train clips are short, so hand them out several at a time.
        for split, seq in zip(splits, pool.map(_render_dance, tasks, chunksize=4)):
            next_index[split] = lab4_folders.write_sequences(
                out, split, [(seq["frames"], seq["labels"])], next_index[split])
            bar.update(len(seq["frames"]))


def _render_dance(task) -> dict:
    from cvae.data.sim_dance import generate_sequence  # imported in the worker: pybullet is heavy

    seed, length = task
    return generate_sequence(seed, length)


def make_sample(cfg: DataConfig, counts: dict[str, int], tar_path: Path) -> None:
    """Render a few sequences and pack them as BAIR's tar (reproducible bytes: no dates, owners)."""
    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    with tempfile.TemporaryDirectory() as tmp:
        generate_sim_push(cfg, counts, Path(tmp))
        tar_path = Path(tar_path)
        tar_path.parent.mkdir(parents=True, exist_ok=True)
        tmp_tar = tar_path.with_name(tar_path.name + ".tmp")
        with tarfile.open(tmp_tar, "w") as tar:
            for file in sorted(Path(tmp).glob(f"{bair.ROOT}/*/*.tfrecords")):
                tar.add(file, arcname=file.relative_to(tmp).as_posix(), filter=normalise)
        os.replace(tmp_tar, tar_path)
