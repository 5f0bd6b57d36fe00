"""Training: the step, the epoch loop, logs, checkpoints and resume, in one process or many.

Outputs in `models_dir`: `last.pt` (written every epoch, resumed from) and `best.pt` (highest
validation PSNR). Logs in `log_dir`: `steps.tsv` (one row per optimiser step) and `epochs.tsv`
(one row per epoch, with validation scores). A rerun with the same settings continues from
`last.pt` and drops log rows written after it; changing anything but `train.epochs` starts over.

Under `torchrun` every process trains a replica with DistributedDataParallel on its own batches
(`train.batch_size` each); rank 0 alone validates and writes logs and checkpoints.
"""
from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from cvae import tracks
from cvae.config import Params
from cvae.data.batches import TrainBatches, seeded_generator
from cvae.data.shards import Split, read_meta
from cvae.losses import sequence_loss
from cvae.runtime import (autocast, init_distributed, load_checkpoint, precision, prepare_model,
                          reuse_freed_memory, runs_in_bf16, save_checkpoint, set_seed)
from cvae.samples import to_model_conditions, to_model_frames
from cvae.schedules import kl_beta, teacher_forcing_ratio

STEP_COLUMNS = ["step", "epoch", "loss", "mse", "kl", "beta", "tfr", "teacher_forced", "sec_per_step"]
EPOCH_COLUMNS = ["epoch", "step", "loss", "mse", "kl", "beta", "tfr", "val_psnr", "val_ssim",
                 "val_baseline_psnr"]


class Objective(nn.Module):
    """The training loss of a batch as a module: (frames, conds) -> (loss, mse, kl).

    A module, so that DistributedDataParallel can wrap the whole step. `rollout_fn` is the
    track's training rollout (`Track.training_rollout`), or the robot track's per-frame reference to
    measure against. The rollout runs in the precision that `cvae.runtime.precision` sets."""

    def __init__(self, model: nn.Module, rollout_fn):
        super().__init__()
        self.model, self.rollout_fn = model, rollout_fn

    def forward(self, frames, conds, n_past: int, teacher_forcing: bool, beta: float):
        with autocast(frames.device):
            out = self.rollout_fn(self.model, frames, conds, n_past,
                                  teacher_forcing=teacher_forcing)
        # The rollout's prior is N(0, I) (zeros) for SVG-FP, the learned one for SVG-LP.
        return sequence_loss(out.frames.float(), frames[1:], out.mu.float(), out.logvar.float(),
                             beta, out.prior_mu.float(), out.prior_logvar.float())


