"""SVG's building blocks (Denton & Fergus 2018, "Stochastic Video Generation with a Learned Prior").

A VGG-style 64x64 encoder that also returns four skip maps, its mirrored decoder, a
deterministic LSTM (the frame predictor) and a Gaussian LSTM (the posterior). Recurrent modules
keep no state of their own: `init_hidden(batch)` makes one, `forward(x, state)` returns the new
one, so any batch size works and the state is visible where it is used.
"""
from __future__ import annotations

import torch
from torch import nn

from cvae.config import ModelConfig

LSTMState = list[tuple[torch.Tensor, torch.Tensor]]


def _vgg_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, inplace=True)
    )


def _stage(channels: list[int]) -> nn.Sequential:
    return nn.Sequential(*[_vgg_block(a, b) for a, b in zip(channels, channels[1:])])


def vgg_widths(width: float) -> list[int]:
    """Channels of the four resolutions 64, 32, 16, 8; width 1.0 gives SVG's 64, 128, 256, 512."""
    return [max(8, round(c * width)) for c in (64, 128, 256, 512)]


class Encoder(nn.Module):
    """(B, 3, 64, 64) -> encoding (B, g_dim) in [-1, 1] and skips at 64, 32, 16, 8."""

    def __init__(self, g_dim: int, width: float = 1.0, channels: int = 3):
        super().__init__()
        c1, c2, c3, c4 = vgg_widths(width)
        self.stages = nn.ModuleList([
            _stage([channels, c1, c1]),  # 64x64
            _stage([c1, c2, c2]),  # 32x32
            _stage([c2, c3, c3, c3]),  # 16x16
            _stage([c3, c4, c4, c4]),  # 8x8
        ])
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.Conv2d(c4, g_dim, 4), nn.BatchNorm2d(g_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.pool(x))
            skips.append(x)
        h = self.head(self.pool(x))  # (B, g_dim, 1, 1)
        return h.flatten(1), skips


class Decoder(nn.Module):
    """Encoding (B, g_dim) + skips -> frame (B, 3, 64, 64) in [0, 1]."""

    def __init__(self, g_dim: int, width: float = 1.0, channels: int = 3):
        super().__init__()
        c1, c2, c3, c4 = vgg_widths(width)
        self.head = nn.Sequential(
            nn.ConvTranspose2d(g_dim, c4, 4), nn.BatchNorm2d(c4), nn.LeakyReLU(0.2, inplace=True)
        )
        # Each stage sees the upsampled features concatenated with the encoder's skip.
        self.stages = nn.ModuleList([
            _stage([2 * c4, c4, c4, c3]),  # 8x8
            _stage([2 * c3, c3, c3, c2]),  # 16x16
            _stage([2 * c2, c2, c1]),  # 32x32
            _stage([2 * c1, c1]),  # 64x64
        ])
        self.out = nn.Sequential(nn.ConvTranspose2d(c1, channels, 3, 1, 1), nn.Sigmoid())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.head(h[:, :, None, None])  # (B, c4, 4, 4)
        for stage, skip in zip(self.stages, reversed(skips)):
            x = stage(torch.cat([self.up(x), skip], dim=1))
        return self.out(x)


class LSTM(nn.Module):
    """Linear embedding, stacked LSTM cells, tanh output: SVG's frame predictor."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, layers: int):
        super().__init__()
        self.embed = nn.Linear(input_size, hidden_size)
        self.cells = nn.ModuleList([nn.LSTMCell(hidden_size, hidden_size) for _ in range(layers)])
        self.out = nn.Sequential(nn.Linear(hidden_size, output_size), nn.Tanh())

    def init_hidden(self, batch: int) -> LSTMState:
        zeros = self.embed.weight.new_zeros(batch, self.embed.out_features)
        return [(zeros, zeros) for _ in self.cells]

    def _run_cells(self, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        h = self.embed(x)
        new_state = []
        for cell, layer_state in zip(self.cells, state):
            h, c = cell(h, layer_state)
            new_state.append((h, c))
        return h, new_state

    def forward(self, x: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        h, state = self._run_cells(x, state)
        return self.out(h), state


class GaussianLSTM(LSTM):
    """An LSTM whose output is a diagonal Gaussian: returns a reparameterised sample, mu, logvar."""

    def __init__(self, input_size: int, output_size: int, hidden_size: int, layers: int):
        super().__init__(input_size, output_size, hidden_size, layers)
        del self.out
        self.mu = nn.Linear(hidden_size, output_size)
        self.logvar = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor, state: LSTMState):
        h, state = self._run_cells(x, state)
        mu, logvar = self.mu(h), self.logvar(h)
        return reparameterize(mu, logvar), mu, logvar, state


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps: a sample that gradients flow through (Kingma & Welling 2014)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class SVG(nn.Module):
    """SVG with a fixed N(0, I) prior (SVG-FP), conditioned on a per-step vector (action, position)."""

    def __init__(self, cfg: ModelConfig, cond_dim: int = 7, channels: int = 3):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.g_dim, cfg.width, channels)
        self.decoder = Decoder(cfg.g_dim, cfg.width, channels)
        self.predictor = LSTM(cfg.g_dim + cfg.z_dim + cond_dim, cfg.g_dim, cfg.rnn_size,
                              cfg.predictor_layers)
        self.posterior = GaussianLSTM(cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.posterior_layers)
