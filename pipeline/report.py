"""Stage `report`: curves, per-frame PSNR plot, GIFs, grid and summary.md in reports/, drawn by
the data's track from the logs and the evaluate stage's outputs."""
import argparse
from pathlib import Path

from cvae import tracks
from cvae.data.shards import read_meta
from cvae.figures import read_inputs
from pipeline._cli import params, run


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=Path, default=Path("shards"), help="for meta.json")
    parser.add_argument("--train-logs", type=Path, default=Path("logs/train"))
    parser.add_argument("--eval-logs", type=Path, default=Path("logs/eval"))
    parser.add_argument("--samples", type=Path, default=Path("eval/samples.npz"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args()
    cfg = params().report
    inputs = read_inputs(args.train_logs, args.eval_logs, args.samples, args.metrics, cfg.sequence)
    tracks.for_meta(read_meta(args.shards)).write_report(inputs, cfg.sequence, cfg.fps, args.out)


if __name__ == "__main__":
    run(main)
