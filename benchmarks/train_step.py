"""Training-step and sampling throughput against SVG's per-frame loop, measured in one run.

    python benchmarks/train_step.py [--device cuda] [--precision fp32] [--repeat 5] [--compile]
                                    [--shards shards] [--configs lab,default] [--lab-batch 64]
                                    [--dance-configs preset,course]

For the lab's sizes (width 1.0: 64..512 channels, g_dim 128, z_dim 64, LSTMs 256) and the CPU
defaults of params.yaml, both at 64x64 with 2 conditioning + 10 predicted frames, and for
teacher forcing on (tfr 1) and off (tfr 0), it times
  - the reference: `cvae.tracks.robot.reference.per_frame_rollout` (every frame encoded,
    stepped and decoded alone, as SVG's code does), fp32, plain Adam;
  - our step: `cvae.tracks.robot.rollout.rollout` (one batched encode, batched decodes),
    channels_last,
    bf16 autocast where `--precision` (default: train.precision) puts it, on CUDA fused Adam
    (and torch.compile with --compile),
on the same random batch and initial weights; then best-of-100 sampling as one batch against a
loop of 100 rollouts, and the dance model's step in fp32 against bf16 (at presets/dance.yaml's
sizes, and on CUDA or with --dance-configs preset,course also the course's). Whatever is compared is
timed in turns (a, b, a, b, ...) and each reported time is the median of its turns, so that a
shared machine's drifts weigh on both sides alike.
On CUDA it also reports peak memory and TFLOP/s against the bf16 peak (FLOPs counted once with
torch's FLOP counter); given prepared shards, the step time with real batches (cut where
training cuts them) against a batch that is already there.

Prints a table and writes it as JSON (benchmarks/results/train_step-<device>[-<precision>].json).
"""
import argparse
import contextlib
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from cvae.config import ModelConfig, Params, load_params, parse  # noqa: E402
from cvae.data.batches import TrainBatches  # noqa: E402
from cvae.runtime import precision, prepare_model, reuse_freed_memory, runs_in_bf16  # noqa: E402
from cvae.samples import to_model_frames  # noqa: E402
from cvae.tracks import dance, robot  # noqa: E402
from cvae.tracks.dance.model import DanceCVAE  # noqa: E402
from cvae.tracks.robot.evaluation import sample_prior  # noqa: E402
from cvae.tracks.robot.model import SVG  # noqa: E402
from cvae.tracks.robot.reference import per_frame_rollout  # noqa: E402
from cvae.tracks.robot.rollout import rollout  # noqa: E402
from cvae.training import Objective, train_step  # noqa: E402
from cvae.presets import merged_tree  # noqa: E402

