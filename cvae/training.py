"""Training: the step, the epoch loop, logs, checkpoints and resume.

Outputs in `models_dir`: `last.pt` (written every epoch, resumed from) and `best.pt` (highest
validation PSNR). Logs in `log_dir`: `steps.tsv` (one row per optimiser step) and `epochs.tsv`
(one row per epoch, with validation scores). A rerun with the same settings continues from
`last.pt` and drops log rows written after it; changing anything but `train.epochs` starts over.
"""
from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from cvae.config import Params
from cvae.data.shards import Split, read_meta
from cvae.evaluation import evaluate, to_model_frames
from cvae.losses import sequence_loss
from cvae.models.svg import SVG
from cvae.rollout import rollout
from cvae.runtime import (autocast, load_checkpoint, reuse_freed_memory, save_checkpoint,
                           select_device, set_seed)
from cvae.schedules import kl_beta, teacher_forcing_ratio

STEP_COLUMNS = ["step", "epoch", "loss", "mse", "kl", "beta", "tfr", "teacher_forced", "sec_per_step"]
EPOCH_COLUMNS = ["epoch", "step", "loss", "mse", "kl", "beta", "tfr", "val_psnr", "val_ssim",
                 "val_baseline_psnr"]


def train_step(model, optimizer, frames, conds, *, n_past, beta, teacher_forcing, grad_clip,
               device) -> dict:
    """One optimiser step on a batch: frames (T, B, C, H, W) in [0, 1], conds (T, B, c)."""
    with autocast(device):
        out = rollout(model, frames, conds, n_past, teacher_forcing=teacher_forcing)
    prior = (out.prior_mu.float(), out.prior_logvar.float()) if model.prior is not None else ()
    loss, mse, kl = sequence_loss(out.frames.float(), frames[1:], out.mu.float(),
                                  out.logvar.float(), beta, *prior)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return {"loss": loss.item(), "mse": mse.item(), "kl": kl.item()}


def fingerprint(params: Params, meta: dict) -> str:
    """What a checkpoint must match to be resumed: model, training settings (except the number
    of epochs, so a run can be extended) and the exact data."""
    train = {k: v for k, v in asdict(params.train).items() if k != "epochs"}
    blob = json.dumps([asdict(params.model), train, meta["shards"]], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_model(params: Params, meta: dict) -> SVG:
    return SVG(params.model, cond_dim=len(meta["condition_names"]), channels=meta["frame_shape"][1])


def train(params: Params, shards_dir: Path, models_dir: Path, log_dir: Path) -> dict:
    cfg = params.train
    device = select_device()
    reuse_freed_memory()
    set_seed(cfg.seed)
    meta = read_meta(shards_dir)
    train_split, val_split = Split(shards_dir, "train"), Split(shards_dir, "val")
    model = build_model(params, meta).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                 fused=device.type == "cuda")
    batches = torch.Generator().manual_seed(cfg.seed)
    state = {"epoch": 0, "step": 0, "best_psnr": float("-inf"), "best_epoch": -1}

    models_dir, log_dir = Path(models_dir), Path(log_dir)
    print_fn = tqdm.write
    key = fingerprint(params, meta)
    last = models_dir / "last.pt"
    if last.exists() and (ckpt := load_checkpoint(last, device))["fingerprint"] == key:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        batches.set_state(ckpt["batch_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        state = ckpt["state"]
        print_fn(f"resuming from {last} at epoch {state['epoch']} (step {state['step']})")
    elif last.exists():
        print_fn(f"{last} was trained with other settings: starting over")
    logs = _Logs(log_dir, keep_epochs_before=state["epoch"])

    window = cfg.n_past + cfg.n_future
    for epoch in range(state["epoch"], cfg.epochs):
        tfr = teacher_forcing_ratio(cfg.tfr, epoch)
        totals = {"loss": 0.0, "mse": 0.0, "kl": 0.0}
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=None)  # no bar when output is not a terminal (CI logs)
        for _ in bar:
            tick = time.perf_counter()
            beta = kl_beta(cfg.kl, epoch if cfg.kl.unit == "epoch" else state["step"])
            teacher_forced = bool(torch.rand(1, generator=batches) < tfr)  # one coin per batch
            frames_u8, conds = train_split.random_windows(cfg.batch_size, window, batches)
            result = train_step(
                model, optimizer, to_model_frames(frames_u8, device),
                conds.transpose(0, 1).to(device), n_past=cfg.n_past, beta=beta,
                teacher_forcing=teacher_forced, grad_clip=cfg.grad_clip, device=device,
            )
            seconds = time.perf_counter() - tick
            state["step"] += 1
            row = {"step": state["step"], "epoch": epoch, **result, "beta": beta, "tfr": tfr,
                   "teacher_forced": int(teacher_forced), "sec_per_step": seconds}
            logs.step(row)
            for name in totals:
                totals[name] += result[name] / cfg.steps_per_epoch
            bar.set_postfix(loss=f"{result['loss']:.4f}")
            if state["step"] % cfg.log_every == 0:
                print_fn(f"step {state['step']} epoch {epoch} loss {result['loss']:.5f} "
                         f"mse {result['mse']:.5f} kl {result['kl']:.3f} beta {beta:.2e} "
                         f"tfr {tfr:.2f} {seconds:.2f} s/step")

        # The lab protocol on the validation split, with the same prior samples every epoch.
        val = evaluate(model, val_split, cfg.n_past, cfg.n_future, batch_size=cfg.batch_size,
                       device=device, seed=cfg.seed, samples=1, posterior=False,
                       keep=0).summary()
        logs.epoch({"epoch": epoch, "step": state["step"], **totals, "beta": beta, "tfr": tfr,
                    "val_psnr": val["psnr"], "val_ssim": val["ssim"],
                    "val_baseline_psnr": val["baseline_psnr"]})
        print_fn(f"epoch {epoch} val psnr {val['psnr']:.2f} dB (copy-last {val['baseline_psnr']:.2f})"
                 f" ssim {val['ssim']:.3f}")
        state["epoch"] = epoch + 1
        checkpoint = {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "params": asdict(params), "fingerprint": key, "state": state,
            "batch_rng": batches.get_state(), "torch_rng": torch.get_rng_state(),
        }
        if val["psnr"] > state["best_psnr"]:
            state.update(best_psnr=val["psnr"], best_epoch=epoch)
            save_checkpoint(models_dir / "best.pt", **checkpoint)
        save_checkpoint(last, **checkpoint)
        logs.flush()
    logs.close()
    return {"epochs": state["epoch"], "steps": state["step"], "best_val_psnr": state["best_psnr"],
            "best_epoch": state["best_epoch"], "device": device.type}


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
