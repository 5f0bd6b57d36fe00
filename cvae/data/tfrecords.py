"""BAIR sequences as TFRecords, read and written without TensorFlow.

A TFRecord file is a run of records, each framed as
    uint64 length | uint32 masked CRC32C of the length | data | uint32 masked CRC32C of the data
and each BAIR record's data is a `tensorflow.Example` protobuf with, for t = 0..29,
    <t>/image_aux1/encoded  bytes: the raw 64x64x3 uint8 frame (not PNG, despite the name)
    <t>/action              4 floats: end-effector delta x, y, z and the gripper command
    <t>/endeffector_pos     3 floats

Libraries: `protobuf` parses and writes the Example, with the schema (`example_pb2`) that the
`tfrecord` package ships; `crc32c` computes the checksum. The framing (a dozen lines each way) is
ours: tfrecord's reader skips both CRC checks, a corrupt record has to be reported with its byte
offset, and its writer serialises the feature map in hash order, so the same sequences would not
give the same bytes twice.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import crc32c
import numpy as np
from tfrecord import example_pb2

from cvae.errors import DataError

FRAME_KEY, ACTION_KEY, POSITION_KEY = "{}/image_aux1/encoded", "{}/action", "{}/endeffector_pos"
HEADER = 12  # length (8 bytes) + its CRC (4 bytes)


class TooFewFrames(DataError):
    """A well-formed sequence shorter than data.seq_len: a setting to change, not damage."""

    def __init__(self, source: str, frames: int, seq_len: int):
        self.frames = frames
        super().__init__(f"data.seq_len is {seq_len}, but {source or 'a sequence'} has "
                         f"{frames} frames: set data.seq_len to {frames} or less (BAIR's "
                         "sequences have 30)")


class CorruptRecord(DataError):
    """A record that fails its CRC, is cut short, or does not hold a BAIR sequence."""

    def __init__(self, source: str, offset: int, reason: str, framing_lost: bool = False):
        lost = "; the records after it cannot be found" if framing_lost else ""
        super().__init__(f"{source}: corrupt record at byte offset {offset}: {reason}{lost}")
        self.framing_lost = framing_lost  # the next record's start is unknown: the file ends here


def masked_crc(data: bytes) -> bytes:
    """TFRecord's checksum: CRC32C rotated right by 15 bits plus a constant, little-endian."""
    crc = crc32c.crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def read_records(stream: BinaryIO, source: str) -> Iterator[tuple[int, bytes | CorruptRecord]]:
    """Yield (byte offset, record data) for each record of `stream`, checking both CRCs.

    A bad record is yielded as (offset, CorruptRecord) rather than raised, so the caller decides
    whether to stop or skip it. When the length itself is unreadable the framing is lost and the
    file ends there; a bad data CRC leaves the framing intact and reading goes on.
    """
    offset = 0
    while header := stream.read(HEADER):
        if len(header) < HEADER:
            yield offset, CorruptRecord(source, offset, "truncated record header", framing_lost=True)
            return
        length_bytes = header[:8]
        if masked_crc(length_bytes) != header[8:]:
            yield offset, CorruptRecord(source, offset, "length CRC mismatch", framing_lost=True)
            return
        (length,) = struct.unpack("<Q", length_bytes)
        body = stream.read(length + 4)
        if len(body) < length + 4:
            reason = f"truncated record ({len(body)} of {length + 4} bytes)"
            yield offset, CorruptRecord(source, offset, reason, framing_lost=True)
            return
        data = body[:length]
        yield offset, (data if masked_crc(data) == body[length:]
                       else CorruptRecord(source, offset, "data CRC mismatch"))
        offset += HEADER + length + 4


def parse_sequence(data: bytes, seq_len: int, image_size: int = 64):
    """One Example -> frames (T, H, W, 3) uint8, actions (T, 4), positions (T, 3) float32.
    Raises TooFewFrames if the sequence has frames 0..k-1 only, k < seq_len, and
    KeyError/ValueError naming the key that is missing, of the wrong size or not finite."""
    features = example_pb2.Example.FromString(data).features.feature
    frame_bytes = image_size * image_size * 3
    if FRAME_KEY.format(seq_len - 1) not in features and FRAME_KEY.format(0) in features:
        present = sum(FRAME_KEY.format(t) in features for t in range(seq_len))
        if all(FRAME_KEY.format(t) in features for t in range(present)):  # 0..present-1
            raise TooFewFrames("", present, seq_len)

    def values(key: str, kind: str, size: int):
        if key not in features:
            raise KeyError(f"no key {key!r}")
        value = getattr(features[key], kind).value
        if len(value) != size:
            raise ValueError(f"{key!r} has {len(value)} values, expected {size}")
        return value

    frames = np.empty((seq_len, image_size, image_size, 3), np.uint8)
    actions = np.empty((seq_len, 4), np.float32)
    positions = np.empty((seq_len, 3), np.float32)
    for t in range(seq_len):
        (frame,) = values(FRAME_KEY.format(t), "bytes_list", 1)
        if len(frame) != frame_bytes:
            raise ValueError(f"{FRAME_KEY.format(t)!r} has {len(frame)} bytes, expected {frame_bytes}")
        frames[t] = np.frombuffer(frame, np.uint8).reshape(image_size, image_size, 3)
        for key, out in ((ACTION_KEY, actions), (POSITION_KEY, positions)):
            out[t] = values(key.format(t), "float_list", out.shape[1])
            if not np.isfinite(out[t]).all():  # a NaN would make every loss NaN
                i = int(np.argmin(np.isfinite(out[t])))
                raise ValueError(f"{key.format(t)!r} value {i + 1} of {out.shape[1]} is "
                                 f"{out[t, i]}: not finite")
    return frames, actions, positions


def write_sequences(path: Path, sequences) -> None:
    """Write (frames, actions, positions) sequences as one BAIR-format TFRecord file."""
    with open(path, "wb") as f:
        for sequence in sequences:
            # Deterministic: map keys sorted, so the same sequences give the same bytes.
            data = _example(*sequence).SerializeToString(deterministic=True)
            length = struct.pack("<Q", len(data))
            f.write(length + masked_crc(length) + data + masked_crc(data))


def _example(frames, actions, positions) -> example_pb2.Example:
    example = example_pb2.Example()
    feature = example.features.feature
    for t in range(len(frames)):
        feature[FRAME_KEY.format(t)].bytes_list.value.append(frames[t].tobytes())
        feature[ACTION_KEY.format(t)].float_list.value.extend(actions[t].tolist())
        feature[POSITION_KEY.format(t)].float_list.value.extend(positions[t].tolist())
    return example
