"""Opening a (compressed) input file as one binary stream, for the read stage and the csv header.

    with open_stream(path, "zstd") as f:      # None, "gzip" or "zstd"
        line = f.readline(limit)              # C-speed bounded readline on every kind
    except STREAM_ERRORS: ...                  # what a damaged stream raises

`read.py` (tasks and records) and `formats.py` (per-format parsing) both use it; neither imports
the other for it.
"""

from __future__ import annotations

import gzip
import io
import zlib
from typing import Optional

import zstandard

# What a damaged stream raises: EOFError (truncated gzip/zstd), OSError (gzip.BadGzipFile, bad
# CRC), zlib.error (corrupt deflate data), zstandard.ZstdError (corrupt frame).
STREAM_ERRORS = (EOFError, OSError, zlib.error, zstandard.ZstdError)
READ_BLOCK = 1 << 20


def open_stream(path: str, compression: Optional[str]) -> io.BufferedIOBase:
    """A binary stream of the (decompressed) file with a C-speed `readline(limit)`."""
    raw = open(path, "rb")
    if compression == "gzip":
        raw.close()
        return gzip.open(path, "rb")  # owns its file: closing it closes the descriptor
    if compression == "zstd":
        return io.BufferedReader(_ZstdRaw(raw), READ_BLOCK)
    return raw


class _ZstdRaw(io.RawIOBase):
    """zstd decompression that raises EOFError on a truncated frame (zstandard's own
    stream_reader silently returns what it has), and reads concatenated frames."""

    def __init__(self, f):
        self._zstd, self._f, self._buf, self._in_frame = zstandard, f, b"", False
        self._d = zstandard.ZstdDecompressor().decompressobj()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            chunk = self._f.read(READ_BLOCK)
            if not chunk:
                if self._in_frame:
                    raise EOFError("zstd stream ended in the middle of a frame")
                return 0
            out = []
            while chunk:
                out.append(self._d.decompress(chunk))
                self._in_frame = True
                if not self._d.eof:
                    break
                chunk, self._in_frame = self._d.unused_data, False
                self._d = self._zstd.ZstdDecompressor().decompressobj()
            self._buf = b"".join(out)
        n = min(len(b), len(self._buf))
        b[:n], self._buf = self._buf[:n], self._buf[n:]
        return n

    def close(self):
        self._f.close()
        super().close()
