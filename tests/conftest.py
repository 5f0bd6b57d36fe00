import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cvae.config import ModelConfig
from cvae.data import bair, lab4_folders
from cvae.data.raw import MANIFEST
from cvae.data.prepare import prepare

# Stage commands (`python -m pipeline...`) and DVC's queue worker (`dvc`) are found on PATH:
# make them this interpreter's, so the suite tests this environment also when it is not activated.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# Tests that take `device` run on the CPU and, on a machine with a GPU, on CUDA too: the CUDA
# paths CI cannot reach are one `pytest -k "cuda or nccl"` away for whoever has one.
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=needs_cuda)])
def device(request):
    return torch.device(request.param)


@pytest.fixture
def tiny_model_cfg():
    return ModelConfig(width=0.125, g_dim=16, z_dim=4, rnn_size=16)


def random_sequences(count, seq_len=8, size=64, seed=0):
    """`count` random (frames (T, H, W, 3) uint8, actions (T, 4), positions (T, 3)) tuples."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (seq_len, size, size, 3), dtype=np.uint8),
             rng.normal(size=(seq_len, 4)).astype(np.float32),
             rng.normal(size=(seq_len, 3)).astype(np.float32)) for _ in range(count)]


def write_random_raw(root, counts, seq_len=8, seed=0):
    """A raw/ folder as the download stage leaves it for sim-push: a BAIR TFRecord tree plus
    its manifest. Returns the sequences written, per split."""
    written = {}
    for k, (split, count) in enumerate(counts.items()):
        written[split] = random_sequences(count, seq_len, seed=seed + k)
        bair.write_tree(root, split, 0, written[split])
    (root / MANIFEST).write_text(json.dumps({"format": "tfrecords", "path": "."}))
    return written


@pytest.fixture
def dance_shards(tmp_path):
    """Dance-track shards of random 32x64 frames and labels in the course's folders: 2 training
    runs cut into clips of 3, one validation and 2 test sequences of 6 frames. Returns the shards
    folder and the (frames, labels) sequences written, train first."""
    root = tmp_path / "raw"
    rng = np.random.default_rng(0)
    seqs = [(rng.integers(0, 256, (6, 32, 64, 3), dtype=np.uint8),
             rng.integers(0, 256, (6, 32, 64, 3), dtype=np.uint8)) for _ in range(5)]
    lab4_folders.write_sequences(root, "train", seqs[:2])
    lab4_folders.write_sequences(root, "val", seqs[2:3])
    lab4_folders.write_sequences(root, "test", seqs[3:])
    (root / "source.json").write_text(json.dumps(
        {"format": "lab4-folders", "path": ".", "train_vi_len": 3, "val_vi_len": 6}))
    prepare(root, tmp_path / "shards", shard_size=4, seq_len=30)
    return tmp_path / "shards", seqs
