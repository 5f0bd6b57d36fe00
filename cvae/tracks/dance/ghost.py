"""How much of the first frame's dancer a rollout leaves behind: the ghost-region PSNR.

For plain backgrounds (sim-dance paints one colour per sequence): the background colour is the
most frequent colour of the first frame; a pixel shows the dancer at frame t where some channel
differs from it by more than `threshold`. The ghost region at frame t is where the first frame
shows the dancer and frame t shows background: a prediction that erased the first frame's
dancer paints background there, one that keeps a ghost does not. Its PSNR pools the squared
error over the region's pixels and channels of frames 1..T-1 of a sequence (some frames have
few such pixels), beside copying the first frame (the full ghost).
"""
from __future__ import annotations

import numpy as np


def background_colour(frame: np.ndarray) -> np.ndarray:
    """The most frequent colour (C,) of a frame (C, H, W)."""
    colours, counts = np.unique(frame.reshape(frame.shape[0], -1).T, axis=0, return_counts=True)
    return colours[counts.argmax()]


def ghost_region_psnr(truth: np.ndarray, prediction: np.ndarray, threshold: float = 0.1) -> dict:
    """truth, prediction: one sequence (T, C, H, W) in [0, 1], frame 0 the given one (a
    prediction's frame 0 is ignored). Returns the ghost-region PSNR of the prediction and of
    copying the first frame (dB), and the region's pixels per frame."""
    first, later, predicted = truth[0], truth[1:], prediction[1:]
    background = background_colour(first)[:, None, None]

    def shows_dancer(x):
        return (np.abs(x - background) > threshold).any(axis=-3)

    region = shows_dancer(first)[None] & ~shows_dancer(later)  # (T-1, H, W)
    if not region.any():
        raise ValueError("no pixel where the first frame's dancer was and later frames show "
                         "background")

    def psnr(x):
        return float(10 * np.log10(1 / ((x - later) ** 2).transpose(1, 0, 2, 3)[:, region].mean()))

    return {"psnr": psnr(predicted), "copy_psnr": psnr(np.broadcast_to(first, later.shape)),
            "pixels_per_frame": float(region.sum() / len(later))}
