"""The ghost-region PSNR of a dance evaluation's saved test sequences (`cvae.tracks.dance.ghost`):
how much of the first frame's dancer the rollout leaves behind, beside copying the first frame.
Meaningful where the background is one colour (sim-dance).

    python -m pipeline.ghost [eval/samples.npz]
"""
import argparse
from pathlib import Path

import numpy as np

from cvae.tracks.dance.ghost import ghost_region_psnr
from pipeline._cli import run


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", type=Path, nargs="?", default=Path("eval/samples.npz"))
    parser.add_argument("--threshold", type=float, default=0.1,
                        help="how far from the background colour a pixel shows the dancer")
    args = parser.parse_args()
    saved = np.load(args.samples)
    if "labels" not in saved:
        raise SystemExit(f"{args.samples}: not a dance evaluation's samples (no labels saved)")
    truth, prediction = (saved[k].astype(np.float32) / 255 for k in ("truth", "prediction"))
    rows = [ghost_region_psnr(t, p, args.threshold) for t, p in zip(truth, prediction)]
    for i, row in enumerate(rows):
        print(f"sequence {i}: ghost region {row['psnr']:.2f} dB, copying the first frame "
              f"{row['copy_psnr']:.2f} dB ({row['pixels_per_frame']:.0f} pixels a frame)")
    print(f"mean over {len(rows)}: {np.mean([r['psnr'] for r in rows]):.2f} dB, copying "
          f"{np.mean([r['copy_psnr'] for r in rows]):.2f} dB")


if __name__ == "__main__":
    run(main)
