"""The NumPy engine: a copy's transforms as passes over each frame, on worker threads."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from augment_spec.contract import ENV_THREADS

from ..cpu_budget import this_pod_cpus
from .base import BAND_ELEMENTS, Apply, Box, Fill, Pointwise, Separable

_MAX_THREADS = 8
_WORKER_PREFIX = "augment-numpy"


def _thread_count(frames: int) -> int:
    """Worker threads: AUGMENT_THREADS, else the process's CPUs (its cgroup quota and
    usable cores: cpu_budget.py, capped), <= frames."""
    env = os.environ.get(ENV_THREADS, "").strip()
    wanted = int(env) if env else min(this_pod_cpus(), _MAX_THREADS)
    return max(1, min(wanted, frames))


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per size for the whole process: the copies of a pipeline, each on its
    own thread, share its workers, so the transforms never run more threads than
    AUGMENT_THREADS (the pod's CPU request) however many copies there are."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix=_WORKER_PREFIX)
        return pool


FrameProgram = Callable[[np.ndarray, np.ndarray, int], None]
"""(source, out, frame_index): one frame in, its transformed frame written (uint8 or
uint16 both, or float32 grey levels both: _deep_program)."""


class _Frame:
    """One frame on its way through a program: the uint8 source until a step needs
    float32 values, then one of two float32 buffers that the steps pass back and forth."""

    def __init__(self, buffers: list[np.ndarray]) -> None:
        self.buffers = buffers
        self.source = self.out = buffers[0]  # set per frame by the program
        self.index = 0
        self.values: np.ndarray | None = None  # None: the values are still `source`

    def floats(self) -> np.ndarray:
        if self.values is None:
            self.values = self.buffers[0]
            np.copyto(self.values, self.source)
        return self.values

    def spare(self) -> np.ndarray:
        return self.buffers[1] if self.values is self.buffers[0] else self.buffers[0]


Op = Callable[[_Frame], None]


def _fill_op(fill: Fill, boxes: list[Box], after_last: bool) -> Op:
    def op(f: _Frame) -> None:
        target = f.out if after_last else f.floats()
        for y0, y1, x0, x1 in boxes:
            target[y0:y1, x0:x1] = fill.value

    return op


def _separable_op(taps: np.ndarray, last: bool, rounded: bool) -> Op:
    def op(f: _Frame) -> None:
        src = f.source if f.values is None else f.values
        dst = f.out if last else f.spare()
        depth = cv2.CV_8U if last and rounded else cv2.CV_32F
        cv2.sepFilter2D(src, depth, taps, taps, dst=dst, borderType=cv2.BORDER_REFLECT_101)
        f.values = None if last else dst

    return op


def _point_pass_op(
    steps: list[Pointwise], height: int, width: int, first: bool, last: bool, rounded: bool
) -> Op:
    """Point steps that follow one another, band by band: each band is copied from
    the frame (the first pass reads it) or mapped in place, goes through every step,
    and, after the last computing step, is rounded (`rounded`) or copied into the
    output.

    On a uint8 frame (`rounded`), a first step with a table of levels
    (Pointwise.levels) is one look-up instead of the copy and its band step: per band,
    or, when it is the whole of the last pass, straight into the uint8 output with its
    levels rounded."""
    table_of = steps[0].levels if first and rounded else None
    levels = table_of(height, width) if table_of is not None else None
    band_steps = [step.numpy(height, width) for step in steps[1 if levels else 0 :]]

    def op(f: _Frame) -> None:
        frame = f.source if first else f.values
        assert frame is not None  # a later pass reads the float values of the one before
        table = levels(frame, f.index) if levels is not None else None
        if table is not None and last and not band_steps:
            cv2.LUT(f.source, cv2.convertScaleAbs(table), dst=f.out)
            return
        band_ops = [step(frame, f.index) for step in band_steps]
        values = f.buffers[0] if first else frame
        flat, flat_source, flat_out = values.reshape(-1), f.source.reshape(-1), f.out.reshape(-1)
        for start in range(0, flat.size, BAND_ELEMENTS):
            band = flat[start : start + BAND_ELEMENTS]
            if table is not None:
                _look_up(flat_source[start : start + BAND_ELEMENTS], table, start, band)
            elif first:
                np.copyto(band, flat_source[start : start + BAND_ELEMENTS])
            for band_op in band_ops:
                band_op(band, start)
            if last and rounded:
                # Every step keeps values within [0, 255], so |v| is v: round half to
                # even (as np.rint) and convert, in one pass.
                cv2.convertScaleAbs(band, dst=flat_out[start : start + BAND_ELEMENTS])
            elif last:
                np.copyto(flat_out[start : start + BAND_ELEMENTS], band)
        f.values = None if last else values

    return op


def _look_up(levels: np.ndarray, table: np.ndarray, start: int, out: np.ndarray) -> None:
    """out = table's value of each uint8 level, for the flat frame elements [start, ...)
    (element e has channel e % 3): whole pixels in one cv2.LUT, the channels of the
    table rotated to the band's first element; at most two elements left over."""
    phase = start % 3
    rotated = np.roll(table, -phase, axis=2) if phase else table
    body = len(levels) - len(levels) % 3
    if body:
        cv2.LUT(levels[:body].reshape(-1, 1, 3), rotated, dst=out[:body].reshape(-1, 1, 3))
    for i in range(body, len(levels)):
        out[i] = rotated[0, levels[i], i % 3]


