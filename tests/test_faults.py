"""Every number belongs to its params, and no damaged file is used without a word: the stages as
a hostile user meets them. Each case runs the stage's entry point as `python -m pipeline.<stage>`
does (in this process, for speed) and asserts its exit status, its one-line message naming the
file or key, and that no number was written for a run that did not produce it. Anything but a
clean `error:` exit (a traceback) fails the test."""
import json
import os
import pickle
import re
import runpy
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cvae.checkpoints import load_checkpoint
from cvae.data import lab4_folders
from cvae.data.files import ImageError, read_rgb
from cvae.data.prepare import prepare
from pipeline._cli import forget_results_below
from cvae.presets import merge
from tests import bair_files
from tests.conftest import random_sequences, write_random_raw
from tests.test_training import TINY

REPO = Path(__file__).resolve().parents[1]


def run_stage(stage: str, cwd: Path, *args) -> tuple[int, str]:
    """`python -m pipeline.<stage> args` in `cwd`, in this process: (exit status, the message it
    exits with). An exception other than the stage's own exit propagates: a traceback fails."""
    before, argv = Path.cwd(), sys.argv
    os.chdir(cwd)
    sys.argv = [stage, *args]
    try:
        runpy.run_module(f"pipeline.{stage}", run_name="__main__")
    except SystemExit as stop:
        return (1, stop.code) if isinstance(stop.code, str) else (stop.code or 0, "")
    finally:
        os.chdir(before)
        sys.argv = argv
    return 0, ""


def failed(result: tuple[int, str], *named: str) -> str:
    """The message of a stage that failed as a user's error should: exit 1, `error:` first,
    naming every one of `named`."""
    code, message = result
    assert code == 1 and message.startswith("error: "), result
    for thing in named:
        assert str(thing) in message, (thing, message)
    return message


def write_params(folder: Path, override: dict) -> None:
    (folder / "params.yaml").write_text(yaml.safe_dump(merge(TINY, override)))


@pytest.fixture
def project(tmp_path):
    """A workspace with tiny robot shards and params, as `dvc repro` leaves it after prepare."""
    write_random_raw(tmp_path / "raw", {"train": 4, "val": 2, "test": 2})
    prepare(tmp_path / "raw", tmp_path / "shards", shard_size=3, seq_len=8)
    write_params(tmp_path, {})
    return tmp_path


def _metrics(folder: Path) -> dict:
    return {p.name: json.loads(p.read_text()) for p in sorted((folder / "metrics").glob("*.json"))}


def _log(path: Path) -> list[list[str]]:
    """A training log's rows without their timings."""
    rows = [line.split("\t") for line in path.read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name != "sec_per_step"]
    return [[row[i] for i in keep] for row in rows]


def _weights(path: Path) -> dict:
    return load_checkpoint(path)["model"]


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _train_and_evaluate(folder: Path, epochs: int) -> None:
    write_params(folder, {"train": {"epochs": epochs}})
    assert run_stage("train", folder) == (0, "")
    assert run_stage("evaluate", folder) == (0, "")


def _copy_project(project: Path, name: str) -> Path:
    other = project / name
    other.mkdir()
    shutil.copytree(project / "shards", other / "shards")
    return other


# --- train.epochs: lowered, raised, unfinished ------------------------------------------------

@pytest.mark.parametrize("before, after", [(3, 2), (3, 1), (2, 3)])
def test_a_changed_train_epochs_gives_what_a_fresh_run_of_that_many_gives(project, before, after):
    """The fingerprint leaves train.epochs out so that raising it extends a run; lowering it
    must not report the longer run: the run goes on from the best epoch when that is early
    enough, or starts over, and ends as a fresh run of `after` epochs would."""
    _train_and_evaluate(project, before)
    _train_and_evaluate(project, after)
    fresh = _copy_project(project, "fresh")
    _train_and_evaluate(fresh, after)

    assert _metrics(project)["train.json"]["epochs"] == after
    assert _metrics(project) == _metrics(fresh)
    for log in ("steps.tsv", "epochs.tsv"):
        assert _log(project / "logs/train" / log) == _log(fresh / "logs/train" / log)
    for checkpoint in ("last.pt", "best.pt"):
        assert _same_weights(project / "models" / checkpoint, fresh / "models" / checkpoint)


