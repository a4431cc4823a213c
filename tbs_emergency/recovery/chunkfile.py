"""The bytes of one MySQL chunk object (row format `tsv-lz4/1`).

The rows are LOAD DATA lines (tab-separated, backslash escapes, `\\N` for NULL, binary as hex),
each ending in a newline, compressed as one LZ4 frame with a content checksum: decoding fails
on any change that slipped past the object's sha256 (or on a bug in between).
"""

from __future__ import annotations

import lz4.frame


class ChunkFormatError(ValueError):
    pass


def encode(lines: bytes) -> bytes:
    return lz4.frame.compress(lines, content_checksum=True, store_size=True)


def decode(blob: bytes) -> bytes:
    try:
        return lz4.frame.decompress(blob)
    except RuntimeError as exc:  # lz4 reports corrupt frames and checksum errors this way
        raise ChunkFormatError(f"not an intact LZ4 frame: {exc}") from None


def count_rows(lines: bytes) -> int:
    """Rows in decoded chunk data (every row ends with a newline; escapes keep them single)."""
    if lines and not lines.endswith(b"\n"):
        raise ChunkFormatError("the last row is not terminated")
    return lines.count(b"\n")
