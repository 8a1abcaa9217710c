"""Augmenter: one copy's transforms, applied to batches of frames on NumPy or CuPy."""

from __future__ import annotations

from dataclasses import replace
from types import ModuleType
from typing import Any

import numpy as np

from augment_runner.backend import array_module, is_cupy, to_host

from .cupy_engine import CupyEngine
from .lighting import REFERENCE_KELVIN
from .numpy_engine import NumpyEngine
from .params import CopyParams
from .registry import lookup


class Augmenter:
    """Applies one copy's transforms to batches of frames of an episode."""

    def __init__(self, params: CopyParams, xp: ModuleType | None = None) -> None:
        self.params = params
        self.xp = xp if xp is not None else array_module()
        prepared = [(name, lookup(name).prepare(params)) for name in params.transforms]
        self._engine: NumpyEngine | CupyEngine = (
            CupyEngine(self.xp, prepared)
            if is_cupy(self.xp)
            else NumpyEngine([apply for _, apply in prepared])
        )

    def __call__(self, frames: np.ndarray, frame_offset: int) -> np.ndarray:
        """Augmented copy of a host batch: (N, H, W, 3) uint8 in, a new array out.

        `frame_offset` is the index of frames[0] within the episode; noise depends on
        it, so an episode gives the same output however it is cut into batches.
        """
        _check_frames(frames, np.ndarray)
        if isinstance(self._engine, NumpyEngine):
            return self._engine.run(frames, frame_offset)
        return to_host(self._engine.run(self.xp.asarray(frames), frame_offset))

    def apply(self, frames: Any, frame_offset: int) -> Any:
        """Like __call__, for arrays already on this backend (no host transfer)."""
        _check_frames(frames, self.xp.ndarray)
        return self._engine.run(frames, frame_offset)


class GreyAugmenter:
    """One copy's transforms on grey frames, (N, H, W, 1) uint8 in and out.

    A grey level is the colour frame whose three channels hold it: its luma is that
    level, so lighting's brightness and contrast, noise, blur and occlusion do to it what
    they do to a grey colour frame, and the first channel of the result is the output
    (noise: the first channel's draws). The colour temperature, which would tint, is
    left out: 6500 K is the identity. One code path for both engines, at three times the
    arithmetic of a grey-only one.
    """

    def __init__(self, params: CopyParams, xp: ModuleType | None = None) -> None:
        self.params = params
        self._colour = Augmenter(replace(params, color_temp=REFERENCE_KELVIN), xp)

    def __call__(self, frames: np.ndarray, frame_offset: int) -> np.ndarray:
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 1:
            raise ValueError(
                f"grey frames must be uint8 of shape (N, H, W, 1); got {frames.dtype} "
                f"{frames.shape}"
            )
        colour = np.repeat(frames, 3, axis=-1)
        return np.ascontiguousarray(self._colour(colour, frame_offset)[..., :1])


def _check_frames(frames: Any, array_type: type) -> None:
    if not isinstance(frames, array_type):
        raise TypeError(f"frames must be a {array_type.__module__} array")
    shaped: Any = frames  # a NumPy or CuPy array: both have dtype, ndim and shape
    if shaped.dtype != np.uint8 or shaped.ndim != 4 or shaped.shape[-1] != 3:
        raise ValueError(
            f"frames must be uint8 of shape (N, H, W, 3); got {shaped.dtype} {shaped.shape}"
        )
