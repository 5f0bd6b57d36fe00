import dataclasses

import pytest
import torch

from cvae.tracks.robot.model import SVG, Decoder, Encoder, GaussianLSTM, LSTM, vgg_widths
from cvae.tracks.robot.reference import per_frame_rollout
from cvae.tracks.robot.rollout import rollout


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


def test_action_free_svg_ignores_the_conditions(tiny_model_cfg):
    model = SVG(dataclasses.replace(tiny_model_cfg, conditioning="none")).train()
    assert model.predictor.embed.in_features == tiny_model_cfg.g_dim + tiny_model_cfg.z_dim
    assert model.name == "SVG-FP, action-free"
    frames, conds = _data()
    outs = []
    for c in (conds, -conds):
        torch.manual_seed(3)
        outs.append(rollout(model, frames, c, 2, teacher_forcing=False, sample_prior=True).frames)
    assert torch.equal(outs[0], outs[1])


VARIANTS = [
    {"prior": "fixed", "conditioning": "concat"},
    {"prior": "learned", "conditioning": "concat"},
    {"prior": "fixed", "conditioning": "condconv"},
    {"prior": "learned", "conditioning": "condconv", "last_frame_skip": True},
    {"prior": "learned", "conditioning": "concat", "levels": 3},
    {"prior": "fixed", "conditioning": "condconv", "levels": 2},
    {"prior": "learned", "conditioning": "concat", "skips_from": "svg_code"},
    {"prior": "learned", "conditioning": "none"},
    {"prior": "fixed", "conditioning": "none", "levels": 2},
]


def _variant(tiny_model_cfg, variant):
    model = SVG(dataclasses.replace(tiny_model_cfg, **variant))
    for module in model.modules():  # condconv starts at the identity: give it something to do
        if getattr(module, "film", None) is not None:
            torch.nn.init.normal_(module.film.weight, std=0.3)
    return model


@pytest.mark.parametrize("teacher_forcing", [True, False])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_batched_rollout_equals_the_per_frame_loop(tiny_model_cfg, variant, teacher_forcing):
    # eval(): batch norm uses running statistics, so batching over time changes nothing.
    model = _variant(tiny_model_cfg, variant).eval()
    frames, conds = _data(T=7)
    noise = torch.randn(6, 3, model.latent_size)
    fast = rollout(model, frames, conds, 3, teacher_forcing=teacher_forcing, noise=noise)
    slow = per_frame_rollout(model, frames, conds, 3, teacher_forcing, noise)
    for name in ("frames", "mu", "logvar", "prior_mu", "prior_logvar"):
        assert torch.allclose(getattr(fast, name), getattr(slow, name), atol=1e-5), name
    if model.prior is None:
        assert torch.equal(fast.prior_mu, torch.zeros_like(fast.prior_mu))


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(map(str, v.values())))
def test_every_variant_trains_and_survives_a_checkpoint(tiny_model_cfg, variant, tmp_path):
    from cvae.checkpoints import load_checkpoint, save_checkpoint
    from cvae.training import Objective, train_step
    model = _variant(tiny_model_cfg, variant)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    frames, conds = _data(T=5, B=4)
    step = dict(n_past=2, beta=1e-3, teacher_forcing=True, grad_clip=1.0)
    losses = [train_step(Objective(model, rollout), optimizer, frames, conds, **step)["loss"]
              for _ in range(8)]
    assert losses[-1] < losses[0]
    if variant["prior"] == "learned":  # the prior is trained through the KL
        assert model.prior.mu.weight.grad is not None

    save_checkpoint(tmp_path / "m.pt", model=model.state_dict())
    restored = SVG(model.cfg)
    restored.load_state_dict(load_checkpoint(tmp_path / "m.pt")["model"])
    model.eval(), restored.eval()
    noise = torch.randn(4, 4, model.latent_size)
    a = rollout(model, frames, conds, 2, teacher_forcing=False, sample_prior=True, noise=noise)
    b = rollout(restored, frames, conds, 2, teacher_forcing=False, sample_prior=True, noise=noise)
    assert torch.equal(a.frames, b.frames)


def test_condconv_steers_encoder_and_decoder_and_not_the_predictor(tiny_model_cfg):
    model = _variant(tiny_model_cfg, {"conditioning": "condconv"}).eval()
    assert model.predictor.embed.in_features == tiny_model_cfg.g_dim + tiny_model_cfg.z_dim
    x, c = torch.rand(2, 3, 64, 64), torch.randn(2, 7)
    assert not torch.allclose(model.encode(x, c)[0], model.encode(x, -c)[0])
    h, skips = model.encode(x, c)
    assert not torch.allclose(model.decode(h, skips, c), model.decode(h, skips, -c))


def test_condconv_starts_as_the_plain_network(tiny_model_cfg):
    plain = SVG(tiny_model_cfg).eval()
    conditioned = SVG(dataclasses.replace(tiny_model_cfg, conditioning="condconv")).eval()
    missing = conditioned.encoder.load_state_dict(plain.encoder.state_dict(), strict=False)
    assert all("film" in key for key in missing.missing_keys)
    x = torch.rand(2, 3, 64, 64)
    assert torch.allclose(conditioned.encoder(x, torch.randn(2, 7))[0], plain.encoder(x)[0])


