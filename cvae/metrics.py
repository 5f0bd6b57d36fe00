"""Image quality metrics, per image.

Both take images in [0, 1] shaped (..., C, H, W) and return one value per image (shape `...`),
so callers average over frames and sequences themselves. Averaging the MSE over a batch before
the log, as the course template did, overstates PSNR: here the log is taken per image.
"""
from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

MAX_PSNR_MSE = 1e-10  # identical images: report 100 dB instead of infinity


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """10 log10(1 / mse) for every image, data range 1."""
    mse = ((x.float() - y.float()) ** 2).mean(dim=(-3, -2, -1))
    return 10 * torch.log10(1 / mse.clamp_min(MAX_PSNR_MSE))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM with an 11x11 Gaussian window of sigma 1.5, data range 1, for every image.

    Computed in float64: in float32 the variances E[x^2] - E[x]^2 cancel badly and SSIM is off
    by about 2e-4."""
    lead = x.shape[:-3]
    values = structural_similarity_index_measure(
        x.double().reshape(-1, *x.shape[-3:]), y.double().reshape(-1, *y.shape[-3:]),
        gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0, reduction="none",
    )
    return values.float().reshape(lead)
