"""Stage `download`: fill raw/ with the dataset that `data.source` names.

`--make-sample DIR` instead regenerates the small committed sample (data/) from the simulator.
"""
import argparse
import dataclasses
from pathlib import Path

from cvae.data.raw import download, generate_sim_push
from pipeline._cli import params

SAMPLE_COUNTS = {"train": 8, "val": 4, "test": 4}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("raw"))
    parser.add_argument("--sample-dir", type=Path, default=Path("data/sim-push-sample"))
    parser.add_argument("--make-sample", type=Path, metavar="DIR")
    args = parser.parse_args()
    cfg = params().data
    if args.make_sample:
        sample_cfg = dataclasses.replace(cfg, seed=cfg.seed + 10_000)  # unlike any default split
        generate_sim_push(sample_cfg, SAMPLE_COUNTS, args.make_sample)
    else:
        download(cfg, args.out, args.sample_dir)


if __name__ == "__main__":
    main()
