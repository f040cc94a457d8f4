"""The decoded-but-not-transformed content of a JPEG file: quantized DCT blocks and tables."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Component:
    """One colour component of a JPEG file.

    ``blocks``: int16 ``[blocks_h, blocks_w, 8, 8]``, quantized coefficients in natural
    (row-major) order: ``blocks[i, j, v, u]`` is vertical frequency ``v``, horizontal ``u``.
    The grid is the component's own (``ceil(comp_height / 8) x ceil(comp_width / 8)``),
    not padded to the MCU.
    ``qtable``: uint16 ``[8, 8]``, natural order, the table the file coded this component with.
    """

    id: int
    h_samp: int
    v_samp: int
    qtable: np.ndarray
    blocks: np.ndarray
    qtable_index: int = 0

    @property
    def blocks_h(self) -> int:
        return self.blocks.shape[0]

    @property
    def blocks_w(self) -> int:
        return self.blocks.shape[1]


@dataclass
class JpegCoefficients:
    """Everything a decoder needs: the blocks and tables of every component, and the frame.

    ``color_space`` is ``"gray"`` (1 component), ``"ycbcr"`` or ``"rgb"`` (3 components, the
    latter when an Adobe marker or the component ids say the file is stored as RGB), ``"cmyk"``
    or ``"ycck"`` (4 components: an Adobe marker with a transform other than 0 says YCCK).
    ``metadata``: a JPEG header made of the file's segments before its first scan that say
    something beyond the pixels (APPn: JFIF, EXIF, ICC profile, XMP...; COM; the frame; the
    first SOS), from which ``decode`` gives its PIL images the ``info`` Pillow gives them.
    """

    width: int
    height: int
    color_space: str
    components: list[Component]
    progressive: bool = False
    arithmetic: bool = False
    restart_interval: int = 0
    source: str = "<bytes>"
    warnings: int = 0  # corrupt-data warnings tolerated with allow_truncated=True
    metadata: bytes = field(default=b"", repr=False)
    extra: dict = field(default_factory=dict)

    @property
    def max_h_samp(self) -> int:
        return max(c.h_samp for c in self.components)

    @property
    def max_v_samp(self) -> int:
        return max(c.v_samp for c in self.components)

    def component_size(self, index: int) -> tuple[int, int]:
        """(height, width) of component ``index`` in samples, as libjpeg computes it."""
        c = self.components[index]
        h = -(-self.height * c.v_samp // self.max_v_samp)
        w = -(-self.width * c.h_samp // self.max_h_samp)
        return h, w

    @property
    def sampling(self) -> str:
        """Chroma subsampling in the usual J:a:b notation (``"4:2:0"``, ``"gray"``...)."""
        if len(self.components) == 1:
            return "gray"
        factors = tuple((c.h_samp, c.v_samp) for c in self.components)
        names = {
            ((1, 1), (1, 1), (1, 1)): "4:4:4",
            ((2, 1), (1, 1), (1, 1)): "4:2:2",
            ((2, 2), (1, 1), (1, 1)): "4:2:0",
            ((1, 2), (1, 1), (1, 1)): "4:4:0",
            ((4, 1), (1, 1), (1, 1)): "4:1:1",
        }
        return names.get(factors, ",".join(f"{h}x{v}" for h, v in factors))  # e.g. "2x2,1x1,1x1,1x1"

    @property
    def qtables(self) -> np.ndarray:
        """uint16 ``[n_components, 8, 8]``: the table of each component."""
        return np.stack([c.qtable for c in self.components])

    def __repr__(self) -> str:
        comps = ", ".join(f"{c.id}:{c.h_samp}x{c.v_samp} {c.blocks_h}x{c.blocks_w}" for c in self.components)
        return (f"JpegCoefficients({self.source!r}, {self.width}x{self.height}, {self.color_space}, "
                f"{self.sampling}, progressive={self.progressive}, components=[{comps}])")
