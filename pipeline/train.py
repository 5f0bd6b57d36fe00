"""Stage `train`: the model of the data's track on shards/, checkpoints in models/, logs in
logs/train/, metrics/train.json after every epoch (`epochs` says how far the run has got). Also
runs as `torchrun --nproc_per_node K -m pipeline.train` (DistributedDataParallel)."""
import argparse
import json
import os
from pathlib import Path

from cvae.training import train
from pipeline._cli import forget_results_below, params, run


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=Path, default=Path("shards"))
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--logs", type=Path, default=Path("logs/train"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train.json"))
    args = parser.parse_args()
    p = params()
    lead = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 writes
    if lead:
        forget_results_below("train")

    def write(summary: dict) -> None:
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.metrics.with_name(args.metrics.name + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        os.replace(tmp, args.metrics)

    summary = train(p, args.shards, args.models, args.logs, progress=write)
    if lead:
        write(summary)


if __name__ == "__main__":
    run(main)
