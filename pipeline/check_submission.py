"""Check a dance submission CSV before uploading it: the header, integer pixels in 0..255, ids in
order and one row per frame of every test sequence (counted from shards/meta.json).

    python -m pipeline.check_submission eval/submission.csv
"""
import argparse
import sys
from pathlib import Path

from cvae.data.shards import read_meta
from cvae.tracks.dance.submission import read_submission
from pipeline._cli import run


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path, nargs="?", default=Path("eval/submission.csv"))
    parser.add_argument("--shards", type=Path, default=Path("shards"),
                        help="where the test split's sequence count and length are read")
    args = parser.parse_args()
    meta = read_meta(args.shards)
    expected = meta["counts"]["test"] * meta["condition_lengths"]["test"]
    try:
        frames = read_submission(args.csv, expected_rows=expected)
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"not a valid submission: {error}")
    print(f"{args.csv}: {len(frames)} frames of {' x '.join(map(str, frames.shape[1:]))}, "
          f"{meta['counts']['test']} test sequences: valid")


if __name__ == "__main__":
    run(main)
