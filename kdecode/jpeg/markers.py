"""A small JPEG marker parser: everything kdecode must know *before* it lets a decoder allocate.

It walks the marker segments (and, for the whole file, skims the entropy-coded data of every
scan for markers), so that unsupported files, absurd dimensions and truncated files are rejected
cheaply and with a clear reason, whatever the backend. It never decodes entropy-coded data.
Everything that sizes the decoder's arrays (the frame header, the tables, the first scan header)
comes before the first scan's data: ``whole_file=False`` stops there, for a reader that checks
the rest itself (the native reader: libjpeg reports truncation, restart markers out of order and
the scan count; the whole-file walk then runs only to explain a file it flagged).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import CorruptJpegError, ImageTooLargeError, NotAJpegError, UnsupportedJpegError

# Zigzag scan order: ZIGZAG[k] is the natural (row-major) index of the k-th coefficient.
ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
])
# _UNZIGZAG[n] is the zigzag position of natural index n: natural = zigzag_ordered[_UNZIGZAG].
_UNZIGZAG = np.argsort(ZIGZAG)

_SOF_KINDS = {
    0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive", 0xC3: "lossless",
    0xC5: "differential sequential", 0xC6: "differential progressive", 0xC7: "differential lossless",
    0xC9: "extended arithmetic", 0xCA: "progressive arithmetic", 0xCB: "lossless arithmetic",
    0xCD: "differential sequential arithmetic", 0xCE: "differential progressive arithmetic",
    0xCF: "differential lossless arithmetic",
}
_SUPPORTED_SOF = {0xC0, 0xC1, 0xC2, 0xC9, 0xCA}
# A marker inside entropy-coded data: 0xFF then neither 0x00 (stuffing) nor 0xFF (fill: the match
# is the last 0xFF of a fill run). No repetition in the pattern: `\xff+` made re backtrack at
# every stuffed byte, 25x slower on a 2 MB scan.
_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xff]")


@dataclass
class FrameComponent:
    id: int
    h_samp: int
    v_samp: int
    qtable_index: int


@dataclass
class JpegHeader:
    """What the markers say about a JPEG file (no entropy decoding)."""

    width: int = 0
    height: int = 0
    precision: int = 8
    sof: int = 0
    components: list[FrameComponent] = field(default_factory=list)
    # index -> (8 or 16-bit, zigzag-ordered bytes) of every table defined so far (see qtables)
    raw_qtables: dict[int, tuple[int, bytes]] = field(default_factory=dict, repr=False)
    restart_interval: int = 0
    adobe_transform: int | None = None
    jfif: bool = False
    scans: int = 0
    truncated: bool = False
    whole_file: bool = True  # False: parsed up to the first scan's data only
    # (start, end) of the APPn, COM and SOF segments and of the first SOS: the markers Pillow's
    # header parser takes its ``Image.info`` from (see ``metadata``)
    metadata_spans: list[tuple[int, int]] = field(default_factory=list, repr=False)

    # the block grids, computed once (see block_grids)
    _grids: list[tuple[int, int]] | None = field(default=None, repr=False)

    @property
    def qtables(self) -> dict[int, np.ndarray]:
        """Table index -> uint16 [8, 8], natural order (the last definition of each)."""
        return {tq: self.qtable(tq) for tq in self.raw_qtables}

    def qtable(self, index: int) -> np.ndarray:
        """Table ``index`` (defined) as uint16 [8, 8], natural order."""
        pq, raw = self.raw_qtables[index]
        return np.frombuffer(raw, dtype=">u2" if pq else np.uint8)[_UNZIGZAG].astype(np.uint16).reshape(8, 8)

    def metadata(self, data: bytes) -> bytes:
        """A JPEG header holding only the segments of ``metadata_spans`` (SOI, APPn, COM, SOF,
        SOS): what Pillow reads ``Image.info`` from, small enough to be a cache key."""
        return b"\xff\xd8" + b"".join(data[a:b] for a, b in self.metadata_spans)

    @property
    def progressive(self) -> bool:
        return self.sof in (0xC2, 0xCA)

    @property
    def arithmetic(self) -> bool:
        return self.sof >= 0xC8

    def block_grids(self) -> list[tuple[int, int]]:
        """(blocks_h, blocks_w) of every component: its own grid, not padded to the MCU
        (libjpeg's height_in_blocks / width_in_blocks)."""
        if self._grids is None:  # the frame header is parsed once: so is its geometry
            comps = self.components
            width8 = 8 * max([c.h_samp for c in comps])
            height8 = 8 * max([c.v_samp for c in comps])
            self._grids = [(-(-self.height * c.v_samp // height8), -(-self.width * c.h_samp // width8))
                           for c in comps]
        return self._grids

    @property
    def color_space(self) -> str:
        """libjpeg's choice of colour space (jdapimin.c default_decompress_parms)."""
        n = len(self.components)
        if n == 1:
            return "gray"
        if n == 3:
            if self.jfif:
                return "ycbcr"
            if self.adobe_transform is not None:
                return "rgb" if self.adobe_transform == 0 else "ycbcr"
            ids = tuple(c.id for c in self.components)
            return "rgb" if ids == (82, 71, 66) else "ycbcr"
        if n == 4:  # an Adobe transform other than 0 is taken as YCCK, as libjpeg does
            return "cmyk" if self.adobe_transform in (None, 0) else "ycck"
        return f"{n} components"


def parse_header(data: bytes, source: str, max_pixels: int | None, allow_truncated: bool = False,
                 whole_file: bool = True) -> JpegHeader:
    """Parse and check the markers of ``data``.

    Raises NotAJpegError, UnsupportedJpegError, ImageTooLargeError (before anything large is
    allocated) or CorruptJpegError (truncated file, broken segment, restart markers out of order).
    With ``whole_file=False`` it stops at the first scan's entropy-coded data (``scans`` is 1):
    what comes after is left to the reader.
    """
    if len(data) < 4 or data[0] != 0xFF or data[1] != 0xD8:
        if not data:
            kind = "empty input"
        elif data[:2] == b"\xff\xd8":
            kind = f"{len(data)} bytes: too short to hold anything after the SOI marker"
        else:
            kind = "no JPEG SOI marker at the start"
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            kind = "a PNG file, not a JPEG"
        raise NotAJpegError(source, f"not a JPEG file ({kind})")
    h = JpegHeader()
    n = len(data)
    pos = 2
    while True:
        # Find the next marker; fill bytes (0xFF) may precede it.
        start = pos
        if pos >= n:
            return _truncated(h, source, allow_truncated, "file ends before the EOI marker")
        if data[pos] != 0xFF:
            raise CorruptJpegError(source, f"expected a marker at byte {pos}, found 0x{data[pos]:02X}")
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            return _truncated(h, source, allow_truncated, "file ends inside a marker")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # stray RST / TEM: no payload
            continue
        if pos + 2 > n:
            return _truncated(h, source, allow_truncated, "file ends inside a segment length")
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2:
            raise CorruptJpegError(source, f"marker 0x{marker:02X} has invalid length {length}")
        end = pos + length
        if end > n:
            return _truncated(h, source, allow_truncated, f"file ends inside marker 0x{marker:02X}")
        # The payload is data[body:end], sliced only where it is parsed: an EXIF or ICC segment
        # can be 64 KB, and copying it would cost more than parsing the rest of the header.
        body, pos = pos + 2, end
        if not h.scans and (0xE0 <= marker <= 0xEF or marker in (0xFE, 0xDA) or marker in _SOF_KINDS):
            h.metadata_spans.append((start, end))
        if marker in _SOF_KINDS:
            _parse_sof(h, marker, data[body:end], source, max_pixels)
        elif marker == 0xDB:
            _parse_dqt(h, data[body:end], source)
        elif marker == 0xDD:
            if end - body < 2:
                raise CorruptJpegError(source, "DRI segment too short")
            h.restart_interval = (data[body] << 8) | data[body + 1]
        # The colour space comes from the markers before the first scan, as libjpeg decides it.
        elif marker == 0xE0 and data[body:min(body + 5, end)] == b"JFIF\x00" and not h.scans:
            h.jfif = True
        elif marker == 0xEE and data[body:min(body + 5, end)] == b"Adobe" and end - body >= 12 and not h.scans:
            h.adobe_transform = data[body + 11]
        elif marker == 0xDA:
            payload = data[body:end]
            if not h.components:
                raise CorruptJpegError(source, "scan (SOS) before the frame header (SOF)")
            if not whole_file:
                _check_sos(h, payload, source)
                h.whole_file = False
                return h
            pos = _skip_scan(h, data, pos, payload, source)
            if pos < 0:
                return _truncated(h, source, allow_truncated, "file ends inside the entropy-coded data")
    if not h.components:
        raise CorruptJpegError(source, "no frame header (SOF marker)")
    if h.scans == 0:
        raise CorruptJpegError(source, "no scan (SOS marker)")
    return h


def _truncated(h: JpegHeader, source: str, allow: bool, reason: str) -> JpegHeader:
    if allow and h.components and h.scans > 0:
        h.truncated = True
        return h
    raise CorruptJpegError(source, f"truncated JPEG: {reason}")


def _parse_sof(h: JpegHeader, marker: int, p: bytes, source: str, max_pixels: int | None) -> None:
    if h.components:
        raise CorruptJpegError(source, "more than one frame header (SOF)")
    kind = _SOF_KINDS[marker]
    if marker not in _SUPPORTED_SOF:
        raise UnsupportedJpegError(source, f"{kind} JPEG (SOF{marker - 0xC0}) is not supported")
    if len(p) < 6:
        raise CorruptJpegError(source, "SOF segment too short")
    h.sof = marker
    h.precision = p[0]
    h.height = (p[1] << 8) | p[2]
    h.width = (p[3] << 8) | p[4]
    ncomp = p[5]
    if h.precision != 8:
        raise UnsupportedJpegError(source, f"{h.precision}-bit samples are not supported (only 8-bit)")
    if h.width == 0 or h.height == 0:
        raise UnsupportedJpegError(source, f"image size {h.width}x{h.height} (zero height needs a DNL marker)")
    if max_pixels is not None and h.width * h.height > max_pixels:
        raise ImageTooLargeError(
            source, f"image is {h.width}x{h.height} = {h.width * h.height} pixels, over the limit of "
            f"{max_pixels} (kdecode.settings.max_image_pixels)")
    if ncomp not in (1, 3, 4) or len(p) < 6 + 3 * ncomp:
        raise UnsupportedJpegError(source, f"{ncomp} components are not supported")
    for i in range(ncomp):
        cid, samp, tq = p[6 + 3 * i], p[7 + 3 * i], p[8 + 3 * i]
        hs, vs = samp >> 4, samp & 15
        if not (1 <= hs <= 4 and 1 <= vs <= 4) or tq > 3:
            raise CorruptJpegError(source, f"component {cid} has invalid sampling {hs}x{vs} or table {tq}")
        h.components.append(FrameComponent(cid, hs, vs, tq))
    hmax = max([c.h_samp for c in h.components])
    vmax = max([c.v_samp for c in h.components])
    for c in h.components:
        if hmax % c.h_samp or vmax % c.v_samp:
            raise UnsupportedJpegError(source, f"fractional sampling ({c.h_samp}x{c.v_samp} of {hmax}x{vmax})")


def _parse_dqt(h: JpegHeader, p: bytes, source: str) -> None:
    i = 0
    while i < len(p):
        pq, tq = p[i] >> 4, p[i] & 15
        size = 128 if pq else 64
        if tq > 3 or pq > 1 or i + 1 + size > len(p):
            raise CorruptJpegError(source, "invalid DQT segment")
        raw = p[i + 1:i + 1 + size]
        if (not np.frombuffer(raw, ">u2").all()) if pq else 0 in raw:
            raise CorruptJpegError(source, f"quantization table {tq} has a zero entry")
        h.raw_qtables[tq] = (pq, raw)
        i += 1 + size


def _check_sos(h: JpegHeader, p: bytes, source: str) -> None:
    """Check an SOS header (and, at the first scan, that every component's table is defined)."""
    if len(p) < 1 or len(p) < 1 + 2 * p[0] + 3 or p[0] == 0:
        raise CorruptJpegError(source, "invalid SOS segment")
    ids = [c.id for c in h.components]
    for k in range(p[0]):
        if p[1 + 2 * k] not in ids:
            raise CorruptJpegError(source, f"scan references unknown component {p[1 + 2 * k]}")
    if h.scans == 0:
        for c in h.components:
            if c.qtable_index not in h.raw_qtables:
                raise CorruptJpegError(source, f"component {c.id} uses undefined quantization table {c.qtable_index}")
    h.scans += 1


def _skip_scan(h: JpegHeader, data: bytes, pos: int, p: bytes, source: str) -> int:
    """Check the SOS header and skim its entropy-coded data; return the position of the next
    marker, or -1 if the data ends first. Restart markers must come in order RST0..RST7."""
    _check_sos(h, p, source)
    expected_rst = 0
    while True:
        m = _MARKER_IN_SCAN.search(data, pos)
        if m is None:
            return -1
        code = data[m.start() + 1]
        if 0xD0 <= code <= 0xD7:
            if code - 0xD0 != expected_rst:
                raise CorruptJpegError(source, f"restart marker RST{code - 0xD0} out of order (expected RST{expected_rst})")
            expected_rst = (expected_rst + 1) & 7
            pos = m.end()
            continue
        return m.start()
