import dataclasses

import pytest
import torch

from cvae.models.svg import SVG, Decoder, Encoder, GaussianLSTM, LSTM, vgg_widths
from cvae.rollout import rollout


@pytest.mark.parametrize("width", [0.125, 1.0])
def test_encoder_decoder_shapes(width):
    encoder, decoder = Encoder(g_dim=32, width=width), Decoder(g_dim=32, width=width)
    x = torch.rand(3, 3, 64, 64)
    h, skips = encoder(x)
    assert h.shape == (3, 32)
    assert h.abs().max() <= 1  # tanh
    assert [s.shape[1:] for s in skips] == [
        (c, r, r) for c, r in zip(vgg_widths(width), (64, 32, 16, 8))]
    out = decoder(h, skips)
    assert out.shape == x.shape
    assert 0 <= out.min() and out.max() <= 1  # sigmoid


def test_full_width_is_svgs_channels():
    assert vgg_widths(1.0) == [64, 128, 256, 512]


def test_lstm_state_is_explicit_and_any_batch_size_works():
    lstm = LSTM(10, 6, hidden_size=12, layers=2)
    for batch in (1, 5):
        state = lstm.init_hidden(batch)
        out, new_state = lstm(torch.randn(batch, 10), state)
        assert out.shape == (batch, 6)
        assert len(new_state) == 2 and new_state[1][0].shape == (batch, 12)
        assert not torch.equal(new_state[0][0], state[0][0])


def test_gaussian_lstm_samples_from_its_distribution():
    lstm = GaussianLSTM(10, 4, hidden_size=8, layers=1)
    z, mu, logvar, _ = lstm(torch.randn(20000, 10).mul(0).add(1), lstm.init_hidden(20000))
    # Same input everywhere, so mu/logvar are shared and z's spread is exp(logvar/2).
    assert torch.allclose(z.mean(0), mu[0], atol=0.05)
    assert torch.allclose(z.std(0), (0.5 * logvar[0]).exp(), rtol=0.05)


def _data(T=6, B=3, c=7):
    return torch.rand(T, B, 3, 64, 64), torch.randn(T, B, c)


@pytest.mark.parametrize("teacher_forcing", [True, False])
@pytest.mark.parametrize("last_frame_skip", [False, True])
def test_rollout_shapes(tiny_model_cfg, teacher_forcing, last_frame_skip):
    cfg = dataclasses.replace(tiny_model_cfg, last_frame_skip=last_frame_skip)
    frames, conds = _data()
    out = rollout(SVG(cfg), frames, conds, n_past=2, teacher_forcing=teacher_forcing)
    assert out.frames.shape == (5, 3, 3, 64, 64)
    assert out.mu.shape == out.logvar.shape == (5, 3, cfg.z_dim)


def test_prior_rollout_reads_only_the_conditioning_frames(tiny_model_cfg):
    model = SVG(tiny_model_cfg).eval()
    frames, conds = _data()
    changed = frames.clone()
    changed[2:] = torch.rand_like(changed[2:])
    outs = []
    for f in (frames, changed):
        torch.manual_seed(3)
        outs.append(rollout(model, f, conds, 2, teacher_forcing=False, sample_prior=True).frames)
    assert torch.equal(outs[0], outs[1])


def test_conditions_steer_the_prediction(tiny_model_cfg):
    # train(): with batch statistics; an untrained net in eval() passes almost only its skips.
    model = SVG(tiny_model_cfg).train()
    frames, conds = _data()
    outs = []
    for c in (conds, -conds):
        torch.manual_seed(3)
        outs.append(rollout(model, frames, c, 2, teacher_forcing=False, sample_prior=True).frames)
    assert (outs[0] - outs[1]).abs().max() > 1e-3


def reference_rollout(model, frames, conds, n_past, teacher_forcing):
    """SVG's original per-frame loop: encode the input frame, step the LSTMs, decode, repeat."""
    T, B = conds.shape[:2]
    predictor_state = model.predictor.init_hidden(B)
    posterior_state = model.posterior.init_hidden(B)
    x_in, preds = frames[0], []
    for t in range(1, T):
        h, skip_now = model.encoder(x_in)
        if model.cfg.last_frame_skip or t - 1 < n_past:
            skip = skip_now
        z, _, _, posterior_state = model.posterior(model.encoder(frames[t])[0], posterior_state)
        h_pred, predictor_state = model.predictor(torch.cat([h, z, conds[t - 1]], 1),
                                                  predictor_state)
        x_hat = model.decoder(h_pred, skip)
        preds.append(x_hat)
        x_in = frames[t] if (t < n_past or teacher_forcing) else x_hat
    return torch.stack(preds)


@pytest.mark.parametrize("teacher_forcing", [True, False])
@pytest.mark.parametrize("last_frame_skip", [False, True])
def test_batched_rollout_equals_the_per_frame_loop(tiny_model_cfg, teacher_forcing,
                                                   last_frame_skip):
    # eval(): batch norm uses running statistics, so batching over time changes nothing.
    cfg = dataclasses.replace(tiny_model_cfg, last_frame_skip=last_frame_skip)
    model = SVG(cfg).eval()
    frames, conds = _data(T=7)
    torch.manual_seed(5)
    fast = rollout(model, frames, conds, 3, teacher_forcing=teacher_forcing).frames
    torch.manual_seed(5)
    slow = reference_rollout(model, frames, conds, 3, teacher_forcing)
    assert torch.allclose(fast, slow, atol=1e-5)
