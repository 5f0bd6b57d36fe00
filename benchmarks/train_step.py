"""Training-step and sampling throughput against SVG's per-frame loop, measured in one run.

    python benchmarks/train_step.py [--device cuda] [--repeat 3] [--compile] [--shards shards]
                                    [--configs lab,default] [--lab-batch 64]

For the lab's sizes (width 1.0: 64..512 channels, g_dim 128, z_dim 64, LSTMs 256) and the CPU
defaults of params.yaml, both at 64x64 with 2 conditioning + 10 predicted frames, and for
teacher forcing on (tfr 1) and off (tfr 0), it times
  - the reference: `cvae.reference.per_frame_rollout` (every frame encoded, stepped and decoded
    alone, as SVG's code does), fp32, plain Adam;
  - our step: `cvae.rollout.rollout` (one batched encode, batched decodes), plus on CUDA bf16
    autocast, channels_last and fused Adam (and torch.compile with --compile),
on the same random batch and initial weights; then best-of-100 sampling as one batch against a
loop of 100 rollouts. On CUDA it also reports peak memory and TFLOP/s against the bf16 peak
(FLOPs counted once with torch's FLOP counter), and, given prepared shards, the step time with
real batches (GPU-resident windows) against a batch that is already there.

Prints a table and writes it as JSON (benchmarks/results/train_step-<device>.json).
"""
import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from cvae.config import ModelConfig, load_params  # noqa: E402
from cvae.data.batches import TrainBatches  # noqa: E402
from cvae.evaluation import sample_prior, to_model_frames  # noqa: E402
from cvae.models.svg import SVG  # noqa: E402
from cvae.reference import per_frame_rollout  # noqa: E402
from cvae.rollout import rollout  # noqa: E402
from cvae.runtime import reuse_freed_memory  # noqa: E402
from cvae.training import Objective, prepare_model, train_step  # noqa: E402

LAB = ModelConfig(width=1.0, g_dim=128, z_dim=64, rnn_size=256)
N_PAST, N_FUTURE, SAMPLES = 2, 10, 100
# Dense bf16 peaks from the vendors' data sheets, matched in order against the device name.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4,
                    "A100": 312.0, "L4": 121.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--shards", type=Path, default=REPO / "shards",
                        help="prepared shards, for the step time with real data")
    parser.add_argument("--lab-batch", type=int, default=None,
                        help="batch at the lab's sizes (default: 4 on CPU, 64 on CUDA)")
    parser.add_argument("--configs", default="lab,default", help="which sizes to time")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    reuse_freed_memory()
    cuda = device.type == "cuda"
    defaults = load_params(REPO / "params.yaml")
    configs = {"lab": (LAB, args.lab_batch or (64 if cuda else 4)),
               "default": (defaults.model, defaults.train.batch_size)}
    rows = []
    for name in args.configs.split(","):
        cfg, batch = configs[name]
        for teacher_forcing in (True, False):
            rows.append(measure_step(name, cfg, batch, teacher_forcing, device, args))
            print(format_row(rows[-1]), flush=True)
    sampling = measure_sampling(defaults.model, 32 if cuda else 4, device)
    data = measure_data(defaults, device, args) if args.shards.exists() else None
    report = {"device": device_name(device), "torch": torch.__version__,
              "python": platform.python_version(), "n_past": N_PAST, "n_future": N_FUTURE,
              "steps": rows, "sampling": sampling, "data": data}
    print_report(report)
    out = args.out or REPO / "benchmarks" / "results" / f"train_step-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")


def batch_of(batch: int, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    T = N_PAST + N_FUTURE
    frames = torch.randint(0, 256, (batch, T, 3, 64, 64), dtype=torch.uint8, generator=generator)
    conds = torch.randn(T, batch, 7, generator=generator)
    return to_model_frames(frames, device), conds.to(device)


def measure_step(name, cfg, batch, teacher_forcing, device, args) -> dict:
    frames, conds = batch_of(batch, device)
    torch.manual_seed(0)
    initial = SVG(cfg).state_dict()
    variants = {"reference": dict(rollout_fn=per_frame_rollout, mixed_precision=False,
                                  fast=False, compile_=False),
                "ours": dict(rollout_fn=rollout, mixed_precision=True, fast=True,
                             compile_=False)}
    if args.compile:
        variants["ours_compiled"] = {**variants["ours"], "compile_": True}
    row = {"config": name, "width": cfg.width, "batch": batch,
           "tfr": 1 if teacher_forcing else 0}
    for variant, how in variants.items():
        model = SVG(cfg)
        model.load_state_dict(initial)
        if how["fast"]:
            model = prepare_model(model, device, how["compile_"])
            step_frames = frames
        else:  # the reference as SVG runs it: fp32, default memory layout, plain Adam
            model = model.to(device)
            step_frames = frames.contiguous()
        objective = Objective(model, how["rollout_fn"], how["mixed_precision"])
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4,
                                     fused=how["fast"] and device.type == "cuda")

        def step():
            train_step(objective, optimizer, step_frames, conds, n_past=N_PAST, beta=1e-4,
                       teacher_forcing=teacher_forcing, grad_clip=1.0)
        seconds, peak = timed(step, device, args.repeat, warmup=3 if how["compile_"] else 1)
        row[f"{variant}_seq_per_s"] = batch / seconds
        if peak is not None:
            row[f"{variant}_peak_gib"] = peak / 2**30
        if variant == "ours" and device.type == "cuda":
            flops = count_flops(step)
            row["ours_tflops"] = flops / seconds / 1e12
            peak_tflops = next((v for k, v in BF16_PEAK_TFLOPS.items()
                                if k in device_name(device)), None)
            if peak_tflops:
                row["ours_percent_of_bf16_peak"] = 100 * row["ours_tflops"] / peak_tflops
    row["speedup"] = row["ours_seq_per_s"] / row["reference_seq_per_s"]
    if "ours_compiled_seq_per_s" in row:
        row["compiled_speedup"] = row["ours_compiled_seq_per_s"] / row["reference_seq_per_s"]
    return row


