"""What a transform is, to the parameter sampler and to both engines.

A transform is one `TransformDef` in the registry (registry.py). It names the
CopyParams fields it owns (also its provenance keys), the stages that draw them from a
copy's generator, and `prepare`, which turns one copy's parameters into what the
engines run, one of three kinds:

- `Pointwise`: a map of each value on its own (lighting, noise). Point transforms that
  follow one another run as one pass: NumPy runs their steps band by band, CUDA fuses
  their snippets into one kernel.
- `Separable`: a symmetric 1-D filter along rows, then along columns, mirrored
  borders (blur). NumPy runs OpenCV's separable filter with its taps; CUDA runs its
  axis kernel once per axis.
- `Fill`: pixel boxes set to one grey level (occlusion). Both engines fill the boxes
  themselves, and skip the float arithmetic when every listed transform is a fill.

Between transforms values are float32 within [0, 255]; each engine rounds half to
even once, at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from augment_spec.model import AugmentationSpec

    from .params import CopyParams

Box = tuple[int, int, int, int]  # y0, y1, x0, x1: pixel bounds, end exclusive

BandStep = Callable[[np.ndarray, int], None]
"""(values, start): the map applied in place to `values`, the float32 elements
[start, start + len(values)) of one flattened (H, W, 3) frame (element e has channel
e % 3). Bands start at multiples of BAND_ELEMENTS; the step keeps values within
[0, 255]."""

FrameStep = Callable[[np.ndarray, int], BandStep]
"""(frame, frame_index) -> the band step for one frame.

`frame` is the whole input of the step's pass, (H, W, 3) uint8 or float32, for a step
that needs statistics of its input (`reads_frame`: such a step always starts a pass,
so its pass's input is its own); `frame_index` is the frame's index in the episode."""

StepFactory = Callable[[int, int], FrameStep]
"""(height, width) -> a frame step with its own scratch: one per worker thread and batch."""

FrameLevels = Callable[[np.ndarray, int], np.ndarray]
"""(frame, frame_index) -> float32 (1, 256, 3): what the step's band step makes of each
uint8 level in each channel, bit for bit, for one uint8 frame (see `Pointwise.levels`)."""

LevelsFactory = Callable[[int, int], FrameLevels]
"""(height, width) -> frame levels with their own scratch, like StepFactory."""

# NumPy point passes run band by band, every step of the pass on one band before the
# next: a band (512 KiB of float32) stays in cache instead of each step streaming the
# whole frame through memory. A multiple of the noise block (noise.BLOCK, 2^16), so
# noise bands start on whole blocks.
BAND_ELEMENTS = 1 << 17

Draw = Callable[[np.random.Generator, "AugmentationSpec"], dict[str, Any]]
"""One drawing stage: CopyParams field -> value, drawn from the copy's generator."""

PointArgs = Callable[[ModuleType, Any], tuple[Any, ...]]
"""(xp, pass input) -> the values of a snippet's `params`, in their order."""

@dataclass(frozen=True)
class CudaSnippet:
    """CUDA statements that update `float v`, one value of the batch, in a fused pass.

    They may read `f` (frame within the batch), `e` (element within the frame), `c`
    (channel), `frame0` (episode index of the batch's first frame) and their own
    `params`: ElementwiseKernel input declarations whose names start with the
    transform's name (the pass declares those of every snippet it fuses).
    """

    code: str
    params: str = ""
    preamble: str = ""  # CUDA helper functions, emitted once per kernel


def no_args(xp: ModuleType, frames: Any) -> tuple[Any, ...]:
    return ()


@dataclass(frozen=True)
class Pointwise:
    """A map of each value on its own; `cuda_args` gives its snippet's parameter values.

    `levels`, for a map of each channel's value alone (a table of 256 levels per
    channel): where the step is the first of its pass on a uint8 frame the NumPy engine
    looks values up in that table (one cv2.LUT pass) instead of converting the frame
    and running the band step.
    """

    numpy: StepFactory
    cuda: CudaSnippet
    cuda_args: PointArgs = no_args
    reads_frame: bool = False  # needs statistics of its whole input: starts its own pass
    levels: LevelsFactory | None = None


CUDA_AXIS_PARAMS = "raw T x, raw float32 taps, int32 r, int64 length, int64 stride, int32 rnd"


@dataclass(frozen=True)
class Separable:
    """Convolution with symmetric `taps` along rows, then columns.

    `cuda_axis` is an ElementwiseKernel body with inputs CUDA_AXIS_PARAMS and output
    `U y`: one value of one axis, where `stride` and `length` pick the axis (rows: W*3
    and H, columns: 3 and W), `r` is the radius, and `rnd` asks for rounding. The NumPy
    engine needs only the taps (numpy_engine.py).
    """

    taps: np.ndarray  # float32, odd length
    cuda_axis: str
    preamble: str = ""


@dataclass(frozen=True)
class Fill:
    value: int  # a whole grey level, so filling commutes with the final rounding
    boxes: Callable[[int, int], list[Box]]  # (height, width) -> the boxes


Apply = Pointwise | Separable | Fill


@dataclass(frozen=True)
class TransformDef:
    """One transform; the spec lists it by its name (a `Transform` member)."""

    name: str
    prepare: Callable[[CopyParams], Apply]
    fields: tuple[str, ...] = ()  # the CopyParams fields it owns, in provenance order
    # Drawing stages by name; registry.DRAW_ORDER says when each one runs.
    draws: Mapping[str, Draw] = field(default_factory=dict)


def uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))