def test_latent_maps_have_their_sizes_and_steer_the_decoder(tiny_model_cfg):
    # train(): batch statistics; an untrained net in eval() passes almost only its skips.
    model = SVG(dataclasses.replace(tiny_model_cfg, levels=3, level_channels=2)).train()
    assert model.latent_size == 4 + 2 * 8 * 8 + 2 * 16 * 16
    assert "3 latent levels" in model.name
    frames, conds = _data(T=4, B=2)
    noise = torch.randn(3, 2, model.latent_size)
    out = rollout(model, frames, conds, 2, teacher_forcing=False, noise=noise)
    assert out.mu.shape == out.prior_logvar.shape == (3, 2, model.latent_size)
    for level in (slice(4, 4 + 128), slice(4 + 128, None)):  # the 8x8 map, then 16x16
        moved = noise.clone()
        moved[:, :, level] += 3
        other = rollout(model, frames, conds, 2, teacher_forcing=False, noise=moved).frames
        assert (other - out.frames).abs().max() > 1e-4


def test_one_level_is_plain_svg(tiny_model_cfg):
    plain = SVG(tiny_model_cfg)
    assert plain.cfg.levels == 1 and plain.latent_size == tiny_model_cfg.z_dim
    assert not any(key.startswith("latent_maps") for key in plain.state_dict())
    z, maps = plain.split_latent(torch.randn(5, plain.latent_size))
    assert z.shape == (5, tiny_model_cfg.z_dim) and maps == []


def test_the_kl_sums_over_levels(tiny_model_cfg):
    from cvae.losses import gaussian_kl
    model = SVG(dataclasses.replace(tiny_model_cfg, levels=2, prior="learned")).train()
    frames, conds = _data(T=4, B=2)
    out = rollout(model, frames, conds, 2, teacher_forcing=True)
    total = gaussian_kl(out.mu, out.logvar, out.prior_mu, out.prior_logvar)
    z = tiny_model_cfg.z_dim
    parts = [gaussian_kl(out.mu[..., s], out.logvar[..., s], out.prior_mu[..., s],
                         out.prior_logvar[..., s]) for s in (slice(0, z), slice(z, None))]
    assert torch.allclose(total, parts[0] + parts[1], rtol=1e-5)
    assert torch.all(parts[1] > 0)  # the map level carries KL of its own


@pytest.mark.parametrize("teacher_forcing", [True, False])
@pytest.mark.parametrize("variant", [VARIANTS[0], VARIANTS[3], VARIANTS[4]],
                         ids=lambda v: "-".join(map(str, v.values())))
def test_the_fast_step_has_the_per_frame_steps_loss_and_gradients(tiny_model_cfg, variant,
                                                                   teacher_forcing, device,
                                                                   monkeypatch):
    """fp32 (on CUDA without TF32), batch norm on running statistics (batching frames over time
    changes batch statistics, by design): loss within 1e-6 relative, every gradient within 1e-4
    relative to the largest gradient of its tensor, on the same noise."""
    from cvae.runtime import precision
    from cvae.training import Objective
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # matmuls: fp32 by default
    model = _variant(tiny_model_cfg, variant).to(device).eval()
    frames, conds = (x.to(device) for x in _data(T=6, B=3))
    noise = torch.randn(5, 3, model.latent_size).to(device)
    results = []
    for rollout_fn in (rollout, per_frame_rollout):
        def with_noise(*args, teacher_forcing, fn=rollout_fn):
            return fn(*args, teacher_forcing=teacher_forcing, noise=noise)
        model.zero_grad()
        with precision("fp32"):
            loss, mse, kl = Objective(model, with_noise)(frames, conds, 2, teacher_forcing, 0.1)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                                      if p.grad is not None}))
    (fast_loss, fast_grads), (slow_loss, slow_grads) = results
    assert fast_loss == pytest.approx(slow_loss, rel=1e-6)
    assert fast_grads.keys() == slow_grads.keys() and len(fast_grads) > 20
    for name, grad in fast_grads.items():
        scale = slow_grads[name].abs().max().clamp_min(1e-12)
        assert (grad - slow_grads[name]).abs().max() <= 1e-4 * scale, name


def _svg_code_loop(model, x, conds, n_past, noise):
    """SVG's released training loop (svg_train.py, SVG-FP with the condition concatenated),
    transcribed: the skips are updated from the frame fed in while i < n_past."""
    cfg, (T, B) = model.cfg, conds.shape[:2]
    predictor_state = model.predictor.init_hidden(B)
    posterior_state = model.posterior.init_hidden(B)
    preds = []
    for i in range(1, T):
        h = model.encoder(x[i - 1])
        h_target = model.encoder(x[i])[0]
        if cfg.last_frame_skip or i < n_past:
            h, skip = h
        else:
            h = h[0]
        mu, logvar, posterior_state = model.posterior.distribution(h_target, posterior_state)
        z_t = mu + (0.5 * logvar).exp() * noise[i - 1]
        h_pred, predictor_state = model.predictor(torch.cat([h, z_t, conds[i - 1]], 1),
                                                  predictor_state)
        preds.append(model.decoder(h_pred, skip))
    return torch.stack(preds)


@pytest.mark.parametrize("n_past", [2, 3])
def test_skips_from_svg_code_is_svgs_released_loop(tiny_model_cfg, n_past):
    frames, conds = _data(T=7)
    outputs = {}
    for skips_from in ("svg_code", "last_given"):
        torch.manual_seed(0)
        model = SVG(dataclasses.replace(tiny_model_cfg, skips_from=skips_from)).eval()
        noise = torch.randn(6, 3, model.latent_size)
        with torch.no_grad():
            ours = rollout(model, frames, conds, n_past, teacher_forcing=True, noise=noise).frames
            outputs[skips_from] = ours, _svg_code_loop(model, frames, conds, n_past, noise)
    assert torch.allclose(*outputs["svg_code"], atol=1e-5)
    ours, svgs = outputs["last_given"]  # the paper's frame: from step n_past on, not SVG's code
    assert torch.allclose(ours[: n_past - 1], svgs[: n_past - 1], atol=1e-5)
    assert not torch.allclose(ours[n_past - 1:], svgs[n_past - 1:], atol=1e-3)