def train_step(objective: nn.Module, optimizer, frames, conds, *, n_past, beta, teacher_forcing,
               grad_clip) -> dict:
    """One optimiser step on a batch: frames (T, B, C, H, W) in [0, 1], conds (T, B, c).
    Returns the loss terms (averaged over processes when distributed)."""
    loss, mse, kl = objective(frames, conds, n_past, teacher_forcing, beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(objective.parameters(), grad_clip)
    optimizer.step()
    terms = torch.stack([loss, mse, kl]).detach()
    if dist.is_initialized():
        dist.all_reduce(terms)  # a sum: gloo has no average
        terms /= dist.get_world_size()
    return dict(zip(("loss", "mse", "kl"), terms.tolist()))


def fingerprint(params: Params, meta: dict) -> str:
    """What a checkpoint must match to be resumed: model, training settings (except the number
    of epochs, so a run can be extended, and compilation, which changes no number) and the
    exact data."""
    train = {k: v for k, v in asdict(params.train).items() if k not in ("epochs", "compile")}
    blob = json.dumps([asdict(params.model), train, meta["shards"]], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train(params: Params, shards_dir: Path, models_dir: Path, log_dir: Path) -> dict:
    """Train (or resume training) the model of `params` on the shards; returns a summary."""
    with precision(params.train.precision):
        return _train(params, shards_dir, models_dir, log_dir)


def _train(params: Params, shards_dir: Path, models_dir: Path, log_dir: Path) -> dict:
    cfg = params.train
    rank, world, device = init_distributed()
    lead = rank == 0  # the process that validates and writes
    reuse_freed_memory()
    set_seed(cfg.seed)  # the same initial model everywhere (DDP also broadcasts rank 0's)
    meta = read_meta(shards_dir)
    track = tracks.for_meta(meta)
    model = prepare_model(track.build_model(params, meta), device,
                          track.compiled_modules if cfg.compile else None)
    objective = Objective(model, track.training_rollout)
    if world > 1:
        objective = nn.parallel.DistributedDataParallel(objective)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                 fused=device.type == "cuda")
    window = cfg.n_past + cfg.n_future
    batches = TrainBatches(shards_dir, cfg.batch_size, window, cfg.steps_per_epoch, cfg.seed,
                           device, rank, cfg.loader_workers)
    val_split = Split(shards_dir, "val")
    state = {"epoch": 0, "step": 0, "best_psnr": float("-inf"), "best_epoch": -1}

    models_dir, log_dir = Path(models_dir), Path(log_dir)
    say = tqdm.write if lead else (lambda *_: None)
    say(f"training on {device} ({world} process{'es' if world > 1 else ''}, "
        f"{'bf16 autocast' if runs_in_bf16(device) else 'fp32'}), windows cut {batches.where}")
    key = fingerprint(params, meta)
    ckpt = _resumable(models_dir / "last.pt", key, device, say)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        _set_rng_states(ckpt["rng"][min(rank, len(ckpt["rng"]) - 1)], device)
    else:
        set_seed(cfg.seed, rank)  # from here on, each rank draws its own noise
    logs = _Logs(log_dir, keep_epochs_before=state["epoch"]) if lead else None

    for epoch in range(state["epoch"], cfg.epochs):
        tfr = teacher_forcing_ratio(cfg.tfr, epoch)
        coins = seeded_generator(cfg.seed, epoch)  # the same on every rank: one path per step
        totals = {"loss": 0.0, "mse": 0.0, "kl": 0.0}
        bar = tqdm(batches.epoch(epoch), total=cfg.steps_per_epoch, leave=False,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=None if lead else True)  # no bar when output is not a terminal
        tick = time.perf_counter()
        for frames_u8, conds in bar:
            beta = kl_beta(cfg.kl, epoch if cfg.kl.unit == "epoch" else state["step"])
            teacher_forced = bool(torch.rand(1, generator=coins) < tfr)  # one coin per batch
            result = train_step(
                objective, optimizer, to_model_frames(frames_u8, device),
                to_model_conditions(conds, device),
                n_past=cfg.n_past, beta=beta, teacher_forcing=teacher_forced,
                grad_clip=cfg.grad_clip,
            )
            seconds, tick = time.perf_counter() - tick, time.perf_counter()
            state["step"] += 1
            for name in totals:
                totals[name] += result[name] / cfg.steps_per_epoch
            if lead:
                logs.step({"step": state["step"], "epoch": epoch, **result, "beta": beta,
                           "tfr": tfr, "teacher_forced": int(teacher_forced),
                           "sec_per_step": seconds})
                bar.set_postfix(loss=f"{result['loss']:.4f}")
            if state["step"] % cfg.log_every == 0:
                say(f"step {state['step']} epoch {epoch} loss {result['loss']:.5f} "
                    f"mse {result['mse']:.5f} kl {result['kl']:.3f} beta {beta:.2e} "
                    f"tfr {tfr:.2f} {seconds:.2f} s/step")
        state["epoch"] = epoch + 1
        if world > 1:
            _average_buffers(model, world)
        rng = _gather_rng_states(device, world)
        if lead:
            _end_epoch(track, model, optimizer, params, key, state, rng, val_split, cfg, device,
                       models_dir, logs, {**totals, "beta": beta, "tfr": tfr}, say)
        if world > 1:
            dist.barrier()  # the others wait for the checkpoint
    if logs is not None:
        logs.close()
    if world > 1:
        dist.destroy_process_group()
    return {"epochs": state["epoch"], "steps": state["step"], "best_val_psnr": state["best_psnr"],
            "best_epoch": state["best_epoch"], "device": device.type, "processes": world}


def _end_epoch(track, model, optimizer, params, key, state, rng, val_split, cfg, device,
               models_dir, logs, train_terms, say):
    """Validate (the track's protocol, the same prior samples every epoch), log, checkpoint."""
    epoch = state["epoch"] - 1
    val = track.validate(model, val_split, cfg, device)
    logs.epoch({"epoch": epoch, "step": state["step"], **train_terms, "val_psnr": val["psnr"],
                "val_ssim": val["ssim"], "val_baseline_psnr": val["baseline_psnr"]})
    say(f"epoch {epoch} val psnr {val['psnr']:.2f} dB (baseline {val['baseline_psnr']:.2f})"
        f" ssim {val['ssim']:.3f}")
    if val["psnr"] > state["best_psnr"]:
        state.update(best_psnr=val["psnr"], best_epoch=epoch)
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "params": asdict(params), "fingerprint": key, "state": state, "rng": rng}
    if state["best_epoch"] == epoch:
        save_checkpoint(models_dir / "best.pt", **checkpoint)
    save_checkpoint(models_dir / "last.pt", **checkpoint)
    logs.flush()


