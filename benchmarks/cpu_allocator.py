"""Training step time on the CPU with glibc's default allocator settings and with
`cvae.runtime.reuse_freed_memory()`, at the default sizes (params.yaml), in one run.

    python benchmarks/cpu_allocator.py [--steps 10]

Each setting runs in its own process (the allocator setting is process-wide) and reports seconds
per step and minor page faults per step, teacher-forced and autoregressive.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = """
import json, resource, sys, time
import torch
from cvae.config import load_params
from cvae.tracks.robot.model import SVG
from cvae.tracks.robot.rollout import rollout
from cvae.runtime import reuse_freed_memory
from cvae.training import Objective, train_step

steps, tuned = int(sys.argv[1]), sys.argv[2] == "1"
if tuned:
    assert reuse_freed_memory()
params = load_params("params.yaml")
cfg = params.train
torch.manual_seed(0)
model = SVG(params.model)
optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
T = cfg.n_past + cfg.n_future
frames, conds = torch.rand(T, cfg.batch_size, 3, 64, 64), torch.randn(T, cfg.batch_size, 7)
out = {}
for teacher_forcing in (True, False):
    def step():
        train_step(Objective(model, rollout), optimizer, frames, conds, n_past=cfg.n_past, beta=1e-4,
                   teacher_forcing=teacher_forcing, grad_clip=1.0)
    for _ in range(3):
        step()  # warm-up
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(steps):
        step()
    out["tfr 1" if teacher_forcing else "tfr 0"] = {
        "sec_per_step": (time.perf_counter() - start) / steps,
        "minor_faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps}
print(json.dumps(out))
"""


def run(steps: int, tuned: bool) -> dict:
    result = subprocess.run([sys.executable, "-c", WORKER, str(steps), str(int(tuned))], cwd=REPO,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    default, tuned = run(args.steps, False), run(args.steps, True)
    print(f"{'step':8s} {'glibc default':>16s} {'reuse freed':>16s} {'speed-up':>9s}   page faults/step")
    for mode in default:
        a, b = default[mode], tuned[mode]
        print(f"{mode:8s} {a['sec_per_step']:14.3f} s {b['sec_per_step']:14.3f} s "
              f"{a['sec_per_step'] / b['sec_per_step']:8.2f}x   "
              f"{a['minor_faults_per_step']:.0f} -> {b['minor_faults_per_step']:.0f}")


if __name__ == "__main__":
    main()
