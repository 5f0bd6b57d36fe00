"""SVG's building blocks (Denton & Fergus 2018, "Stochastic Video Generation with a Learned Prior").

A VGG-style 64x64 encoder that also returns four skip maps, its mirrored decoder, a
deterministic LSTM (the frame predictor), Gaussian LSTMs (the posterior, and for SVG-LP the
learned prior) and, for hierarchical models, spatial latent maps that enter the decoder.
Recurrent modules keep no state of their own: `init_hidden(batch)` makes one, `forward(x, state)` returns the new
one, so any batch size works and the state is visible where it is used.
"""
from __future__ import annotations

import torch
from torch import nn

from cvae.config import ModelConfig
from cvae.vae import reparameterize

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

    def __init__(self, g_dim: int, width: float = 1.0, channels: int = 3, cond_dim: int = 0,
                 latent_channels: tuple[int, ...] = ()):
        super().__init__()
        c1, c2, c3, c4 = vgg_widths(width)
        z = list(latent_channels) + [0] * (4 - len(latent_channels))  # per stage, 8x8 first
        self.head = nn.Sequential(
            nn.ConvTranspose2d(g_dim, c4, 4), nn.BatchNorm2d(c4), nn.LeakyReLU(0.2, inplace=True)
        )
        # Each stage sees the upsampled features concatenated with the encoder's skip (and with
        # the latent map of its resolution, in a hierarchical model).
        self.stages = nn.ModuleList([
            Stage([2 * c4 + z[0], c4, c4, c3], cond_dim),  # 8x8
            Stage([2 * c3 + z[1], c3, c3, c2], cond_dim),  # 16x16
            Stage([2 * c2 + z[2], c2, c1], cond_dim),  # 32x32
            Stage([2 * c1 + z[3], c1], cond_dim),  # 64x64
        ])
        self.out = nn.Sequential(nn.ConvTranspose2d(c1, channels, 3, 1, 1), nn.Sigmoid())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor],
                cond: torch.Tensor | None = None,
                latent_maps: list[torch.Tensor] = ()) -> torch.Tensor:
        x = self.head(h[:, :, None, None])  # (B, c4, 4, 4)
        for i, (stage, skip) in enumerate(zip(self.stages, reversed(skips))):
            inputs = [self.up(x), skip] + ([latent_maps[i]] if i < len(latent_maps) else [])
            x = stage(torch.cat(inputs, dim=1), cond)
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

    def forward(self, x: torch.Tensor, state: LSTMState):
        """A reparameterised sample, mu, logvar, and the new state."""
        mu, logvar, state = self.distribution(x, state)
        return reparameterize(mu, logvar), mu, logvar, state


class LatentMaps(nn.Module):
    """The spatial latents of a hierarchical model (HAF-SVG, Lin et al. 2020): below SVG's global
    z_t, one Gaussian map of `channels` per decoder resolution, 8x8 first, then 16x16, ...

    The posterior of a map is a conv head on the encoder features of the target frame x_t beside
    those of the frame fed in, x_{t-1} (so it sees what changed, where); the learned prior is a
    conv head on the fed frame's features alone. Features come in decoder order (8x8 first)."""

    def __init__(self, feature_channels: list[int], channels: int, learned_prior: bool):
        super().__init__()
        self.channels = channels
        self.posterior = nn.ModuleList(
            [nn.Conv2d(2 * c, 2 * channels, 3, 1, 1) for c in feature_channels])
        self.prior = (nn.ModuleList([nn.Conv2d(c, 2 * channels, 3, 1, 1) for c in feature_channels])
                      if learned_prior else None)

    def __len__(self) -> int:
        return len(self.posterior)

    def posterior_distribution(self, target: list[torch.Tensor], fed: list[torch.Tensor]):
        """[(mu, logvar) maps, (B, channels, r, r)] per level."""
        return [head(torch.cat([x, y], dim=1)).chunk(2, dim=1)
                for head, x, y in zip(self.posterior, target, fed)]

    def prior_distribution(self, fed: list[torch.Tensor]):
        """Like the posterior's; N(0, I) (zeros) for the fixed prior."""
        if self.prior is None:
            return [(f.new_zeros(f.shape[0], self.channels, *f.shape[2:]),) * 2
                    for f in fed[: len(self)]]
        return [head(f).chunk(2, dim=1) for head, f in zip(self.prior, fed)]


