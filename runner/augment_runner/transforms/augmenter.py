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

# Why frames deeper than 8 bits never reach the CuPy engine (codec_plan records it).
DEEP_FRAMES_ON_NUMPY = "16-bit frames are transformed by the NumPy engine (CuPy's takes 8-bit)"


class Augmenter:
    """Applies one copy's transforms to batches of frames of an episode.

    uint8 frames run on the chosen backend's engine; uint16 frames (video of more
    than 8 bits per sample, video.py) always run on the NumPy engine, which computes
    them in 8-bit grey levels without rounding to 8 bits (numpy_engine._deep_program):
    the CuPy engine writes 8-bit output only (DEEP_FRAMES_ON_NUMPY).
    """

    def __init__(self, params: CopyParams, xp: ModuleType | None = None) -> None:
        self.params = params
        self.xp = xp if xp is not None else array_module()
        prepared = [(name, lookup(name).prepare(params)) for name in params.transforms]
        self._numpy = NumpyEngine([apply for _, apply in prepared])
        self._engine: NumpyEngine | CupyEngine = (
            CupyEngine(self.xp, prepared) if is_cupy(self.xp) else self._numpy
        )

    def __call__(self, frames: np.ndarray, frame_offset: int) -> np.ndarray:
        """Augmented copy of a host batch: (N, H, W, 3) uint8 or uint16 in, a new array
        of the same dtype out.

        `frame_offset` is the index of frames[0] within the episode; noise depends on
        it, so an episode gives the same output however it is cut into batches.
        """
        _check_frames(frames, np.ndarray, FRAME_DTYPES)
        if isinstance(self._engine, NumpyEngine) or frames.dtype == np.uint16:
            return self._numpy.run(frames, frame_offset)
        return to_host(self._engine.run(self.xp.asarray(frames), frame_offset))

    def apply(self, frames: Any, frame_offset: int) -> Any:
        """Like __call__, for uint8 arrays already on this backend (no host transfer)."""
        _check_frames(frames, self.xp.ndarray, (np.uint8,))
        return self._engine.run(frames, frame_offset)


class GreyAugmenter:
    """One copy's transforms on grey frames, (N, H, W, 1) uint8 or uint16 in and out.

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
        if frames.dtype not in FRAME_DTYPES or frames.ndim != 4 or frames.shape[-1] != 1:
            raise ValueError(
                f"grey frames must be uint8 or uint16 of shape (N, H, W, 1); got "
                f"{frames.dtype} {frames.shape}"
            )
        colour = np.repeat(frames, 3, axis=-1)
        return np.ascontiguousarray(self._colour(colour, frame_offset)[..., :1])


FRAME_DTYPES = (np.uint8, np.uint16)


def _check_frames(frames: Any, array_type: type, dtypes: tuple[type, ...]) -> None:
    if not isinstance(frames, array_type):
        raise TypeError(f"frames must be a {array_type.__module__} array")
    shaped: Any = frames  # a NumPy or CuPy array: both have dtype, ndim and shape
    if shaped.dtype not in dtypes or shaped.ndim != 4 or shaped.shape[-1] != 3:
        names = " or ".join(np.dtype(d).name for d in dtypes)
        raise ValueError(
            f"frames must be {names} of shape (N, H, W, 3); got {shaped.dtype} {shaped.shape}"
        )
