"""What the conditional VAEs of every track share: the reparameterised Gaussian draw, and
`Rollout`, what a track's training rollout returns and the loss (`cvae.losses`) reads."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rollout:
    frames: torch.Tensor  # (T-1, B, C, H, W): predictions of frames 1..T-1
    # Every latent of a step flattened to one vector (B, latent_size) per step:
    mu: torch.Tensor  # (T-1, B, L): posterior means (from the prior steps too, unused there)
    logvar: torch.Tensor  # (T-1, B, L)
    prior_mu: torch.Tensor  # (T-1, B, L): zeros for the fixed prior N(0, I)
    prior_logvar: torch.Tensor  # (T-1, B, L)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                   eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) (drawn here unless given): a sample that gradients
    flow through (Kingma & Welling 2014)."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)
