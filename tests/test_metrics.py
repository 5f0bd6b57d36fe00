import math

import pytest
import torch

from cvae.metrics import psnr, ssim, ssim_svg


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


def _direct_ssim(x, y):
    """The definition, computed the slow way: a 2-D 11x11 Gaussian window over every position
    where it fits, float64, SSIM map averaged over positions and channels."""
    import torch.nn.functional as F
    d = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-d ** 2 / (2 * 1.5 ** 2))
    kernel = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]
    x, y = x.double().flatten(0, 1)[:, None], y.double().flatten(0, 1)[:, None]  # (n*C, 1, H, W)
    mx, my = F.conv2d(x, kernel), F.conv2d(y, kernel)
    vx, vy = F.conv2d(x * x, kernel) - mx ** 2, F.conv2d(y * y, kernel) - my ** 2
    cxy = F.conv2d(x * y, kernel) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.reshape(-1, 3, *s.shape[-2:]).mean(dim=(1, 2, 3))


@pytest.mark.parametrize("kind", ["noise", "smooth", "bright and nearly flat"])
def test_ssim_is_the_valid_window_definition(kind):
    torch.manual_seed(0)
    x = {"noise": lambda: torch.rand(4, 3, 40, 48),
         "smooth": lambda: torch.nn.functional.avg_pool2d(torch.rand(4, 3, 48, 56), 9, 1),
         "bright and nearly flat": lambda: 0.9 + 0.01 * torch.rand(4, 3, 40, 48)}[kind]()
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    assert torch.allclose(ssim(x, y).double(), _direct_ssim(x, y), atol=1e-6)


def test_ssim_in_chunks_equals_one_call(monkeypatch):
    import cvae.metrics
    x, y = torch.rand(5, 3, 3, 32, 32), torch.rand(5, 3, 3, 32, 32)
    whole = ssim(x, y)
    monkeypatch.setattr(cvae.metrics, "SSIM_CHUNK", 4)
    assert torch.allclose(ssim(x, y), whole)


def test_averaging_the_mse_first_understates_psnr():
    """Jensen: the PSNR of a batch's mean MSE is never above the mean of per-image PSNRs."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        x = torch.rand(6, 3, 8, 8, generator=generator)
        y = (x + 0.3 * torch.rand(6, 1, 1, 1, generator=generator) * torch.randn(
            6, 3, 8, 8, generator=generator)).clamp(0, 1)
        batch_mse = ((x - y) ** 2).mean()
        assert 10 * torch.log10(1 / batch_mse) <= psnr(x, y).mean() + 1e-5


@pytest.mark.parametrize("ours, skimage_options", [
    (ssim, dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)),
    # SVG's published SSIM: old compare_ssim defaults (7x7 uniform, sample covariance, range 2).
    (ssim_svg, dict(win_size=7, gaussian_weights=False, use_sample_covariance=True,
                    data_range=2.0)),
], ids=["ssim", "ssim_svg"])
def test_ssim_variants_equal_scikit_image(ours, skimage_options):
    structural_similarity = pytest.importorskip("skimage.metrics").structural_similarity
    torch.manual_seed(1)
    x = torch.rand(3, 3, 64, 64)
    y = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    reference = [structural_similarity(a.double().numpy(), b.double().numpy(), channel_axis=0,
                                       **skimage_options) for a, b in zip(x, y)]
    assert torch.allclose(ours(x, y).double(), torch.tensor(reference, dtype=torch.float64),
                          atol=1e-6)
    assert (ssim_svg(x, y) > ssim(x, y)).all()  # the larger constants: never mix the two


def test_the_moving_region_is_where_the_truth_left_the_reference():
    from cvae.metrics import masked_psnr, moving_pixels
    reference = torch.zeros(1, 3, 16, 16)
    truth = reference.clone()
    truth[0, 1, 2:4, 5:9] = 0.5  # 8 pixels moved, in one channel
    truth[0, 0, 10, 10] = 0.05  # below the threshold: noise, not motion
    mask = moving_pixels(truth, reference, threshold=0.1)
    assert mask.shape == (1, 1, 16, 16) and mask.sum() == 8
    # A copy of the reference: wrong by 0.5 in one of 3 channels on the moving pixels.
    expected = 10 * math.log10(1 / (0.5 ** 2 / 3))
    assert masked_psnr(reference, truth, mask).item() == pytest.approx(expected, abs=1e-4)
    assert psnr(reference, truth).item() > expected + 10  # the whole frame hides the miss
    assert masked_psnr(truth, truth, mask).item() == 100.0
    assert torch.isnan(masked_psnr(reference, reference, torch.zeros_like(mask)))
