"""`params.yaml`, loaded once into frozen dataclasses.

One dataclass per section. Loading is strict: an unknown key, a value of the wrong type or an
out-of-range value stops with a message that names the key (`train.kl.type: ...`). Library code
receives these objects and never opens `params.yaml` itself.

The dataclasses' defaults are the shipped params.yaml's values (a test holds them equal), so a
key left out means what the shipped file says. The file is read as DVC reads it (YAML 1.2).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from cvae.errors import UserError


class ConfigError(UserError, ValueError):
    """A bad `params.yaml`: the message names the key and what was expected."""


@dataclass(frozen=True)
class BairConfig:
    """The published BAIR tar (data.source: bair)."""

    url: str = "http://rail.eecs.berkeley.edu/datasets/bair_robot_pushing_dataset_v0.tar"
    # The tar's size. Not named `size`: DVC's run cache leaves every key named `size` out of a
    # stage's key, so a changed `size` would restore an older download's outputs.
    bytes: int = 32_274_964_480
    sha256: str = "c6f8d164ab2be07174ef597e3e070d7466f3142caddc467b6af119b9458cd9cd"  # "" skips
    # Where the tar is, or will be, kept; or a folder holding the extracted softmotion30_44k/
    tar: str = "downloads/bair_robot_pushing_dataset_v0.tar"

    def check(self):
        _positive(self, "bytes", prefix="data.bair")
        _require(self.sha256 == "" or len(self.sha256) == 64, "data.bair.sha256",
                 "must be 64 hex digits, or empty to skip the check")


@dataclass(frozen=True)
class BairPngConfig:
    """The course's PNG folders (data.source: bair-png)."""

    root: str = "bair_png"  # holds train/, validate/, test/

    def check(self):
        pass


@dataclass(frozen=True)
class DanceDataConfig:
    """The dance track's sequence lengths, and where the course's folders are (lab4-folders)."""

    train_vi_len: int = 16  # frames per training clip
    val_vi_len: int = 630  # frames per validation (and, for sim-dance, test) sequence
    root: str = "lab4_dance"  # lab4-folders: holds train/, val/, test/

    def check(self):
        _positive(self, "train_vi_len", "val_vi_len", prefix="data.dance")
        _require(self.train_vi_len >= 2, "data.dance.train_vi_len", "must be >= 2 (a frame and a prediction)")


DANCE_SOURCES = ("sim-dance", "lab4-folders")


@dataclass(frozen=True)
class DataConfig:
    source: Literal["sim-push", "sample", "bair", "bair-png", "sim-dance", "lab4-folders"] = "sim-push"
    seed: int = 0
    num_train: int = 384
    num_val: int = 32
    num_test: int = 64
    seq_len: int = 30
    image_size: int = 64
    shard_size: int = 256  # sequences per shard file
    workers: int = 0  # generator processes; 0 = one per CPU core
    skip_bad_records: bool = False  # count and skip corrupt TFRecords instead of stopping
    bair: BairConfig = field(default_factory=BairConfig)
    bair_png: BairPngConfig = field(default_factory=BairPngConfig)
    dance: DanceDataConfig = field(default_factory=DanceDataConfig)

    @property
    def track(self) -> str:
        """robot (action-conditioned, SVG) or dance (pose-conditioned, the 2024 lab)."""
        return "dance" if self.source in DANCE_SOURCES else "robot"

    def check(self):
        _positive(self, "num_train", "num_val", "num_test", "seq_len", "shard_size")
        _require(self.image_size == 64, "data.image_size",
                 "the SVG encoder is built for 64 (the dance track is always 32 x 64)")
        _require(self.workers >= 0, "data.workers", "must be >= 0")


@dataclass(frozen=True)
class DanceModelConfig:
    """The dance model's widths, named as the course names them (channels of full-resolution
    feature maps): frame features, label features, latent, decoder-fusion output."""

    F_dim: int = 24
    L_dim: int = 12
    N_dim: int = 4
    D_out_dim: int = 32
    residual: bool = True  # the generator outputs the change to the first frame (course: False)
    # With residual: the generator paints a frame and a mask, and the prediction is the first
    # frame where the mask is 0, the painting where it is 1 (it starts near 0); false: it adds
    # a change to the first frame (clamped to [0, 1])
    composite: bool = True
    # The first frame's features join the fusion at every step: what the residual changes, so
    # the first frame's dancer can be erased (course: False)
    sees_first: bool = True
    # With the composite: what the mask keeps where it is 0 is a background plate instead of
    # the first frame itself: once per sequence, a learned mask covers the first frame's
    # dancer and the background around fills it, so where the dancer has left, no step has to
    # erase it again
    plate: bool = False
    # Channels of a per-sequence appearance code (attention pooling over the first frame and
    # label: background and costume colours) broadcast into the fusion; 0 = none (the course's)
    appearance_dim: int = 16
    # Channels of the label-guided read of the first frame (0 = none, the course's): every
    # position of label t's features asks the first label's features where the same bone was
    # (attention, queries and keys of this many channels) and takes the first frame's pixels
    # and features from there, so a limb is painted in its own costume colour wherever it moves
    first_lookup_dim: int = 0
    # Every module works on maps of 1/patch the frame's size, each patch x patch block of pixels
    # stacked into channels (lossless): patch^2 times less work, twice the reach; 1 = the course
    patch: int = 1

    def check(self):
        _positive(self, "F_dim", "L_dim", "N_dim", "D_out_dim", prefix="model.dance")
        _require(self.appearance_dim >= 0, "model.dance.appearance_dim", "must be 0 or more")
        _require(self.first_lookup_dim >= 0, "model.dance.first_lookup_dim", "must be 0 or more")
        _positive(self, "patch", prefix="model.dance")
        _require(not self.plate or (self.residual and self.composite), "model.dance.plate",
                 "needs residual and composite (the plate is what the composite's mask keeps)")


