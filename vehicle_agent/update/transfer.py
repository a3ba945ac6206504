"""Model updates, the transfer: chunks reassembled in the staging folder, resumable, capped.

Each chunk is one file, `chunks/<index>`, written beside itself, fsynced and renamed: a chunk
file exists whole or not at all, so after a disconnect or a restart `Transfer` knows what it
has and takes only the rest. Index and length are checked against the signed manifest (index
below `chunks`, length `chunk_size` except the last), so the transfer can never hold more than
the manifest's `size`; a chunk that fails them ends the transfer (the updater refuses the update
with `bad_chunk`). Blocking (disk): call from a worker thread.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from vehicle_agent.update.manifest import UpdateManifest, UpdateRefusedError

CHUNKS = "chunks"
ASSEMBLED = "model.onnx.assembled"


class ChunkError(ValueError):
    """A chunk that does not fit the manifest (index or length): a protocol violation."""


class Transfer:
    """The chunks of one update received so far, in `<staging>/chunks/`."""

    def __init__(self, staging: Path, manifest: UpdateManifest) -> None:
        self.manifest = manifest
        self.directory = staging / CHUNKS
        self.directory.mkdir(parents=True, exist_ok=True)
        self.have: set[int] = set()
        for path in self.directory.iterdir():
            index = int(path.name) if path.name.isdigit() else -1
            if 0 <= index < manifest.chunks and path.stat().st_size == self.expected(index):
                self.have.add(index)
            else:
                path.unlink(missing_ok=True)  # half-written, or not ours

    def expected(self, index: int) -> int:
        """Length of chunk `index`."""
        m = self.manifest
        if index == m.chunks - 1:
            return m.size - index * m.chunk_size
        return m.chunk_size

    @property
    def received_bytes(self) -> int:
        return sum(self.expected(i) for i in self.have)

    @property
    def complete(self) -> bool:
        return len(self.have) == self.manifest.chunks

    def add(self, index: int, data: bytes) -> bool:
        """Store chunk `index`; False when it was already here. `ChunkError` when it does not fit."""
        if not 0 <= index < self.manifest.chunks:
            raise ChunkError(f"chunk {index} out of range 0–{self.manifest.chunks - 1}")
        if len(data) != self.expected(index):
            raise ChunkError(f"chunk {index} is {len(data)} bytes, expected {self.expected(index)}")
        if index in self.have:
            return False
        path = self.directory / str(index)
        tmp = self.directory / f"{index}.tmp-{os.getpid()}"
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        self.have.add(index)
        return True

    def assemble(self) -> Path:
        """Concatenate the chunks into one file beside them and check size and sha256. On a
        mismatch the chunks are deleted (which one was wrong is unknowable) and
        `UpdateRefusedError('hash_mismatch')` raised."""
        if not self.complete:
            missing = self.manifest.chunks - len(self.have)
            raise UpdateRefusedError("hash_mismatch", f"{missing} chunks still missing")
        out = self.directory.parent / ASSEMBLED
        digest = hashlib.sha256()
        size = 0
        with out.open("wb") as f:
            for index in range(self.manifest.chunks):
                data = (self.directory / str(index)).read_bytes()
                digest.update(data)
                size += len(data)
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        actual = digest.hexdigest()
        if size != self.manifest.size or actual != self.manifest.sha256:
            out.unlink(missing_ok=True)
            for path in self.directory.iterdir():
                path.unlink(missing_ok=True)
            self.have.clear()
            raise UpdateRefusedError(
                "hash_mismatch",
                f"{self.manifest.label}: received {size} bytes with sha256 {actual[:12]}…, the "
                f"manifest says {self.manifest.size} bytes, {self.manifest.sha256[:12]}…",
            )
        return out


def split(data: bytes, chunk_size: int) -> list[bytes]:
    """The chunks of a file, as the cloud sends them."""
    return [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
