"""The 2024 lab's pose-conditioned VAE, in our style. Every module works on full-resolution
feature maps (32 x 64): nothing is downsampled, so the skeleton's thin lines keep their place.

  frame encoder    RGB frame   -> F_dim channels   (the course's `frame_transformation`)
  label encoder    label image -> L_dim channels   (`label_transformation`)
  posterior        frame + label features -> mean and log-variance of z, N_dim channels per
                   pixel (`Gaussian_Predictor`)
  prior            N(0, I), the course's
  fusion           previous frame's features + this label's + z -> D_out_dim (`Decoder_Fusion`)
  generator        residual blocks -> the next RGB frame in [0, 1] (`Generator`); with
                   `residual` (our default) it outputs the change to the sequence's *first*
                   frame (the one given at test time), its last layer starting at zero: an
                   untrained model copies the first frame (the baseline) and training only has
                   to learn what moves. Against the first frame, not the previous one, so that
                   an error is not carried forward and summed over a 630-frame rollout (it was:
                   a previous-frame residual drifted to saturation within 600 frames).
                   `residual: false` is the course's generator: the frame itself, via a sigmoid.

Inputs beyond the course's, computed once per sequence from its first frame (and first label),
join the fusion's input at every step:
  first frame      its features (`sees_first`): what the residual changes. Without them the
                   model cannot know where the first frame's dancer stands, so it cannot erase
                   it (a faded copy stays: the "ghost").
  background plate (`plate`) the first frame with its dancer filled in, once per sequence: a
                   learned mask says where the dancer stands, and under it each pixel takes
                   the average of the unmasked pixels around it (normalized convolution).
                   The generator's composite then changes the plate, not the first frame, so
                   where the dancer has left, no step has to erase it again.
  appearance code  (`appearance_dim` > 0) attention pooling over the first frame's and label's
                   features, broadcast to every pixel: the background and costume colours, so
                   that a limb can be painted far from where the first frame shows it and
                   without copying the (blurring) previous prediction.
And one read at every step (`first_lookup_dim` > 0), the label-guided look-up: each position of
label t asks, by attention over the first label's positions, where the first label drew the
same bone, and takes the first frame's features and pixels from there. The labels draw every
bone in its own colour, so this finds the costume's colour for a limb wherever it has moved:
what the appearance code can only give as a summary.

Frame t is predicted from frame t-1 (the truth under teacher forcing, else the prediction),
label t and z_t; the rollout is in `cvae.tracks.dance.rollout`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cvae.config import DanceModelConfig


MASK_START = -5.0  # logit of the composite's mask at initialisation: 0.7% painted
# The look-up's keys and values are averaged over 2 x 2 positions: a quarter of the attention's
# work (it cost half a training step at patch 2 without), and a costume's colour is constant
# over a limb's few pixels
LOOKUP_POOL = 2
# The plate fills a masked pixel from the unmasked ones in the PLATE_REACH x PLATE_REACH square
# around it: wider than a limb, so that a masked limb or torso has background in reach
PLATE_REACH = 15


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


def encoder(cin: int, cout: int, patch: int = 1) -> nn.Sequential:
    """Image -> `cout` feature maps of 1/`patch` its size: each patch x patch block of pixels
    stacked into channels (lossless: a 1-pixel line keeps its place), then widening residual
    blocks."""
    mid = max(cout // 2, 8)
    return nn.Sequential(nn.PixelUnshuffle(patch), ResidualBlock(cin * patch ** 2, mid),
                         ResidualBlock(mid, cout), nn.Conv2d(cout, cout, 3, padding=1))


def gaussian_head(cfg: DanceModelConfig) -> nn.Sequential:
    """Frame and label features (F_dim + L_dim channels) -> the mean and log-variance maps of a
    Gaussian over z (2 * N_dim channels): the posterior."""
    return nn.Sequential(ResidualBlock(cfg.F_dim + cfg.L_dim, cfg.F_dim),
                         nn.Conv2d(cfg.F_dim, 2 * cfg.N_dim, 1))


def _statistics(head: nn.Sequential, frame_features, label_features):
    return head(torch.cat([frame_features, label_features], 1)).chunk(2, dim=1)


class AppearanceCode(nn.Module):
    """Per-sequence code (B, dim, H, W) from feature maps (B, cin, H, W): `heads` softmax
    weightings over the pixels (e.g. one on the legs, found through the label's features), each
    averaging its share of `dim` value channels, then broadcast back over the image."""

    def __init__(self, cin: int, dim: int, heads: int = 4):
        super().__init__()
        self.heads = heads if dim % heads == 0 else 1
        self.logits = nn.Conv2d(cin, self.heads, 1)
        self.values = nn.Conv2d(cin, dim, 1)

    def forward(self, features):
        B, _, H, W = features.shape
        weights = self.logits(features).flatten(2).softmax(-1)  # (B, heads, H*W)
        values = self.values(features).flatten(2).unflatten(1, (self.heads, -1))  # (B, heads, d, H*W)
        code = (values * weights.unsqueeze(2)).sum(-1).flatten(1)  # (B, dim)
        return code[:, :, None, None].expand(B, -1, H, W)


class Context(NamedTuple):
    """What a sequence's first frame and label tell every step: the frame the residual
    generator changes (B, C, H, W: the first frame, or its background plate), maps the fusion
    reads as they are (B, C, H, W), and the look-up's keys (B, d, h, w) and values (B, V, h, w);
    a tensor of no channels for each that the options leave out."""

    base: torch.Tensor
    maps: torch.Tensor
    keys: torch.Tensor
    values: torch.Tensor


class DanceCVAE(nn.Module):
    name = "dance-cvae"

    def __init__(self, cfg: DanceModelConfig, channels: int = 3, size: tuple = (32, 64)):
        super().__init__()
        self.cfg = cfg
        self.latent_shape = (cfg.N_dim, *(n // cfg.patch for n in size))
        self.latent_size = math.prod(self.latent_shape)  # z_t flattened, as the loss sees it
        self.frame_encoder = encoder(channels, cfg.F_dim, cfg.patch)
        self.label_encoder = encoder(channels, cfg.L_dim, cfg.patch)
        self.posterior_net = gaussian_head(cfg)
        if cfg.appearance_dim:
            self.appearance = AppearanceCode(cfg.F_dim + cfg.L_dim, cfg.appearance_dim)
        context = (cfg.F_dim if cfg.sees_first else 0) + cfg.appearance_dim
        looked_up = 0
        if cfg.first_lookup_dim:  # it reads the first frame's features and pixels (patch-stacked)
            looked_up = cfg.F_dim + channels * cfg.patch ** 2
            self.lookup_query = nn.Conv2d(cfg.L_dim, cfg.first_lookup_dim, 1)
            self.lookup_key = nn.Conv2d(cfg.L_dim, cfg.first_lookup_dim, 1)
            self.lookup_pool = LOOKUP_POOL  # an attribute, so a benchmark can time 1 beside it
        if cfg.plate:  # where the first frame's dancer stands: a mask's logit per pixel
            width = cfg.D_out_dim // 2
            to_mask = nn.Conv2d(width, cfg.patch ** 2, 1)
            nn.init.zeros_(to_mask.weight)  # at sigmoid(MASK_START): the first frame, almost
            nn.init.constant_(to_mask.bias, MASK_START)
            self.plate_mask = nn.Sequential(
                ResidualBlock(cfg.F_dim + cfg.L_dim + cfg.appearance_dim, width),
                ResidualBlock(width, width), to_mask, nn.PixelShuffle(cfg.patch))
        self.fusion = nn.Sequential(
            ResidualBlock(cfg.F_dim + cfg.L_dim + cfg.N_dim + context + looked_up, cfg.D_out_dim),
            ResidualBlock(cfg.D_out_dim, cfg.D_out_dim))
        # With `composite`, a mask channel beside the painted RGB (after the pixel shuffle).
        out_channels = channels + 1 if cfg.residual and cfg.composite else channels
        to_rgb = nn.Conv2d(cfg.D_out_dim // 2, out_channels * cfg.patch ** 2, 1)
        if cfg.residual:
            nn.init.zeros_(to_rgb.weight)
            nn.init.zeros_(to_rgb.bias)
            if cfg.composite:  # the mask starts near 0: the first frame, almost exactly
                nn.init.constant_(to_rgb.bias[channels * cfg.patch ** 2:], MASK_START)
        self.generator = nn.Sequential(
            ResidualBlock(cfg.D_out_dim, cfg.D_out_dim // 2),
            ResidualBlock(cfg.D_out_dim // 2, cfg.D_out_dim // 2),
            to_rgb, nn.PixelShuffle(cfg.patch), nn.Identity() if cfg.residual else nn.Sigmoid())

    def posterior(self, frame_features, label_features):
        """(mu, logvar) of z_t, each (B, N_dim, H, W), from frame t's and label t's features."""
        return _statistics(self.posterior_net, frame_features, label_features)

    def prior(self, fed_features):
        """(mu, logvar) of z_t's prior, each (B, N_dim, H, W): zeros, N(0, I), for every step
        (`fed_features` give the batch, device and dtype)."""
        zeros = fed_features.new_zeros(fed_features.shape[0], *self.latent_shape)
        return zeros, zeros

    def context(self, first, first_features, first_label_features) -> Context:
        """What the sequence's first frame (B, C, H, W), its features and its label's tell
        every step: the maps (its features and/or the appearance code) and the look-up's keys
        and values."""
        none = first_features[:, :0]
        both = torch.cat([first_features, first_label_features], 1)
        code = self.appearance(both) if self.cfg.appearance_dim else none
        base = (_fill(first, self.plate_mask(torch.cat([both, code], 1)).sigmoid())
                if self.cfg.plate else first)
        maps = torch.cat([first_features, code] if self.cfg.sees_first else [code], 1)
        if not self.cfg.first_lookup_dim:
            return Context(base, maps, none, none)
        keys = self.lookup_key(first_label_features)
        values = torch.cat([first_features, F.pixel_unshuffle(first, self.cfg.patch)], 1)
        return Context(base, maps, *(F.avg_pool2d(x, self.lookup_pool, ceil_mode=True)
                                     for x in (keys, values)))

    def look_up(self, label_features, keys, values):
        """At every position of label t's features (B, L, H, W): the values (B, V, h, w) at the
        first label's positions whose keys (B, d, h, w) match its query, averaged by attention."""
        query = self.lookup_query(label_features)
        read = F.scaled_dot_product_attention(*(x.flatten(2).mT for x in (query, keys, values)))
        return read.mT.unflatten(2, label_features.shape[2:])

    def predict(self, context, previous_features, label_features, z):
        """Frame t (B, C, H, W) from the sequence's context (`context`, whose base the residual
        output changes), frame t-1's features, label t's and z_t."""
        looked_up = ([self.look_up(label_features, context.keys, context.values)]
                     if self.cfg.first_lookup_dim else [])
        fused = self.fusion(torch.cat([previous_features, label_features, z, context.maps,
                                       *looked_up], 1))
        out = self.generator(fused)
        base = context.base
        if self.cfg.residual and self.cfg.composite:
            # In the base's dtype: under bf16 autocast the generator's output is bf16, and lerp
            # does not promote (a no-op in fp32)
            painted, mask = (x.sigmoid().to(base.dtype) for x in (out[:, :-1], out[:, -1:]))
            return torch.lerp(base, painted, mask)
        return (base + out).clamp(0, 1) if self.cfg.residual else out


def _fill(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`image` (B, C, H, W) where `mask` (B, 1, H, W, in [0, 1]) is 0; where it is 1, the mean
    of the image around the pixel weighted by 1 - mask (normalized convolution over
    PLATE_REACH x PLATE_REACH): the background's colour where the mask covers the dancer."""
    mask = mask.to(image.dtype)
    keep = 1 - mask

    def around(x):  # the box mean as two 1-D means: 2 x 15 reads a pixel, not 15 x 15
        x = F.avg_pool2d(x, (PLATE_REACH, 1), stride=1, padding=(PLATE_REACH // 2, 0))
        return F.avg_pool2d(x, (1, PLATE_REACH), stride=1, padding=(0, PLATE_REACH // 2))
    # A convex combination of the kept pixels; where none is in reach, a darker one, not a
    # division by zero
    filled = around(image * keep) / around(keep).clamp_min(1e-3)
    return torch.lerp(image, filled, mask)
