"""Where training windows come from: memory maps, a device-resident split, DataLoader workers."""
import numpy as np
import pytest
import torch

from cvae.data.batches import DeviceSplit, TrainBatches, seeded_generator
from cvae.data.prepare import prepare
from cvae.data.shards import Split
from tests.conftest import write_random_raw


@pytest.fixture
def shards(tmp_path):
    write_random_raw(tmp_path / "raw", {"train": 7, "val": 1, "test": 1}, seq_len=8)
    prepare(tmp_path / "raw", tmp_path / "shards", shard_size=3, seq_len=8)
    return tmp_path / "shards"


def _find(split: Split, frames: torch.Tensor) -> tuple[int, int]:
    """The (sequence, start) a window was cut from, or fail."""
    everything, _ = split.windows(np.arange(len(split)), np.zeros(len(split), int), split.seq_len)
    for index in range(len(split)):
        for start in range(split.seq_len - len(frames) + 1):
            if torch.equal(everything[index, start:start + len(frames)], frames):
                return index, start
    raise AssertionError("a window that is in no sequence")


def test_the_device_split_cuts_true_windows_and_covers_the_split(shards, device):
    split = Split(shards, "train")
    resident = DeviceSplit(split, device)
    frames, conds = resident.random_windows(200, 5, torch.Generator(device).manual_seed(0))
    assert frames.device.type == device.type and conds.device.type == device.type
    frames, conds = frames.cpu(), conds.cpu()
    assert frames.shape == (200, 5, 3, 64, 64) and frames.dtype == torch.uint8
    assert conds.shape == (200, 5, 7)
    seen = set()
    for k in range(0, 200, 7):
        index, start = _find(split, frames[k])
        seen.add(index)
        _, expected = split.windows([index], [start], 5)
        assert torch.allclose(conds[k], expected[0])  # the conditions of the same window
    assert seen == set(range(len(split)))  # every sequence comes up
    starts = {_find(split, frames[k])[1] for k in range(0, 200, 3)}
    assert starts == {0, 1, 2, 3}  # every start that fits 5 of 8 frames


@pytest.mark.parametrize("source", ["auto", "shards", "device", "workers"])
def test_every_source_gives_an_epoch_of_seeded_batches(shards, source, device):
    def epoch(e, rank=0):
        batches = TrainBatches(shards, batch=4, length=5, steps=3, seed=1, device=device,
                               rank=rank, workers=2, source=source)
        return [(frames.cpu(), conds.cpu()) for frames, conds in batches.epoch(e)]
    if source == "auto":  # a split this small always fits on the GPU
        expected = "on cuda" if device.type == "cuda" else "memory-mapped"
        assert expected in TrainBatches(shards, 4, 5, 3, 1, device, source=source).where
    first = epoch(0)
    assert len(first) == 3 and first[0][0].shape == (4, 5, 3, 64, 64)
    again = epoch(0)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    assert not torch.equal(epoch(1)[0][1], first[0][1])  # another epoch, other windows
    assert not torch.equal(epoch(0, rank=1)[0][1], first[0][1])  # another rank too
    split = Split(shards, "train")
    for frames, _ in first:
        for window in frames:
            _find(split, window)


def test_seeded_generators_depend_on_every_key():
    draws = {keys: torch.rand(1, generator=seeded_generator(*keys)).item()
             for keys in [(1, 0), (1, 1), (2, 0), (1, 0, 1)]}
    assert len(set(draws.values())) == 4
    assert torch.rand(1, generator=seeded_generator(1, 0)).item() == draws[(1, 0)]


@pytest.mark.parametrize("cut_by", ["shards", "device"])
def test_a_first_gap_puts_the_first_frame_up_to_that_many_frames_before_the_rest(
        shards, cut_by, device):
    """`first_gap`: frame 0 of a window is frame s of its sequence, and frames 1.. are the
    consecutive frames from s + g + 1, with g drawn from 0..first_gap, all inside the sequence."""
    split = Split(shards, "train")
    source = DeviceSplit(split, device) if cut_by == "device" else split
    generator = torch.Generator(device if cut_by == "device" else "cpu").manual_seed(0)
    frames, conds = source.random_windows(300, 3, generator, first_gap=4)
    assert frames.shape == (300, 3, 3, 64, 64) and conds.shape == (300, 3, 7)
    everything, every_cond = split.windows(np.arange(len(split)), np.zeros(len(split), int),
                                           split.seq_len)
    gaps = set()
    for window, cond in zip(frames.cpu(), conds.cpu()):
        index, start = _find(split, window[:1])
        (rest_index, rest_start), = [(i, s) for i in range(len(split))
                                     for s in range(start + 1, split.seq_len - 1)
                                     if torch.equal(everything[i, s:s + 2], window[1:])]
        assert rest_index == index and rest_start + 2 <= split.seq_len
        gaps.add(rest_start - start - 1)
        assert torch.allclose(cond[0], every_cond[index, start])  # conditions cut alike
        assert torch.allclose(cond[1:], every_cond[index, rest_start:rest_start + 2])
    assert gaps == {0, 1, 2, 3, 4}  # every gap comes up, none beyond first_gap


def test_without_a_first_gap_windows_are_drawn_as_before(shards):
    """first_gap 0 draws the same windows as the code before it existed (seeded runs and their
    committed results stay reproducible): frames and conditions of consecutive frames."""
    split = Split(shards, "train")
    got = split.random_windows(16, 5, torch.Generator().manual_seed(3), first_gap=0)
    generator = torch.Generator().manual_seed(3)
    indices = torch.randint(len(split), (16,), generator=generator)
    starts = torch.randint(split.seq_len - 5 + 1, (16,), generator=generator)
    expected = split.windows(indices, starts, 5)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
