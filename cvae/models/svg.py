"""SVG's building blocks (Denton & Fergus 2018, "Stochastic Video Generation with a Learned Prior").

A VGG-style 64x64 encoder that also returns four skip maps, its mirrored decoder, a
deterministic LSTM (the frame predictor) and Gaussian LSTMs (the posterior, and for SVG-LP the
learned prior). Recurrent modules
keep no state of their own: `init_hidden(batch)` makes one, `forward(x, state)` returns the new
one, so any batch size works and the state is visible where it is used.
"""
from __future__ import annotations

import torch
from torch import nn

from cvae.config import ModelConfig

LSTMState = list[tuple[torch.Tensor, torch.Tensor]]


class VGGBlock(nn.Module):
    """conv3x3 -> batch norm -> LeakyReLU(0.2). With `cond_dim`, a conditional convolution:
    the condition sets a per-channel scale and shift after the norm (Choi et al. 2019), starting
    at the identity so that an untrained block behaves as the plain one."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm = nn.BatchNorm2d(c_out)
        self.film = nn.Linear(cond_dim, 2 * c_out) if cond_dim else None
        if self.film is not None:
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(self.conv(x))
        if self.film is not None:
            scale, shift = self.film(cond)[:, :, None, None].chunk(2, dim=1)
            x = x * (1 + scale) + shift
        return nn.functional.leaky_relu(x, 0.2)


class Stage(nn.ModuleList):
    """VGG blocks at one resolution, all steered by the same condition (if any)."""

    def __init__(self, channels: list[int], cond_dim: int = 0):
        super().__init__([VGGBlock(a, b, cond_dim) for a, b in zip(channels, channels[1:])])

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        for block in self:
            x = block(x, cond)
        return x


def vgg_widths(width: float) -> list[int]:
    """Channels of the four resolutions 64, 32, 16, 8; width 1.0 gives SVG's 64, 128, 256, 512."""
    return [max(8, round(c * width)) for c in (64, 128, 256, 512)]


class Encoder(nn.Module):
    """(B, 3, 64, 64) -> encoding (B, g_dim) in [-1, 1] and skips at 64, 32, 16, 8.
    With `cond_dim`, every block is steered by a condition (B, cond_dim)."""

    def __init__(self, g_dim: int, width: float = 1.0, channels: int = 3, cond_dim: int = 0):
        super().__init__()
        c1, c2, c3, c4 = vgg_widths(width)
        self.stages = nn.ModuleList([
            Stage([channels, c1, c1], cond_dim),  # 64x64
            Stage([c1, c2, c2], cond_dim),  # 32x32
            Stage([c2, c3, c3, c3], cond_dim),  # 16x16
            Stage([c3, c4, c4, c4], cond_dim),  # 8x8
        ])
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.Conv2d(c4, g_dim, 4), nn.BatchNorm2d(g_dim), nn.Tanh())

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        skips = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.pool(x), cond)
            skips.append(x)
        h = self.head(self.pool(x))  # (B, g_dim, 1, 1)
        return h.flatten(1), skips


class Decoder(nn.Module):
    """Encoding (B, g_dim) + skips -> frame (B, 3, 64, 64) in [0, 1], optionally steered by a
    condition like the encoder."""

    def __init__(self, g_dim: int, width: float = 1.0, channels: int = 3, cond_dim: int = 0):
        super().__init__()
        c1, c2, c3, c4 = vgg_widths(width)
        self.head = nn.Sequential(
            nn.ConvTranspose2d(g_dim, c4, 4), nn.BatchNorm2d(c4), nn.LeakyReLU(0.2, inplace=True)
        )
        # Each stage sees the upsampled features concatenated with the encoder's skip.
        self.stages = nn.ModuleList([
            Stage([2 * c4, c4, c4, c3], cond_dim),  # 8x8
            Stage([2 * c3, c3, c3, c2], cond_dim),  # 16x16
            Stage([2 * c2, c2, c1], cond_dim),  # 32x32
            Stage([2 * c1, c1], cond_dim),  # 64x64
        ])
        self.out = nn.Sequential(nn.ConvTranspose2d(c1, channels, 3, 1, 1), nn.Sigmoid())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor],
                cond: torch.Tensor | None = None) -> torch.Tensor:
        x = self.head(h[:, :, None, None])  # (B, c4, 4, 4)
        for stage, skip in zip(self.stages, reversed(skips)):
            x = stage(torch.cat([self.up(x), skip], dim=1), cond)
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

    def distribution(self, x: torch.Tensor, state: LSTMState):
        """mu, logvar of the Gaussian, and the new state."""
        h, state = self._run_cells(x, state)
        return self.mu(h), self.logvar(h), state

    def forward(self, x: torch.Tensor, state: LSTMState, eps: torch.Tensor | None = None):
        """A reparameterised sample, mu, logvar, and the new state."""
        mu, logvar, state = self.distribution(x, state)
        return reparameterize(mu, logvar, eps), mu, logvar, state


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                   eps: torch.Tensor | None = None) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) (drawn here unless given): a sample that gradients
    flow through (Kingma & Welling 2014)."""
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)


class SVG(nn.Module):
    """SVG conditioned on a per-step vector (action, position).

    `cfg.prior`: `fixed` is SVG-FP, z ~ N(0, I); `learned` is SVG-LP, z ~ a Gaussian LSTM on the
    encoding of the previous frame. `cfg.conditioning`: `concat` feeds the condition to the
    predictor LSTM; `condconv` steers every encoder and decoder block with it instead.
    """

    def __init__(self, cfg: ModelConfig, cond_dim: int = 7, channels: int = 3):
        super().__init__()
        self.cfg = cfg
        self.condconv = cfg.conditioning == "condconv"
        conv_cond = cond_dim if self.condconv else 0
        self.encoder = Encoder(cfg.g_dim, cfg.width, channels, conv_cond)
        self.decoder = Decoder(cfg.g_dim, cfg.width, channels, conv_cond)
        self.predictor = LSTM(cfg.g_dim + cfg.z_dim + (0 if self.condconv else cond_dim),
                              cfg.g_dim, cfg.rnn_size, cfg.predictor_layers)
        self.posterior = GaussianLSTM(cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.posterior_layers)
        self.prior = (GaussianLSTM(cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.prior_layers)
                      if cfg.prior == "learned" else None)

    @property
    def name(self) -> str:
        """SVG-FP or SVG-LP, and the conditioning: how reports label the model."""
        return f"SVG-{'LP' if self.prior is not None else 'FP'}, {self.cfg.conditioning}"

    def encode(self, x: torch.Tensor, cond: torch.Tensor):
        """Frame t with its condition c_t (used by condconv only)."""
        return self.encoder(x, cond if self.condconv else None)

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], cond: torch.Tensor):
        """The prediction of frame t, with the condition c_{t-1} that leads to it."""
        return self.decoder(h, skips, cond if self.condconv else None)

    def predictor_input(self, h: torch.Tensor, z: torch.Tensor, cond: torch.Tensor):
        return torch.cat([h, z] if self.condconv else [h, z, cond], dim=1)
