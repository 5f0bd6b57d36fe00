"""Running SVG over a sequence: the one place that decides what the model sees at each step.

At step t the predictor gets the encoding of the previous frame, a latent z_t and the condition
c_{t-1} (the action that leads from frame t-1 to frame t, and the end effector at t-1). The
previous frame is the ground truth for the `n_past` conditioning frames, and afterwards the
ground truth under teacher forcing or the model's own prediction without it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from cvae.models.svg import SVG


@dataclass
class Rollout:
    frames: torch.Tensor  # (T-1, B, C, H, W): predictions of frames 1..T-1
    mu: torch.Tensor  # (T-1, B, z): posterior means (from the prior steps too, unused there)
    logvar: torch.Tensor  # (T-1, B, z)


def rollout(model: SVG, frames: torch.Tensor, conds: torch.Tensor, n_past: int, *,
            teacher_forcing: bool, sample_prior: bool = False) -> Rollout:
    """Predict frames 1..T-1 of `frames` (T, B, C, H, W) given conditions `conds` (T, B, c).

    Training draws z_t from the posterior on the true frame t. With `sample_prior` (evaluation),
    z_t comes from N(0, I) after the conditioning frames, and only `frames[:n_past]` is read.
    """
    T, B = conds.shape[:2]
    observed = frames[: T if not sample_prior else n_past]
    h_true, skips_true = _encode(model, observed)  # (t, B, g), skips (t, B, C, H, W)
    predictor_state = model.predictor.init_hidden(B)
    posterior_state = model.posterior.init_hidden(B)
    h_in, skips = h_true[0], [s[0] for s in skips_true]  # what the next step is fed
    outputs, deferred, mus, logvars = [], [], [], []
    for t in range(1, T):
        if sample_prior and t >= n_past:
            z = torch.randn(B, model.cfg.z_dim, device=conds.device, dtype=h_in.dtype)
            mu = logvar = torch.zeros_like(z)
        else:
            z, mu, logvar, posterior_state = model.posterior(h_true[t], posterior_state)
        h_pred, predictor_state = model.predictor(torch.cat([h_in, z, conds[t - 1]], 1),
                                                  predictor_state)
        mus.append(mu)
        logvars.append(logvar)
        if t < n_past or (teacher_forcing and not sample_prior):
            # The next input is the true frame t, known already: decoding can wait and run
            # batched at the end.
            deferred.append((t, h_pred, skips))
            if t < T - 1:
                h_in = h_true[t]
                if model.cfg.last_frame_skip or t < n_past:
                    skips = [s[t] for s in skips_true]
        else:
            x_hat = model.decoder(h_pred, skips)
            outputs.append((t, x_hat))
            h_in, new_skips = model.encoder(x_hat)
            if model.cfg.last_frame_skip:
                skips = new_skips
    outputs += _decode_deferred(model, deferred)
    predictions = torch.stack([x for _, x in sorted(outputs, key=lambda item: item[0])])
    return Rollout(predictions, torch.stack(mus), torch.stack(logvars))


def _encode(model: SVG, frames: torch.Tensor):
    """Encode all frames in one batched call: (T, B, C, H, W) -> (T, B, g), skips (T, B, ...)."""
    T, B = frames.shape[:2]
    h, skips = model.encoder(frames.flatten(0, 1))  # (T*B, g)
    return h.view(T, B, -1), [s.view(T, B, *s.shape[1:]) for s in skips]


def _decode_deferred(model: SVG, deferred) -> list:
    """Decode the steps whose inputs were ground truth in one batched call."""
    if not deferred:
        return []
    steps = [t for t, _, _ in deferred]
    h = torch.cat([h for _, h, _ in deferred])  # (n*B, g)
    skips = [torch.cat(level) for level in zip(*[s for _, _, s in deferred])]  # (n*B, C, H, W)
    frames = model.decoder(h, skips).unflatten(0, (len(steps), -1))  # (n, B, C, H, W)
    return list(zip(steps, frames))