def timed(fn, device, repeat: int, warmup: int = 1) -> tuple[float, int | None]:
    """Seconds per call after `warmup` calls, and the peak CUDA memory (None on CPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    seconds = (time.perf_counter() - start) / repeat
    return seconds, torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def count_flops(step) -> int:
    """FLOPs of one call (forward and backward), counted by torch's dispatcher."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def measure_sampling(cfg, sequences: int, device) -> dict:
    """Best-of-100 sampling: 100 prior samples per sequence as one batch vs 100 rollouts."""
    torch.manual_seed(0)
    model = prepare_model(SVG(cfg), device, False).eval()
    frames, conds = batch_of(sequences, device)
    T = N_PAST + N_FUTURE
    noise = torch.randn(SAMPLES, T - 1, sequences, model.latent_size, device=device)

    @torch.no_grad()
    def looped():
        for k in range(SAMPLES):
            rollout(model, frames, conds, N_PAST, teacher_forcing=False, sample_prior=True,
                    noise=noise[k])

    batched_s, _ = timed(lambda: sample_prior(model, frames, conds, N_PAST, noise), device, 2)
    looped_s, _ = timed(looped, device, 1)
    total = SAMPLES * sequences
    return {"sequences": sequences, "samples": SAMPLES,
            "batched_samples_per_s": total / batched_s, "looped_samples_per_s": total / looped_s,
            "speedup": looped_s / batched_s}


def measure_data(params, device, args) -> dict:
    """Our step at the default sizes fed real training windows (cut where `TrainBatches`
    cuts them on this device) against the same step on one batch that is already there."""
    cfg = params.train
    window = N_PAST + N_FUTURE
    steps = max(args.repeat, 3)
    batches = TrainBatches(args.shards, cfg.batch_size, window, steps + 1, seed=0, device=device)
    torch.manual_seed(0)
    model = prepare_model(SVG(params.model), device, False)
    objective = Objective(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def run(feed):
        frames_u8, conds = feed
        train_step(objective, optimizer, to_model_frames(frames_u8, device),
                   conds.transpose(0, 1), n_past=N_PAST, beta=1e-4, teacher_forcing=True,
                   grad_clip=1.0)

    fixed = next(iter(batches.epoch(0)))
    synthetic_s, _ = timed(lambda: run(fixed), device, steps)
    stream = batches.epoch(1)
    run(next(stream))  # warm-up
    sync(device)
    start = time.perf_counter()
    for feed in stream:
        run(feed)
    sync(device)
    real_s = (time.perf_counter() - start) / steps
    cut_s, _ = timed(lambda: next(iter(batches.epoch(2))), device, steps)
    return {"windows_cut": batches.where, "batch": cfg.batch_size,
            "step_ms_real_data": 1e3 * real_s, "step_ms_resident_batch": 1e3 * synthetic_s,
            "ms_to_cut_a_batch": 1e3 * cut_s}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def format_row(r: dict) -> str:
    extra = "".join(f" | {r[k]:.1f}" if k in r else " | -" for k in
                    ("ours_compiled_seq_per_s", "reference_peak_gib", "ours_peak_gib",
                     "ours_tflops", "ours_percent_of_bf16_peak"))
    return (f"| {r['config']} (width {r['width']}) | {r['batch']} | {r['tfr']} | "
            f"{r['reference_seq_per_s']:.2f} | {r['ours_seq_per_s']:.2f} | "
            f"{r['speedup']:.2f}x{extra} |")


def print_report(report: dict):
    print(f"\n{report['device']}, torch {report['torch']}, {report['n_past']} -> "
          f"{report['n_future']} frames\n")
    print("| config | batch | tfr | reference seq/s | ours seq/s | speed-up | compiled seq/s "
          "| ref peak GiB | ours peak GiB | ours TFLOP/s | % bf16 peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in report["steps"]:
        print(format_row(row))
    s = report["sampling"]
    print(f"\nbest-of-{s['samples']} sampling, {s['sequences']} sequences: batched "
          f"{s['batched_samples_per_s']:.0f} samples/s, looped {s['looped_samples_per_s']:.0f} "
          f"samples/s, {s['speedup']:.1f}x")
    if report["data"]:
        d = report["data"]
        print(f"data (windows cut {d['windows_cut']}, batch {d['batch']}): step "
              f"{d['step_ms_real_data']:.1f} ms with real batches, "
              f"{d['step_ms_resident_batch']:.1f} ms on a resident batch; cutting a batch "
              f"{d['ms_to_cut_a_batch']:.2f} ms")


if __name__ == "__main__":
    main()
