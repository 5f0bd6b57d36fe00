"""The lab protocol: from `n_past` true frames, predict `n_future` frames with the model fed only
its own predictions (teacher forcing off, z from the prior), and score them per image beside the
copy-last-frame baseline on the same sequences."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cvae.data.shards import Split
from cvae.metrics import psnr, ssim
from cvae.models.svg import SVG
from cvae.rollout import rollout
from cvae.runtime import autocast


@dataclass
class Scores:
    """Per-image scores of the predicted frames, each (sequences, n_future)."""

    psnr: np.ndarray
    ssim: np.ndarray
    baseline_psnr: np.ndarray
    baseline_ssim: np.ndarray
    truth: np.ndarray  # (k, n_past + n_future, C, H, W) uint8: the first k sequences
    prediction: np.ndarray  # (k, n_future, C, H, W) uint8

    def summary(self) -> dict:
        return {
            "psnr": float(self.psnr.mean()),
            "ssim": float(self.ssim.mean()),
            "baseline_psnr": float(self.baseline_psnr.mean()),
            "baseline_ssim": float(self.baseline_ssim.mean()),
            "sequences": int(self.psnr.shape[0]),
        }


def to_model_frames(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, T, C, H, W) -> float (T, B, C, H, W) in [0, 1] on `device`."""
    return frames.to(device, non_blocking=True).transpose(0, 1).float().div_(255)


@torch.no_grad()
def evaluate(model: SVG, split: Split, n_past: int, n_future: int, batch_size: int,
             device: torch.device, seed: int, keep: int = 4) -> Scores:
    """Score the first `n_past + n_future` frames of every sequence of `split`."""
    was_training = model.training
    model.eval()
    length = n_past + n_future
    scores = {key: [] for key in ("psnr", "ssim", "baseline_psnr", "baseline_ssim")}
    kept_truth, kept_pred = [], []
    # Own RNG stream: the same prior samples every time, and training's stream untouched.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(split), batch_size):
            indices = np.arange(start, min(start + batch_size, len(split)))
            frames_u8, conds = split.windows(indices, np.zeros_like(indices), length)
            frames = to_model_frames(frames_u8, device)  # (T, B, C, H, W)
            with autocast(device):
                out = rollout(model, frames, conds.transpose(0, 1).to(device), n_past,
                              teacher_forcing=False, sample_prior=True)
            pred = out.frames[n_past - 1 :].float().clamp(0, 1)  # (n_future, B, C, H, W)
            truth = frames[n_past:]
            last = frames[n_past - 1].expand_as(truth)
            scores["psnr"].append(psnr(pred, truth).T)  # (B, n_future)
            scores["ssim"].append(ssim(pred, truth).T)
            scores["baseline_psnr"].append(psnr(last, truth).T)
            scores["baseline_ssim"].append(ssim(last, truth).T)
            if sum(map(len, kept_truth)) < keep:
                kept_truth.append(frames_u8)
                kept_pred.append((pred.transpose(0, 1) * 255).round().byte().cpu())
    model.train(was_training)
    arrays = {key: torch.cat(values).cpu().numpy() for key, values in scores.items()}
    if not kept_truth:  # keep=0: nothing saved, but the arrays keep their meaning
        kept_truth, kept_pred = [frames_u8[:0]], [frames_u8[:0, n_past:]]
    return Scores(**arrays, truth=torch.cat(kept_truth)[:keep].numpy(),
                  prediction=torch.cat(kept_pred)[:keep].numpy())
