"""The mixed-precision path CUDA runs (bf16 autocast), run on the CPU: every model variant's
training step and both tracks' evaluation must work in it and agree with fp32 to bf16's
precision. CI has no GPU; this is what catches a dtype mismatch before a GPU user does."""
import numpy as np
import pytest
import torch

from cvae import runtime
from cvae.config import DanceModelConfig
from cvae.dance_evaluation import evaluate_dance
from cvae.data.shards import Split, prepare
from cvae.evaluation import evaluate
from cvae.models.dance import DanceCVAE
from cvae.training import Objective
from tests.conftest import write_random_raw
from tests.test_models import VARIANTS, _data, _variant

CPU = torch.device("cpu")


def _loss_and_grads(model, frames, conds, n_past, teacher_forcing):
    model.zero_grad()
    loss, _, _ = Objective(model)(frames, conds, n_past, teacher_forcing, 0.1)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                         if p.grad is not None}


def _compare_steps(model, frames, conds, n_past, teacher_forcing, monkeypatch):
    """The same step (same noise) in fp32 and in bf16: the loss within 2% and every gradient
    finite, of the same parameters, pointing the same way (cosine > 0.9)."""
    model = model.eval()  # running batch-norm statistics: both steps see the same network
    torch.manual_seed(3)
    loss32, grads32 = _loss_and_grads(model, frames, conds, n_past, teacher_forcing)
    monkeypatch.setattr(runtime, "BF16_DEVICES", {"cuda", "cpu"})
    torch.manual_seed(3)
    loss16, grads16 = _loss_and_grads(model, frames, conds, n_past, teacher_forcing)
    assert loss16 != loss32  # bf16 really ran
    assert loss16 == pytest.approx(loss32, rel=0.02)
    assert grads16.keys() == grads32.keys()
    flat32 = torch.cat([g.flatten() for g in grads32.values()])
    flat16 = torch.cat([g.flatten() for g in grads16.values()])
    assert flat16.dtype == torch.float32 and torch.isfinite(flat16).all()
    assert torch.nn.functional.cosine_similarity(flat16, flat32, dim=0) > 0.9
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("teacher_forcing", [True, False])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_every_svg_variant_steps_in_bf16(tiny_model_cfg, variant, teacher_forcing, monkeypatch):
    frames, conds = _data(T=5, B=4)
    _compare_steps(_variant(tiny_model_cfg, variant), frames, conds, 2, teacher_forcing,
                   monkeypatch)


@pytest.mark.parametrize("teacher_forcing", [True, False])
@pytest.mark.parametrize("residual", [True, False])
def test_the_dance_model_steps_in_bf16(residual, teacher_forcing, monkeypatch):
    model = DanceCVAE(DanceModelConfig(F_dim=8, L_dim=4, N_dim=2, D_out_dim=8,
                                       residual=residual))
    frames, labels = torch.rand(5, 2, 3, 32, 64), torch.rand(5, 2, 3, 32, 64)
    _compare_steps(model, frames, labels, 1, teacher_forcing, monkeypatch)


def _scores(evaluate_fn, monkeypatch, *args, **kwargs):
    fp32 = evaluate_fn(*args, **kwargs)
    monkeypatch.setattr(runtime, "BF16_DEVICES", {"cuda", "cpu"})
    bf16 = evaluate_fn(*args, **kwargs)
    monkeypatch.setattr(runtime, "BF16_DEVICES", {"cuda"})
    return fp32, bf16


def _assert_close_scores(fp32: dict, bf16: dict):
    """bf16 predictions round to about 1/256: PSNR within 0.05 dB, SSIM within 0.005."""
    assert fp32.keys() == bf16.keys()
    assert any(not np.array_equal(bf16[name], fp32[name]) for name in fp32)  # bf16 really ran
    for name, value in fp32.items():
        tolerance = 0.05 if "psnr" in name else 0.005
        np.testing.assert_allclose(bf16[name], value, atol=tolerance, err_msg=name)


@pytest.mark.parametrize("variant", [VARIANTS[1], VARIANTS[4]],
                         ids=lambda v: "-".join(map(str, v.values())))
def test_robot_evaluation_scores_agree_in_bf16(tiny_model_cfg, variant, tmp_path, monkeypatch):
    write_random_raw(tmp_path / "raw", {"train": 1, "val": 1, "test": 3})
    prepare(tmp_path / "raw", tmp_path / "shards", shard_size=4, seq_len=8)
    model = _variant(tiny_model_cfg, variant)
    fp32, bf16 = _scores(evaluate, monkeypatch, model, Split(tmp_path / "shards", "test"),
                         n_past=2, n_future=5, batch_size=2, device=CPU, seed=0, samples=3)
    _assert_close_scores(fp32.scores, bf16.scores)


def test_dance_evaluation_scores_agree_in_bf16(dance_shards, monkeypatch):
    shards, _ = dance_shards
    model = DanceCVAE(DanceModelConfig(F_dim=8, L_dim=4, N_dim=2, D_out_dim=8, residual=False))
    (fp32, _), (bf16, predictions) = _scores(evaluate_dance, monkeypatch, model,
                                             Split(shards, "test"), batch_size=2, device=CPU,
                                             seed=0, samples=2)
    _assert_close_scores(fp32.scores, bf16.scores)
    assert predictions.dtype == np.uint8
