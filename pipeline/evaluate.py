"""Stage `evaluate`: the test protocol of the data's track with the best checkpoint.

Writes metrics/eval.json, logs/eval/per_frame.tsv and, in eval/, samples.npz (for the report)
and on the dance track submission.csv (the course's format, checked after writing).
"""
import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cvae.dance_evaluation import evaluate_dance, has_truth
from cvae.data.shards import Split, read_meta
from cvae.evaluation import evaluate
from cvae.runtime import load_checkpoint, precision, reuse_freed_memory, select_device
from cvae.submission import read_submission, write_submission
from cvae.training import build_model, prepare_model
from pipeline._cli import params


def robot(model, args, cfg, device):
    """2 (n_past) frames in, 10 (n_future) predicted, on every test sequence."""
    scores = evaluate(model, Split(args.shards, "test"), cfg.n_past, cfg.n_future, cfg.batch_size,
                      device, cfg.seed, samples=cfg.num_samples, keep=cfg.keep)
    metrics = {**scores.summary(), "n_past": cfg.n_past, "n_future": cfg.n_future}
    frames = np.arange(cfg.n_past, cfg.n_past + cfg.n_future)
    print(f"test PSNR {metrics['psnr']:.2f} dB (mean of {cfg.num_samples} samples), best "
          f"{metrics['psnr_best']:.2f} dB, copy-last-frame {metrics['baseline_psnr']:.2f} dB; "
          f"SSIM {metrics['ssim']:.4f} vs {metrics['baseline_ssim']:.4f}")
    return metrics, frames, scores, {"n_past": cfg.n_past}


def dance(model, args, cfg, device):
    """Whole sequences from their first frame. Scored on the test split when its frames are
    known (sim-dance), else on the validation split (the course's test has first frames only);
    the test predictions go to the submission either way."""
    test = Split(args.shards, "test")
    scored_name = "test" if has_truth(test) else "val"
    run = dict(batch_size=cfg.batch_size, device=device, seed=cfg.seed, samples=cfg.num_samples)
    scores, predictions = evaluate_dance(model, test, keep=cfg.keep, **run)
    if scored_name == "val":
        scores, _ = evaluate_dance(model, Split(args.shards, "val"), **run)
    rows = write_submission(args.submission, predictions)
    read_submission(args.submission, expected_rows=rows)
    length = next(iter(scores.scores.values())).shape[1] + 1
    metrics = {**scores.summary(), "scored_split": scored_name, "n_past": 1,
               "n_future": length - 1, "submission_rows": rows}
    print(f"{scored_name} rollout PSNR {metrics['psnr']:.2f} dB over {length - 1} predicted frames "
          f"(mean of {cfg.num_samples} samples; best {metrics['psnr_best']:.2f}), copy-first-frame "
          f"{metrics['baseline_psnr']:.2f} dB; {args.submission}: {rows} rows")
    return metrics, np.arange(1, length), scores, {"n_past": 1}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=Path, default=Path("shards"))
    parser.add_argument("--checkpoint", type=Path, default=Path("models/best.pt"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    parser.add_argument("--per-frame", type=Path, default=Path("logs/eval/per_frame.tsv"))
    parser.add_argument("--samples", type=Path, default=Path("eval/samples.npz"))
    parser.add_argument("--submission", type=Path, default=Path("eval/submission.csv"))
    args = parser.parse_args()
    p = params()
    cfg = p.eval
    device = select_device()
    reuse_freed_memory()
    meta = read_meta(args.shards)
    model = prepare_model(build_model(p, meta), device, compile_=False)
    model.load_state_dict(load_checkpoint(args.checkpoint, device)["model"])
    protocol = dance if meta.get("track") == "dance" else robot
    with precision(p.train.precision):  # the precision the model was trained in
        metrics, frames, scores, extra = protocol(model, args, cfg, device)
    metrics.update(num_samples=cfg.num_samples, model=model.name)

    per_frame = pd.DataFrame({"frame": frames, **scores.per_frame()})
    for path in (args.metrics, args.per_frame, args.samples):
        path.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    per_frame.to_csv(args.per_frame, sep="\t", index=False, float_format="%.4f")
    np.savez_compressed(args.samples, **extra, **scores.saved)


if __name__ == "__main__":
    main()
