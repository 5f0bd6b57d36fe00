"""What the dance model's label-guided look-up (`model.dance.first_lookup_dim`) and background
plate (`model.dance.plate`) cost a training step, measured in one run:

    python benchmarks/dance_lookup.py [--device cpu] [--repeat 5]

At presets/dance.yaml's sizes and batch (32 windows of 1 + 7 frames of 32x64, patch 2), teacher
forced and autoregressive, it times the step of the model as the preset has it (look-up and
plate), the same model without either (the reference), with the look-up but no plate, and with
the look-up's keys at full resolution (no 2 x 2 pooling: the model's `lookup_pool` set to 1).
Steps are timed in turns and each reported time is the median of its turns
(`train_step.timed_together`). Prints a table and writes it as JSON
(benchmarks/results/dance_lookup-<device>.json).
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402

from cvae.config import Params, parse  # noqa: E402
from cvae.presets import merged_tree  # noqa: E402
from train_step import dance_model_at, dance_step, device_name, timed_together  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per measurement")
    args = parser.parse_args()
    device = torch.device(args.device)
    params = parse(Params, merged_tree("dance", REPO / "params.yaml"))
    preset, train = params.model.dance, params.train
    if not (preset.first_lookup_dim and preset.plate):
        raise SystemExit("presets/dance.yaml has no look-up or no plate: nothing to time")
    T, B = 1 + train.n_future, train.batch_size
    frames, labels = (torch.rand(T, B, 3, 32, 64, device=device) for _ in range(2))
    variants = {"without": (dataclasses.replace(preset, first_lookup_dim=0, plate=False), 2),
                "lookup": (dataclasses.replace(preset, plate=False), 2),
                "preset": (preset, 2), "unpooled": (preset, 1)}
    rows = {}
    for teacher_forcing in (True, False):
        steps = {name: make_step(cfg, pool, frames, labels, teacher_forcing, device)
                 for name, (cfg, pool) in variants.items()}
        seconds = timed_together(steps, device, args.repeat)
        rows[f"tfr{int(teacher_forcing)}"] = {
            **{f"{name}_ms": 1e3 * s for name, s in seconds.items()},
            **{f"{name}_vs_without": s / seconds["without"] for name, s in seconds.items()
               if name != "without"}}
    report = {"device": device_name(device), "torch": torch.__version__,
              "batch": B, "frames": T, "first_lookup_dim": preset.first_lookup_dim,
              "threads": torch.get_num_threads(), "steps": rows}
    others = [name for name in variants if name != "without"]
    print(f"{'step':6} {'without ms':>11}" + "".join(f" {name + ' ms':>11} {'ratio':>6}"
                                                   for name in others))
    for mode, row in rows.items():
        print(f"{mode:6} {row['without_ms']:11.0f}" + "".join(
            f" {row[name + '_ms']:11.0f} {row[name + '_vs_without']:6.2f}" for name in others))
    out = REPO / "benchmarks" / "results" / f"dance_lookup-{device.type}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(out)


def make_step(cfg, pool: int, frames, labels, teacher_forcing: bool, device):
    """The training step of a fresh model at sizes `cfg`, its look-up pooled `pool` x `pool`."""
    model = dance_model_at(cfg, device)
    if cfg.first_lookup_dim:
        model.lookup_pool = pool
    return dance_step(model, frames, labels, teacher_forcing)


if __name__ == "__main__":
    main()
