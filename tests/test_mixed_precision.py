"""The mixed-precision path (bf16 autocast) that CUDA trains and evaluates in, run on the CPU too:
every model variant's training step and both tracks' evaluation must work in it and agree with
fp32 to bf16's precision. CI has no GPU; this is what catches a dtype mismatch before a GPU user
does. (On CUDA, "fp32" convolutions use TF32, PyTorch's default: the tolerances allow for it.)"""
import dataclasses
import warnings

import numpy as np
import pytest
import torch

from cvae import runtime
from cvae.config import DanceModelConfig
from cvae.data.prepare import prepare
from cvae.data.shards import Split
from cvae.tracks.dance.evaluation import evaluate_dance
from cvae.tracks.dance.model import DanceCVAE
from cvae.tracks.dance.rollout import rollout as dance_rollout
from cvae.tracks.robot.evaluation import evaluate
from cvae.tracks.robot.rollout import rollout
from cvae.training import Objective
from tests.conftest import write_random_raw
from tests.test_models import VARIANTS, _data, _variant

DANCE = DanceModelConfig(F_dim=8, L_dim=4, N_dim=2, D_out_dim=8)


def _in_fp32_and_bf16(fn):
    """fn() in fp32, then in bf16 autocast, from the same seed."""
    results = []
    for mode in ("fp32", "bf16"):
        torch.manual_seed(3)
        with runtime.precision(mode):
            results.append(fn())
    return results


def test_precision_picks_the_devices_that_run_in_bf16():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with runtime.precision("bf16"):
        assert runtime.runs_in_bf16(cpu) and runtime.runs_in_bf16(cuda)
        assert runtime.autocast(cpu).fast_dtype == torch.bfloat16
        with runtime.precision("fp32"):
            assert not runtime.runs_in_bf16(cuda) and not runtime.runs_in_bf16(cpu)
        with runtime.precision("auto"):
            assert runtime.runs_in_bf16(cuda) and not runtime.runs_in_bf16(cpu)
        assert runtime.runs_in_bf16(cpu)  # restored on the way out
    assert runtime.runs_in_bf16(cuda) and not runtime.runs_in_bf16(cpu)  # the library default


def test_bf16_on_a_cpu_that_would_emulate_it_warns(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="emulated, slower than fp32"):
        with runtime.precision("bf16"):
            pass
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with runtime.precision("bf16"):
            pass


def _compare_steps(model, rollout_fn, frames, conds, n_past, teacher_forcing, device):
    """The same step (same noise) in fp32 and in bf16: the loss within 2% and every gradient
    finite, of the same parameters, pointing the same way (cosine > 0.9)."""
    # Running batch-norm statistics: both steps see the same network.
    model = model.to(device).eval()
    frames, conds = frames.to(device), conds.to(device)

    def loss_and_grads():
        model.zero_grad()
        loss, _, _ = Objective(model, rollout_fn)(frames, conds, n_past, teacher_forcing, 0.1)
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                             if p.grad is not None}

    (loss32, grads32), (loss16, grads16) = _in_fp32_and_bf16(loss_and_grads)
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
def test_every_svg_variant_steps_in_bf16(tiny_model_cfg, variant, teacher_forcing, device):
    frames, conds = _data(T=5, B=4)
    _compare_steps(_variant(tiny_model_cfg, variant), rollout, frames, conds, 2,
                   teacher_forcing, device)


@pytest.mark.parametrize("teacher_forcing", [True, False])
@pytest.mark.parametrize("residual", [True, False])
def test_the_dance_model_steps_in_bf16(residual, teacher_forcing, device):
    model = DanceCVAE(dataclasses.replace(DANCE, residual=residual))
    frames, labels = torch.rand(5, 2, 3, 32, 64), torch.rand(5, 2, 3, 32, 64)
    _compare_steps(model, dance_rollout, frames, labels, 1, teacher_forcing, device)


def _assert_close_scores(fp32: dict, bf16: dict):
    """bf16 predictions round to about 1/256: PSNR within 0.05 dB, SSIM within 0.005."""
    assert fp32.keys() == bf16.keys()
    assert any(not np.array_equal(bf16[name], fp32[name]) for name in fp32)  # bf16 really ran
    for name, value in fp32.items():
        tolerance = 0.05 if "psnr" in name else 0.005
        np.testing.assert_allclose(bf16[name], value, atol=tolerance, err_msg=name)


@pytest.mark.parametrize("variant", [VARIANTS[1], VARIANTS[4]],
                         ids=lambda v: "-".join(map(str, v.values())))
def test_robot_evaluation_scores_agree_in_bf16(tiny_model_cfg, variant, device, tmp_path):
    write_random_raw(tmp_path / "raw", {"train": 1, "val": 1, "test": 3})
    prepare(tmp_path / "raw", tmp_path / "shards", shard_size=4, seq_len=8)
    model, split = _variant(tiny_model_cfg, variant).to(device), Split(tmp_path / "shards", "test")
    fp32, bf16 = _in_fp32_and_bf16(
        lambda: evaluate(model, split, n_past=2, n_future=5, batch_size=2, device=device, seed=0,
                         samples=3))
    _assert_close_scores(fp32.scores, bf16.scores)


def test_dance_evaluation_scores_agree_in_bf16(dance_shards, device):
    shards, _ = dance_shards
    model, split = DanceCVAE(DANCE).to(device), Split(shards, "test")
    torch.nn.init.normal_(model.generator[2].weight, std=0.1)  # to_rgb: a change that is not zero
    (fp32, _), (bf16, predictions) = _in_fp32_and_bf16(
        lambda: evaluate_dance(model, split, batch_size=2, device=device, seed=0, samples=2))
    _assert_close_scores(fp32.scores, bf16.scores)
    assert predictions.dtype == np.uint8