@pytest.mark.parametrize("trained, asked, why", [
    (2, 3, "its run has trained 2 epochs and train.epochs is 3 (it was stopped before the end)"),
    (3, 2, "its run has trained 3 epochs and train.epochs is 2"),
])
def test_evaluate_refuses_a_run_that_has_not_trained_train_epochs(project, trained, asked, why):
    """A run extended and killed before its end, or params lowered without training: evaluate
    would report a run that the params do not describe."""
    _train_and_evaluate(project, trained)
    write_params(project, {"train": {"epochs": asked}})
    failed(run_stage("evaluate", project), f"models/last.pt: {why}: run the train stage first")
    assert "eval.json" not in _metrics(project)


# --- shards --------------------------------------------------------------------------------

def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_meta(project: Path, change) -> None:
    meta_path = project / "shards/meta.json"
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta_path.write_text(json.dumps(meta))


SHARD_DAMAGE = {
    "bytes flipped": (lambda p, split: _flip(p / f"shards/{split}/frames-00000.npy"),
                      "frames-00000.npy is damaged or was changed"),
    "truncated": (lambda p, split: _truncate(p / f"shards/{split}/conditions-00000.npy"),
                  "conditions-00000.npy is damaged or was changed"),
    "deleted": (lambda p, split: (p / f"shards/{split}/frames-00000.npy").unlink(),
                "frames-00000.npy is missing"),
    "meta edited": (lambda p, split: _edit_meta(p, lambda m: m["counts"].update({split: 9})),
                    "shards/meta.json was changed after prepare wrote it"),
    "meta not JSON": (lambda p, split: (p / "shards/meta.json").write_text('{"track": "rob'),
                      "shards/meta.json is not valid JSON"),
}


@pytest.mark.parametrize("stage, split", [("train", "train"), ("train", "val"),
                                          ("evaluate", "test")])
@pytest.mark.parametrize("damage", SHARD_DAMAGE)
def test_damaged_shards_stop_the_stage_that_reads_them(project, stage, split, damage):
    if stage == "evaluate":
        _train_and_evaluate(project, 1)
    corrupt, message = SHARD_DAMAGE[damage]
    corrupt(project, split)
    failed(run_stage(stage, project), message, "restore them: dvc repro")
    left = {"train.json"} if stage == "evaluate" else set()  # the finished training's numbers
    assert set(_metrics(project)) == left


# --- checkpoints ---------------------------------------------------------------------------

