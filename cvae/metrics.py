"""Image quality metrics, per image.

Both take images in [0, 1] shaped (..., C, H, W) and return one value per image (shape `...`),
so callers average over frames and sequences themselves. Averaging the MSE over a batch before
the log, as the course template did, understates PSNR (log is concave, so by Jensen's inequality
the log of the mean MSE is at least the mean of the logs: 22.97 dB for a pair of images whose
own PSNRs are 20 and 40, mean 30): here the log is taken per image.
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


def moving_pixels(truth: torch.Tensor, reference: torch.Tensor, threshold: float) -> torch.Tensor:
    """Where the truth differs from the reference frame by more than `threshold` in any colour
    channel: (..., 1, H, W) booleans. The pixels a copy of the reference gets wrong, i.e. where
    something moved."""
    return ((truth.float() - reference.float()).abs() > threshold).any(dim=-3, keepdim=True)


def masked_psnr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR per image (data range 1) over the pixels of `mask` (..., 1, H, W) alone: the MSE
    averaged over those pixels and the channels. NaN for an image with no such pixel (callers
    leave it out of averages), 100 dB for a perfect one, as `psnr`."""
    mask = mask.float()
    squared = ((x.float() - y.float()) ** 2 * mask).sum(dim=(-3, -2, -1))
    count = mask.sum(dim=(-3, -2, -1)) * x.shape[-3]
    mse = squared / count  # 0 / 0 = NaN where nothing moved
    return 10 * torch.log10(1 / mse.clamp_min(MAX_PSNR_MSE))


SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_CHUNK = 256  # images per pass: bounds the memory of the float64 maps
SSIM_K1, SSIM_K2 = 0.01, 0.03  # the constants are (k * data range)^2
SVG_WINDOW, SVG_DATA_RANGE = 7, 2.0  # old scikit-image compare_ssim: float images in [-1, 1]


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """SSIM (Wang et al. 2004) with an 11x11 Gaussian window of sigma 1.5, data range 1, for
    every image: the mean of the SSIM map over the windows that fit inside the image (as
    scikit-image's `structural_similarity(gaussian_weights=True)` and SVG's `finn_ssim` do;
    torchmetrics 1.9 also averages reflect-padded border windows, which moves SSIM by up to
    ~1e-3) and over the colour channels."""
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64) - (SSIM_WINDOW - 1) / 2
    window = torch.exp(-offsets ** 2 / (2 * SSIM_SIGMA ** 2))
    return _ssim(x, y, window / window.sum(), data_range=1.0, covariance_norm=1.0)


def ssim_svg(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The SSIM behind SVG's published numbers and its best-sample choice: the old scikit-image
    `compare_ssim` defaults, per colour channel, then averaged: a 7x7 uniform window, the
    sample covariance (N / (N - 1), N = 49) and, for float images, a data range of 2 (the
    float range it assumed was [-1, 1]), so its constants are 4x ours. Higher than `ssim` on
    the same images; labelled apart."""
    window = torch.full((SVG_WINDOW,), 1 / SVG_WINDOW, dtype=torch.float64)
    n = SVG_WINDOW ** 2
    return _ssim(x, y, window, data_range=SVG_DATA_RANGE, covariance_norm=n / (n - 1))


def _ssim(x, y, window: torch.Tensor, data_range: float, covariance_norm: float):
    """Mean SSIM map of every image over the window positions inside it and its channels.

    float64, so E[x^2] - E[x]^2 does not cancel on flat areas (float32 errs by ~2e-4 there).
    The window is separable and applied as two matrix products, which BLAS runs fast in
    float64 where a float64 convolution on the CPU is ~30x slower."""
    lead, (H, W) = x.shape[:-3], x.shape[-2:]
    x, y = x.reshape(-1, *x.shape[-3:]), y.reshape(-1, *y.shape[-3:])
    rows, cols = _valid_windows(H, window, x.device), _valid_windows(W, window, x.device)
    constants = ((SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2, covariance_norm)
    values = [_ssim_chunk(a.double(), b.double(), rows, cols, *constants)
              for a, b in zip(x.split(SSIM_CHUNK), y.split(SSIM_CHUNK))]
    return torch.cat(values).float().reshape(lead)


def _ssim_chunk(x, y, rows, cols, c1, c2, covariance_norm):

    def blur(img):  # (..., H, W) -> (..., H - k + 1, W - k + 1) for a window of k
        return rows.T @ img @ cols

    mx, my = blur(x), blur(y)
    vx, vy, cxy = ((blur(a * b) - ma * mb) * covariance_norm
                   for a, b, ma, mb in ((x, x, mx, mx), (y, y, my, my), (x, y, mx, my)))
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return ssim_map.mean(dim=(-3, -2, -1))


def _valid_windows(n: int, window: torch.Tensor, device) -> torch.Tensor:
    """(n, n - k + 1): column j holds the window (k weights) over pixels j..j+k-1."""
    k = len(window)
    if n < k:
        raise ValueError(f"SSIM needs images of at least {k} pixels, got {n}")
    matrix = torch.zeros(n, n - k + 1, dtype=torch.float64)
    for j in range(n - k + 1):
        matrix[j : j + k, j] = window
    return matrix.to(device)
