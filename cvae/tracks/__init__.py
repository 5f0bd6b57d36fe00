"""Tracks: one kind of video-prediction task each, with its model, rollout, test protocol and
report. The shared machinery (training loop, data, metrics, losses, schedules, runtime,
figures) sits below and never names a track; the track is picked here, once, from the shards'
`meta.json`.

A track is a package `cvae/tracks/<name>/` whose `__init__` provides the `Track` functions.

  robot   SVG on action-conditioned robot pushing (BAIR, sim-push): the 2023 lab
  dance   the pose-conditioned dance video model: the 2024 lab
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # names for the interface only: importing a track runs none of these
    import torch
    from torch import nn

    from cvae.config import EvalConfig, Params, TrainConfig
    from cvae.data.shards import Split
    from cvae.figures import ReportInputs
    from cvae.samples import TestOutputs
    from cvae.vae import Rollout

NAMES = ("robot", "dance")


class Track(Protocol):
    """What the shared code asks of a track."""

    def build_model(self, params: Params, meta: dict) -> nn.Module:
        """The untrained model for these settings and data (`meta.json`)."""

    def training_rollout(self, model: nn.Module, frames: torch.Tensor, conds: torch.Tensor, n_past: int,
                *, teacher_forcing: bool) -> Rollout:
        """The training rollout of a batch, time first: what the loss reads."""

    def compiled_modules(self, model: nn.Module) -> list[nn.Module]:
        """The parts worth `torch.compile` (where the time goes)."""

    def validate(self, model: nn.Module, split: Split, cfg: TrainConfig,
                 device: torch.device) -> dict:
        """Validation scores after an epoch: psnr, ssim, baseline_psnr."""

    def test(self, model: nn.Module, shards_dir: Path, cfg: EvalConfig, device: torch.device,
             outputs: TestOutputs) -> dict:
        """The track's test protocol: writes `outputs`, returns the metrics."""

    def write_report(self, inputs: ReportInputs, sequence: int, fps: int, out: Path) -> None:
        """The report's figures, GIFs and summary.md in `out`."""


def for_meta(meta: dict) -> Track:
    """The track of prepared data (its package; the other tracks are not imported)."""
    name = meta.get("track", "robot")  # shards made before the dance track have no key
    if name not in NAMES:
        raise ValueError(f"shards/meta.json: unknown track {name!r} (known: {', '.join(NAMES)})")
    return importlib.import_module(f"cvae.tracks.{name}")
