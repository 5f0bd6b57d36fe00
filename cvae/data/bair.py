"""The BAIR robot pushing layout, and reading its sequences out of a tar or a folder.

The published tar holds `softmotion30_44k/{train,test}/traj_<a>_to_<b>.tfrecords`. A file's name
states the sequences it holds, a to b: b - a + 1 of them (256 in every BAIR file). The course's
splits: everything in `test/` is the test split (BAIR: `traj_0_to_255`, 256 sequences), the train
folder's file from sequence 256 (BAIR: `traj_256_to_511`) is held out as validation, and the rest
of `train/` is training (~43k).

Nothing is lost without a word. The names give every file's count, so a damaged record, a record
after which the framing is lost, or a file that ends early is counted exactly: reading stops
there with the file and byte offset, or, with `skip_bad_records`, goes on and records what was
lost. A tar must end with tar's two zero blocks: Python's `tarfile` takes a damaged member header,
or an archive cut at a member boundary, for the end of the archive and says nothing.

The tar is read as a stream, one member after another, so the ~32 GB archive is never extracted.
A folder with the same tree (an extracted tar, or what `sim-push` writes) is read the same way.
"""
from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

from cvae.data.tfrecords import (CorruptRecord, TooFewFrames, parse_sequence, read_records,
                                 write_sequences)
from cvae.errors import DataError

ROOT = "softmotion30_44k"
PER_FILE = 256  # sequences per TFRecord file in BAIR
VAL_START = 256  # validation is the train file from sequence 256 (BAIR: traj_256_to_511)
NAME = re.compile(r"traj_(\d+)_to_(\d+)\.tfrecords")
SKIP_HINT = ("Get the data again, or set data.skip_bad_records: true to go on without what is "
             "lost (counted in shards/meta.json)")


class CorruptArchive(DataError):
    """The tar itself is damaged or cut short."""


class LostSequences(DataError):
    """Some of the sequences a file's name states cannot be read."""


@dataclass
class Loss:
    """What one file lost: sequences its name states that the shards will not hold, and why."""

    split: str
    sequences: int = 0
    bad_records: int = 0
    damage: list[str] = field(default_factory=list)


def _range(name: str) -> tuple[int, int] | None:
    match = NAME.fullmatch(name.rsplit("/", 1)[-1])
    return (int(match[1]), int(match[2])) if match else None


def split_of(name: str) -> str | None:
    """The split of a TFRecord file from its path in the BAIR tree; None for anything else."""
    name = name.removeprefix("./")
    if not name.endswith(".tfrecords"):
        return None
    if name.startswith(f"{ROOT}/train/"):
        named = _range(name)
        return "val" if named and named[0] == VAL_START else "train"
    if name.startswith(f"{ROOT}/test/"):
        return "test"
    return None


def sequences_named(name: str) -> int:
    """How many sequences a file holds, from its name `traj_<a>_to_<b>.tfrecords`: b - a + 1."""
    named = _range(name)
    if named is None or named[1] < named[0]:
        raise DataError(f"{name}: the name does not state its sequences: BAIR's files are "
                        "traj_<a>_to_<b>.tfrecords, holding sequences a to b")
    return named[1] - named[0] + 1


def files(path: Path) -> list[tuple[str, str]]:
    """(split, name) of every TFRecord file of a BAIR tar or folder, in reading order. Checks up
    front, in seconds, what a damaged tar or a file name would otherwise stop hours later."""
    path = Path(path)
    if path.is_dir():
        names = [f.relative_to(path).as_posix() for f in sorted(path.glob(f"{ROOT}/*/*.tfrecords"))]
    else:
        names = [m.name for m in check_tar(path) if m.isfile()]
    found = [(split, name) for name in names if (split := split_of(name))]
    for split, name in found:
        sequences_named(name)
    if missing := {"train", "val", "test"} - {split for split, _ in found}:
        raise DataError(f"{path} holds no {' or '.join(sorted(missing))} file: expected "
                        f"{ROOT}/test/*.tfrecords and {ROOT}/train/traj_{VAL_START}_to_<b> (val) "
                        "beside the other train/ files")
    return found


