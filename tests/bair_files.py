"""Genuine-format BAIR files for the tests, written independently of the library's writer:
TFRecord framing and the Example protobuf encoded by hand, straight from their specifications,
so the reader is checked against the formats and not against itself.

Also the course's PNG layout, and a local HTTP server that honours Range requests.
"""
from __future__ import annotations

import http.server
import io
import struct
import tarfile
import threading
from pathlib import Path

import crc32c

from cvae.data.png_folders import write_sequence


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(value: bytes) -> bytes:  # Feature.bytes_list = 1, BytesList.value = 1
    return _field(1, _field(1, value))


def _floats_feature(values) -> bytes:  # Feature.float_list = 2, FloatList.value = 1 (packed)
    return _field(2, _field(1, struct.pack(f"<{len(values)}f", *values)))


def example(frames, actions, positions) -> bytes:
    """tensorflow.Example: Example.features = 1 -> Features.feature = 1, map entries key 1 value 2."""
    features = {}
    for t in range(len(frames)):
        features[f"{t}/image_aux1/encoded"] = _bytes_feature(frames[t].tobytes())
        features[f"{t}/action"] = _floats_feature(actions[t].tolist())
        features[f"{t}/endeffector_pos"] = _floats_feature(positions[t].tolist())
    entries = b"".join(_field(1, _field(1, key.encode()) + _field(2, value))
                       for key, value in features.items())
    return _field(1, entries)


def masked_crc(data: bytes) -> bytes:
    crc = crc32c.crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord_file(records) -> bytes:
    out = bytearray()
    for data in records:
        length = struct.pack("<Q", len(data))
        out += length + masked_crc(length) + data + masked_crc(data)
    return bytes(out)


def bair_tar(path: Path, splits: dict, corrupt=None) -> Path:
    """The published tar's layout: test/ -> test, train/traj_256_to_<b> -> val, other train ->
    train, each file named after the sequences it holds. `corrupt(name, data) -> data` may damage
    a member's bytes."""
    members = {
        f"softmotion30_44k/train/traj_0_to_{len(splits['train']) - 1}.tfrecords": splits["train"],
        f"softmotion30_44k/train/traj_256_to_{255 + len(splits['val'])}.tfrecords": splits["val"],
        f"softmotion30_44k/test/traj_0_to_{len(splits['test']) - 1}.tfrecords": splits["test"],
    }
    with tarfile.open(path, "w") as tar:
        _add(tar, "softmotion30_44k/README", b"not a record file\n")
        for name, sequences in members.items():
            data = tfrecord_file(example(*s) for s in sequences)
            _add(tar, name, corrupt(name, data) if corrupt else data)
    return path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def png_layout(root: Path, splits: dict) -> Path:
    """The course's folders: <root>/{train,validate,test}/traj_0_to_255/<k>/{t}.png + two CSVs."""
    folders = {"train": "train", "val": "validate", "test": "test"}
    for split, sequences in splits.items():
        for k, (frames, actions, positions) in enumerate(sequences):
            write_sequence(Path(root) / folders[split] / "traj_0_to_255" / str(k),
                           frames, actions, positions)
    return Path(root)


class FileServer:
    """Serves one file's bytes on 127.0.0.1 with Range support; records the Range headers it
    sees, and can drop the connection after `cut_after` bytes of its next answer."""

    def __init__(self, data: bytes):
        self.data, self.ranges, self.cut_after = data, [], None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                requested = self.headers.get("Range")
                server.ranges.append(requested)
                start = int(requested.removeprefix("bytes=").rstrip("-")) if requested else 0
                body = server.data[start:]
                self.send_response(206 if requested else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/bair.tar"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