class SVG(nn.Module):
    """SVG conditioned on a per-step vector (action, position).

    `cfg.prior`: `fixed` is SVG-FP, z ~ N(0, I); `learned` is SVG-LP, z ~ a Gaussian LSTM on the
    encoding of the previous frame. `cfg.conditioning`: `concat` feeds the condition to the
    predictor LSTM; `condconv` steers every encoder and decoder block with it instead; `none`
    ignores it (action-free SVG, as the paper runs BAIR: the future is uncertain given the
    frames alone, and the latent has to carry the motion).
    `cfg.levels` > 1 adds `levels - 1` spatial latent maps (`LatentMaps`) fed to the decoder.

    All latents of a step travel as one flat vector of `latent_size` numbers (the global z_t,
    then each map flattened), so that the KL, the noise and the rollout treat every level alike:
    the KL of a step is the sum over all of them.
    """

    def __init__(self, cfg: ModelConfig, cond_dim: int = 7, channels: int = 3):
        super().__init__()
        self.cfg = cfg
        self.condconv = cfg.conditioning == "condconv"
        self.concat = cfg.conditioning == "concat"
        conv_cond = cond_dim if self.condconv else 0
        self.encoder = Encoder(cfg.g_dim, cfg.width, channels, conv_cond)
        maps = cfg.levels - 1
        self.decoder = Decoder(cfg.g_dim, cfg.width, channels, conv_cond,
                               latent_channels=(cfg.level_channels,) * maps)
        self.predictor = LSTM(cfg.g_dim + cfg.z_dim + (cond_dim if self.concat else 0),
                              cfg.g_dim, cfg.rnn_size, cfg.predictor_layers)
        self.posterior = GaussianLSTM(cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.posterior_layers)
        self.prior = (GaussianLSTM(cfg.g_dim, cfg.z_dim, cfg.rnn_size, cfg.prior_layers)
                      if cfg.prior == "learned" else None)
        features = vgg_widths(cfg.width)[::-1][:maps]  # encoder channels at 8x8, 16x16, ...
        self.latent_maps = LatentMaps(features, cfg.level_channels, cfg.prior == "learned")
        self.map_shapes = [(cfg.level_channels, 8 * 2 ** i, 8 * 2 ** i) for i in range(maps)]
        self.latent_size = cfg.z_dim + sum(c * r * r for c, r, _ in self.map_shapes)

    @property
    def name(self) -> str:
        """SVG-FP or SVG-LP, and the conditioning: how reports label the model."""
        levels = f", {self.cfg.levels} latent levels" if self.cfg.levels > 1 else ""
        conditioning = "action-free" if self.cfg.conditioning == "none" else self.cfg.conditioning
        return f"SVG-{'LP' if self.prior is not None else 'FP'}, {conditioning}{levels}"

    def skip_frame(self, n_past: int) -> int:
        """The last frame whose skips the decoder takes (unless `last_frame_skip`): the last
        given one, or with `skips_from: svg_code` the one before, as SVG's code does (its loop
        keeps the skips of x[i-1] while i < n_past)."""
        return n_past - 1 if self.cfg.skips_from == "last_given" else n_past - 2

    def encode(self, x: torch.Tensor, cond: torch.Tensor):
        """Frame t with its condition c_t (used by condconv only)."""
        return self.encoder(x, cond if self.condconv else None)

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], cond: torch.Tensor,
               latent_maps: list[torch.Tensor] = ()):
        """The prediction of frame t, with the condition c_{t-1} that leads to it."""
        return self.decoder(h, skips, cond if self.condconv else None, latent_maps)

    def posterior_distribution(self, h_target, target_skips, fed_skips, state):
        """q(z_t | x_<=t): flat (mu, logvar) over all levels, and the posterior LSTM's state."""
        mu, logvar, state = self.posterior.distribution(h_target, state)
        maps = self.latent_maps.posterior_distribution(target_skips[::-1], fed_skips[::-1])
        return *self._flat(mu, logvar, maps), state

    def prior_distribution(self, h_fed, fed_skips, state):
        """p(z_t | x_<t): flat (mu, logvar), N(0, I) for the fixed prior, and the prior's state."""
        if self.prior is not None:
            mu, logvar, state = self.prior.distribution(h_fed, state)
        else:
            mu = logvar = h_fed.new_zeros(h_fed.shape[0], self.cfg.z_dim)
        return *self._flat(mu, logvar, self.latent_maps.prior_distribution(fed_skips[::-1])), state

    def split_latent(self, z: torch.Tensor):
        """Flat latents (B, latent_size) -> global z_t (B, z_dim) and the maps, 8x8 first."""
        sizes = [self.cfg.z_dim] + [c * h * w for c, h, w in self.map_shapes]
        z_global, *maps = z.split(sizes, dim=1)
        return z_global, [m.view(-1, *shape) for m, shape in zip(maps, self.map_shapes)]

    @staticmethod
    def _flat(mu, logvar, maps):
        return (torch.cat([mu] + [m.flatten(1) for m, _ in maps], dim=1),
                torch.cat([logvar] + [v.flatten(1) for _, v in maps], dim=1))

    def predictor_input(self, h: torch.Tensor, z: torch.Tensor, cond: torch.Tensor):
        return torch.cat([h, z, cond] if self.concat else [h, z], dim=1)
