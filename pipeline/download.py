"""Stage `download`: make the dataset that `data.source` names available in raw/.

`--make-sample TAR` instead renders the small committed sample (data/bair-sample.tar): simulated
sequences packed exactly like the published BAIR tar.
"""
import argparse
import dataclasses
import json
from pathlib import Path

from cvae.data.raw import download, make_sample
from pipeline._cli import forget_results_below, params, run

SAMPLE_TAR = Path("data/bair-sample.tar")
SAMPLE_COUNTS = {"train": 8, "val": 4, "test": 4}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("raw"))
    parser.add_argument("--sample", type=Path, default=SAMPLE_TAR, help="the committed sample")
    parser.add_argument("--make-sample", type=Path, metavar="TAR", help="render a new sample")
    args = parser.parse_args()
    cfg = params().data
    if args.make_sample:
        sample_cfg = dataclasses.replace(cfg, seed=cfg.seed + 10_000)  # unlike any default split
        make_sample(sample_cfg, SAMPLE_COUNTS, args.make_sample)
    else:
        forget_results_below("download")
        print(json.dumps(download(cfg, args.out, args.sample)))


if __name__ == "__main__":
    run(main)