Pass = list[Pointwise] | Separable | Fill


def _passes(applies: Sequence[Apply]) -> list[Pass]:
    """Point transforms that follow one another share a pass, unless one reads its input
    frame: its statistics are those of the frame as it enters it, so it starts a pass
    (as on CUDA: cupy_engine.device_plan)."""
    passes: list[Pass] = []
    for apply in applies:
        last = passes[-1] if passes else None
        if isinstance(apply, Pointwise) and isinstance(last, list) and not apply.reads_frame:
            last.append(apply)
        else:
            passes.append([apply] if isinstance(apply, Pointwise) else apply)
    return passes


_thread_scratch = threading.local()


def _float_buffers(height: int, width: int) -> list[np.ndarray]:
    """The calling thread's two float32 frames, kept from batch to batch (for the
    latest frame size): a fresh large array costs a page fault per 4 KiB touched,
    more than the arithmetic done in it. A thread runs one program at a time, and a
    program sets its buffers' contents before reading them, so its programs share them."""
    shape = (height, width, 3)
    buffers: list[np.ndarray] | None = getattr(_thread_scratch, "buffers", None)
    if buffers is None or buffers[0].shape != shape:
        buffers = _thread_scratch.buffers = [np.empty(shape, np.float32) for _ in range(2)]
    return buffers


def _frame_program(
    applies: Sequence[Apply], height: int, width: int, rounded: bool = True
) -> FrameProgram:
    """The transforms of one frame, with their own scratch (one program per worker).

    Values are float32 between passes. The first pass reads the uint8 frame itself (a
    separable filter: OpenCV converts as it filters; a point pass: band by band). The
    last computing pass writes the rounded uint8 result in the same pass (OpenCV
    rounds half to even, as np.rint does). Fills after it set whole grey levels in the
    uint8 frame, which commutes with the rounding (as on CUDA). Not `rounded`: the
    frame and the output are float32 grey levels and nothing is rounded
    (_deep_program)."""
    passes = _passes(applies)
    last = max(i for i, p in enumerate(passes) if not isinstance(p, Fill))
    ops: list[Op] = []
    for i, p in enumerate(passes):
        if isinstance(p, list):
            ops.append(_point_pass_op(p, height, width, i == 0, i == last, rounded))
        elif isinstance(p, Separable):
            ops.append(_separable_op(p.taps, i == last, rounded))
        else:
            ops.append(_fill_op(p, p.boxes(height, width), i > last))
    frame = _Frame(_float_buffers(height, width))

    def run(source: np.ndarray, out: np.ndarray, frame_index: int) -> None:
        frame.source, frame.out, frame.index, frame.values = source, out, frame_index, None
        for op in ops:
            op(frame)

    return run


