"""The sampling protocol: N prior samples as one batch, mean-of-N, best-of-N, the posterior."""
import numpy as np
import pytest
import torch

from cvae.data.prepare import prepare
from cvae.data.shards import Split
from cvae.tracks.robot.evaluation import evaluate, sample_prior
from cvae.metrics import psnr, psnr_per_channel
from cvae.tracks.robot.model import SVG
from cvae.tracks.robot.rollout import rollout
from tests.conftest import write_random_raw


@pytest.fixture
def split(tmp_path):
    write_random_raw(tmp_path / "raw", {"train": 2, "val": 1, "test": 5}, seq_len=6)
    prepare(tmp_path / "raw", tmp_path / "shards", shard_size=4, seq_len=6)
    return Split(tmp_path / "shards", "test")


@pytest.mark.parametrize("prior,levels", [("fixed", 1), ("learned", 1), ("learned", 3)])
def test_a_batch_of_n_samples_is_a_loop_of_n_with_the_same_noise(tiny_model_cfg, prior, levels):
    import dataclasses
    model = SVG(dataclasses.replace(tiny_model_cfg, prior=prior, levels=levels)).eval()
    frames, conds = torch.rand(6, 3, 3, 64, 64), torch.randn(6, 3, 7)
    noise = torch.randn(4, 5, 3, model.latent_size, generator=torch.Generator().manual_seed(1))
    batched = sample_prior(model, frames, conds, 2, noise)  # (N, T-1, B, C, H, W)
    for k in range(4):
        with torch.no_grad():
            one = rollout(model, frames, conds, 2, teacher_forcing=False, sample_prior=True,
                          noise=noise[k]).frames
        assert torch.allclose(batched[k], one, atol=1e-5)
    assert not torch.equal(batched[0, 2:], batched[1, 2:])  # the samples differ


def test_best_of_n_is_at_least_the_mean_and_equal_for_one_sample(tiny_model_cfg, split):
    model = SVG(tiny_model_cfg)
    cpu = torch.device("cpu")
    many = evaluate(model, split, 2, 4, batch_size=2, device=cpu, seed=0, samples=6).scores
    assert many["psnr"].shape == (5, 4)
    # Best is chosen by SSIM averaged over the frames of each sequence.
    assert np.all(many["ssim_best"].mean(1) >= many["ssim"].mean(1) - 1e-6)
    one = evaluate(model, split, 2, 4, batch_size=2, device=cpu, seed=0, samples=1).scores
    for name in ("psnr", "ssim", "psnr_finn"):
        np.testing.assert_allclose(one[f"{name}_best"], one[name], rtol=1e-6)
    # The same seed gives the same samples, however the sequences are batched.
    again = evaluate(model, split, 2, 4, batch_size=5, device=cpu, seed=0, samples=6).scores
    np.testing.assert_allclose(again["psnr"], many["psnr"], rtol=1e-5)
    assert set(many) >= {"psnr_finn_best", "posterior_psnr", "posterior_ssim", "baseline_psnr"}


def test_evaluate_saves_truth_posterior_best_and_two_samples(tiny_model_cfg, split):
    scores = evaluate(SVG(tiny_model_cfg), split, 2, 4, batch_size=2,
                      device=torch.device("cpu"), seed=0, samples=3, keep=3)
    saved = scores.saved
    assert saved["truth"].shape == (3, 6, 3, 64, 64) and saved["truth"].dtype == np.uint8
    assert saved["best"].shape == saved["posterior"].shape == (3, 4, 3, 64, 64)
    assert saved["samples"].shape == (3, 2, 4, 3, 64, 64)


def test_svgs_per_channel_psnr_averages_channels_and_is_never_lower():
    x = torch.zeros(1, 3, 4, 4)
    y = x.clone()
    y[0, 0] += 0.1  # channel 0: mse 1e-2 (20 dB); channels 1, 2 identical (capped at 100 dB)
    assert psnr_per_channel(x, y).item() == pytest.approx((20 + 100 + 100) / 3, abs=1e-3)
    assert psnr(x, y).item() == pytest.approx(10 * np.log10(3 / 1e-2), abs=1e-3)
    a, b = torch.rand(5, 3, 8, 8), torch.rand(5, 3, 8, 8)
    assert torch.all(psnr_per_channel(a, b) >= psnr(a, b) - 1e-5)


def test_a_batch_too_big_for_the_gpu_is_retried_smaller(tiny_model_cfg, split, monkeypatch,
                                                        capsys):
    import cvae.tracks.robot.evaluation as evaluation
    real, sizes = evaluation._evaluate_batch, []

    def limited(model, split_, indices, *args, **kwargs):  # "GPU memory" for 2 sequences
        sizes.append(len(indices))
        if len(indices) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(model, split_, indices, *args, **kwargs)

    monkeypatch.setattr(evaluation, "_evaluate_batch", limited)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    model, cpu = SVG(tiny_model_cfg), torch.device("cpu")
    scores = evaluate(model, split, 2, 4, batch_size=5, device=cpu, seed=0, samples=2, keep=3)
    assert sizes == [5, 2, 2, 1] and "batches of 2" in capsys.readouterr().out
    monkeypatch.setattr(evaluation, "_evaluate_batch", real)
    whole = evaluate(model, split, 2, 4, batch_size=5, device=cpu, seed=0, samples=2, keep=3)
    for name, value in whole.scores.items():
        np.testing.assert_allclose(scores.scores[name], value, rtol=1e-5)
    assert np.array_equal(scores.saved["truth"], whole.saved["truth"])


def test_the_best_sample_can_be_picked_by_svgs_ssim(tiny_model_cfg, split):
    model, cpu = SVG(tiny_model_cfg), torch.device("cpu")
    ours = evaluate(model, split, 2, 4, batch_size=2, device=cpu, seed=0, samples=6).scores
    svgs = evaluate(model, split, 2, 4, batch_size=2, device=cpu, seed=0, samples=6,
                    best_by="ssim_svg").scores
    np.testing.assert_allclose(svgs["psnr"], ours["psnr"])  # the same samples
    assert np.all(svgs["ssim_svg_best"].mean(1) >= ours["ssim_svg_best"].mean(1) - 1e-6)
    assert np.all(ours["ssim_best"].mean(1) >= svgs["ssim_best"].mean(1) - 1e-6)
    assert np.all(svgs["ssim_svg"] > ours["ssim"])  # its larger constants: a different scale
