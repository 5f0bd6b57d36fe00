"""The robot track: SVG (Denton & Fergus 2018) on action-conditioned robot pushing, the 2023
lab. Frames 64x64, a 7-d condition per step (action, end-effector position); test protocol:
2 frames in, 10 predicted, beside copying the last given frame."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cvae.config import EvalConfig, Params, TrainConfig
from cvae.data.shards import Split
from cvae.samples import TestOutputs
from cvae.tracks.robot import evaluation
from cvae.tracks.robot.model import SVG
from cvae.tracks.robot.rollout import rollout as training_rollout  # noqa: F401


def build_model(params: Params, meta: dict) -> SVG:
    channels = meta["frame_shape"][1]
    return SVG(params.model, cond_dim=len(meta["condition_names"]), channels=channels)


def compiled_modules(model: SVG) -> list[nn.Module]:
    return [model.encoder, model.decoder]


def validate(model: SVG, split: Split, cfg: TrainConfig, device: torch.device) -> dict:
    """The lab's protocol (n_past -> n_future of training), one prior sample, the same draws
    every epoch."""
    return evaluation.evaluate(model, split, cfg.n_past, cfg.n_future, batch_size=cfg.batch_size,
                               device=device, seed=cfg.seed, samples=1, posterior=False,
                               keep=0).summary()


def test(model: SVG, shards_dir: Path, cfg: EvalConfig, device: torch.device,
         outputs: TestOutputs) -> dict:
    return evaluation.test(model, shards_dir, cfg, device, outputs)


def write_report(inputs, sequence: int, fps: int, out: Path) -> None:
    # Imported here, so that training and evaluation neither run nor depend on the figures.
    from cvae.tracks.robot import report

    report.write_report(inputs, sequence, fps, out)
