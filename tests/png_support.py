"""A PNG reader in the standard library (zlib + struct), enough for Chromium's screenshots:
8-bit grey/RGB/RGBA, not interlaced."""

from __future__ import annotations

import struct
import zlib
from collections import Counter
from dataclasses import dataclass


@dataclass
class Image:
    width: int
    height: int
    channels: int
    rows: list[bytes]

    def pixel(self, x: int, y: int) -> bytes:
        c = self.channels
        return self.rows[y][x * c:(x + 1) * c][:3]

    def colours(self, step: int = 2) -> Counter[bytes]:
        """RGB colours of every `step`-th pixel of every `step`-th row."""
        counts: Counter[bytes] = Counter()
        c = self.channels
        for row in self.rows[::step]:
            for x in range(0, self.width * c, c * step):
                counts[row[x:x + 3]] += 1
        return counts


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> Image:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"bad CRC in chunk {kind!r}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError("no IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or interlace != 0 or colour not in (0, 2, 4, 6):
        raise ValueError(f"unsupported PNG: {header}")
    c = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw = zlib.decompress(b"".join(idat))
    stride = width * c
    # Up filter on a whole row at once: bytewise sums without carries, in one big integer
    low = int.from_bytes(b"\x7f" * stride, "big")
    high = int.from_bytes(b"\x80" * stride, "big")
    rows: list[bytes] = []
    prev = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], raw[start + 1:start + 1 + stride]
        if kind == 0:
            row = line
        elif kind == 2:
            a, b = int.from_bytes(line, "big"), int.from_bytes(prev, "big")
            row = (((a & low) + (b & low)) ^ ((a ^ b) & high)).to_bytes(stride, "big")
        else:
            out = bytearray(line)
            for i in range(stride):
                left = out[i - c] if i >= c else 0
                if kind == 1:
                    out[i] = (out[i] + left) & 0xFF
                elif kind == 3:
                    out[i] = (out[i] + ((left + prev[i]) >> 1)) & 0xFF
                elif kind == 4:
                    out[i] = (out[i] + _paeth(left, prev[i], prev[i - c] if i >= c else 0)) & 0xFF
                else:
                    raise ValueError(f"bad filter {kind} in row {y}")
            row = bytes(out)
        rows.append(row)
        prev = row
    return Image(width, height, c, rows)
