"""Image quality metrics, per image.

Both take images in [0, 1] shaped (..., C, H, W) and return one value per image (shape `...`),
so callers average over frames and sequences themselves. Averaging the MSE over a batch before
the log, as the course template did, overstates PSNR: here the log is taken per image.
"""
from __future__ import annotations

import torch

MAX_PSNR_MSE = 1e-10  # identical images: report 100 dB instead of infinity


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """10 log10(1 / mse) for every image, data range 1."""
    mse = ((x.float() - y.float()) ** 2).mean(dim=(-3, -2, -1))
    return 10 * torch.log10(1 / mse.clamp_min(MAX_PSNR_MSE))


def psnr_per_channel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SVG's PSNR (its `finn_psnr` applied channel by channel): 10 log10(1 / mse) for each
    colour channel, then averaged over the channels. Never below `psnr` (Jensen), so the two
    must be labelled apart."""
    mse = ((x.float() - y.float()) ** 2).mean(dim=(-2, -1))  # (..., C)
    return (10 * torch.log10(1 / mse.clamp_min(MAX_PSNR_MSE))).mean(-1)


SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_CHUNK = 256  # images per pass: bounds the memory of the float64 maps
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2  # (k * data range)^2, data range 1


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM (Wang et al. 2004) with an 11x11 Gaussian window of sigma 1.5, data range 1, for
    every image: the mean of the SSIM map over the windows that fit inside the image (as SVG's
    evaluation and scikit-image do; torchmetrics 1.9 also averages reflect-padded border
    windows, which moves SSIM by up to ~1e-3) and over the colour channels.

    float64, so E[x^2] - E[x]^2 does not cancel on flat areas (float32 errs by ~2e-4 there).
    The Gaussian filter is separable and applied as two matrix products, which BLAS runs fast
    in float64 where a float64 convolution on the CPU is ~30x slower."""
    lead, (H, W) = x.shape[:-3], x.shape[-2:]
    x, y = x.reshape(-1, *x.shape[-3:]), y.reshape(-1, *y.shape[-3:])
    rows, cols = _valid_gaussian(H, x.device), _valid_gaussian(W, x.device)
    values = [_ssim_chunk(a.double(), b.double(), rows, cols)
              for a, b in zip(x.split(SSIM_CHUNK), y.split(SSIM_CHUNK))]
    return torch.cat(values).float().reshape(lead)


def _ssim_chunk(x, y, rows, cols):

    def blur(img):  # (..., H, W) -> (..., H - 10, W - 10)
        return rows.T @ img @ cols

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + SSIM_C1) * (2 * cxy + SSIM_C2)) / (
        (mx * mx + my * my + SSIM_C1) * (vx + vy + SSIM_C2))
    return ssim_map.mean(dim=(-3, -2, -1))


def _valid_gaussian(n: int, device) -> torch.Tensor:
    """(n, n - 10): column j holds the normalised Gaussian window over pixels j..j+10."""
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    window = torch.exp(-offsets ** 2 / (2 * SSIM_SIGMA ** 2))
    window /= window.sum()
    if n < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} pixels, got {n}")
    matrix = torch.zeros(n, n - SSIM_WINDOW + 1, dtype=torch.float64)
    for j in range(n - SSIM_WINDOW + 1):
        matrix[j : j + SSIM_WINDOW, j] = window
    return matrix.to(device)
