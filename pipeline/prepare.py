"""Stage `prepare`: the sequences raw/ points to -> memory-mappable tensor shards + meta.json."""
import argparse
import json
from pathlib import Path

from cvae.data.prepare import prepare
from pipeline._cli import forget_results_below, params, run


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", type=Path, default=Path("raw"))
    parser.add_argument("--out", type=Path, default=Path("shards"))
    args = parser.parse_args()
    cfg = params().data
    forget_results_below("prepare")
    meta = prepare(args.raw, args.out, cfg.shard_size, cfg.seq_len, cfg.skip_bad_records)
    lost = {split: sum(file["sequences"] for file in files.values())
            for split, files in meta["lost"].items()}
    print(json.dumps({"counts": meta["counts"], "bad_records": meta["bad_records"], "lost": lost}))


if __name__ == "__main__":
    run(main)
