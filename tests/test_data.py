import json

import numpy as np
import pytest
import torch

from cvae.data.raw import sequence_seed
from cvae.data.prepare import prepare
from cvae.data.shards import Split
from cvae.data.sim_push import generate_sequence
from tests.conftest import write_random_raw


def test_sim_push_is_deterministic_per_seed_and_varies_across_seeds():
    a, b = generate_sequence(11, num_frames=4), generate_sequence(11, num_frames=4)
    c = generate_sequence(12, num_frames=4)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes()
    assert not np.array_equal(a["frames"], c["frames"])


def test_sim_push_layout_and_moving_arm():
    seq = generate_sequence(5, num_frames=10)
    assert seq["frames"].shape == (10, 64, 64, 3) and seq["frames"].dtype == np.uint8
    assert seq["actions"].shape == (10, 4) and seq["positions"].shape == (10, 3)
    assert set(np.unique(seq["actions"][:, 3])) <= {0.0, 1.0}  # gripper open/closed
    # The end effector follows the commands: position deltas track the commanded xy moves.
    moved = np.diff(seq["positions"][:, :2], axis=0)
    commanded = seq["actions"][:-1, :2]
    assert np.corrcoef(moved.ravel(), commanded.ravel())[0, 1] > 0.8
    assert np.abs(np.diff(seq["frames"].astype(int), axis=0)).mean() > 0.5  # frames change


def test_sequence_seeds_differ_by_split_and_index():
    seeds = {sequence_seed(0, s, i) for s in ("train", "val", "test") for i in range(50)}
    assert len(seeds) == 150
    assert sequence_seed(0, "train", 3) == sequence_seed(0, "train", 3)


def test_prepare_round_trip(tmp_path):
    written = write_random_raw(tmp_path / "raw", {"train": 5, "val": 2, "test": 4})
    meta = prepare(tmp_path / "raw", tmp_path / "shards", shard_size=2, seq_len=8)
    assert meta["counts"] == {"train": 5, "val": 2, "test": 4}
    assert meta["bad_records"] == {"train": 0, "val": 0, "test": 0}
    assert meta["frame_shape"] == [8, 3, 64, 64]
    assert [f["count"] for f in meta["shards"]["train"]] == [2, 2, 1]
    assert not (tmp_path / "shards.tmp").exists()
    assert json.loads((tmp_path / "shards" / "meta.json").read_text()) == meta

    frames, actions, positions = (np.stack(a) for a in zip(*written["train"]))
    conds = np.concatenate([actions, positions], -1)
    np.testing.assert_allclose(meta["condition_mean"], conds.reshape(-1, 7).mean(0), rtol=1e-5)

    split = Split(tmp_path / "shards", "train")
    assert len(split) == 5
    got_frames, got_conds = split.windows([4, 1], [3, 0], 5)
    assert got_frames.dtype == torch.uint8 and got_frames.shape == (2, 5, 3, 64, 64)
    expected = np.stack([frames[4, 3:8], frames[1, 0:5]]).transpose(0, 1, 4, 2, 3)
    assert np.array_equal(got_frames.numpy(), expected)
    normalised = (np.stack([conds[4, 3:8], conds[1, 0:5]]) - meta["condition_mean"]) / \
        np.array(meta["condition_std"])
    np.testing.assert_allclose(got_conds.numpy(), normalised, rtol=1e-4, atol=1e-5)


def test_prepare_records_checksums(tmp_path):
    import hashlib
    write_random_raw(tmp_path / "raw", {"train": 2, "val": 1, "test": 1})
    meta = prepare(tmp_path / "raw", tmp_path / "shards", shard_size=4, seq_len=8)
    entry = meta["shards"]["val"][0]
    data = (tmp_path / "shards" / "val" / entry["frames"]).read_bytes()
    assert entry["sha256"][entry["frames"]] == hashlib.sha256(data).hexdigest()


def test_random_windows_stay_inside_sequences(tmp_path):
    write_random_raw(tmp_path / "raw", {"train": 3, "val": 1, "test": 1}, seq_len=8)
    prepare(tmp_path / "raw", tmp_path / "shards", shard_size=2, seq_len=8)
    split = Split(tmp_path / "shards", "train")
    frames, conds = split.random_windows(64, 6, torch.Generator().manual_seed(0))
    assert frames.shape == (64, 6, 3, 64, 64) and conds.shape == (64, 6, 7)


def test_prepare_without_raw_data_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the download stage"):
        prepare(tmp_path / "missing", tmp_path / "shards", shard_size=2, seq_len=8)
    assert not (tmp_path / "shards.tmp").exists() and not (tmp_path / "shards").exists()


def test_sim_push_download_writes_the_bair_tree_that_prepare_reads(tmp_path):
    from cvae.config import DataConfig
    from cvae.data.raw import download
    cfg = DataConfig(num_train=2, num_val=1, num_test=1, seq_len=4, workers=1)
    manifest = download(cfg, tmp_path / "raw", sample_tar=None)
    assert manifest == {"format": "tfrecords", "path": "."}
    assert (tmp_path / "raw" / "softmotion30_44k" / "train" / "traj_256_to_256.tfrecords").exists()
    prepare(tmp_path / "raw", tmp_path / "shards", shard_size=8, seq_len=4)
    frames, _ = Split(tmp_path / "shards", "val").windows([0], [0], 4)
    expected = generate_sequence(sequence_seed(cfg.seed, "val", 0), num_frames=4)["frames"]
    assert np.array_equal(frames[0].numpy(), expected.transpose(0, 3, 1, 2))