LAB = ModelConfig(width=1.0, g_dim=128, z_dim=64, rnn_size=256)
N_PAST, N_FUTURE, SAMPLES = 2, 10, 100
# The dance sizes timed: the CPU preset's (patch 2) and the course's (presets/dance-gpu.yaml).
DANCE_PRESETS = {"preset": "dance", "course": "dance-gpu"}
# Dense bf16 peaks from the vendors' data sheets, matched in order against the device name.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4,
                    "A100": 312.0, "L4": 121.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--shards", type=Path, default=REPO / "shards",
                        help="prepared shards, for the step time with real data")
    parser.add_argument("--lab-batch", type=int, default=None,
                        help="batch at the lab's sizes (default: 4 on CPU, 64 on CUDA)")
    parser.add_argument("--configs", default="lab,default", help="which sizes to time")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None,
                        help="ours: as train.precision (default: params.yaml's)")
    parser.add_argument("--dance-configs", default=None,
                        help="dance sizes to time: preset,course (default: both on CUDA; on a "
                             "CPU the preset's, as a course step takes minutes there)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    reuse_freed_memory()
    cuda = device.type == "cuda"
    defaults = load_params(REPO / "params.yaml")
    args.precision = args.precision or defaults.train.precision
    configs = {"lab": (LAB, args.lab_batch or (64 if cuda else 4)),
               "default": (defaults.model, defaults.train.batch_size)}
    rows = []
    with precision(args.precision):  # ours only: the reference keeps to fp32
        ours_in = "bf16 autocast" if runs_in_bf16(device) else "fp32"
        for name in args.configs.split(","):
            cfg, batch = configs[name]
            for teacher_forcing in (True, False):
                rows.append(measure_step(name, cfg, batch, teacher_forcing, device, args))
                print(format_row(rows[-1]), flush=True)
        sampling = measure_sampling(defaults.model, 32 if cuda else 4, device)
        data = measure_data(defaults, device, args) if args.shards.exists() else None
    dance_names = args.dance_configs or ("preset,course" if cuda else "preset")
    dance = {name: measure_dance_precision(dance_model(name), device, args.repeat)
             for name in dance_names.split(",")}
    report = {"device": device_name(device), "torch": torch.__version__,
              "python": platform.python_version(), "precision": args.precision,
              "ours_in": ours_in, "n_past": N_PAST, "n_future": N_FUTURE,
              "steps": rows, "sampling": sampling, "data": data, "dance_precision": dance}
    print_report(report)
    suffix = "" if args.precision == "auto" else f"-{args.precision}"
    out = args.out or REPO / "benchmarks" / "results" / f"train_step-{device.type}{suffix}.json"
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
    variants = {"reference": dict(rollout_fn=per_frame_rollout, fast=False, compile_=False),
                "ours": dict(rollout_fn=rollout, fast=True, compile_=False)}
    if args.compile:
        variants["ours_compiled"] = {**variants["ours"], "compile_": True}
    row = {"config": name, "width": cfg.width, "batch": batch,
           "tfr": 1 if teacher_forcing else 0}
    steps = {variant: make_step(cfg, initial, frames, conds, teacher_forcing, device, **how)
             for variant, how in variants.items()}
    seconds = timed_together(steps, device, args.repeat, warmup=3 if args.compile else 1)
    for variant, step in steps.items():
        row[f"{variant}_seq_per_s"] = batch / seconds[variant]
        if device.type == "cuda":
            row[f"{variant}_peak_gib"] = peak_memory(step, device) / 2**30
    if device.type == "cuda":
        row["ours_tflops"] = count_flops(steps["ours"]) / seconds["ours"] / 1e12
        peak_tflops = next((v for k, v in BF16_PEAK_TFLOPS.items()
                            if k in device_name(device)), None)
        if peak_tflops:
            row["ours_percent_of_bf16_peak"] = 100 * row["ours_tflops"] / peak_tflops
    row["speedup"] = row["ours_seq_per_s"] / row["reference_seq_per_s"]
    if "ours_compiled_seq_per_s" in row:
        row["compiled_speedup"] = row["ours_compiled_seq_per_s"] / row["reference_seq_per_s"]
    return row


def make_step(cfg, initial, frames, conds, teacher_forcing, device, *, rollout_fn, fast,
              compile_):
    """One training step of a fresh model with weights `initial`, as a function of nothing."""
    model = SVG(cfg)
    model.load_state_dict(initial)
    if fast:
        model = prepare_model(model, device, robot.compiled_modules if compile_ else None)
    else:  # the reference as SVG runs it: fp32, default memory layout, plain Adam
        model, frames = model.to(device), frames.contiguous()
    objective = Objective(model, rollout_fn)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fast and device.type == "cuda")
    mode = contextlib.nullcontext if fast else lambda: precision("fp32")  # ours: the caller's

    def step():
        with mode():
            train_step(objective, optimizer, frames, conds, n_past=N_PAST, beta=1e-4,
                       teacher_forcing=teacher_forcing, grad_clip=1.0)
    return step


def timed_together(fns: dict, device, repeat: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each of `fns`, after `warmup` calls each. The calls take
    turns (a, b, a, b, ...), so that a machine that slows down or speeds up meanwhile (a shared
    CPU does) weighs on all alike, and the median leaves out a call that was stalled."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    seconds = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in seconds.items()}


def peak_memory(fn, device) -> int:
    """Peak CUDA memory allocated during one call, in bytes."""
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device)


