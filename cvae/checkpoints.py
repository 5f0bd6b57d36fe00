"""Checkpoints: how a run's state is written, checked when read, and matched to its settings.

A checkpoint file is `torch.save({"format": 3, "sha256": ..., "payload": uint8 tensor})`: the
payload is the `torch.save` bytes of the run's state (state_dicts, params, counters, log rows),
and the sha256 is the payload's. Reading checks the sha256 before the payload is unpickled
(with `weights_only=True`), so a damaged file is a `CheckpointError` naming it, never a model
with other weights. Files are written atomically (a temporary file, fsynced, then renamed), so a
kill mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import torch

from cvae.config import Params
from cvae.errors import UserError, writing

FORMAT = 3  # 2: the log rows travel in the checkpoint; 3: the state carries its sha256
READABLE = (2, 3)  # format 2 (no checksum) is still read, so that earlier runs resume
AFTER_A_FULL_DISK = "run again (training resumes from the last checkpoint)"


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, damaged or not this run's."""


def save_checkpoint(path: Path, **state) -> None:
    """Write `state` to `path` atomically, with the sha256 of its bytes. A full disk says so
    and leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = bytearray(buffer.getbuffer())
    wrapped = {"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
               "payload": torch.frombuffer(payload, dtype=torch.uint8)}
    tmp = path.with_name(path.name + ".tmp")
    with writing(tmp, len(payload), AFTER_A_FULL_DISK, dest=path), open(tmp, "wb") as f:
        torch.save(wrapped, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """The state saved in `path`, after checking it against its sha256."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} is missing: run the train stage first")
    wrapped = _torch_load(path, path, "cpu")
    found = wrapped.get("format") if isinstance(wrapped, dict) else None
    if found not in READABLE:
        raise CheckpointError(f"{path}: not a checkpoint of this pipeline (format {found}; this "
                              f"code reads {', '.join(map(str, READABLE))})")
    if found == 2:
        return _to_device(wrapped, device)
    payload = wrapped["payload"].numpy()
    if hashlib.sha256(payload).hexdigest() != wrapped["sha256"]:
        raise CheckpointError(f"{path} is damaged: its bytes do not match the sha256 saved with "
                              "them")
    return _torch_load(io.BytesIO(payload.tobytes()), path, device)


def _torch_load(source, path: Path, device) -> dict:
    try:
        return torch.load(source, map_location=device, weights_only=True)
    except Exception as error:  # a damaged file fails in many ways, none of them our bug
        reason = re.split(r"\.\s|\n", str(error).strip())[0]  # torch's first sentence
        raise CheckpointError(f"{path} cannot be read ({type(error).__name__}"
                              f"{': ' + reason if reason else ''})") from error


def _to_device(tree, device):
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: _to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_to_device(v, device) for v in tree]
    return tree


def copy_checkpoint(source: Path, dest: Path) -> None:
    """`dest` becomes a copy of `source`, atomically; a full disk says so and leaves no
    partial file."""
    tmp = Path(dest).with_name(Path(dest).name + ".tmp")
    with writing(tmp, Path(source).stat().st_size, AFTER_A_FULL_DISK, dest=dest):
        shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


def set_aside(path: Path) -> Path:
    """Rename a checkpoint that cannot be used to `<name>.corrupt` (replacing an older one),
    so that no later run trips on it again and it is still there to look at."""
    aside = Path(path).with_name(Path(path).name + ".corrupt")
    os.replace(path, aside)
    return aside


# Settings added after checkpoints were written, with their value that behaves as before: left
# out of the fingerprint at that value, so those checkpoints still match. Any depth of section.
ADDED_LATER = {"train.first_gap": 0, "train.moving_weight": 0.0,
               "model.dance.first_lookup_dim": 0, "model.dance.plate": False}
# Settings removed since, with the one value the code keeps: put back into the fingerprint at it,
# so checkpoints written before the removal still match. (`model.dance.sees_first_label` was
# left out at its kept value, False, before it was removed: nothing to put back.)
REMOVED = {"model.dance.sees_previous": True, "model.dance.prior": "fixed"}


def fingerprint(params: Params, meta: dict) -> str:
    """What a checkpoint must match to be resumed or evaluated: the model, the training settings
    (except compilation, which changes no number, and the number of epochs, so a run can be
    extended, unless the cosine learning rate is stretched over them) and the exact data (the
    shards' checksums). Settings added or removed since checkpoints were written count as
    those checkpoints had them (ADDED_LATER, REMOVED), so they still match."""
    free = ("compile",) if params.train.lr_schedule == "cosine" else ("epochs", "compile")
    settings = {"model": asdict(params.model),
                "train": {k: v for k, v in asdict(params.train).items() if k not in free}}
    for key, value in REMOVED.items():
        *sections, name = key.split(".")
        _section(settings, sections)[name] = value
    for key, neutral in ADDED_LATER.items():
        *sections, name = key.split(".")
        section = _section(settings, sections)
        if section.get(name) == neutral:
            del section[name]
    blob = json.dumps([settings["model"], settings["train"], meta["shards"]], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _section(tree: dict, names: list[str]) -> dict:
    for name in names:
        tree = tree[name]
    return tree


def load_finished(best: Path, params: Params, meta: dict, device: torch.device) -> dict:
    """`best` (models/best.pt) if the current settings and data trained its run to the end,
    `train.epochs`, as `last.pt` beside it says; otherwise a CheckpointError: never another
    run's weights, nor an unfinished run's, under this run's settings."""
    best, key = Path(best), fingerprint(params, meta)
    last_path = best.with_name("last.pt")
    last = load_checkpoint(last_path)
    if last["fingerprint"] != key:
        raise CheckpointError(
            f"{last_path} was trained with other settings or data than params.yaml and the "
            "shards hold now: run the train stage first")
    done, planned = last["state"]["epoch"], params.train.epochs
    if done != planned:
        raise CheckpointError(
            f"{last_path}: its run has trained {done} epochs and train.epochs is {planned}"
            f"{' (it was stopped before the end)' if done < planned else ''}: run the train "
            "stage first")
    try:
        state = load_checkpoint(best, device)
    except CheckpointError as error:
        raise CheckpointError(f"{error}: run dvc repro, which restores models/ from DVC's "
                              "cache or runs the train stage (it rebuilds the file)") from None
    best_epoch = last["state"]["best_epoch"]
    if state["fingerprint"] != key or state["state"]["epoch"] != best_epoch + 1:
        raise CheckpointError(f"{best} is not the best epoch ({best_epoch}) of the run in "
                              f"{last_path}: run the train stage again")
    return state
