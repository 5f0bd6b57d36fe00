"""How much two prior samples differ: python results/annealing-study/sample_spread.py [eval/samples.npz]

Reads the robot track's saved test predictions (`eval/samples.npz`: the truth and two of the N
prior samples of each kept sequence) and prints the mean absolute difference between the two
samples (largest over the colour channels, pixel values in [0, 1]): over all predicted pixels,
and over the moving pixels (`cvae.metrics.moving_pixels` against the last given frame, at the
default `eval.moving_threshold`, as `psnr_moving` counts them). Samples that a reader sees
differ in the grid score about 0.05 on the moving pixels; near 0 means the prior samples give
the same video.
"""
import sys

import numpy as np
import torch

from cvae.config import EvalConfig
from cvae.metrics import moving_pixels

path = sys.argv[1] if len(sys.argv) > 1 else "eval/samples.npz"
saved = np.load(path)
n_past = int(saved["n_past"])
truth = torch.from_numpy(saved["truth"]) / 255  # (sequences, T, C, H, W)
samples = torch.from_numpy(saved["samples"]) / 255  # (sequences, 2, predicted, C, H, W)
spread = (samples[:, 0] - samples[:, 1]).abs().amax(dim=-3)  # (sequences, predicted, H, W)
moving = moving_pixels(truth[:, n_past:], truth[:, n_past - 1:n_past],
                       EvalConfig().moving_threshold).squeeze(-3)
print(f"two prior samples differ by {spread[moving].mean():.4f} on the moving pixels, "
      f"{spread.mean():.4f} over all predicted pixels ({path})")