def count_flops(step) -> int:
    """FLOPs of one call (forward and backward), counted by torch's dispatcher."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def dance_model(name: str):
    """The dance model config of DANCE_PRESETS[name] over params.yaml."""
    tree = merged_tree(DANCE_PRESETS[name], REPO / "params.yaml")
    return parse(Params, tree).model.dance


def measure_dance_precision(cfg, device, repeat: int) -> dict:
    """The dance model's step at sizes `cfg` (the 7-minute dance preset's batch, at which the
    README's GPU numbers were taken: 8 clips of 1 + 15 frames of 32x64) in fp32 and in bf16,
    teacher-forced and autoregressive: milliseconds per step."""
    frames, labels = (torch.rand(16, 8, 3, 32, 64, device=device) for _ in range(2))
    steps = {f"{mode}_tfr{int(tf)}_ms": dance_step(dance_model_at(cfg, device), frames, labels,
                                                   tf, mode)
             for mode in ("fp32", "bf16") for tf in (True, False)}
    return {name: 1e3 * s for name, s in timed_together(steps, device, repeat).items()}


def dance_model_at(cfg, device) -> DanceCVAE:
    """A fresh dance model at sizes `cfg` (the same initial weights every call), on `device`."""
    torch.manual_seed(0)
    return prepare_model(DanceCVAE(cfg, 3, (32, 64)), device)


def dance_step(model: DanceCVAE, frames, labels, teacher_forcing: bool, mode: str = "fp32"):
    """One optimiser step of `model` on frames and labels (T, B, 3, 32, 64), as training takes
    it, in precision `mode`: a callable to time."""
    objective = Objective(model, dance.training_rollout)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=frames.device.type == "cuda")

    def step():
        with precision(mode):
            train_step(objective, optimizer, frames, labels, n_past=1, beta=1e-3,
                       teacher_forcing=teacher_forcing, grad_clip=1.0)
    return step


def measure_sampling(cfg, sequences: int, device) -> dict:
    """Best-of-100 sampling: 100 prior samples per sequence as one batch vs 100 rollouts."""
    torch.manual_seed(0)
    model = prepare_model(SVG(cfg), device).eval()
    frames, conds = batch_of(sequences, device)
    T = N_PAST + N_FUTURE
    noise = torch.randn(SAMPLES, T - 1, sequences, model.latent_size, device=device)

    @torch.no_grad()
    def looped():
        for k in range(SAMPLES):
            rollout(model, frames, conds, N_PAST, teacher_forcing=False, sample_prior=True,
                    noise=noise[k])

    seconds = timed_together(
        {"batched": lambda: sample_prior(model, frames, conds, N_PAST, noise), "looped": looped},
        device, repeat=3)
    batched_s, looped_s = seconds["batched"], seconds["looped"]
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
    model = prepare_model(SVG(params.model), device)
    objective = Objective(model, rollout)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def run(feed):
        frames_u8, conds = feed
        train_step(objective, optimizer, to_model_frames(frames_u8, device),
                   conds.transpose(0, 1), n_past=N_PAST, beta=1e-4, teacher_forcing=True,
                   grad_clip=1.0)

    fixed = next(iter(batches.epoch(0)))
    stream = batches.epoch(1)  # steps + 1 batches: a warm-up, then one per timed step
    seconds = timed_together({"real": lambda: run(next(stream)), "resident": lambda: run(fixed),
                              "cut": lambda: next(iter(batches.epoch(2)))}, device, steps)
    real_s, synthetic_s, cut_s = seconds["real"], seconds["resident"], seconds["cut"]
    return {"windows_cut": batches.where, "batch": cfg.batch_size,
            "step_ms_real_data": 1e3 * real_s, "step_ms_resident_batch": 1e3 * synthetic_s,
            "ms_to_cut_a_batch": 1e3 * cut_s}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    # The vector instructions torch uses (AVX2, AVX512...): compare CPU timings only between equals
    return (f"CPU ({platform.processor() or platform.machine()}, "
            f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)")


def format_row(r: dict) -> str:
    extra = "".join(f" | {r[k]:.1f}" if k in r else " | -" for k in
                    ("ours_compiled_seq_per_s", "reference_peak_gib", "ours_peak_gib",
                     "ours_tflops", "ours_percent_of_bf16_peak"))
    return (f"| {r['config']} (width {r['width']}) | {r['batch']} | {r['tfr']} | "
            f"{r['reference_seq_per_s']:.2f} | {r['ours_seq_per_s']:.2f} | "
            f"{r['speedup']:.2f}x{extra} |")


def print_report(report: dict):
    print(f"\n{report['device']}, torch {report['torch']}, {report['n_past']} -> "
          f"{report['n_future']} frames; ours in {report['ours_in']} (precision "
          f"{report['precision']}), the reference in fp32\n")
    print("| config | batch | tfr | reference seq/s | ours seq/s | speed-up | compiled seq/s "
          "| ref peak GiB | ours peak GiB | ours TFLOP/s | % bf16 peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in report["steps"]:
        print(format_row(row))
    s = report["sampling"]
    print(f"\nbest-of-{s['samples']} sampling, {s['sequences']} sequences: batched "
          f"{s['batched_samples_per_s']:.0f} samples/s, looped {s['looped_samples_per_s']:.0f} "
          f"samples/s, {s['speedup']:.1f}x")
    for name, d in report["dance_precision"].items():
        print(f"dance step, {name} sizes (8 x 16 frames, 32x64), ms: teacher-forced "
              f"{d['fp32_tfr1_ms']:.0f} fp32, {d['bf16_tfr1_ms']:.0f} bf16; autoregressive "
              f"{d['fp32_tfr0_ms']:.0f} fp32, {d['bf16_tfr0_ms']:.0f} bf16")
    if report["data"]:
        d = report["data"]
        print(f"data (windows cut {d['windows_cut']}, batch {d['batch']}): step "
              f"{d['step_ms_real_data']:.1f} ms with real batches, "
              f"{d['step_ms_resident_batch']:.1f} ms on a resident batch; cutting a batch "
              f"{d['ms_to_cut_a_batch']:.2f} ms")


if __name__ == "__main__":
    main()