def check_tar(path: Path) -> list[tarfile.TarInfo]:
    """The members of an uncompressed tar, checked to end with tar's end-of-archive blocks."""
    members = []
    try:
        with tarfile.open(path, mode="r:") as tar:  # random access: reads headers, seeks over data
            for member in tar:
                members.append(member)
            end = tar.offset  # where tarfile stopped reading headers
    except tarfile.TarError as error:
        where = f"after {members[-1].name}" if members else "not a readable uncompressed tar"
        raise CorruptArchive(f"{path}: {where} ({error}): the archive is damaged or cut short. "
                             "Get it again") from error
    with open(path, "rb") as f:
        f.seek(end)
        tail = f.read(2 * tarfile.BLOCKSIZE)
    if tail != bytes(2 * tarfile.BLOCKSIZE):
        after = f"after {members[-1].name}" if members else "before any member"
        damage = ("the archive is cut short there, without tar's end-of-archive blocks"
                  if len(tail) < 2 * tarfile.BLOCKSIZE else
                  "unreadable tar header there: the rest of the archive cannot be read")
        raise CorruptArchive(f"{path}: byte offset {end} ({after}): {damage}. Get the tar again")
    return members


def tfrecord_files(path: Path) -> Iterator[tuple[str, str, BinaryIO]]:
    """Yield (split, name, stream) for each BAIR TFRecord file of a tar or a folder."""
    path = Path(path)
    listed = files(path)
    if path.is_dir():
        for split, name in listed:
            with open(path / name, "rb") as stream:
                yield split, f"{path}/{name}", stream
        return
    try:
        with tarfile.open(path, mode="r|") as tar:  # a stream: members in archive order
            for member in tar:
                split = split_of(member.name)
                if member.isfile() and split:
                    yield split, f"{path}:{member.name}", tar.extractfile(member)
    except tarfile.TarError as error:
        raise CorruptArchive(f"{path}: not a readable tar ({error})") from error


def read_sequences(path: Path, seq_len: int, skip_bad_records: bool = False,
                   losses: dict[str, Loss] | None = None):
    """Yield (split, (frames, actions, positions)) for every sequence under `path`.

    Every file must hold the sequences its name states. What cannot be read stops with the file
    and byte offset (LostSequences) unless `skip_bad_records`; then it is recorded, by file, in
    `losses`."""
    losses = {} if losses is None else losses
    for split, name, stream in tfrecord_files(path):
        loss = Loss(split)
        try:
            for sequence in _read_file(stream, name, seq_len, skip_bad_records, loss):
                yield split, sequence
        except tarfile.TarError as error:  # the archive ends inside this member
            raise CorruptArchive(f"{name}: the archive is cut short ({error})") from error
        if loss.sequences:
            losses[name] = loss


def _read_file(stream: BinaryIO, name: str, seq_len: int, skip: bool, loss: Loss):
    expected, read, framing_lost = sequences_named(name), 0, False
    for offset, data in read_records(stream, name):
        read += 1
        if read > expected:
            raise DataError(f"{name}: holds more than the {expected} sequences its name states "
                            f"(from byte offset {offset}): not a BAIR file")
        try:
            sequence = _parse(data, name, offset, seq_len)
        except CorruptRecord as error:
            if not skip:
                raise LostSequences(f"{error}. {SKIP_HINT}") from error
            loss.bad_records += 1
            loss.damage.append(str(error).removeprefix(f"{name}: "))
            framing_lost = error.framing_lost  # then it was the last record read
            continue
        yield sequence
    if read < expected and not framing_lost:
        short = f"ends after {read} of the {expected} records its name states"
        if not skip:
            raise LostSequences(f"{name}: {short}: the file is cut short. {SKIP_HINT}")
        loss.damage.append(short)
    loss.sequences = expected - (read - loss.bad_records)


def _parse(data: bytes | CorruptRecord, name: str, offset: int, seq_len: int):
    if isinstance(data, CorruptRecord):
        raise data
    try:
        return parse_sequence(data, seq_len)
    except TooFewFrames as error:
        raise TooFewFrames(f"the sequence at byte offset {offset} of {name}", error.frames,
                           seq_len) from None
    except (KeyError, ValueError) as error:
        raise CorruptRecord(name, offset, str(error)) from error


def write_tree(root: Path, split: str, file_index: int, sequences) -> Path:
    """Write one TFRecord file of `split` where BAIR would put it, named after the sequences it
    holds: file k of a split starts at sequence 256 k, and train's files skip validation's slot
    (256), so the course's split rule recovers the same three splits."""
    sequences = list(sequences)
    block = 1 if split == "val" else file_index + (split == "train" and file_index >= 1)
    start = block * PER_FILE
    folder = "test" if split == "test" else "train"
    path = Path(root) / ROOT / folder / f"traj_{start}_to_{start + len(sequences) - 1}.tfrecords"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sequences(path, sequences)
    return path