class _Payload:
    """A pickle that would create `marker` if it were executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


CHECKPOINT_DAMAGE = {
    "bytes flipped": (lambda p: _flip(p), "is damaged: its bytes do not match the sha256"),
    "truncated": (_truncate, "cannot be read"),
    "empty": (lambda p: p.write_bytes(b""), "cannot be read"),
    "random bytes": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)),
                     "cannot be read"),
    "a pickle payload": (lambda p: p.write_bytes(pickle.dumps(_Payload(p.with_name("pwned")))),
                         "cannot be read"),
}


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGE)
def test_a_damaged_last_checkpoint_is_set_aside_and_the_run_goes_on(project, damage, capsys):
    """Named in one line, moved to last.pt.corrupt, and training goes on from best.pt (an
    earlier epoch of the same run) or starts over: the result is the uninterrupted run's, and
    no later run trips on the file."""
    _train_and_evaluate(project, 2)
    corrupt, message = CHECKPOINT_DAMAGE[damage]
    corrupt(project / "models/last.pt")
    capsys.readouterr()
    _train_and_evaluate(project, 3)
    said = capsys.readouterr().out
    assert f"models/last.pt {message}" in said and "moved to models/last.pt.corrupt" in said
    assert (project / "models/last.pt.corrupt").exists()
    assert not (project / "models/pwned").exists()  # the pickle was never run
    fresh = _copy_project(project, "fresh")
    _train_and_evaluate(fresh, 3)
    assert _metrics(project) == _metrics(fresh)
    assert _same_weights(project / "models/last.pt", fresh / "models/last.pt")
    _train_and_evaluate(project, 3)  # a later run: nothing to set aside, nothing to train
    assert "resuming from models/last.pt at epoch 3" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["bytes flipped", "truncated"])
def test_a_damaged_best_checkpoint_is_refused_then_rebuilt_by_training(project, damage, capsys):
    _train_and_evaluate(project, 3)
    expected = _metrics(project)
    corrupt, message = CHECKPOINT_DAMAGE[damage]
    corrupt(project / "models/best.pt")
    failed(run_stage("evaluate", project), f"models/best.pt {message}")
    assert "eval.json" not in _metrics(project)
    _train_and_evaluate(project, 3)  # best.pt rebuilt (copied, or the run trained again)
    assert _metrics(project) == expected


def test_a_checkpoint_of_other_settings_is_not_evaluated(project):
    _train_and_evaluate(project, 1)
    write_params(project, {"train": {"epochs": 1, "lr": 1e-4}})
    failed(run_stage("evaluate", project), "models/last.pt was trained with other settings")


# --- images --------------------------------------------------------------------------------

def _png16(path: Path, values: np.ndarray) -> None:
    """A 16-bit PNG (grey (H, W) or RGB (H, W, 3)), written by hand: Pillow writes no 16-bit
    RGB."""
    height, width = values.shape[:2]
    colour = 2 if values.ndim == 3 else 0
    rows = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


RGB = np.random.default_rng(1).integers(0, 256, (32, 64, 3), dtype=np.uint8)
GREY = RGB[:, :, 0]


def _save(image: Image.Image, **kwargs):
    return lambda path: image.save(path, **kwargs)


IMAGES = {  # how the file is written, and the RGB values it must read back as
    "8-bit RGB": (_save(Image.fromarray(RGB)), RGB),
    "16-bit RGB": (lambda p: _png16(p, RGB.astype(np.uint16) * 257), RGB),
    "16-bit grey": (lambda p: _png16(p, GREY.astype(np.uint16) * 257), np.dstack([GREY] * 3)),
    "8-bit grey": (_save(Image.fromarray(GREY)), np.dstack([GREY] * 3)),
    "palette": (_save(Image.fromarray(RGB).quantize(256)),
                np.asarray(Image.fromarray(RGB).quantize(256).convert("RGB"))),
    "opaque RGBA": (_save(Image.fromarray(np.dstack([RGB, np.full_like(GREY, 255)]))), RGB),
    "opaque grey + alpha": (_save(Image.fromarray(np.dstack([GREY, np.full_like(GREY, 255)]),
                                                  "LA")), np.dstack([GREY] * 3)),
    "1 bit": (_save(Image.fromarray(GREY > 127)), np.dstack([(GREY > 127) * 255] * 3)),
}


@pytest.mark.parametrize("kind", IMAGES)
def test_every_png_mode_reads_as_its_rgb_values(tmp_path, kind):
    write, expected = IMAGES[kind]
    write(tmp_path / "frame.png")
    assert np.array_equal(read_rgb(tmp_path / "frame.png", 64, 32), expected)


@pytest.mark.parametrize("write, message", [
    (_save(Image.fromarray(np.dstack([RGB, GREY]))), "has transparent pixels (RGBA)"),
    (lambda p: p.write_text("not an image"), "not an image Pillow can read"),
    (lambda p: p.write_bytes(Image.fromarray(RGB)._repr_png_()[:300]),
     "the image is damaged or cut short"),
    (_save(Image.fromarray(RGB[:, :32])), "32 x 32 pixels (W x H), expected 64 x 32"),
])
def test_an_image_that_cannot_be_read_as_it_is_is_named(tmp_path, write, message):
    write(tmp_path / "frame.png")
    with pytest.raises(ImageError, match=f"^{re.escape(str(tmp_path / 'frame.png'))}: .*"
                                         f"{re.escape(message)}"):
        read_rgb(tmp_path / "frame.png", 64, 32)


def _one_sequence_per_split() -> dict:
    return {s: random_sequences(1, 8, seed=k) for k, s in enumerate(("train", "val", "test"))}


@pytest.mark.parametrize("layout", ["bair-png", "lab4-folders"])
def test_a_16_bit_frame_reaches_the_shards_with_its_values(tmp_path, layout):
    """Both folder layouts: a 16-bit frame was read as all white."""
    if layout == "bair-png":
        sequences = _one_sequence_per_split()
        root = bair_files.png_layout(tmp_path / "png", sequences)
        frame = sequences["train"][0][0][3]
        _png16(root / "train/traj_0_to_255/0/3.png", frame.astype(np.uint16) * 257)
        params, where = {"data": {"source": "bair-png", "bair_png": {"root": str(root)}}}, (0, 3)
    else:
        root = tmp_path / "dance"
        _dance_layout(root)
        frame = np.asarray(Image.open(root / "train/train_img/3.png"))
        _png16(root / "train/train_img/3.png", frame.astype(np.uint16) * 257)
        params, where = _dance_params(root), (1, 0)  # clips of 3: the second one's first
    write_params(tmp_path, params)
    assert run_stage("download", tmp_path)[0] == 0
    assert run_stage("prepare", tmp_path)[0] == 0
    frames = np.load(tmp_path / "shards/train/frames-00000.npy")  # (n, T, 3, H, W)
    assert np.array_equal(frames[where].transpose(1, 2, 0), frame)


# --- the course's dance folders ---------------------------------------------------------------

def _dance_layout(root: Path, train: int = 6, val: int = 4, test: int = 4) -> None:
    rng = np.random.default_rng(0)

    def sequence(n):
        return (rng.integers(0, 256, (n, 32, 64, 3), dtype=np.uint8),
                rng.integers(0, 256, (n, 32, 64, 3), dtype=np.uint8))

    lab4_folders.write_sequences(root, "train", [sequence(train)])
    lab4_folders.write_sequences(root, "val", [sequence(val)])
    lab4_folders.write_sequences(root, "test", [sequence(test), sequence(test)])


def _dance_params(root: Path) -> dict:
    return {"data": {"source": "lab4-folders", "dance": {"root": str(root), "train_vi_len": 3,
                                                          "val_vi_len": 4}},
            "train": {"n_past": 1, "n_future": 2}}


def _image(root, folder, name, size=(64, 32)):
    Image.new("RGB", size).save(root / folder / name)


DANCE_LAYOUT_ERRORS = {
    "count mismatch": (lambda r: (r / "train/train_label/5.png").unlink(),
                       "train/train_img: 6 images but 5 labels in"),
    "size": (lambda r: _image(r, "val/val_img", "2.png", (64, 64)),
             "val/val_img/2.png: 64 x 64 pixels (W x H), expected 64 x 32"),
    "name without a number": (lambda r: _image(r, "train/train_label", "cover.png"),
                              "train/train_label/cover.png: no number in the name"),
    "empty folder": (lambda r: [p.unlink() for p in (r / "val/val_label").iterdir()],
                     "val/val_label holds no images"),
    "missing folder": (lambda r: shutil.rmtree(r / "val/val_img"), "val/val_img is missing"),
    "test images without labels": (lambda r: shutil.copytree(r / "test/test_img/0",
                                                             r / "test/test_img/7"),
                                   "test/test_img/7 has no labels"),
    "fewer frames than a clip": (lambda r: [(r / f"train/train_{kind}/{n}.png").unlink()
                                            for kind in ("img", "label") for n in range(2, 6)],
                                 "train/train_img: 2 frames, fewer than one sequence of "
                                 "data.dance.train_vi_len = 3"),
    "not an image": (lambda r: (r / "test/test_label/1/2.png").write_text("no"),
                     "test/test_label/1/2.png: not an image"),
}


@pytest.mark.parametrize("damage", DANCE_LAYOUT_ERRORS)
def test_each_dance_layout_error_ends_in_one_line_naming_the_file(tmp_path, damage):
    root = tmp_path / "dance"
    _dance_layout(root)
    change, message = DANCE_LAYOUT_ERRORS[damage]
    change(root)
    write_params(tmp_path, _dance_params(root))
    result = run_stage("download", tmp_path)
    if result[0] == 0:  # what the listing cannot see, reading the images does
        result = run_stage("prepare", tmp_path)
    failed(result, f"dance/{message}")  # the path as the stage was given it
    assert not (tmp_path / "shards").exists()


# --- other settings and files ---------------------------------------------------------------

def test_seq_len_beyond_the_sequences_names_the_setting(tmp_path):
    write_params(tmp_path, {"data": {"source": "sample", "seq_len": 31}})
    assert run_stage("download", tmp_path, "--sample", str(REPO / "data/bair-sample.tar"))[0] == 0
    failed(run_stage("prepare", tmp_path), "data.seq_len is 31, but the sequence at byte offset 0",
           "has 30 frames: set data.seq_len to 30 or less")


def test_a_symlink_loop_in_the_course_folders_is_named(tmp_path):
    root = bair_files.png_layout(tmp_path / "png", _one_sequence_per_split())
    loop = root / "test/traj_0_to_255/0/loop.png"
    loop.symlink_to(loop)
    write_params(tmp_path, {"data": {"source": "bair-png", "bair_png": {"root": str(root)}}})
    failed(run_stage("download", tmp_path), f"{loop}: Too many levels of symbolic links: a "
           "symbolic link on the way points back into itself")


def test_a_report_sequence_beyond_the_saved_ones_is_named(project):
    _train_and_evaluate(project, 1)  # the test split has 2 sequences; eval.keep is 4
    write_params(project, {"train": {"epochs": 1}, "report": {"sequence": 3}})
    failed(run_stage("report", project), "report.sequence: 3, but the evaluate stage saved 2 "
           "test sequences", "choose 0 to 1")


def test_an_unwritable_file_is_named_with_what_to_do(project, monkeypatch):
    """Read-only folders (models/, metrics/, reports/): the system's error, with its file."""
    real_write = Path.write_text

    def read_only(path, *args, **kwargs):
        if "metrics" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only)
    failed(run_stage("train", project), "metrics/train.json.tmp: Permission denied: check the "
           "permissions of the file and its folder")


def test_an_empty_params_file_stops_every_stage(project):
    (project / "params.yaml").write_text("")
    failed(run_stage("check_params", project), "params.yaml: the file is empty")


def test_a_stage_that_starts_removes_the_numbers_of_its_own_run_and_below(tmp_path):
    """What `dvc exp show` reads of a queued run that is stopped or killed: not the numbers of
    the commit it started from."""
    for name in ("train.json", "eval.json"):
        (tmp_path / "metrics").mkdir(exist_ok=True)
        (tmp_path / "metrics" / name).write_text("{}")
    os.chdir(tmp_path)
    try:
        forget_results_below("evaluate")
        assert [p.name for p in (tmp_path / "metrics").iterdir()] == ["train.json"]
        forget_results_below("download")
        assert list((tmp_path / "metrics").iterdir()) == []
    finally:
        os.chdir(REPO)
