"""Occlusion: mid-grey rectangles (docs/design.md, Transforms).

Rectangles filled with mid-grey (OCCLUSION_FILL) at the drawn fractions of the frame,
the same for every frame of the copy. Rectangles never overlap, so together they cover
the drawn area.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import Box, Fill, TransformDef, uniform

if TYPE_CHECKING:
    from augment_spec.model import AugmentationSpec

    from .params import CopyParams

OCCLUSION_FILL = 128


def occlusion_pixels(
    rects: Sequence[tuple[float, float, float, float]], height: int, width: int
) -> list[Box]:
    """(y0, y1, x0, x1) pixel bounds of each rectangle; each covers at least one pixel."""

    def span(start: float, size: float, n: int) -> tuple[int, int]:
        lo = min(max(math.floor(start * n + 0.5), 0), n - 1)
        hi = min(max(math.floor((start + size) * n + 0.5), lo + 1), n)
        return lo, hi

    out = []
    for x, y, w, h in rects:
        y0, y1 = span(y, h, height)
        x0, x1 = span(x, w, width)
        out.append((y0, y1, x0, x1))
    return out


def _occlusion_rects(
    rng: np.random.Generator, count: int, area: float
) -> tuple[tuple[float, float, float, float], ...]:
    """`count` disjoint rectangles of area `area / count` each, as frame fractions.

    Each goes into its own cell of a near-square grid (a random choice of cells), with
    an aspect ratio between 1:2 and 2:1, so together they cover exactly `area`. For
    count <= 8 and area <= 0.5 (the spec's bounds) a rectangle always fits its cell.
    """
    rows = math.ceil(math.sqrt(count))
    cols = math.ceil(count / rows)
    cell_w, cell_h = 1.0 / cols, 1.0 / rows
    each = min(area / count, cell_w * cell_h)
    rects = []
    for cell in rng.permutation(rows * cols)[:count]:
        ratio = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))  # width / height
        w = min(math.sqrt(each * ratio), cell_w)
        h = min(each / w, cell_h)
        w = min(each / h, cell_w)
        x = (int(cell) % cols) * cell_w + float(rng.uniform()) * (cell_w - w)
        y = (int(cell) // cols) * cell_h + float(rng.uniform()) * (cell_h - h)
        rects.append((x, y, w, h))
    return tuple(rects)


def _draw(rng: np.random.Generator, spec: AugmentationSpec) -> dict[str, Any]:
    area = uniform(rng, spec.augment_occlusion_area_min, spec.augment_occlusion_area_max)
    return {"occlusion_rects": _occlusion_rects(rng, spec.augment_occlusion_count, area)}


def _prepare(params: CopyParams) -> Fill:
    rects = params.occlusion_rects
    return Fill(OCCLUSION_FILL, lambda height, width: occlusion_pixels(rects, height, width))


OCCLUSION = TransformDef(
    name="occlusion", prepare=_prepare, fields=("occlusion_rects",), draws={"rects": _draw}
)