# 65535 / 255: 8-bit grey level L is 16-bit level 257 L (as FFmpeg widens 8 bits to 16).
DEEP_SCALE = 257
_DEEP_TO_LEVELS = np.float32(1 / DEEP_SCALE)


def level_scale(dtype: np.dtype) -> int:
    """16-bit levels per 8-bit grey level for `dtype` frames: 1 (uint8) or 257 (uint16)."""
    return DEEP_SCALE if dtype == np.uint16 else 1


def _deep_program(applies: Sequence[Apply], height: int, width: int) -> FrameProgram:
    """The transforms of one uint16 frame: the same passes on float32 values in 8-bit
    grey levels (v / 257), so every parameter (noise sigma, the occlusion grey, white
    at 255) means what it means on 8-bit frames and a copy of a 10-bit camera gets the
    look of its 8-bit twin; the result is rounded once, to 16 bits, never to 8."""
    program = _frame_program(applies, height, width, rounded=False)
    levels, result = (np.empty((height, width, 3), np.float32) for _ in range(2))

    def run(source: np.ndarray, out: np.ndarray, frame_index: int) -> None:
        np.multiply(source, _DEEP_TO_LEVELS, out=levels)
        program(levels, result, frame_index)
        np.multiply(result, np.float32(DEEP_SCALE), out=result)
        # A blur's float32 sums may pass 255 by an ulp.
        np.clip(result, 0, np.iinfo(np.uint16).max, out=result)
        np.rint(result, out=result)
        np.copyto(out, result, casting="unsafe")

    return run


class NumpyEngine:
    """Frame by frame, each worker thread on its own frames: a frame's scratch stays in
    cache and memory stays bounded whatever the batch size. The heavy work is in
    OpenCV and NumPy kernels that release the GIL, so the workers use every core."""

    def __init__(self, applies: Sequence[Apply]) -> None:
        self.applies = list(applies)

    def run(self, frames: np.ndarray, frame_offset: int) -> np.ndarray:
        fills = [a for a in self.applies if isinstance(a, Fill)]
        if len(fills) == len(self.applies):
            return _fills_only(frames, fills)
        out = np.empty(frames.shape, frames.dtype)
        workers = _thread_count(len(frames))
        # Workers take the next frame as they finish one: a worker slowed by another
        # process on its core costs at most one frame, not a fixed share of the batch.
        # (next() on itertools.count is atomic under the GIL.)
        queue = itertools.count()
        if workers == 1 or threading.current_thread().name.startswith(_WORKER_PREFIX):
            self._worker(frames, out, frame_offset, queue)  # a worker never waits on its pool
            return out
        pool = _pool(workers)
        jobs = [pool.submit(self._worker, frames, out, frame_offset, queue) for _ in range(workers)]
        for job in jobs:
            job.result()
        return out

    def _worker(
        self, frames: np.ndarray, out: np.ndarray, frame_offset: int, queue: Iterator[int]
    ) -> None:
        # One program per batch and worker, on the worker's own float buffers.
        program: FrameProgram | None = None
        for i in queue:
            if i >= len(frames):
                return
            if program is None:
                make = _deep_program if frames.dtype == np.uint16 else _frame_program
                program = make(self.applies, *frames.shape[1:3])
            program(frames[i], out[i], frame_offset + i)


def _fills_only(frames: np.ndarray, fills: list[Fill]) -> np.ndarray:
    """No arithmetic at all: fill a copy (what float32 and rounding would give)."""
    out = frames.copy()
    scale = level_scale(frames.dtype)
    for fill in fills:
        for y0, y1, x0, x1 in fill.boxes(*frames.shape[1:3]):
            out[:, y0:y1, x0:x1] = fill.value * scale
    return out