@dataclass(frozen=True)
class ModelConfig:
    width: float = 0.125  # channel multiplier of the VGG encoder/decoder; 1.0 = SVG's 64..512
    g_dim: int = 64  # frame encoding size (SVG: 128)
    z_dim: int = 16
    rnn_size: int = 128
    predictor_layers: int = 2
    posterior_layers: int = 1
    last_frame_skip: bool = False  # skips from the last input frame, not the last conditioning one
    # Which given frame the decoder's skips come from: the last (x[n_past-1], the paper's "last
    # ground truth frame") or, as SVG's released code does, the one before it (x[n_past-2]).
    skips_from: Literal["last_given", "svg_code"] = "last_given"
    prior: Literal["fixed", "learned"] = "fixed"  # N(0, I) (SVG-FP) | an LSTM on h_{t-1} (SVG-LP)
    prior_layers: int = 1
    # concat: the condition joins the predictor's input | condconv: it scales and shifts every
    # encoder and decoder channel (conditional convolution, Choi et al. 2019) | none: action-free
    # SVG, the condition is not used (the paper's BAIR setting)
    conditioning: Literal["concat", "condconv", "none"] = "concat"
    # Hierarchical latents (HAF-SVG): 1 = SVG's one z per frame; each further level adds a latent
    # map at the next decoder resolution (2: 8x8, 3: 8x8 and 16x16, ... 5: up to 64x64)
    levels: int = 1
    level_channels: int = 4  # channels of each latent map
    dance: DanceModelConfig = field(default_factory=DanceModelConfig)  # the dance track's model

    def check(self):
        _require(0 < self.width <= 4, "model.width", "must be in (0, 4]")
        _positive(self, "g_dim", "z_dim", "rnn_size", "predictor_layers", "posterior_layers",
                  "prior_layers", "level_channels")
        _require(1 <= self.levels <= 5, "model.levels",
                 "must be 1 (plain SVG) to 5 (a latent map at every decoder resolution)")


@dataclass(frozen=True)
class KLConfig:
    """KL weight schedule; see `cvae.schedules.kl_beta` for the exact definition."""

    type: Literal["Monotonic", "Cyclical", "None"] = "Monotonic"
    unit: Literal["epoch", "step"] = "epoch"  # what `cycle` counts
    beta_max: float = 1e-4
    cycle: int = 10  # length of one annealing cycle, in `unit`s
    ratio: float = 0.5  # fraction of a cycle spent ramping from 0 to beta_max

    def check(self):
        _require(self.beta_max >= 0, "train.kl.beta_max", "must be >= 0")
        _positive(self, "cycle", prefix="train.kl")
        _require(0 < self.ratio <= 1, "train.kl.ratio", "must be in (0, 1]")


@dataclass(frozen=True)
class TeacherForcingConfig:
    """Teacher-forcing ratio per epoch; see `cvae.schedules.teacher_forcing_ratio`."""

    start: float = 1.0
    start_decay_epoch: int = 5
    decay_step: float = 0.1
    lower_bound: float = 0.0

    def check(self):
        for name in ("start", "lower_bound"):
            _require(0 <= getattr(self, name) <= 1, f"train.tfr.{name}", "must be in [0, 1]")
        _require(self.lower_bound <= self.start, "train.tfr.lower_bound", "must be <= start")
        _require(self.decay_step >= 0, "train.tfr.decay_step", "must be >= 0")
        _require(self.start_decay_epoch >= 0, "train.tfr.start_decay_epoch", "must be >= 0")


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 1
    n_past: int = 2
    n_future: int = 10
    batch_size: int = 16
    epochs: int = 20
    steps_per_epoch: int = 50
    lr: float = 2e-3
    # constant: lr throughout | cosine: from lr down a half cosine towards 0 at the last step
    lr_schedule: Literal["constant", "cosine"] = "constant"
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    log_every: int = 25  # steps between log lines
    compile: bool = False  # torch.compile the encoder and decoder
    # bf16 autocast on CUDA only (auto), on CPUs too (bf16), or never (fp32).
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    loader_workers: int = 2  # DataLoader workers, for CUDA runs whose split does not fit on the GPU
    # Dance track: a training window's frames after its first start 0..first_gap frames later
    # (drawn per window), so that training sees the dancer far from where the first frame shows it.
    first_gap: int = 0
    # The loss counts the squared error of pixels that differ from the last given frame
    # 1 + moving_weight times (0: the plain MSE).
    moving_weight: float = 0.0
    kl: KLConfig = field(default_factory=KLConfig)
    tfr: TeacherForcingConfig = field(default_factory=TeacherForcingConfig)

    def check(self):
        _positive(self, "n_past", "n_future", "batch_size", "epochs", "steps_per_epoch",
                  "log_every", prefix="train")
        _require(self.lr > 0, "train.lr", "must be > 0")
        _require(self.grad_clip >= 0, "train.grad_clip", "must be >= 0")
        _require(self.loader_workers >= 0, "train.loader_workers", "must be >= 0")
        _require(self.first_gap >= 0, "train.first_gap", "must be >= 0")
        _require(self.moving_weight >= 0, "train.moving_weight", "must be >= 0")


