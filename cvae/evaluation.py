"""The evaluation protocol: from `n_past` true frames, predict `n_future` frames with the model fed
only its own predictions (teacher forcing off) and z drawn from the prior, and score them per
image beside the copy-last-frame baseline on the same sequences.

Stochastic models are scored as SVG does: N prior samples per sequence (drawn as one batch, N
copies of every sequence), reported as the mean over samples and as the best sample (the one
with the highest SSIM averaged over the predicted frames). The posterior reconstruction (z
inferred from the true future, still no teacher forcing) is an upper reference.

Every score is kept per sequence and predicted frame, (sequences, n_future):
  psnr, ssim                  mean over the N samples, PSNR per image (DESIGN.md section 2)
  psnr_best, ssim_best        the best sample by SSIM
  psnr_finn, psnr_finn_best   SVG's PSNR: per colour channel, then averaged over channels
  posterior_psnr, posterior_ssim
  baseline_psnr, baseline_ssim
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cvae.data.shards import Split
from cvae.metrics import psnr, psnr_per_channel, ssim
from cvae.models.svg import SVG
from cvae.rollout import rollout
from cvae.runtime import autocast, seeded_generator


@dataclass
class Scores:
    scores: dict[str, np.ndarray]  # name -> (sequences, n_future)
    saved: dict[str, np.ndarray]  # uint8 frames of the first sequences, for the report

    def summary(self) -> dict:
        return {**{name: float(v.mean()) for name, v in self.scores.items()},
                "sequences": int(next(iter(self.scores.values())).shape[0])}

    def per_frame(self) -> dict:
        return {name: v.mean(0) for name, v in self.scores.items()}


def to_model_frames(frames: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (B, T, C, H, W) -> float (T, B, C, H, W) in [0, 1] on `device`, channels stored
    last: each frame, and any run of frames flattened to a batch, is a channels_last image,
    the layout the convolutions run fastest on (see `cvae.training.prepare_model`)."""
    frames = frames.to(device, non_blocking=True).transpose(0, 1)
    frames = frames.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return frames.float().div_(255)


def to_model_conditions(conds: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Conditions of a batch, time first on `device`: vectors (B, T, c) -> (T, B, c); label
    images (B, T, C, H, W) uint8 -> model frames, as `to_model_frames`."""
    if conds.dtype == torch.uint8:
        return to_model_frames(conds, device)
    return conds.to(device, non_blocking=True).transpose(0, 1)


def _to_uint8(frames: torch.Tensor) -> torch.Tensor:
    return (frames.clamp(0, 1) * 255).round().byte().cpu()


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


def tile_samples(x: torch.Tensor, samples: int, dim: int) -> torch.Tensor:
    """`samples` copies of a batch along its batch dimension `dim`, sample-major: element
    k * B + b is sample k of sequence b, the order prior draws are flattened in."""
    return x.repeat(*(samples if d == dim else 1 for d in range(x.dim())))


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
             keep: int = 4) -> Scores:
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
                                           samples, posterior, save=start < keep)
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
                    save: bool) -> tuple[dict, dict]:
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
    truth = frames[n_past:]
    batch, best = _score_samples(preds, truth)
    last = frames[n_past - 1].expand_as(truth)
    batch["baseline_psnr"], batch["baseline_ssim"] = psnr(last, truth), ssim(last, truth)
    if posterior:
        with autocast(device):
            post = rollout(model, frames, conds, n_past, teacher_forcing=False,
                           noise=noise[samples]).frames
        post = post[n_past - 1:].float().clamp(0, 1)
        batch["posterior_psnr"], batch["posterior_ssim"] = psnr(post, truth), ssim(post, truth)
    views = {}
    if save:
        views = {"truth": frames_u8,
                 "best": _to_uint8(preds[best, :, torch.arange(B)]),  # (B, n_future, ...)
                 "samples": _to_uint8(preds[: min(2, samples)].permute(2, 0, 1, 3, 4, 5))}
        if posterior:
            views["posterior"] = _to_uint8(post.transpose(0, 1))
    return batch, views


def _score_samples(preds: torch.Tensor, truth: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Mean-of-N and best-of-N (by SSIM over the frames) scores, each (n_future, B), and the
    index of each sequence's best sample."""
    truth = truth.expand_as(preds)
    by_sample = {"psnr": psnr(preds, truth), "ssim": ssim(preds, truth),
                 "psnr_finn": psnr_per_channel(preds, truth)}  # each (N, n_future, B)
    best = by_sample["ssim"].mean(1).argmax(0)  # (B,): the best sample of each sequence
    columns = torch.arange(best.shape[0], device=best.device)
    out = {}
    for name, value in by_sample.items():
        out[name] = value.mean(0)
        out[f"{name}_best"] = value[best, :, columns].T  # (n_future, B)
    return out, best
