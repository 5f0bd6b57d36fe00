"""The dance track: the 2024 lab's pose-conditioned VAE. Frames 32x64, a pose label image per
frame; test protocol: whole sequences (630 frames) from their first frame and every label,
beside copying the first frame, and the course's submission CSV."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cvae.config import EvalConfig, Params, TrainConfig
from cvae.data.shards import Split
from cvae.errors import UserError
from cvae.samples import TestOutputs
from cvae.tracks.dance import evaluation
from cvae.tracks.dance.model import DanceCVAE
from cvae.tracks.dance.rollout import rollout as training_rollout  # noqa: F401


def build_model(params: Params, meta: dict) -> DanceCVAE:
    channels, *size = meta["frame_shape"][1:]
    patch = params.model.dance.patch
    if any(n % patch for n in size):
        raise UserError(f"model.dance.patch: {patch} does not divide the frames' size "
                        f"{size[0]} x {size[1]}")
    return DanceCVAE(params.model.dance, channels, tuple(size))


def compiled_modules(model: DanceCVAE) -> list[nn.Module]:
    return [model.frame_encoder, model.label_encoder, model.fusion, model.generator]


def validate(model: DanceCVAE, split: Split, cfg: TrainConfig, device: torch.device) -> dict:
    """The whole validation sequences from their first frame, one prior sample, the same draws
    every epoch."""
    scores, _ = evaluation.evaluate_dance(model, split, batch_size=cfg.batch_size, device=device,
                                          seed=cfg.seed, samples=1, posterior=False)
    return scores.summary()


def test(model: DanceCVAE, shards_dir: Path, cfg: EvalConfig, device: torch.device,
         outputs: TestOutputs) -> dict:
    return evaluation.test(model, shards_dir, cfg, device, outputs)


def write_report(inputs, sequence: int, fps: int, out: Path) -> None:
    # Imported here, so that training and evaluation neither run nor depend on the figures.
    from cvae.tracks.dance import report

    report.write_report(inputs, sequence, fps, out)
