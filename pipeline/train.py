"""Stage `train`: the model of the data's track on shards/, checkpoints in models/, logs in
logs/train/. Also runs as `torchrun --nproc_per_node K -m pipeline.train` (DistributedDataParallel)."""
import argparse
import json
import os
from pathlib import Path

from cvae.training import train
from pipeline._cli import params, run


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=Path, default=Path("shards"))
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--logs", type=Path, default=Path("logs/train"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    args = parser.parse_args()
    summary = train(params(), args.shards, args.models, args.logs)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 writes
        return
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")


if __name__ == "__main__":
    run(main)
