"""How much two prior samples differ, from a robot-track evaluation's saved test sequences
(`cvae.tracks.robot.evaluation.sample_spread`): whether the latent makes the samples differ.

    python -m pipeline.spread [eval/samples.npz]
"""
import argparse
from pathlib import Path

import numpy as np

from cvae.errors import UserError
from cvae.tracks.robot.evaluation import sample_spread
from pipeline._cli import run


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("samples", type=Path, nargs="?", default=Path("eval/samples.npz"))
    args = parser.parse_args()
    with np.load(args.samples) as saved:
        if "samples" not in saved or saved["samples"].shape[1] < 2:
            raise UserError(f"{args.samples}: not a robot evaluation with two prior samples saved")
        spread = sample_spread(dict(saved))
    print(f"two prior samples differ by {spread['moving']:.4f} on the moving pixels, "
          f"{spread['all']:.4f} over all predicted pixels ({args.samples})")


if __name__ == "__main__":
    run(main)