@dataclass(frozen=True)
class EvalConfig:
    n_past: int = 2
    n_future: int = 10
    batch_size: int = 32  # sequences per batch; each runs `num_samples` rollouts
    seed: int = 0  # seed of the prior samples
    num_samples: int = 3  # prior samples per test sequence, drawn as one batch (SVG: 100)
    # the best of the samples by our SSIM, or by the SSIM of SVG's published numbers
    best_by: Literal["ssim", "ssim_svg"] = "ssim"
    # The moving region, scored apart: pixels where the truth differs from the reference frame
    # (the last given one; the dance track's first) by more than this, in any colour channel.
    moving_threshold: float = 0.1
    keep: int = 4  # test sequences whose predictions are saved for the report

    def check(self):
        _positive(self, "n_past", "n_future", "batch_size", "num_samples", "keep", prefix="eval")
        _require(0 <= self.moving_threshold < 1, "eval.moving_threshold", "must be in [0, 1)")


@dataclass(frozen=True)
class ReportConfig:
    sequence: int = 0  # which test sequence the GIF and the grid show
    fps: int = 4

    def check(self):
        _require(self.sequence >= 0, "report.sequence", "must be >= 0")
        _positive(self, "fps", prefix="report")


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def check(self):
        if self.data.track == "dance":
            # The dance protocol: one true frame, then labels only; eval rolls out whole sequences.
            clip = self.data.dance.train_vi_len
            _require(self.train.n_past == 1, "train.n_past", "must be 1 on the dance track")
            _require(self.train.n_past + self.train.n_future + self.train.first_gap <= clip,
                     "train.n_future", "n_past + n_future + first_gap must fit in "
                     f"data.dance.train_vi_len ({clip})")
        else:
            _require(self.train.first_gap == 0, "train.first_gap",
                     "must be 0 on the robot track (its given frames are consecutive)")
            window = self.data.seq_len
            for section in ("train", "eval"):
                cfg = getattr(self, section)
                _require(cfg.n_past + cfg.n_future <= window, f"{section}.n_future",
                         f"n_past + n_future must fit in data.seq_len ({window})")
                _require(cfg.n_past >= 2 or self.model.skips_from == "last_given",
                         f"{section}.n_past", "must be >= 2 with model.skips_from: svg_code "
                         "(skips of the frame before the last given one)")
        _require(self.report.sequence < self.eval.keep, "report.sequence",
                 f"must be < eval.keep ({self.eval.keep}), the sequences evaluate saves")


def load_params(path: str | Path = "params.yaml") -> Params:
    """The settings in `path`. An empty file is an error, not the defaults: it is more likely
    cut short than meant, and the defaults are a full-size run."""
    raw = read_yaml(path)
    if not raw:
        raise ConfigError(f"the file is empty: restore it (git checkout {Path(path).name})")
    return parse(Params, raw)


def read_yaml(path: str | Path) -> dict:
    """A YAML file as DVC reads it: YAML 1.2 (ruamel), where `1e-3` is a number, as `dvc exp
    run -S` and `dvc params diff` see it (PyYAML's YAML 1.1 reads it as a string)."""
    path = Path(path)
    try:
        return YAML(typ="safe", pure=True).load(path.read_text()) or {}
    except YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}".replace("\n", " ")) from None


def parse(cls, raw, prefix: str = ""):
    """Build dataclass `cls` from a dict, checking keys, types and values."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'params'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown key {where}{unknown[0]} (known in {prefix or 'params.yaml'}: "
            f"{', '.join(sorted(names))})"
        )
    values = {
        name: _convert(hints[name], value, f"{prefix}.{name}" if prefix else name)
        for name, value in raw.items()
    }
    obj = cls(**values)
    obj.check()
    return obj


def _convert(kind, value, key: str):
    if dataclasses.is_dataclass(kind):
        return parse(kind, value, key)
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")
    return value


def _require(ok: bool, key: str, message: str):
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _positive(cfg, *names, prefix: str | None = None):
    section = prefix or type(cfg).__name__.removesuffix("Config").lower()
    for name in names:
        _require(getattr(cfg, name) > 0, f"{section}.{name}", "must be > 0")


def as_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)

