"""Frames into and out of the models, and the scoring of prior samples: what every track's
training, validation and test protocol share.

Scores are kept per sequence and predicted frame, (sequences, frames), under these names:
  psnr, ssim                  mean over the N prior samples, PSNR per image (DESIGN.md section 2)
  psnr_best, ssim_best        the best sample of each sequence by SSIM over its frames (or by
                              ssim_svg: `eval.best_by`)
  psnr_finn, psnr_finn_best   SVG's PSNR: per colour channel, then averaged over channels
  ssim_svg, ssim_svg_best     the SSIM of SVG's published numbers (`cvae.metrics.ssim_svg`)
  psnr_moving, psnr_moving_best, posterior_psnr_moving, baseline_psnr_moving
                              PSNR over the moving region alone: the pixels where the truth
                              differs from the reference frame (`cvae.metrics.moving_pixels`);
                              NaN for a frame where nothing moved, left out of the means
  posterior_psnr, posterior_ssim   z inferred from the true future: an upper reference
  baseline_psnr, baseline_ssim     copying a given frame (the track says which)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cvae.metrics import masked_psnr, moving_pixels, psnr, psnr_per_channel, ssim, ssim_svg


@dataclass
class Scores:
    scores: dict[str, np.ndarray]  # name -> (sequences, predicted frames)
    saved: dict[str, np.ndarray]  # uint8 frames of the first sequences, for the report

    def summary(self) -> dict:
        """Every score's mean over sequences and frames (NaN entries, frames where nothing
        moved, left out)."""
        return {**{name: float(np.nanmean(v)) for name, v in self.scores.items()},
                "sequences": int(next(iter(self.scores.values())).shape[0])}

    def per_frame(self) -> dict:
        return {name: np.nanmean(v, axis=0) for name, v in self.scores.items()}


def to_model_frames(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, T, C, H, W) -> float (T, B, C, H, W) in [0, 1] on `device`, channels stored
    last: each frame, and any run of frames flattened to a batch, is a channels_last image,
    the layout the convolutions run fastest on (see `cvae.runtime.prepare_model`)."""
    frames = frames.to(device, non_blocking=True).transpose(0, 1)
    frames = frames.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return frames.float().div_(255)


def to_model_conditions(conds: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Conditions of a batch, time first on `device`: vectors (B, T, c) -> (T, B, c); label
    images (B, T, C, H, W) uint8 -> model frames, as `to_model_frames`."""
    if conds.dtype == torch.uint8:
        return to_model_frames(conds, device)
    return conds.to(device, non_blocking=True).transpose(0, 1)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """Model frames in [0, 1] -> uint8 `round(x * 255)` on the CPU."""
    return (frames.clamp(0, 1) * 255).round().byte().cpu()


def tile_samples(x: torch.Tensor, samples: int, dim: int) -> torch.Tensor:
    """`samples` copies of a batch along its batch dimension `dim`, sample-major: element
    k * B + b is sample k of sequence b, the order prior draws are flattened in."""
    return x.repeat(*(samples if d == dim else 1 for d in range(x.dim())))


class FrameScorer:
    """Scores of a batch's predicted frames against the truth (frames, B, C, H, W), each
    (frames, B), beside copying the reference frame (B, C, H, W): the last given frame on the
    robot track, the first on the dance track. The moving region is where the truth differs
    from the reference by more than `threshold`."""

    def __init__(self, truth: torch.Tensor, reference: torch.Tensor, threshold: float):
        self.truth, self.reference = truth, reference.expand_as(truth)
        self.moving = moving_pixels(truth, self.reference, threshold)

    def one(self, prediction: torch.Tensor, prefix: str = "") -> dict:
        """PSNR, SSIM and moving-region PSNR of one prediction per frame, named `prefix` + ..."""
        return {f"{prefix}psnr": psnr(prediction, self.truth),
                f"{prefix}ssim": ssim(prediction, self.truth),
                f"{prefix}psnr_moving": masked_psnr(prediction, self.truth, self.moving)}

    def baseline(self) -> dict:
        return self.one(self.reference, "baseline_")

    def samples(self, preds: torch.Tensor, best_by: str = "ssim") -> tuple[dict, torch.Tensor]:
        """Mean-of-N and best-of-N (by `best_by`, ssim or ssim_svg, averaged over the frames)
        scores of N predictions (N, frames, B, C, H, W), and each sequence's best sample."""
        truth = self.truth.expand_as(preds)
        by_sample = {"psnr": psnr(preds, truth), "ssim": ssim(preds, truth),
                     "psnr_finn": psnr_per_channel(preds, truth),
                     "ssim_svg": ssim_svg(preds, truth),
                     "psnr_moving": masked_psnr(preds, truth, self.moving.expand(
                         *preds.shape[:-3], 1, *preds.shape[-2:]))}  # each (N, frames, B)
        best = by_sample[best_by].mean(1).argmax(0)  # (B,): the best sample of each sequence
        columns = torch.arange(best.shape[0], device=best.device)
        out = {}
        for name, value in by_sample.items():
            out[name] = value.mean(0)  # NaN where nothing moved stays NaN
            out[f"{name}_best"] = value[best, :, columns].T  # (frames, B)
        return out, best


@dataclass(frozen=True)
class TestOutputs:
    """Where the evaluate stage writes; every track's test protocol fills the same files."""

    metrics: Path = Path("metrics/eval.json")
    per_frame: Path = Path("logs/eval/per_frame.tsv")
    samples: Path = Path("eval/samples.npz")  # frames for the report
    submission: Path = Path("eval/submission.csv")  # the dance track's course CSV

    def write(self, metrics: dict, frames: np.ndarray, scores: Scores, **extra) -> None:
        """metrics JSON, the per-frame table (one row per predicted frame index in `frames`)
        and the saved frames (with `extra` arrays) for the report."""
        for path in (self.metrics, self.per_frame, self.samples):
            path.parent.mkdir(parents=True, exist_ok=True)
        self.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        per_frame = pd.DataFrame({"frame": frames, **scores.per_frame()})
        per_frame.to_csv(self.per_frame, sep="\t", index=False, float_format="%.4f")
        np.savez_compressed(self.samples, **extra, **scores.saved)
