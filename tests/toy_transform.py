"""A toy transform, 'invert' (v -> 255 - v): what adding a transform takes.

It is a point transform with no parameters: a NumPy frame step and a CUDA snippet.
Tests register it for their own duration (monkeypatch.setitem on REGISTRY); the spec
does not know it, so copies name it directly in CopyParams.transforms.
"""

from __future__ import annotations

import numpy as np

from augment_runner.transforms.base import (
    BandStep,
    CudaSnippet,
    FrameStep,
    Pointwise,
    TransformDef,
)
from augment_runner.transforms.params import CopyParams


def _invert(frame: np.ndarray, frame_index: int) -> BandStep:
    return lambda values, start: np.subtract(255, values, out=values)


def _prepare(params: CopyParams) -> Pointwise:
    def numpy_step(height: int, width: int) -> FrameStep:
        return _invert

    return Pointwise(numpy=numpy_step, cuda=CudaSnippet("v = 255.0f - v;"))


INVERT = TransformDef(name="invert", prepare=_prepare)
