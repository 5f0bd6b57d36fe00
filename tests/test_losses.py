import pytest
import torch
from torch.distributions import Normal, kl_divergence

from cvae.losses import gaussian_kl, sequence_loss


def test_kl_of_equal_gaussians_is_zero():
    mu, logvar = torch.randn(5, 8), torch.randn(5, 8)
    assert torch.allclose(gaussian_kl(mu, logvar, mu, logvar), torch.zeros(5), atol=1e-6)
    assert torch.allclose(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4)), torch.zeros(3))


def test_kl_against_standard_normal_matches_torch_distributions():
    mu, logvar = torch.randn(6, 10), torch.randn(6, 10)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, atol=1e-5)


def test_kl_between_two_gaussians_matches_torch_distributions():
    mu_q, logvar_q, mu_p, logvar_p = torch.randn(4, 6, 7).unbind(1)[:4]
    expected = kl_divergence(Normal(mu_q, (0.5 * logvar_q).exp()),
                             Normal(mu_p, (0.5 * logvar_p).exp())).sum(-1)
    assert torch.allclose(gaussian_kl(mu_q, logvar_q, mu_p, logvar_p), expected, atol=1e-5)


def test_sequence_loss_sums_steps_and_averages_the_batch():
    T, B = 3, 2
    pred = torch.zeros(T, B, 1, 2, 2)
    target = torch.full((T, B, 1, 2, 2), 0.5)  # MSE 0.25 at every step
    mu = torch.zeros(T, B, 4)
    mu[:, 0] = 1.0  # KL per step: sample 0 has 4 * 0.5 = 2, sample 1 has 0 -> batch mean 1
    loss, mse, kl = sequence_loss(pred, target, mu, torch.zeros(T, B, 4), beta=0.1)
    assert mse.item() == pytest.approx(3 * 0.25)
    assert kl.item() == pytest.approx(3 * 1.0)
    assert loss.item() == pytest.approx(0.75 + 0.1 * 3)


def test_pixel_weights_scale_the_fit_term_and_leave_the_logged_mse_plain():
    T, B = 2, 1
    pred, target = torch.zeros(T, B, 3, 2, 2), torch.full((T, B, 3, 2, 2), 0.5)
    weight = torch.ones(T, B, 1, 2, 2)
    weight[:, :, :, 0, 0] = 5.0  # one pixel of four counts 5 times: mean weight 2
    mu = torch.zeros(T, B, 4)
    loss, mse, kl = sequence_loss(pred, target, mu, mu, beta=0.1, pixel_weight=weight)
    assert mse.item() == pytest.approx(2 * 0.25)
    assert kl.item() == 0.0
    assert loss.item() == pytest.approx(2 * 0.25 * 2.0)
