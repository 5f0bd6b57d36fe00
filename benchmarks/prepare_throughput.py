"""Prepare-stage throughput: sequences per second from BAIR TFRecords (tar, streamed) against the same
sequences as the course's PNG folders, both through the same `prepare`.

    python benchmarks/prepare_throughput.py [--tar data/bair-sample.tar] [--repeat 5]

Prints a table and writes it as JSON (benchmarks/results/prepare_throughput.json).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cvae.config import BairPngConfig, DataConfig  # noqa: E402
from cvae.data import bair  # noqa: E402
from cvae.data.png_folders import SPLIT_FOLDERS, write_sequence  # noqa: E402
from cvae.data.raw import download, read_sequences  # noqa: E402
from cvae.data.prepare import prepare  # noqa: E402


def write_png_copy(tar: Path, root: Path, seq_len: int) -> int:
    """The tar's sequences in the course's layout; returns how many."""
    count = 0
    for split, (frames, actions, positions) in bair.read_sequences(tar, seq_len):
        write_sequence(root / SPLIT_FOLDERS[split] / "traj_0_to_255" / str(count),
                       frames, actions, positions)
        count += 1
    return count


def best_times(cfg: DataConfig, tar: Path, work: Path, repeat: int) -> tuple[float, float]:
    """Fastest of `repeat` runs of reading the sequences alone, and of the whole prepare stage
    (reading, writing the shards, checksumming them)."""
    download(cfg, work / "raw", sample_tar=tar)  # a manifest pointing at the tar or the folders
    read, stage = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in read_sequences(work / "raw", cfg.seq_len):
            pass
        read.append(time.perf_counter() - start)
        start = time.perf_counter()
        prepare(work / "raw", work / "shards", shard_size=256, seq_len=cfg.seq_len)
        stage.append(time.perf_counter() - start)
    return min(read), min(stage)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tar", type=Path, default=REPO / "data" / "bair-sample.tar")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "prepare_throughput.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        count = write_png_copy(args.tar, work / "png", seq_len=30)
        sources = {
            "tfrecords (tar, streamed)": DataConfig(source="sample"),
            "png folders": DataConfig(source="bair-png", bair_png=BairPngConfig(root=str(work / "png"))),
        }
        times = {name: best_times(cfg, args.tar, work, args.repeat) for name, cfg in sources.items()}
    rows = {name: {"read_seq_per_s": count / read, "prepare_seq_per_s": count / stage}
            for name, (read, stage) in times.items()}
    result = {"sequences": count, "repeat": args.repeat, "cpu_count": os.cpu_count(), "rows": rows}
    print(f"prepare throughput on {count} sequences of 30 frames, best of {args.repeat} (seq/s)")
    print(f"  {'source':28s} {'reading':>9s} {'whole stage':>12s}")
    for name, row in rows.items():
        print(f"  {name:28s} {row['read_seq_per_s']:9.0f} {row['prepare_seq_per_s']:12.0f}")
    tf, png = rows["tfrecords (tar, streamed)"], rows["png folders"]
    print(f"  {'ratio tfrecords / png':28s} {tf['read_seq_per_s'] / png['read_seq_per_s']:8.1f}x "
          f"{tf['prepare_seq_per_s'] / png['prepare_seq_per_s']:11.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
