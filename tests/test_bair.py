"""The real-data paths: BAIR's tar of TFRecords over HTTP, and the course's PNG folders."""
import dataclasses
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading

import numpy as np
import pytest

from cvae.config import BairConfig, BairPngConfig, DataConfig
from cvae.data.bair import CorruptArchive
from cvae.data.http import DownloadError, fetch
from cvae.data.png_folders import LayoutError
from cvae.data.raw import download
from cvae.data.prepare import prepare
from cvae.data.shards import Split
from cvae.data.tfrecords import TooFewFrames, masked_crc, parse_sequence, write_sequences
from cvae.errors import DataError
from tests import bair_files
from tests.conftest import random_sequences, write_random_raw

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
    bair = BairConfig(url=server.url, bytes=len(server.data),
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
        fetch(cfg.bair.url, cfg.bair.tar, cfg.bair.bytes, cfg.bair.sha256, attempts=1)
    part = tmp_path / "downloads" / "bair.tar.part"
    kept = part.stat().st_size  # what arrived, but for the last unfinished block
    assert 0 < kept <= half and not (tmp_path / "downloads" / "bair.tar").exists()

    fetch(cfg.bair.url, cfg.bair.tar, cfg.bair.bytes, cfg.bair.sha256)
    assert server.ranges == [None, f"bytes={kept}-"]
    assert (tmp_path / "downloads" / "bair.tar").read_bytes() == server.data
    assert not part.exists()


def test_a_wrong_size_or_checksum_or_host_is_a_clear_error(tmp_path, server):
    with pytest.raises(DownloadError, match=r"offers \d+ bytes, expected 123"):
        fetch(server.url, tmp_path / "a.tar", size=123)
    # A complete download of the wrong checksum is kept: the expected checksum may be the typo.
    with pytest.raises(DownloadError, match=r"b.tar.part: sha256 \w+ is not data.bair.sha256 = "
                                            r"0+. Left as it is: if data.bair.sha256 is wrong"):
        fetch(server.url, tmp_path / "b.tar", size=len(server.data), sha256="0" * 64)
    assert not (tmp_path / "b.tar").exists()
    assert (tmp_path / "b.tar.part").read_bytes() == server.data
    fetch(server.url, tmp_path / "b.tar", size=len(server.data),  # corrected: no new download
          sha256=hashlib.sha256(server.data).hexdigest())
    assert server.ranges == [None, None] and (tmp_path / "b.tar").read_bytes() == server.data
    unreachable = server.url.rsplit(":", 1)[0] + ":9/bair.tar"  # the discard port: nobody there
    with pytest.raises(DownloadError, match="cannot download .*127.0.0.1:9"):
        fetch(unreachable, tmp_path / "c.tar", size=10, attempts=1, timeout=2)


def test_a_redirect_loop_is_a_clear_error(tmp_path):
    class Loop(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", self.path)  # back to itself
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Loop)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}/bair.tar"
    try:
        with pytest.raises(DownloadError, match=f"cannot download {url} \\(data.bair.url\\): "
                                                "Exceeded 30 redirects. Check the URL"):
            fetch(url, tmp_path / "bair.tar", size=10, attempts=1)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not (tmp_path / "bair.tar").exists()


@pytest.mark.parametrize("typo, message", [
    ({"sha256": "1" * 64}, r"bair.tar: sha256 \w+ is not data.bair.sha256 = 1+. Left as it is"),
    ({"bytes": 1234}, r"bair.tar has \d+ bytes, not data.bair.bytes = 1234. Left as it is"),
], ids=["sha256", "bytes"])
def test_a_tar_the_pipeline_did_not_write_is_never_deleted(tmp_path, server, typo, message):
    """The user's own copy at data.bair.tar and a typo in data.bair: stop, keep the file."""
    cfg = _bair_cfg(tmp_path, server, **typo)
    tar = tmp_path / "downloads" / "bair.tar"
    tar.parent.mkdir()
    tar.write_bytes(server.data)
    with pytest.raises(DownloadError, match=message):
        download(cfg, tmp_path / "raw", sample_tar=None)
    assert tar.read_bytes() == server.data and server.ranges == []


def test_an_extracted_bair_folder_at_data_bair_tar_is_read_in_place(tmp_path, server, sequences):
    folder = tmp_path / "bair"
    with tarfile.open(fileobj=io.BytesIO(server.data)) as tar:
        tar.extractall(folder)
    cfg = _bair_cfg(tmp_path, server, tar=str(folder))
    manifest = download(cfg, tmp_path / "raw", sample_tar=None)
    assert manifest["path"] == "../bair" and manifest["sequences"] == COUNTS
    meta = prepare(tmp_path / "raw", tmp_path / "shards", shard_size=2, seq_len=SEQ_LEN)
    assert meta["counts"] == COUNTS and server.ranges == []  # nothing downloaded
    _assert_shards_hold(tmp_path / "shards", sequences)


