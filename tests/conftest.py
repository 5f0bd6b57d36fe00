import numpy as np
import pytest
import torch

from cvae.config import ModelConfig
from cvae.data.raw import save_npz_atomic


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_model_cfg():
    return ModelConfig(width=0.125, g_dim=16, z_dim=4, rnn_size=16)


def write_random_raw(root, counts, seq_len=8, size=64, seed=0):
    """A raw/ folder of random sequences, chunks of 3, in the download stage's format."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in counts.items():
        (root / split).mkdir(parents=True)
        frames = rng.integers(0, 256, (count, seq_len, size, size, 3), dtype=np.uint8)
        actions = rng.normal(size=(count, seq_len, 4)).astype(np.float32)
        positions = rng.normal(size=(count, seq_len, 3)).astype(np.float32)
        for k, start in enumerate(range(0, count, 3)):
            part = slice(start, start + 3)
            save_npz_atomic(root / split / f"chunk-{k:04d}.npz", frames=frames[part],
                            actions=actions[part], positions=positions[part])
        written[split] = (frames, actions, positions)
    return written
