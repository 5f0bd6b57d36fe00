"""The BAIR robot pushing layout, and reading its sequences out of a tar or a folder.

The published tar holds `softmotion30_44k/{train,test}/traj_<a>_to_<b>.tfrecords`, 256 sequences
per file. The course's splits: everything in `test/` is the test split, the train folder's
`traj_256_to_511.tfrecords` is held out as validation, and the rest of `train/` is training.

The tar is read as a stream, one member after another, so the ~32 GB archive is never extracted.
A folder with the same tree (an extracted tar, or what `sim-push` writes) is read the same way.
"""
from __future__ import annotations

import tarfile
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Iterator

from cvae.data.tfrecords import CorruptRecord, parse_sequence, read_records, write_sequences
from cvae.errors import DataError

ROOT = "softmotion30_44k"
VAL_FILE = f"{ROOT}/train/traj_256_to_511.tfrecords"
PER_FILE = 256  # sequences per TFRecord file in BAIR


def split_of(name: str) -> str | None:
    """The split of a TFRecord file from its path in the BAIR tree; None for anything else."""
    name = name.removeprefix("./")
    if not name.endswith(".tfrecords"):
        return None
    if name == VAL_FILE:
        return "val"
    if name.startswith(f"{ROOT}/train/"):
        return "train"
    if name.startswith(f"{ROOT}/test/"):
        return "test"
    return None


def tfrecord_files(path: Path) -> Iterator[tuple[str, str, BinaryIO]]:
    """Yield (split, name, stream) for each BAIR TFRecord file of a tar or a folder."""
    path = Path(path)
    if path.is_dir():
        for file in sorted(path.glob(f"{ROOT}/*/*.tfrecords")):
            name = file.relative_to(path).as_posix()
            with open(file, "rb") as stream:
                yield split_of(name), f"{path}/{name}", stream
        return
    try:
        with tarfile.open(path, mode="r|*") as tar:  # a stream: members in archive order
            for member in tar:
                split = split_of(member.name)
                if member.isfile() and split:
                    yield split, f"{path}:{member.name}", tar.extractfile(member)
    except tarfile.TarError as error:
        raise CorruptArchive(f"{path}: not a readable tar ({error})") from error


class CorruptArchive(DataError):
    """The tar itself is damaged or cut short."""


def read_sequences(path: Path, seq_len: int, skip_bad_records: bool = False,
                   bad: Counter | None = None):
    """Yield (split, (frames, actions, positions)) for every sequence under `path`.

    A bad record raises CorruptRecord (file and byte offset) unless `skip_bad_records`, in which
    case it is counted in `bad[split]` and skipped.
    """
    bad = Counter() if bad is None else bad
    found = False
    for split, name, stream in tfrecord_files(path):
        found = True
        try:
            for offset, data in read_records(stream, name):
                try:
                    sequence = _parse(data, name, offset, seq_len)
                except CorruptRecord:
                    if not skip_bad_records:
                        raise
                    bad[split] += 1
                    continue
                yield split, sequence
        except tarfile.TarError as error:  # the archive ends inside this member
            raise CorruptArchive(f"{name}: the archive is cut short ({error})") from error
    if not found:
        raise FileNotFoundError(f"{path} holds no {ROOT}/{{train,test}}/*.tfrecords")


def _parse(data: bytes | CorruptRecord, name: str, offset: int, seq_len: int):
    if isinstance(data, CorruptRecord):
        raise data
    try:
        return parse_sequence(data, seq_len)
    except (KeyError, ValueError) as error:
        raise CorruptRecord(name, offset, str(error)) from error


def write_tree(root: Path, split: str, file_index: int, sequences) -> Path:
    """Write one TFRecord file of `split` where BAIR would put it: file k of train skips the
    validation file's slot, so the course's split rule recovers the same three splits."""
    if split == "val":
        path = Path(root) / VAL_FILE
    else:
        block = file_index + (split == "train" and file_index >= 1)  # block 1 is validation's
        folder = "test" if split == "test" else "train"
        path = Path(root) / ROOT / folder / f"traj_{block * PER_FILE}_to_{block * PER_FILE + PER_FILE - 1}.tfrecords"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sequences(path, sequences)
    return path

