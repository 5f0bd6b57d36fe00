"""The 2024 lab's pose-conditioned VAE, in our style. Every module works on full-resolution
feature maps (32 x 64): nothing is downsampled, so the skeleton's thin lines keep their place.

  frame encoder    RGB frame   -> F_dim channels   (the course's `frame_transformation`)
  label encoder    label image -> L_dim channels   (`label_transformation`)
  posterior        frame + label features -> mean and log-variance of z, N_dim channels per
                   pixel (`Gaussian_Predictor`); the prior is N(0, I)
  fusion           previous frame's features + this label's + z -> D_out_dim (`Decoder_Fusion`)
  generator        residual blocks -> the next RGB frame in [0, 1] (`Generator`); with
                   `residual` (our default) it outputs the change to the sequence's *first*
                   frame (the one given at test time), its last layer starting at zero: an
                   untrained model copies the first frame (the baseline) and training only has
                   to learn what moves. Against the first frame, not the previous one, so that
                   an error is not carried forward and summed over a 630-frame rollout (it was:
                   a previous-frame residual drifted to saturation within 600 frames).
                   `residual: false` is the course's generator: the frame itself, via a sigmoid.

Frame t is predicted from frame t-1 (the truth under teacher forcing, else the prediction),
label t and z_t; the rollout is in `cvae.tracks.dance.rollout`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from cvae.config import DanceModelConfig


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut (1x1 where the width changes)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1, bias=False)
        self.act = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


def encoder(cin: int, cout: int) -> nn.Sequential:
    """Image -> `cout` feature maps of the same size: widening residual blocks."""
    mid = max(cout // 2, 8)
    return nn.Sequential(ResidualBlock(cin, mid), ResidualBlock(mid, cout),
                         nn.Conv2d(cout, cout, 3, padding=1))


class DanceCVAE(nn.Module):
    name = "dance-cvae"

    def __init__(self, cfg: DanceModelConfig, channels: int = 3, size: tuple = (32, 64)):
        super().__init__()
        self.cfg = cfg
        self.latent_shape = (cfg.N_dim, *size)
        self.latent_size = math.prod(self.latent_shape)  # z_t flattened, as the loss sees it
        self.frame_encoder = encoder(channels, cfg.F_dim)
        self.label_encoder = encoder(channels, cfg.L_dim)
        self.posterior_net = nn.Sequential(ResidualBlock(cfg.F_dim + cfg.L_dim, cfg.F_dim),
                                           nn.Conv2d(cfg.F_dim, 2 * cfg.N_dim, 1))
        self.fusion = nn.Sequential(
            ResidualBlock(cfg.F_dim + cfg.L_dim + cfg.N_dim, cfg.D_out_dim),
            ResidualBlock(cfg.D_out_dim, cfg.D_out_dim))
        to_rgb = nn.Conv2d(cfg.D_out_dim // 2, channels, 1)
        if cfg.residual:
            nn.init.zeros_(to_rgb.weight)
            nn.init.zeros_(to_rgb.bias)
        self.generator = nn.Sequential(
            ResidualBlock(cfg.D_out_dim, cfg.D_out_dim // 2),
            ResidualBlock(cfg.D_out_dim // 2, cfg.D_out_dim // 2),
            to_rgb, nn.Identity() if cfg.residual else nn.Sigmoid())

    def posterior(self, frame_features, label_features):
        """(mu, logvar) of z_t, each (B, N_dim, H, W), from frame t's and label t's features."""
        return self.posterior_net(torch.cat([frame_features, label_features], 1)).chunk(2, dim=1)

    def predict(self, first, previous_features, label_features, z):
        """Frame t (B, C, H, W) from frame t-1's features, label t's and z_t (and, with
        `residual`, the sequence's first frame, which the output changes)."""
        out = self.generator(self.fusion(torch.cat([previous_features, label_features, z], 1)))
        return (first + out).clamp(0, 1) if self.cfg.residual else out
