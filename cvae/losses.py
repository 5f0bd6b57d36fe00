"""The two terms of the conditional VAE's loss."""
from __future__ import annotations

import torch

# The posterior has collapsed when the KL (nats per step of a training sequence, summed over the
# latent dimensions) is below this: the latent then tells the decoder almost nothing about the
# frame, so prior samples, the best sample and the posterior hardly differ.
COLLAPSED_BELOW = 0.1


def gaussian_kl(mu_q, logvar_q, mu_p=None, logvar_p=None) -> torch.Tensor:
    """KL(q || p) between diagonal Gaussians, summed over the last (latent) dimension.

    p defaults to N(0, I). Closed form per dimension:
    log(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2.
    """
    if mu_p is None:
        mu_p = torch.zeros_like(mu_q)
    if logvar_p is None:
        logvar_p = torch.zeros_like(logvar_q)
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp() - 1)
    return kl.sum(-1)


def sequence_loss(pred, target, mu, logvar, beta: float, prior_mu=None, prior_logvar=None,
                  pixel_weight=None):
    """Loss of one batch of sequences, as SVG sums it: over predicted steps, the MSE (mean over
    batch and pixels) plus beta times the KL from the posterior to the prior (summed over latent
    dims, mean over batch); the prior is N(0, I) unless given (SVG-LP's learned prior).
    `pixel_weight` (T, B, 1, H, W), if given, scales each pixel's squared error in the loss;
    the MSE returned stays the plain one, so that logs compare between settings.

    pred, target: (T, B, C, H, W); mu, logvar, prior_*: (T, B, z). Returns (loss, mse, kl).
    """
    squared = (pred - target) ** 2
    mse = squared.mean(dim=(1, 2, 3, 4)).sum()
    fit = mse if pixel_weight is None else (squared * pixel_weight).mean(dim=(1, 2, 3, 4)).sum()
    kl = gaussian_kl(mu, logvar, prior_mu, prior_logvar).mean(dim=1).sum()
    return fit + beta * kl, mse, kl
