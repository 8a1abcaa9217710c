"""The CuPy engine: the whole batch per kernel pass, passes derived from the transforms.

Point snippets that follow one another fuse into one pass (read, each map in turn,
write); a separable filter takes two passes (rows, then columns); fills set their
boxes in place. The last pass that computes pixels writes uint8 directly (a fill only
writes whole grey levels, so it commutes with the final rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from .base import CUDA_AXIS_PARAMS, Apply, CudaSnippet, Fill, Pointwise, Separable

# The fused point kernel: the snippets' shared variables, then each snippet in its own
# block, then one write (rounded when it is the last computing pass).
_POINT_PARAMS = "T x, int64 frame0, int64 frame_size, int32 rnd"
_POINT_HEAD = r"""
const long long idx = (long long)i;
const long long f = idx / frame_size;
const long long e = idx - f * frame_size;
const int c = (int)(e % 3);
float v = (float)x;
"""
_POINT_TAIL = "y = (U)(rnd ? rintf(v) : v);\n"


@dataclass
class PointPass:
    """Point transforms applied in one kernel, in order."""

    names: list[str] = field(default_factory=list)
    applies: list[Pointwise] = field(default_factory=list)


@dataclass(frozen=True)
class SeparablePass:
    name: str
    apply: Separable


DevicePass = PointPass | SeparablePass | Fill


def device_plan(transforms: Sequence[tuple[str, Apply]]) -> list[DevicePass]:
    """Kernel passes for (name, prepared transform) pairs, in order.

    A point transform joins the point pass just before it, unless it reads its whole
    input frame (its statistics must be those of the frame as it enters, so it starts a
    pass) or that pass already applies it (a snippet's parameter names are unique).
    """
    plan: list[DevicePass] = []
    for name, apply in transforms:
        if isinstance(apply, Pointwise):
            last = plan[-1] if plan else None
            if not (
                isinstance(last, PointPass)
                and not apply.reads_frame
                and name not in last.names
            ):
                last = PointPass()
                plan.append(last)
            last.names.append(name)
            last.applies.append(apply)
        elif isinstance(apply, Separable):
            plan.append(SeparablePass(name, apply))
        else:
            plan.append(apply)
    return plan


@cache
def _point_kernel(
    cupy: ModuleType, names: tuple[str, ...], snippets: tuple[CudaSnippet, ...]
) -> Any:
    params = ", ".join([_POINT_PARAMS, *(s.params for s in snippets if s.params)])
    blocks = "".join(f"{{  // {n}\n{s.code}\n}}\n" for n, s in zip(names, snippets, strict=True))
    preamble = "".join(dict.fromkeys(s.preamble for s in snippets))
    return cupy.ElementwiseKernel(
        params, "U y", _POINT_HEAD + blocks + _POINT_TAIL, "augment_" + "_".join(names),
        preamble=preamble,
    )  # fmt: skip


@cache
def _axis_kernel(cupy: ModuleType, name: str, code: str, preamble: str) -> Any:
    return cupy.ElementwiseKernel(
        CUDA_AXIS_PARAMS, "U y", code, f"augment_{name}_axis", preamble=preamble
    )


class CupyEngine:
    """Runs the device plan of one copy's transforms on whole batches."""

    def __init__(self, xp: ModuleType, transforms: Sequence[tuple[str, Apply]]) -> None:
        self.xp = xp
        self.plan = device_plan(transforms)
        # Separable taps, uploaded once rather than per batch.
        self.taps = [
            xp.asarray(p.apply.taps) if isinstance(p, SeparablePass) else None for p in self.plan
        ]

    def run(self, frames: Any, frame_offset: int) -> Any:
        xp = self.xp
        frames = xp.ascontiguousarray(frames)
        last_writer = max(
            (i for i, p in enumerate(self.plan) if not isinstance(p, Fill)), default=-1
        )
        cur = frames
        for i, p in enumerate(self.plan):
            dtype = xp.uint8 if i == last_writer else xp.float32
            if isinstance(p, PointPass):
                cur = self._point(cur, p, frame_offset, dtype)
            elif isinstance(p, SeparablePass):
                cur = self._separable(cur, p, self.taps[i], dtype)
            else:
                cur = cur.copy() if cur is frames else cur  # never write into the input
                _, h, w, _ = cur.shape
                for y0, y1, x0, x1 in p.boxes(h, w):
                    cur[:, y0:y1, x0:x1, :] = p.value
        return cur.copy() if cur is frames else cur

    def _point(self, cur: Any, p: PointPass, frame_offset: int, dtype: Any) -> Any:
        xp = self.xp
        _, h, w, _ = cur.shape
        kernel = _point_kernel(xp, tuple(p.names), tuple(a.cuda for a in p.applies))
        args = [arg for a in p.applies for arg in a.cuda_args(xp, cur)]
        out = xp.empty(cur.shape, dtype)
        kernel(
            cur, np.int64(frame_offset), np.int64(h * w * 3), np.int32(dtype == xp.uint8),
            *args, out,
        )  # fmt: skip
        return out

    def _separable(self, cur: Any, p: SeparablePass, taps: Any, dtype: Any) -> Any:
        xp = self.xp
        _, h, w, _ = cur.shape
        kernel = _axis_kernel(xp, p.name, p.apply.cuda_axis, p.apply.preamble)
        r = np.int32((len(p.apply.taps) - 1) // 2)
        rows = xp.empty(cur.shape, xp.float32)
        kernel(cur, taps, r, np.int64(h), np.int64(w * 3), np.int32(0), rows)
        out = xp.empty(cur.shape, dtype)
        kernel(rows, taps, r, np.int64(w), np.int64(3), np.int32(dtype == xp.uint8), out)
        return out
