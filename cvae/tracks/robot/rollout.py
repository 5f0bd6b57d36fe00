"""Running SVG over a sequence: the one place that decides what the model sees at each step.

At step t the predictor gets the encoding of the previous frame, a latent z_t and the condition
c_{t-1} (the action that leads from frame t-1 to frame t, and the end effector at t-1). The
previous frame is the ground truth for the `n_past` conditioning frames, and afterwards the
ground truth under teacher forcing or the model's own prediction without it. (With `condconv`
the condition steers the encoder and decoder instead: frame t is encoded with c_t, and decoded
with c_{t-1}.)

z_t comes from the posterior on the true frame t during training, and from the prior when
sampling: N(0, I) for SVG-FP, or the learned prior LSTM on the previous frame's encoding for
SVG-LP, which runs at every step so that its state follows the sequence. With hierarchical
latents, z_t also holds latent maps for the decoder, inferred alike from the skips of frame t
(posterior) and of the fed frame t-1 (both), see `SVG`.
"""
from __future__ import annotations

import torch

from cvae.tracks.robot.model import SVG
from cvae.vae import Rollout, reparameterize


def rollout(model: SVG, frames: torch.Tensor, conds: torch.Tensor, n_past: int, *,
            teacher_forcing: bool, sample_prior: bool = False,
            noise: torch.Tensor | None = None) -> Rollout:
    """Predict frames 1..T-1 of `frames` (T, B, C, H, W) given conditions `conds` (T, B, c).

    With `sample_prior` (evaluation), z_t comes from the prior after the conditioning frames,
    and only `frames[:n_past]` is read. `noise` (T-1, B, model.latent_size), if given, is the
    standard normal draw behind every z_t, so that callers can reproduce samples exactly.
    """
    T, B = conds.shape[:2]
    observed = frames[: T if not sample_prior else n_past]
    h_true, skips_true = _encode(model, observed, conds[: len(observed)])
    predictor_state = model.predictor.init_hidden(B)
    posterior_state = model.posterior.init_hidden(B)
    prior_state = model.prior.init_hidden(B) if model.prior is not None else None
    # What the next step is fed (the encoding and skips of x_{t-1}), and the skips it decodes
    # with (those of the last conditioning frame, see `SVG.skip_frame`, or of x_{t-1} with
    # `last_frame_skip`).
    h_in, fed_skips = h_true[0], [s[0] for s in skips_true]
    skips = fed_skips
    outputs, deferred, stats = [], [], []
    for t in range(1, T):
        eps = noise[t - 1] if noise is not None else None
        mu_p, logvar_p, prior_state = model.prior_distribution(h_in, fed_skips, prior_state)
        if sample_prior and t >= n_past:
            mu, logvar = mu_p, logvar_p
        else:
            mu, logvar, posterior_state = model.posterior_distribution(
                h_true[t], [s[t] for s in skips_true], fed_skips, posterior_state)
        stats.append((mu, logvar, mu_p, logvar_p))
        z, z_maps = model.split_latent(reparameterize(mu, logvar, eps))
        h_pred, predictor_state = model.predictor(
            model.predictor_input(h_in, z, conds[t - 1]), predictor_state)
        if t < n_past or (teacher_forcing and not sample_prior):
            # The next input is the true frame t, known already: decoding can wait and run
            # batched at the end.
            deferred.append((t, h_pred, skips, z_maps))
            if t < T - 1:
                h_in, fed_skips = h_true[t], [s[t] for s in skips_true]
                if model.cfg.last_frame_skip or t <= model.skip_frame(n_past):
                    skips = fed_skips
        else:
            x_hat = model.decode(h_pred, skips, conds[t - 1], z_maps)
            outputs.append((t, x_hat))
            if t < T - 1:  # the last prediction feeds nothing
                h_in, fed_skips = model.encode(x_hat, conds[t])
                if model.cfg.last_frame_skip:
                    skips = fed_skips
    outputs += _decode_deferred(model, deferred, conds)
    predictions = torch.stack([x for _, x in sorted(outputs, key=lambda item: item[0])])
    mu, logvar, prior_mu, prior_logvar = (torch.stack(s) for s in zip(*stats))
    return Rollout(predictions, mu, logvar, prior_mu, prior_logvar)


def _encode(model: SVG, frames: torch.Tensor, conds: torch.Tensor):
    """Encode all frames in one batched call: (T, B, C, H, W) -> (T, B, g), skips (T, B, ...)."""
    T, B = frames.shape[:2]
    h, skips = model.encode(frames.flatten(0, 1), conds.flatten(0, 1))  # (T*B, g)
    return h.view(T, B, -1), [s.view(T, B, *s.shape[1:]) for s in skips]


def _decode_deferred(model: SVG, deferred, conds: torch.Tensor) -> list:
    """Decode the steps whose inputs were ground truth in one batched call."""
    if not deferred:
        return []
    steps, hs, skips, maps = zip(*deferred)

    def join(per_step):  # n lists of (B, ...) tensors -> one list of (n*B, ...) tensors
        return [torch.cat(level) for level in zip(*per_step)]

    cond = torch.cat([conds[t - 1] for t in steps])  # frame t is decoded with c_{t-1}
    frames = model.decode(torch.cat(hs), join(skips), cond, join(maps))
    frames = frames.unflatten(0, (len(steps), -1))  # (n, B, C, H, W)
    return list(zip(steps, frames))
