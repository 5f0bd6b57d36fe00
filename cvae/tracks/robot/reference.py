"""SVG's original per-frame training loop, written from the definitions in the track's
`rollout` module.

Every step encodes the frame fed in and the target frame on their own, steps the LSTMs and
decodes, one frame at a time, as SVG's code and the course templates do. It is slow on purpose:
the tests check that `rollout.rollout` (one batched encode, batched decodes) computes the same
thing, and `benchmarks/train_step.py` measures how much faster that is.
"""
from __future__ import annotations

import torch

from cvae.tracks.robot.model import SVG
from cvae.vae import Rollout


def per_frame_rollout(model: SVG, frames: torch.Tensor, conds: torch.Tensor, n_past: int,
                      teacher_forcing: bool, noise: torch.Tensor | None = None) -> Rollout:
    """Like `rollout(model, frames, conds, n_past, teacher_forcing=...)`, frame by frame.

    With latent maps, each level's prior sees x_{t-1}'s skip at its resolution and its posterior
    that of x_t beside it; their noise follows the global z's in `noise` (T-1, B, latent_size)."""
    T, B = conds.shape[:2]
    cfg = model.cfg
    if noise is None:
        noise = torch.randn(T - 1, B, model.latent_size, device=frames.device)
    sides = [8 * 2 ** i for i in range(cfg.levels - 1)]  # 8x8, 16x16, ...
    predictor_state = model.predictor.init_hidden(B)
    posterior_state = model.posterior.init_hidden(B)
    prior_state = model.prior.init_hidden(B) if model.prior is not None else None
    x_in, preds, stats = frames[0], [], []
    for t in range(1, T):
        h, skip_now = model.encode(x_in, conds[t - 1])
        if cfg.last_frame_skip or t - 1 <= model.skip_frame(n_past):
            skip = skip_now
        h_target, skip_target = model.encode(frames[t], conds[t])
        fed = {s.shape[-1]: s for s in skip_now}
        target = {s.shape[-1]: s for s in skip_target}
        # The global z: Gaussian LSTMs, or N(0, I) for the fixed prior.
        mu_p = logvar_p = h.new_zeros(B, cfg.z_dim)
        if model.prior is not None:
            mu_p, logvar_p, prior_state = model.prior.distribution(h, prior_state)
        mu, logvar, posterior_state = model.posterior.distribution(h_target, posterior_state)
        eps = noise[t - 1]
        z = mu + (0.5 * logvar).exp() * eps[:, :cfg.z_dim]
        step = [(mu, logvar, mu_p, logvar_p)]
        offset, maps = cfg.z_dim, []
        for level, side in enumerate(sides):
            shape = (B, cfg.level_channels, side, side)
            m_mu_p = m_logvar_p = h.new_zeros(shape)
            if model.prior is not None:
                m_mu_p, m_logvar_p = model.latent_maps.prior[level](fed[side]).chunk(2, dim=1)
            posterior = model.latent_maps.posterior[level](torch.cat([target[side], fed[side]], 1))
            m_mu, m_logvar = posterior.chunk(2, dim=1)
            size = cfg.level_channels * side * side
            m_eps = eps[:, offset:offset + size].reshape(shape)
            maps.append(m_mu + (0.5 * m_logvar).exp() * m_eps)
            step.append((m_mu, m_logvar, m_mu_p, m_logvar_p))
            offset += size
        stats.append([torch.cat([s[i].flatten(1) for s in step], 1) for i in range(4)])
        h_pred, predictor_state = model.predictor(model.predictor_input(h, z, conds[t - 1]),
                                                  predictor_state)
        x_hat = model.decoder(h_pred, skip, conds[t - 1] if model.condconv else None, maps)
        preds.append(x_hat)
        x_in = frames[t] if (t < n_past or teacher_forcing) else x_hat
    mu, logvar, prior_mu, prior_logvar = (torch.stack(s) for s in zip(*stats))
    return Rollout(torch.stack(preds), mu, logvar, prior_mu, prior_logvar)
