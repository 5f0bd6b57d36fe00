import math

import pytest
import torch

from cvae.metrics import psnr, ssim


def test_psnr_of_a_known_pair():
    x = torch.zeros(3, 8, 8)
    assert psnr(x, x + 0.1).item() == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    assert psnr(x, x + 0.01).item() == pytest.approx(40.0, abs=1e-3)


def test_psnr_is_per_image_not_per_batch():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.stack([x[0] + 0.1, x[1] + 0.01])  # mse 1e-2 and 1e-4
    values = psnr(x, y)
    assert values.shape == (2,)
    assert values.mean().item() == pytest.approx(30.0, abs=1e-3)
    batch_mse = (1e-2 + 1e-4) / 2  # the template's bug would report about 22.97 dB
    assert 10 * math.log10(1 / batch_mse) == pytest.approx(22.97, abs=0.01)


def test_psnr_keeps_leading_dimensions_and_caps_identical_images():
    x = torch.rand(4, 5, 3, 8, 8)
    assert psnr(x, x).shape == (4, 5)
    assert torch.all(psnr(x, x) == 100.0)


def test_ssim_of_identical_images_is_one():
    x = torch.rand(2, 3, 3, 32, 32)
    assert torch.allclose(ssim(x, x), torch.ones(2, 3), atol=1e-5)


def test_ssim_of_constant_images_matches_the_formula():
    # Constant images: every window has zero variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.3, 0.6, 0.01 ** 2
    value = ssim(torch.full((1, 3, 32, 32), a), torch.full((1, 3, 32, 32), b)).item()
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-6)


def test_ssim_drops_with_noise():
    x = torch.rand(1, 3, 32, 32)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert ssim(x, noisy).item() < 0.9
