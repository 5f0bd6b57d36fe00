"""Compare experiments across seeds: one row per setting (the params that differ, the seed
excluded) with mean ± sd over its seeds, and the training curves of every setting in one figure.
Not a stage of dvc.yaml: it reads the experiments DVC lists, after a sweep such as

    dvc exp run --queue -S 'train.kl.type=Monotonic,Cyclical,None' -S 'train.seed=1,2,3'
    dvc queue start -j 1

Usage: python -m pipeline.compare [EXPERIMENT ...] [--rev COMMIT] [-n NUM] [-A] [--terminal]
                                  [--out DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from cvae import compare
from pipeline._cli import run


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare",
                                     description=__doc__.split("Usage:")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                        help="only these experiments (names or commits); default: all")
    parser.add_argument("--rev", action="append", default=[], metavar="COMMIT",
                        help="experiments of this baseline commit (as `dvc exp show --rev`; "
                             "repeatable; default HEAD)")
    parser.add_argument("-n", "--num", type=int, metavar="NUM",
                        help="experiments of the last NUM commits (as `dvc exp show -n`)")
    parser.add_argument("-A", "--all-commits", action="store_true",
                        help="experiments of every commit (as `dvc exp show -A`)")
    parser.add_argument("--terminal", action="store_true",
                        help="print a table that fits 100 columns (and write the files as usual)")
    parser.add_argument("--out", type=Path, default=Path("reports/compare"), metavar="DIR",
                        help="folder for compare.md, compare.tsv, compare.png "
                             "(default: reports/compare)")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    shown = compare.exp_show([*(a for rev in args.rev for a in ("--rev", rev)),
                              *(["-n", str(args.num)] if args.num is not None else []),
                              *(["-A"] if args.all_commits else [])])
    runs = compare.read_runs(shown, args.experiments)
    summary = compare.summarise(runs)
    epochs, steps, notes = compare.read_logs(runs)
    table = compare.write(summary, runs, epochs, steps, args.out, notes)
    print(compare.terminal(summary, compare.Runs(runs.table, runs.params, [*runs.notes, *notes]))
          if args.terminal else table)
    print(f"wrote {args.out}/compare.md, compare.tsv and compare.png")


if __name__ == "__main__":
    run(main)