# Damage to the tar itself. Python's tarfile reads a damaged member header, or an archive cut at a
# member boundary, as the end of the archive: each must stop, naming the tar and the byte offset,
# with or without data.skip_bad_records (what is lost cannot be counted).
def _flip(data: bytes, at: int) -> bytes:
    data = bytearray(data)
    data[at] ^= 0xFF
    return bytes(data)


TAR_DAMAGE = {  # name: (members, archive bytes) -> (damaged bytes, expected message)
    "flipped byte in the first member's header": lambda m, data: (
        _flip(data, m[0].offset + 3), r"bad.tar: not a readable uncompressed tar"),
    **{f"flipped byte {k} in member {i}'s header": (lambda m, data, i=i, k=k: (
        _flip(data, m[i].offset + k),
        rf"bad.tar: byte offset {m[i].offset} \(after {m[i - 1].name}\): unreadable tar header"))
       for i, k in [(1, 0), (2, 20), (3, 125), (3, 257)]},  # name, name, size, magic
    **{f"cut before member {i}": (lambda m, data, i=i: (
        data[:m[i].offset],
        rf"bad.tar: byte offset {m[i].offset} \(after {m[i - 1].name}\): the archive is cut "
        "short there, without tar's end-of-archive blocks")) for i in (1, 2, 3)},
    "cut after the last member": lambda m, data: (
        data[:_end(m)], rf"bad.tar: byte offset {_end(m)} \(after {m[-1].name}\): the archive is "
                        "cut short there"),
    "one of the two end blocks only": lambda m, data: (
        data[:_end(m) + 512], rf"bad.tar: byte offset {_end(m)} .*: the archive is cut short"),
    "cut inside member 2": lambda m, data: (
        data[:m[2].offset_data + 100], rf"bad.tar: after {m[2].name} \(unexpected end of data\)"),
}