def _resumable(last: Path, key: str, device: torch.device, say) -> dict | None:
    """The checkpoint to resume from: `last` if it was trained with these settings."""
    if not last.exists():
        return None
    ckpt = load_checkpoint(last, device)
    if ckpt["fingerprint"] != key:
        say(f"{last} was trained with other settings: starting over")
        return None
    say(f"resuming from {last} at epoch {ckpt['state']['epoch']} (step {ckpt['state']['step']})")
    return ckpt


def _average_buffers(model: nn.Module, world: int):
    """Batch norm's running statistics, averaged over ranks. DDP keeps parameters in step, but
    each rank updates these on its own batches; averaging them makes every replica the same
    model, validated and saved as such."""
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= world


def _gather_rng_states(device: torch.device, world: int) -> list[dict]:
    """Every rank's generator states (behind the posterior's noise), for an exact resume."""
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    if world == 1:
        return [mine]
    everyone = [None] * world
    dist.all_gather_object(everyone, {k: v.cpu() for k, v in mine.items()})
    return everyone


def _set_rng_states(states: dict, device: torch.device):
    torch.set_rng_state(states["cpu"].cpu())
    if "cuda" in states and device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


class _Logs:
    """The two TSV logs. On resume, rows of epochs not covered by the checkpoint are dropped."""

    def __init__(self, log_dir: Path, keep_epochs_before: int):
        log_dir.mkdir(parents=True, exist_ok=True)
        self.files = {}
        for name, columns in (("steps", STEP_COLUMNS), ("epochs", EPOCH_COLUMNS)):
            path = log_dir / f"{name}.tsv"
            kept = []
            if path.exists() and keep_epochs_before > 0:
                with open(path, newline="") as f:
                    kept = [r for r in csv.DictReader(f, delimiter="\t")
                            if _complete(r, columns) and int(r["epoch"]) < keep_epochs_before]
            handle = open(path, "w", newline="")
            writer = csv.DictWriter(handle, columns, delimiter="\t")
            writer.writeheader()
            writer.writerows(kept)
            self.files[name] = (handle, writer)

    def step(self, row: dict):
        self.files["steps"][1].writerow(_rounded(row))

    def epoch(self, row: dict):
        self.files["epochs"][1].writerow(_rounded(row))

    def flush(self):
        for handle, _ in self.files.values():
            handle.flush()

    def close(self):
        for handle, _ in self.files.values():
            handle.close()


def _complete(row: dict, columns: list[str]) -> bool:
    """False for the torn last line a kill can leave behind."""
    return all(row.get(c) not in (None, "") for c in columns) and row["epoch"].isdigit()


def _rounded(row: dict) -> dict:
    return {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
