"""Stage `report`: curves, per-frame PSNR plot, GIF, grid and summary.md in reports/."""
import argparse
from pathlib import Path

from cvae.report import write_report
from pipeline._cli import params


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-logs", type=Path, default=Path("logs/train"))
    parser.add_argument("--eval-logs", type=Path, default=Path("logs/eval"))
    parser.add_argument("--samples", type=Path, default=Path("eval/samples.npz"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    args = parser.parse_args()
    cfg = params().report
    write_report(args.train_logs, args.eval_logs, args.samples, args.metrics, cfg.sequence,
                 cfg.fps, args.out)


if __name__ == "__main__":
    main()
