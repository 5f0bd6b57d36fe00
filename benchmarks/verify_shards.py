"""What checking the shards costs: `verify_shards` (every file a stage reads against meta.json's
sha256, on all cores) against a plain one-thread sha256 of the same files, on shards of BAIR's
shape (30 frames of 64 x 64, 256 sequences per file), then scaled to the default data set and
to BAIR's 43,264 training sequences.

    python benchmarks/verify_shards.py [--sequences 2048] [--repeat 3]

The files are read from the page cache (they were just written): a disk that must read them
first adds its own time (BAIR's 16 GB at 500 MB/s: about 32 s). Prints a table and writes it
as JSON (benchmarks/results/verify_shards.json).
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cvae.data.prepare import ShardWriter  # noqa: E402
from cvae.data.shards import verify_shards  # noqa: E402

SEQUENCE = (30, 64, 64, 3)  # frames of one sequence, as prepare receives them
SETS = {  # sequences each stage checks: train (train + val splits) and evaluate (test)
    "default sim-push (384 + 32 | 64)": (384 + 32, 64),
    "BAIR (43,264 + 256 | 256)": (43_264 + 256, 256),
}


def write_shards(folder: Path, sequences: int) -> dict:
    """`sequences` random sequences as one split's shards; meta.json's `shards` entry."""
    rng = np.random.default_rng(0)
    writer = ShardWriter(folder / "train", shard_size=256)
    for _ in range(sequences):
        writer.add(rng.integers(0, 256, SEQUENCE, dtype=np.uint8),
                   rng.normal(size=(30, 7)).astype(np.float32))
    writer.close()
    return {"train": writer.files}


def one_thread(folder: Path, meta: dict) -> None:
    """The reference: hashlib over each file in turn, the whole file read at once."""
    for entry in meta["shards"]["train"]:
        for name, digest in entry["sha256"].items():
            assert hashlib.sha256((folder / "train" / name).read_bytes()).hexdigest() == digest


def best_of(repeat: int, run) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks" / "results" / "verify_shards.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        meta = {"shards": write_shards(folder, args.sequences)}
        size = sum(p.stat().st_size for p in (folder / "train").iterdir())
        ours = best_of(args.repeat, lambda: verify_shards(folder, meta, ["train"]))
        reference = best_of(args.repeat, lambda: one_thread(folder, meta))
    per_sequence = ours / args.sequences
    result = {
        "sequences": args.sequences, "bytes": size, "repeat": args.repeat,
        "cpu_count": os.cpu_count(), "verify_s": ours, "one_thread_s": reference,
        "speedup": reference / ours, "gb_per_s": size / ours / 1e9,
        "scaled_s": {name: {"train": train * per_sequence, "evaluate": test * per_sequence}
                     for name, (train, test) in SETS.items()},
    }
    print(f"verify_shards on {args.sequences} sequences ({size / 1e9:.2f} GB), best of "
          f"{args.repeat}, {os.cpu_count()} cores, from the page cache")
    print(f"  verify_shards        {ours:7.2f} s  ({result['gb_per_s']:.2f} GB/s)")
    print(f"  one-thread sha256    {reference:7.2f} s  (ratio {result['speedup']:.2f}x)")
    print("  scaled, seconds per stage:")
    for name, cost in result["scaled_s"].items():
        print(f"    {name:34s} train {cost['train']:7.2f}   evaluate {cost['evaluate']:6.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
