"""KL annealing, teacher forcing and the learning rate, as pure functions of the training clock.

Both count from 0: epoch 0 is the first epoch, step 0 the first optimiser step.
"""
from __future__ import annotations

import math

from cvae.config import KLConfig, TeacherForcingConfig, TrainConfig


def kl_beta(cfg: KLConfig, t: int) -> float:
    """KL weight at time `t` (an epoch or a step index, as `cfg.unit` says).

    Cyclical (Fu et al. 2019, "Cyclical Annealing Schedule"): with tau = (t mod cycle) / cycle,
    beta = beta_max * min(1, tau / ratio): a linear ramp from 0 over the first `ratio` of each
    cycle, then flat at beta_max. Monotonic is one such cycle that never restarts. None: beta_max.
    """
    if cfg.type == "None":
        return cfg.beta_max
    if cfg.type == "Cyclical":
        tau = (t % cfg.cycle) / cfg.cycle
    else:  # Monotonic
        tau = min(t / cfg.cycle, 1.0)
    return cfg.beta_max * min(1.0, tau / cfg.ratio)


def teacher_forcing_ratio(cfg: TeacherForcingConfig, epoch: int) -> float:
    """tfr of `epoch`: `start` for epochs before `start_decay_epoch`, then `decay_step` less
    each epoch from that one on (so epoch start_decay_epoch already uses start - decay_step),
    never below `lower_bound`."""
    decays = max(0, epoch - cfg.start_decay_epoch + 1)
    return max(cfg.lower_bound, cfg.start - cfg.decay_step * decays)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """lr of optimiser step `step` (0 = the first). constant: `lr` throughout. cosine: half a
    cosine from `lr` at step 0 towards 0 after the last step (epochs x steps_per_epoch steps),
    lr / 2 halfway, so a short run still ends on small, settling updates."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    total = cfg.epochs * cfg.steps_per_epoch
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))
