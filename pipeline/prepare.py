"""Stage `prepare`: raw/ -> memory-mappable tensor shards + meta.json in shards/."""
import argparse
import json
from pathlib import Path

from cvae.data.shards import prepare
from pipeline._cli import params


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw", type=Path, default=Path("raw"))
    parser.add_argument("--out", type=Path, default=Path("shards"))
    args = parser.parse_args()
    cfg = params().data
    meta = prepare(args.raw, args.out, cfg.shard_size, cfg.source)
    print(json.dumps(meta["counts"]))


if __name__ == "__main__":
    main()
