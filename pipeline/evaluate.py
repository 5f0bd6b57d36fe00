"""Stage `evaluate`: the test protocol on the test split with the best checkpoint.

Writes metrics/eval.json, logs/eval/per_frame.tsv and eval/samples.npz (for the report).
"""
import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cvae.data.shards import Split, read_meta
from cvae.evaluation import evaluate
from cvae.runtime import load_checkpoint, reuse_freed_memory, select_device
from cvae.training import build_model, prepare_model
from pipeline._cli import params


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=Path, default=Path("shards"))
    parser.add_argument("--checkpoint", type=Path, default=Path("models/best.pt"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/eval.json"))
    parser.add_argument("--per-frame", type=Path, default=Path("logs/eval/per_frame.tsv"))
    parser.add_argument("--samples", type=Path, default=Path("eval/samples.npz"))
    args = parser.parse_args()
    p = params()
    cfg = p.eval
    device = select_device()
    reuse_freed_memory()
    model = prepare_model(build_model(p, read_meta(args.shards)), device, compile_=False)
    model.load_state_dict(load_checkpoint(args.checkpoint, device)["model"])
    scores = evaluate(model, Split(args.shards, "test"), cfg.n_past, cfg.n_future, cfg.batch_size,
                      device, cfg.seed, samples=cfg.num_samples, keep=cfg.keep)

    metrics = {**scores.summary(), "n_past": cfg.n_past, "n_future": cfg.n_future,
               "num_samples": cfg.num_samples, "model": model.name}
    per_frame = pd.DataFrame({"frame": np.arange(cfg.n_past, cfg.n_past + cfg.n_future),
                              **scores.per_frame()})
    for path in (args.metrics, args.per_frame, args.samples):
        path.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    per_frame.to_csv(args.per_frame, sep="\t", index=False, float_format="%.4f")
    np.savez_compressed(args.samples, n_past=cfg.n_past, **scores.saved)
    print(f"test PSNR {metrics['psnr']:.2f} dB (mean of {cfg.num_samples} samples), best "
          f"{metrics['psnr_best']:.2f} dB, copy-last-frame {metrics['baseline_psnr']:.2f} dB; "
          f"SSIM {metrics['ssim']:.4f} vs {metrics['baseline_ssim']:.4f}")


if __name__ == "__main__":
    main()
