"""The dance track's test protocol (the 2024 lab's): from each sequence's first frame and all of
its labels, predict every other frame, the model fed only its own predictions and z drawn from
the prior, N(0, I); score every predicted frame
(PSNR per image, DESIGN.md section 2) beside the copy-first-frame baseline.

As on the robot track, N prior samples per sequence run as one batch, scored as the mean over
samples and the best sample (by SSIM over the whole rollout), with the posterior (z inferred from
the true frame and label, still no teacher forcing) as an upper reference. Score arrays are
(sequences, T-1), one column per predicted frame 1..T-1.

Sequences whose frames are not all known (the course's test split: first frames only) are
predicted but not scored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cvae.config import EvalConfig
from cvae.data.shards import Split
from cvae.runtime import autocast, seeded_generator
from cvae.samples import FrameScorer, Scores, TestOutputs, tile_samples, to_model_frames, to_uint8
from cvae.tracks.dance.model import DanceCVAE
from cvae.tracks.dance.rollout import generate
from cvae.vae import reparameterize


def has_truth(split: Split) -> bool:
    return split.seq_len == split.condition_len


@torch.no_grad()
def evaluate_dance(model: DanceCVAE, split: Split, batch_size: int, device: torch.device,
                   seed: int, samples: int = 1, posterior: bool = True, keep: int = 0,
                   best_by: str = "ssim", moving_threshold: float = EvalConfig.moving_threshold
                   ) -> tuple[Scores, np.ndarray]:
    """Roll out every sequence of `split`. Returns the scores (empty without ground truth; the
    first `keep` sequences' truth, labels and first sample saved for the report) and the first
    prior sample of every sequence, uint8 (sequences, T, C, H, W) with the given first frame at
    t = 0: what a submission holds."""
    was_training = model.training
    model.eval()
    scored = has_truth(split)
    scores: dict[str, list] = {}
    saved: dict[str, list] = {}
    predictions = []
    for start in range(0, len(split), batch_size):
        indices = np.arange(start, min(start + batch_size, len(split)))
        frames_u8, labels_u8 = split.windows(indices, np.zeros_like(indices), split.condition_len)
        frames, labels = to_model_frames(frames_u8, device), to_model_frames(labels_u8, device)
        noise = _PriorNoise(seed, indices, samples + 1, model.latent_shape, device)
        with autocast(device):
            preds = _sample(model, frames[0], labels, noise, samples).float().clamp(0, 1)
        first = to_uint8(preds[0].transpose(0, 1))  # sample 1, (B, T-1, C, H, W)
        predictions.append(torch.cat([frames_u8[:, :1], first], dim=1))
        if start < keep:
            saved.setdefault("truth", []).append(frames_u8)
            saved.setdefault("labels", []).append(labels_u8)
            saved.setdefault("prediction", []).append(predictions[-1])
        if not scored:
            continue
        scorer = FrameScorer(frames[1:], frames[0], moving_threshold)  # copy the first frame
        batch, _ = scorer.samples(preds, best_by)
        batch.update(scorer.baseline())
        if posterior:
            with autocast(device):
                post = _posterior(model, frames, labels, noise).float().clamp(0, 1)
            batch.update(scorer.one(post, "posterior_"))
        for name, value in batch.items():
            scores.setdefault(name, []).append(value.T.cpu())  # (B, T-1)
    model.train(was_training)
    return (Scores({name: torch.cat(v).numpy() for name, v in scores.items()},
                   {name: torch.cat(v)[:keep].numpy() for name, v in saved.items()}),
            torch.cat(predictions).numpy())


class _PriorNoise:
    """The standard normal draws behind z_t, step by step: each sequence has its own generator
    seeded by (seed, its index), so the samples are the same every run however sequences are
    batched. Of each step's `draws`, the first are the prior samples' and the last is kept in
    `reserved` for the posterior reference."""

    def __init__(self, seed: int, indices, draws: int, shape: tuple, device: torch.device):
        self.generators = [seeded_generator(seed, index) for index in indices]
        self.draws, self.shape, self.device = draws, shape, device
        self.reserved: list[torch.Tensor] = []  # (B, *shape) per step

    def step(self) -> torch.Tensor:
        """The prior samples' draws of the next step, (draws - 1, B, *shape)."""
        eps = torch.stack([torch.randn(self.draws, *self.shape, generator=g)
                           for g in self.generators], dim=1).to(self.device)
        self.reserved.append(eps[-1])
        return eps[:-1]


def _sample(model, first, labels, noise: _PriorNoise, samples: int) -> torch.Tensor:
    """N prior samples of every sequence in one batched rollout: (N, T-1, B, C, H, W)."""
    B = first.shape[0]

    def prior(t, fed_features, label_features):
        return reparameterize(*model.prior(fed_features), noise.step().flatten(0, 1))

    preds = generate(model, tile_samples(first, samples, dim=0),
                     tile_samples(labels, samples, dim=1), prior)
    return preds.unflatten(1, (samples, B)).transpose(0, 1)


def _posterior(model, frames, labels, noise: _PriorNoise) -> torch.Tensor:
    """The posterior reference: z_t from the true frame t and label t, predictions fed back,
    drawn with the draws `_sample` reserved."""
    def latent(t, fed_features, label_features):
        mu, logvar = model.posterior(model.frame_encoder(frames[t]), label_features)
        return reparameterize(mu, logvar, noise.reserved[t - 1])

    return generate(model, frames[0], labels, latent)


def test(model: DanceCVAE, shards_dir: Path, cfg: EvalConfig, device: torch.device,
         outputs: TestOutputs) -> dict:
    """Whole sequences from their first frame. Scored on the test split when its frames are
    known (sim-dance), else on the validation split (the course's test has first frames only);
    the test predictions go to the submission CSV either way. Writes `outputs`, returns the
    metrics."""
    # Imported here: the train stage, which validates with this module, never writes a CSV.
    from cvae.tracks.dance.submission import read_submission, write_submission

    test_split = Split(shards_dir, "test")
    scored_name = "test" if has_truth(test_split) else "val"
    run = dict(batch_size=cfg.batch_size, device=device, seed=cfg.seed, samples=cfg.num_samples,
               best_by=cfg.best_by, moving_threshold=cfg.moving_threshold)
    scores, predictions = evaluate_dance(model, test_split, keep=cfg.keep, **run)
    if scored_name == "val":
        scores, _ = evaluate_dance(model, Split(shards_dir, "val"), **run)
    rows = write_submission(outputs.submission, predictions)
    read_submission(outputs.submission, expected_rows=rows)
    length = next(iter(scores.scores.values())).shape[1] + 1
    metrics = {**scores.summary(), "scored_split": scored_name, "n_past": 1,
               "n_future": length - 1, "submission_rows": rows, "num_samples": cfg.num_samples,
               "best_by": cfg.best_by, "moving_threshold": cfg.moving_threshold,
               "model": model.name}
    print(f"{scored_name} rollout PSNR {metrics['psnr']:.2f} dB over {length - 1} predicted frames "
          f"(mean of {cfg.num_samples} samples; best {metrics['psnr_best']:.2f}), copy-first-frame "
          f"{metrics['baseline_psnr']:.2f} dB; {outputs.submission}: {rows} rows")
    outputs.write(metrics, np.arange(1, length), scores, n_past=1)
    return metrics
