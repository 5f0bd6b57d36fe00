"""Stage `evaluate`: the test protocol of the data's track with the best checkpoint of a run
that the current params trained to its end (train.epochs).

Writes metrics/eval.json, logs/eval/per_frame.tsv and, in eval/, samples.npz (for the report)
and on the dance track submission.csv (the course's format, checked after writing).
"""
import argparse
from pathlib import Path

from cvae import tracks
from cvae.checkpoints import load_finished
from cvae.data.shards import read_meta, verify_shards
from cvae.runtime import precision, prepare_model, reuse_freed_memory, select_device
from cvae.samples import TestOutputs
from pipeline._cli import forget_results_below, params, run


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=Path, default=Path("shards"))
    parser.add_argument("--checkpoint", type=Path, default=Path("models/best.pt"))
    parser.add_argument("--metrics", type=Path, default=TestOutputs.metrics)
    parser.add_argument("--per-frame", type=Path, default=TestOutputs.per_frame)
    parser.add_argument("--samples", type=Path, default=TestOutputs.samples)
    parser.add_argument("--submission", type=Path, default=TestOutputs.submission)
    args = parser.parse_args()
    p = params()
    forget_results_below("evaluate")
    device = select_device()
    reuse_freed_memory()
    meta = read_meta(args.shards)
    verify_shards(args.shards, meta, ["test"])
    track = tracks.for_meta(meta)
    model = prepare_model(track.build_model(p, meta), device)
    model.load_state_dict(load_finished(args.checkpoint, p, meta, device)["model"])
    outputs = TestOutputs(args.metrics, args.per_frame, args.samples, args.submission)
    with precision(p.train.precision):  # the precision the model was trained in
        track.test(model, args.shards, p.eval, device, outputs)


if __name__ == "__main__":
    run(main)
