"""The evaluation protocol: from `n_past` true frames, predict `n_future` frames with the model fed
only its own predictions (teacher forcing off) and z drawn from the prior, and score them per
image beside the copy-last-frame baseline on the same sequences.

Stochastic models are scored as SVG does: N prior samples per sequence (drawn as one batch, N
copies of every sequence), reported as the mean over samples and as the best sample (the one
with the highest SSIM averaged over the predicted frames). The posterior reconstruction (z
inferred from the true future, still no teacher forcing) is an upper reference.

Score names and shapes: `cvae.samples`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cvae.config import EvalConfig
from cvae.data.shards import Split
from cvae.metrics import moving_pixels
from cvae.runtime import autocast, seeded_generator
from cvae.samples import FrameScorer, Scores, TestOutputs, tile_samples, to_model_frames, to_uint8
from cvae.tracks.robot.model import SVG
from cvae.tracks.robot.rollout import rollout


@torch.no_grad()
def sample_prior(model: SVG, frames: torch.Tensor, conds: torch.Tensor, n_past: int,
                 noise: torch.Tensor) -> torch.Tensor:
    """N prior samples of every sequence in one batched rollout.

    frames (T, B, C, H, W), conds (T, B, c), noise (N, T-1, B, latent_size) -> predictions of frames
    1..T-1, (N, T-1, B, C, H, W). Sample k is exactly `rollout(..., noise=noise[k])` (in eval
    mode batch norm uses running statistics, so the copies do not interact)."""
    N, T, B = noise.shape[0], frames.shape[0], frames.shape[1]

    tile = lambda x: tile_samples(x, N, dim=1)  # noqa: E731
    flat_noise = noise.transpose(0, 1).flatten(1, 2)  # (T-1, N*B, latent_size)
    with autocast(frames.device):
        out = rollout(model, tile(frames[:n_past]), tile(conds), n_past, teacher_forcing=False,
                      sample_prior=True, noise=flat_noise)
    return out.frames.float().unflatten(1, (N, B)).transpose(0, 1)


def prior_noise(seed: int, indices, samples: int, steps: int, size: int) -> torch.Tensor:
    """The standard normal draws behind the prior samples, (N, steps, B, size). Each sequence has
    its own generator, seeded by (seed, its index), so the samples are the same every run and
    however the sequences are batched."""
    draws = [torch.randn(samples, steps, size, generator=seeded_generator(seed, index))
             for index in indices]
    return torch.stack(draws, dim=2)


@torch.no_grad()
def evaluate(model: SVG, split: Split, n_past: int, n_future: int, batch_size: int,
             device: torch.device, seed: int, samples: int = 1, posterior: bool = True,
             keep: int = 4, best_by: str = "ssim",
             moving_threshold: float = EvalConfig.moving_threshold) -> Scores:
    """Score the first `n_past + n_future` frames of every sequence of `split`, `samples` prior
    draws each. `batch_size` counts sequences; a batch runs `batch_size * samples` rollouts.
    A batch too big for the GPU is retried in halves, down to one sequence."""
    was_training = model.training
    model.eval()
    scores: dict[str, list] = {}
    saved: dict[str, list] = {}
    start = 0
    while start < len(split):
        indices = np.arange(start, min(start + batch_size, len(split)))
        try:
            batch, views = _evaluate_batch(model, split, indices, n_past, n_future, device, seed,
                                           samples, posterior, best_by, moving_threshold,
                                           save=start < keep)
        except torch.cuda.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size //= 2  # the scores do not depend on the batch size: retry smaller
            torch.cuda.empty_cache()
            print(f"evaluate: out of GPU memory, going on with batches of {batch_size}")
            continue
        for name, value in batch.items():
            scores.setdefault(name, []).append(value.T.cpu())  # (B, n_future)
        for name, value in views.items():
            saved.setdefault(name, []).append(value)
        start += len(indices)
    model.train(was_training)
    return Scores({name: torch.cat(v).numpy() for name, v in scores.items()},
                  {name: torch.cat(v)[:keep].numpy() for name, v in saved.items()})


def _evaluate_batch(model, split, indices, n_past, n_future, device, seed, samples, posterior,
                    best_by: str, moving_threshold: float, save: bool) -> tuple[dict, dict]:
    """Scores (n_future, B) of sequences `indices`, and their frames for the report if `save`."""
    length = n_past + n_future
    frames_u8, conds = split.windows(indices, np.zeros_like(indices), length)
    frames = to_model_frames(frames_u8, device)  # (T, B, C, H, W)
    conds = conds.transpose(0, 1).to(device)
    B = len(indices)
    # One more draw than samples: the last is the posterior's.
    noise = prior_noise(seed, indices, samples + 1, length - 1, model.latent_size).to(device)
    preds = sample_prior(model, frames, conds, n_past, noise[:samples])[:, n_past - 1:]
    preds = preds.clamp(0, 1)  # (N, n_future, B, C, H, W)
    scorer = FrameScorer(frames[n_past:], frames[n_past - 1], moving_threshold)  # copy the last given
    batch, best = scorer.samples(preds, best_by)
    batch.update(scorer.baseline())
    if posterior:
        with autocast(device):
            post = rollout(model, frames, conds, n_past, teacher_forcing=False,
                           noise=noise[samples]).frames
        post = post[n_past - 1:].float().clamp(0, 1)
        batch.update(scorer.one(post, "posterior_"))
    views = {}
    if save:
        views = {"truth": frames_u8,
                 "best": to_uint8(preds[best, :, torch.arange(B)]),  # (B, n_future, ...)
                 "samples": to_uint8(preds[: min(2, samples)].permute(2, 0, 1, 3, 4, 5))}
        if posterior:
            views["posterior"] = to_uint8(post.transpose(0, 1))
    return batch, views


def test(model: SVG, shards_dir: Path, cfg: EvalConfig, device: torch.device,
         outputs: TestOutputs) -> dict:
    """The lab's protocol on every test sequence: `n_past` (2) frames in, `n_future` (10)
    predicted. Writes `outputs` and returns the metrics."""
    scores = evaluate(model, Split(shards_dir, "test"), cfg.n_past, cfg.n_future,
                      cfg.batch_size, device, cfg.seed, samples=cfg.num_samples, keep=cfg.keep,
                      best_by=cfg.best_by, moving_threshold=cfg.moving_threshold)
    metrics = {**scores.summary(), "n_past": cfg.n_past, "n_future": cfg.n_future,
               "num_samples": cfg.num_samples, "best_by": cfg.best_by,
               "moving_threshold": cfg.moving_threshold, "model": model.name}
    print(f"test PSNR {metrics['psnr']:.2f} dB (mean of {cfg.num_samples} samples), best "
          f"{metrics['psnr_best']:.2f} dB, copy-last-frame {metrics['baseline_psnr']:.2f} dB; "
          f"SSIM {metrics['ssim']:.4f} vs {metrics['baseline_ssim']:.4f}")
    frames = np.arange(cfg.n_past, cfg.n_past + cfg.n_future)
    outputs.write(metrics, frames, scores, n_past=cfg.n_past)
    return metrics


def sample_spread(saved: dict, threshold: float = EvalConfig.moving_threshold) -> dict:
    """How much two prior samples of the saved test sequences (`eval/samples.npz`) differ: the
    mean absolute difference of the first two samples (largest over the colour channels, pixel
    values in [0, 1]) over the moving pixels (as `psnr_moving` counts them) and over all
    predicted pixels. Samples that a reader sees differ in the grid score about 0.05 on the
    moving pixels; near 0, the prior samples give the same video."""
    n_past = int(saved["n_past"])
    truth = torch.from_numpy(saved["truth"]) / 255  # (sequences, T, C, H, W)
    samples = torch.from_numpy(saved["samples"]) / 255  # (sequences, 2, predicted, C, H, W)
    spread = (samples[:, 0] - samples[:, 1]).abs().amax(dim=-3)  # (sequences, predicted, H, W)
    moving = moving_pixels(truth[:, n_past:], truth[:, n_past - 1:n_past], threshold).squeeze(-3)
    return {"moving": spread[moving].mean().item(), "all": spread.mean().item()}
