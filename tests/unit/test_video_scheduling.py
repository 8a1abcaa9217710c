"""Encoding AV1 leaves the calling thread at normal priority.

Run as root, SVT-AV1 switches the thread that opens an encoder to SCHED_FIFO 99;
threads and processes started later (encoder threads, a control plane in the tests)
would inherit it and starve a small machine.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from augment_runner.video import VideoEncoder, VideoFormat


def test_av1_encoding_leaves_normal_scheduling(tmp_path: Path) -> None:
    fmt = VideoFormat("av1", "yuv420p", Fraction(10), 64, 48)
    with VideoEncoder(tmp_path / "clip.mp4", fmt) as encoder:
        encoder.write(np.zeros((3, 48, 64, 3), np.uint8))
    policies = {task.name: os.sched_getscheduler(int(task.name))
                for task in Path("/proc/self/task").iterdir()}
    assert set(policies.values()) == {os.SCHED_OTHER}, policies
    assert (tmp_path / "clip.mp4").stat().st_size > 0
