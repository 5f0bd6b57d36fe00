"""The real-data paths: BAIR's tar of TFRecords over HTTP, and the course's PNG folders."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from cvae.config import BairConfig, BairPngConfig, DataConfig
from cvae.data.bair import CorruptArchive
from cvae.data.http import DownloadError, fetch
from cvae.data.png_folders import LayoutError
from cvae.data.raw import download
from cvae.data.prepare import prepare
from cvae.data.shards import Split
from cvae.data.tfrecords import CorruptRecord, masked_crc, parse_sequence
from tests import bair_files
from tests.conftest import random_sequences

SEQ_LEN = 6
COUNTS = {"train": 3, "val": 2, "test": 2}


@pytest.fixture
def sequences():
    return {split: random_sequences(n, SEQ_LEN, seed=k) for k, (split, n) in enumerate(COUNTS.items())}


@pytest.fixture
def server(tmp_path, sequences):
    tar = bair_files.bair_tar(tmp_path / "bair.tar", sequences)
    server = bair_files.FileServer(tar.read_bytes())
    yield server
    server.close()


def _bair_cfg(tmp_path, server, **changes) -> DataConfig:
    bair = BairConfig(url=server.url, size=len(server.data),
                      sha256=hashlib.sha256(server.data).hexdigest(),
                      tar=str(tmp_path / "downloads" / "bair.tar"))
    return DataConfig(source="bair", seq_len=SEQ_LEN, bair=dataclasses.replace(bair, **changes))


def _assert_shards_hold(shards_dir, sequences):
    for split, expected in sequences.items():
        data = Split(shards_dir, split)
        assert len(data) == len(expected)
        frames, conds = data.windows(range(len(expected)), [0] * len(expected), SEQ_LEN)
        conds = conds * data.std + data.mean  # undo the normalisation
        for i, (f, a, p) in enumerate(expected):
            assert np.array_equal(frames[i].numpy(), f.transpose(0, 3, 1, 2))
            np.testing.assert_allclose(conds[i].numpy(), np.concatenate([a, p], -1), atol=1e-5)


def test_masked_crc_matches_the_crc32c_check_value():
    import crc32c
    assert crc32c.crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert masked_crc(b"123456789") == bair_files.masked_crc(b"123456789")


def test_download_then_prepare_gives_exactly_what_was_written(tmp_path, server, sequences):
    cfg = _bair_cfg(tmp_path, server)
    manifest = download(cfg, tmp_path / "raw", sample_tar=None)
    assert manifest["sha256"] == cfg.bair.sha256
    meta = prepare(tmp_path / "raw", tmp_path / "shards", shard_size=2, seq_len=SEQ_LEN)
    assert meta["counts"] == COUNTS
    _assert_shards_hold(tmp_path / "shards", sequences)


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path, server):
    cfg = _bair_cfg(tmp_path, server)
    half = len(server.data) // 2
    server.cut_after = half  # the connection drops half way, as if the run were killed
    with pytest.raises(DownloadError, match="Re-run to resume"):
        fetch(cfg.bair.url, cfg.bair.tar, cfg.bair.size, cfg.bair.sha256, attempts=1)
    part = tmp_path / "downloads" / "bair.tar.part"
    kept = part.stat().st_size  # what arrived, but for the last unfinished block
    assert 0 < kept <= half and not (tmp_path / "downloads" / "bair.tar").exists()

    fetch(cfg.bair.url, cfg.bair.tar, cfg.bair.size, cfg.bair.sha256)
    assert server.ranges == [None, f"bytes={kept}-"]
    assert (tmp_path / "downloads" / "bair.tar").read_bytes() == server.data
    assert not part.exists()


def test_a_wrong_size_or_checksum_or_host_is_a_clear_error(tmp_path, server):
    with pytest.raises(DownloadError, match=r"offers \d+ bytes, expected 123"):
        fetch(server.url, tmp_path / "a.tar", size=123)
    with pytest.raises(DownloadError, match="sha256 .* is not the expected"):
        fetch(server.url, tmp_path / "b.tar", size=len(server.data), sha256="0" * 64)
    assert not (tmp_path / "b.tar").exists()
    unreachable = server.url.rsplit(":", 1)[0] + ":9/bair.tar"  # the discard port: nobody there
    with pytest.raises(DownloadError, match="cannot download .*127.0.0.1:9"):
        fetch(unreachable, tmp_path / "c.tar", size=10, attempts=1, timeout=2)


def _flip_a_byte(name, data):
    if "test/" not in name:
        return data
    data = bytearray(data)
    data[len(data) // 2 + 100] ^= 0xFF  # inside the second of the two records
    return bytes(data)


def test_a_flipped_byte_stops_with_file_and_offset_or_is_skipped(tmp_path, sequences):
    bair_files.bair_tar(tmp_path / "bad.tar", sequences, corrupt=_flip_a_byte)
    raw = tmp_path / "raw"
    download(DataConfig(source="sample", seq_len=SEQ_LEN), raw, sample_tar=tmp_path / "bad.tar")
    record = len(bair_files.tfrecord_file([bair_files.example(*sequences["test"][0])]))
    with pytest.raises(CorruptRecord, match=rf"bad.tar:softmotion30_44k/test/traj_0_to_255"
                                            rf".tfrecords: corrupt record at byte offset {record}: "
                                            "data CRC mismatch"):
        prepare(raw, tmp_path / "shards", shard_size=2, seq_len=SEQ_LEN)
    assert not (tmp_path / "shards").exists() and not (tmp_path / "shards.tmp").exists()

    meta = prepare(raw, tmp_path / "shards", 2, SEQ_LEN, skip_bad_records=True)
    assert meta["bad_records"] == {"train": 0, "val": 0, "test": 1}
    assert meta["counts"]["test"] == 1


def test_a_truncated_record_or_archive_is_reported(tmp_path, sequences):
    one = bair_files.tfrecord_file([bair_files.example(*sequences["train"][0])])
    from io import BytesIO
    from cvae.data.tfrecords import read_records
    [(offset, error)] = list(read_records(BytesIO(one[:-10]), "cut.tfrecords"))
    assert isinstance(error, CorruptRecord) and error.framing_lost
    assert "cut.tfrecords: corrupt record at byte offset 0: truncated record" in str(error)

    tar = bair_files.bair_tar(tmp_path / "full.tar", sequences).read_bytes()
    (tmp_path / "cut.tar").write_bytes(tar[: len(tar) // 2])
    download(DataConfig(source="sample", seq_len=SEQ_LEN), tmp_path / "raw",
             sample_tar=tmp_path / "cut.tar")
    with pytest.raises((CorruptArchive, CorruptRecord), match="cut.tar"):
        prepare(tmp_path / "raw", tmp_path / "shards", shard_size=2, seq_len=SEQ_LEN)
    assert not (tmp_path / "shards").exists() and not (tmp_path / "shards.tmp").exists()


def test_a_record_without_the_bair_keys_is_named(sequences):
    frames, actions, positions = sequences["train"][0]
    data = bair_files.example(frames[:3], actions[:3], positions[:3])
    with pytest.raises(KeyError, match="3/image_aux1/encoded"):
        parse_sequence(data, seq_len=SEQ_LEN)


def test_png_folders_give_the_same_shards_as_tfrecords(tmp_path, sequences):
    root = bair_files.png_layout(tmp_path / "png", sequences)
    cfg = DataConfig(source="bair-png", seq_len=SEQ_LEN, bair_png=BairPngConfig(root=str(root)))
    manifest = download(cfg, tmp_path / "raw", sample_tar=None)
    assert manifest["counts"] == COUNTS
    prepare(tmp_path / "raw", tmp_path / "shards", shard_size=2, seq_len=SEQ_LEN)
    _assert_shards_hold(tmp_path / "shards", sequences)


@pytest.mark.parametrize("damage, message", [
    (lambda seq: (seq / "4.png").unlink(), r"validate/traj_0_to_255/1/4.png is missing"),
    (lambda seq: np.savetxt(seq / "actions.csv", np.zeros((SEQ_LEN, 3)), delimiter=","),
     r"validate/traj_0_to_255/1/actions.csv is 6x3, expected 6 rows of 4 values"),
])
def test_png_layout_errors_name_the_file(tmp_path, sequences, damage, message):
    root = bair_files.png_layout(tmp_path / "png", sequences)
    damage(root / "validate" / "traj_0_to_255" / "1")
    cfg = DataConfig(source="bair-png", seq_len=SEQ_LEN, bair_png=BairPngConfig(root=str(root)))
    download(cfg, tmp_path / "raw", sample_tar=None)
    with pytest.raises(LayoutError, match=message):
        prepare(tmp_path / "raw", tmp_path / "shards", shard_size=2, seq_len=SEQ_LEN)
    assert not (tmp_path / "shards").exists() and not (tmp_path / "shards.tmp").exists()


def test_a_missing_split_folder_is_named_at_download(tmp_path, sequences):
    root = bair_files.png_layout(tmp_path / "png", {"train": sequences["train"]})
    cfg = DataConfig(source="bair-png", seq_len=SEQ_LEN, bair_png=BairPngConfig(root=str(root)))
    with pytest.raises(LayoutError, match="png/validate is missing"):
        download(cfg, tmp_path / "raw", sample_tar=None)


def test_the_committed_sample_is_genuine_bair_format(tmp_path):
    from pathlib import Path
    sample = Path(__file__).resolve().parents[1] / "data" / "bair-sample.tar"
    download(DataConfig(source="sample"), tmp_path / "raw", sample_tar=sample)
    meta = prepare(tmp_path / "raw", tmp_path / "shards", shard_size=256, seq_len=30)
    assert meta["counts"] == {"train": 8, "val": 4, "test": 4}
    assert json.loads((tmp_path / "raw" / "source.json").read_text())["format"] == "tfrecords"


def test_written_records_are_the_same_bytes_in_every_process(tmp_path):
    """Protobuf maps serialise in hash order unless asked not to: two processes must agree."""
    import subprocess
    import sys
    from pathlib import Path
    script = ("import sys; from tests.conftest import random_sequences; "
              "from cvae.data.tfrecords import write_sequences; "
              "write_sequences(sys.argv[1], random_sequences(2, 4))")
    repo = Path(__file__).resolve().parents[1]
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], cwd=repo, check=True)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