def _end(members) -> int:
    """Where the last member's data (padded to a whole block) ends."""
    last = members[-1]
    return last.offset_data + -(-last.size // 512) * 512


@pytest.mark.parametrize("skip_bad_records", [False, True])
@pytest.mark.parametrize("damage", TAR_DAMAGE)
def test_a_damaged_tar_stops_naming_it_and_where(tmp_path, sequences, damage, skip_bad_records):
    good = bair_files.bair_tar(tmp_path / "good.tar", sequences)
    with tarfile.open(good) as tar:
        members = tar.getmembers()
    data, message = TAR_DAMAGE[damage](members, good.read_bytes())
    (tmp_path / "bad.tar").write_bytes(data)
    cfg = DataConfig(source="sample", seq_len=SEQ_LEN, skip_bad_records=skip_bad_records)
    with pytest.raises(CorruptArchive, match=message):  # download checks the tar up front...
        download(cfg, tmp_path / "raw", sample_tar=tmp_path / "bad.tar")

    download(cfg, tmp_path / "raw", sample_tar=good)  # ...and prepare, if it changed since
    good.write_bytes(data)
    with pytest.raises(CorruptArchive, match=message.replace("bad.tar", "good.tar")):
        prepare(tmp_path / "raw", tmp_path / "shards", 2, SEQ_LEN, skip_bad_records)
    assert not (tmp_path / "shards").exists() and not (tmp_path / "shards.tmp").exists()


# Damage inside a TFRecord file. Its name states how many sequences it holds, so what is lost is
# counted exactly: a bad record, every record after a lost framing, a file that ends early.
TEST_FILE = "softmotion30_44k/test/traj_0_to_3.tfrecords"
RECORD_DAMAGE = {  # name: (damage(file bytes, record size), sequences kept, bad records, message)
    "data CRC": (lambda data, r: _flip(data, r + 112), [0, 2, 3], 1,
                 "corrupt record at byte offset {r}: data CRC mismatch"),
    "two data CRCs": (lambda data, r: _flip(_flip(data, r + 112), 3 * r + 112), [0, 2], 2,
                      "corrupt record at byte offset {r}: data CRC mismatch"),
    "length CRC (the framing is lost)": (
        lambda data, r: _flip(data, r + 2), [0], 1,
        "corrupt record at byte offset {r}: length CRC mismatch; the records after it cannot be "
        "found"),
    "cut inside a record": (lambda data, r: data[:2 * r + 50], [0, 1], 1,
                            "corrupt record at byte offset {r2}: truncated record (38 of"),
    "cut at a record boundary": (lambda data, r: data[:2 * r], [0, 1], 0,
                                 "ends after 2 of the 4 records its name states"),
}


@pytest.mark.parametrize("damage", RECORD_DAMAGE)
def test_damaged_records_stop_or_are_counted_exactly(tmp_path, sequences, damage):
    corrupt, kept, bad, message = RECORD_DAMAGE[damage]
    sequences = {**sequences, "test": random_sequences(4, SEQ_LEN, seed=7)}
    r = len(bair_files.tfrecord_file([bair_files.example(*sequences["test"][0])]))
    message = re.escape(message.format(r=r, r2=2 * r))
    bair_files.bair_tar(tmp_path / "bad.tar", sequences,
                        corrupt=lambda name, data: corrupt(data, r) if "test/" in name else data)
    download(DataConfig(source="sample", seq_len=SEQ_LEN), tmp_path / "raw",
             sample_tar=tmp_path / "bad.tar")
    with pytest.raises(DataError, match=rf"bad.tar:{TEST_FILE}: {message}.*Get the data again, "
                                        "or set data.skip_bad_records: true"):
        prepare(tmp_path / "raw", tmp_path / "shards", shard_size=2, seq_len=SEQ_LEN)
    assert not (tmp_path / "shards").exists() and not (tmp_path / "shards.tmp").exists()

    meta = prepare(tmp_path / "raw", tmp_path / "shards", 2, SEQ_LEN, skip_bad_records=True)
    assert meta["counts"] == {**COUNTS, "test": len(kept)}
    assert meta["bad_records"] == {"train": 0, "val": 0, "test": bad}
    [(name, lost)] = meta["lost"]["test"].items()
    assert name.endswith(f"bad.tar:{TEST_FILE}") and lost["sequences"] == 4 - len(kept)
    assert re.match(message, lost["damage"][0])
    assert meta["lost"]["train"] == meta["lost"]["val"] == {}
    _assert_shards_hold(tmp_path / "shards", {"test": [sequences["test"][i] for i in kept]})


@pytest.mark.parametrize("records, name, message", [
    (3, "traj_0_to_1.tfrecords", r"traj_0_to_1.tfrecords: holds more than the 2 sequences its "
                                 r"name states \(from byte offset \d+\)"),
    (2, "traj_a.tfrecords", r"traj_a.tfrecords: the name does not state its sequences"),
], ids=["more records than named", "no range in the name"])
def test_a_file_holds_what_its_name_states(tmp_path, records, name, message):
    raw = tmp_path / "raw"
    write_random_raw(raw, {"train": 2, "val": 1, "test": 1}, seq_len=SEQ_LEN)
    write_sequences(raw / "softmotion30_44k" / "test" / name, random_sequences(records, SEQ_LEN))
    for skip_bad_records in (False, True):  # a wrong name is no damage to skip
        with pytest.raises(DataError, match=message):
            prepare(raw, tmp_path / "shards", 2, SEQ_LEN, skip_bad_records)


def _with(sequence, array: int, step: int, column: int, value: float):
    """A copy of (frames, actions, positions) with one condition value replaced."""
    sequence = [a.copy() for a in sequence]
    sequence[array][step, column] = value
    return tuple(sequence)


# One NaN in a condition makes every training loss NaN: every source refuses it at prepare.
@pytest.mark.parametrize("source, array, value, message", [
    ("tfrecords", 1, np.nan, r"traj_0_to_1.tfrecords: corrupt record at byte offset {r}: "
                             r"'3/action' value 2 of 4 is nan: not finite"),
    ("tfrecords", 2, -np.inf, r"traj_0_to_1.tfrecords: corrupt record at byte offset {r}: "
                              r"'3/endeffector_pos' value 2 of 3 is -inf: not finite"),
    ("png", 1, np.nan, r"test/traj_0_to_255/1/actions.csv: row 4 \(step 3\), column 2 is nan"),
    ("png", 2, np.inf, r"test/traj_0_to_255/1/endeffector_positions.csv: row 4 \(step 3\), "
                       r"column 2 is inf"),
], ids=["tfrecord action nan", "tfrecord position -inf", "png actions nan", "png positions inf"])
def test_non_finite_conditions_are_refused_naming_the_file(tmp_path, sequences, source, array,
                                                           value, message):
    sequences["test"][1] = _with(sequences["test"][1], array, step=3, column=1, value=value)
    if source == "tfrecords":
        bair_files.bair_tar(tmp_path / "nan.tar", sequences)
        cfg = DataConfig(source="sample", seq_len=SEQ_LEN)
        r = len(bair_files.tfrecord_file([bair_files.example(*sequences["test"][0])]))
        message = message.format(r=r)
    else:
        root = bair_files.png_layout(tmp_path / "png", sequences)
        cfg = DataConfig(source="bair-png", seq_len=SEQ_LEN, bair_png=BairPngConfig(root=str(root)))
    download(cfg, tmp_path / "raw", sample_tar=tmp_path / "nan.tar")
    with pytest.raises(DataError, match=message):
        prepare(tmp_path / "raw", tmp_path / "shards", shard_size=2, seq_len=SEQ_LEN)
    assert not (tmp_path / "shards").exists()


def test_a_record_without_the_bair_keys_is_named(sequences):
    with pytest.raises(KeyError, match="0/image_aux1/encoded"):
        parse_sequence(b"", seq_len=SEQ_LEN)  # an Example with no feature at all


def test_sequences_shorter_than_seq_len_name_the_setting(tmp_path, sequences):
    """Frames 0..2 of 3, well formed, asked for 6: data.seq_len is the thing to change, not a
    corrupt record (whose advice would be to download again)."""
    frames, actions, positions = sequences["train"][0]
    data = bair_files.example(frames[:3], actions[:3], positions[:3])
    with pytest.raises(TooFewFrames, match="data.seq_len is 6, .* has 3 frames: set "
                                           "data.seq_len to 3 or less"):
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
