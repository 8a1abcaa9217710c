"""The NumPy engine: each transform's frame step, frame by frame, on worker threads."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from augment_spec.contract import ENV_THREADS

from .base import Apply, Fill, FrameStep

_MAX_THREADS = 8


def _thread_count(frames: int) -> int:
    """Worker threads: AUGMENT_THREADS, else the usable cores (capped), <= frames."""
    env = os.environ.get(ENV_THREADS, "").strip()
    if env:
        wanted = int(env)
    elif hasattr(os, "sched_getaffinity"):
        wanted = min(len(os.sched_getaffinity(0)), _MAX_THREADS)
    else:
        wanted = min(os.cpu_count() or 1, _MAX_THREADS)
    return max(1, min(wanted, frames))


def _fill_step(fill: Fill, height: int, width: int) -> FrameStep:
    boxes = fill.boxes(height, width)

    def step(frame: np.ndarray, spare: np.ndarray, frame_index: int) -> np.ndarray:
        for y0, y1, x0, x1 in boxes:
            frame[y0:y1, x0:x1] = fill.value
        return frame

    return step


def _frame_step(apply: Apply, height: int, width: int) -> FrameStep:
    if isinstance(apply, Fill):
        return _fill_step(apply, height, width)
    return apply.numpy(height, width)


class NumpyEngine:
    """Frame by frame, each worker thread on its own frames: a frame's scratch stays in
    cache, memory stays bounded whatever the batch size, and NumPy releases the GIL
    inside its loops, so the threads use every core. Within a frame, the steps
    vectorise over row bands sized for the L2 cache."""

    def __init__(self, applies: Sequence[Apply]) -> None:
        self.applies = list(applies)

    def run(self, frames: np.ndarray, frame_offset: int) -> np.ndarray:
        fills = [a for a in self.applies if isinstance(a, Fill)]
        if len(fills) == len(self.applies):
            return _fills_only(frames, fills)
        out = np.empty(frames.shape, np.uint8)
        workers = _thread_count(len(frames))
        # Workers take the next frame as they finish one: a worker slowed by another
        # process on its core costs at most one frame, not a fixed share of the batch.
        # (next() on itertools.count is atomic under the GIL.)
        queue = itertools.count()
        if workers == 1:
            self._worker(frames, out, frame_offset, queue)
            return out
        with ThreadPoolExecutor(workers, thread_name_prefix="augment") as pool:
            jobs = [
                pool.submit(self._worker, frames, out, frame_offset, queue) for _ in range(workers)
            ]
            for job in jobs:
                job.result()
        return out

    def _worker(
        self, frames: np.ndarray, out: np.ndarray, frame_offset: int, queue: Iterator[int]
    ) -> None:
        # Steps and buffers for the batch's geometry, made once per batch: page faults
        # on fresh large arrays cost more than the arithmetic done in them.
        _, height, width, _ = frames.shape
        steps = [_frame_step(a, height, width) for a in self.applies]
        buffers = [np.empty((height, width, 3), np.float32) for _ in range(2)]
        for i in queue:
            if i >= len(frames):
                return
            buf = buffers[0]
            np.copyto(buf, frames[i])
            for step in steps:
                buf = step(buf, buffers[1] if buf is buffers[0] else buffers[0], frame_offset + i)
            np.rint(buf, out=buf)  # every step keeps values within [0, 255]
            np.copyto(out[i], buf, casting="unsafe")


def _fills_only(frames: np.ndarray, fills: list[Fill]) -> np.ndarray:
    """No arithmetic at all: fill a uint8 copy (what float32 and rounding would give)."""
    out = frames.copy()
    for fill in fills:
        for y0, y1, x0, x1 in fill.boxes(*frames.shape[1:3]):
            out[:, y0:y1, x0:x1] = fill.value
    return out
