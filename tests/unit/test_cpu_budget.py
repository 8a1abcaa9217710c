"""Codec threads follow the pod's CPUs (augment_runner/cpu_budget.py) and never exceed them."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from augment_runner import cpu_budget
from augment_runner.cpu_budget import cgroup_cpus, codec_threads, pod_cpus
from augment_runner.transforms.numpy_engine import _thread_count
from augment_runner.video import VideoEncoder, VideoFormat, threaded_options
from augment_spec.contract import ENV_CPU_LIMIT, ENV_THREADS


@pytest.mark.parametrize(("cpu_max", "cpus"), [
    ("max 100000\n", None),  # no quota
    ("200000 100000\n", 2),
    ("150000 100000", 1),  # 1.5 CPUs: whole CPUs only, rounded down
    ("50000 100000", 1),  # under one CPU still runs one thread
    (None, None),  # no cgroup v2 file
    ("garbage", None),
])
def test_the_cgroup_quota_in_whole_cpus(cpu_max: str | None, cpus: int | None) -> None:
    assert cgroup_cpus(cpu_max) == cpus


@pytest.mark.parametrize(("env", "cpu_max", "cores", "cpus"), [
    ({}, None, 64, 64),  # outside a pod: the usable cores
    ({ENV_THREADS: "2"}, None, 64, 2),  # the request
    ({ENV_THREADS: "2", ENV_CPU_LIMIT: "64"}, None, 64, 2),  # no limit: node allocatable
    ({ENV_THREADS: "8", ENV_CPU_LIMIT: "4"}, None, 64, 4),  # never above the limit
    ({ENV_THREADS: "8"}, "300000 100000", 64, 3),  # ... nor the cgroup quota
    ({ENV_THREADS: "8"}, None, 2, 2),  # ... nor the cores it may run on
    ({ENV_THREADS: "0.5"}, None, 64, 1),  # a fraction of a CPU: one thread
    ({ENV_THREADS: "", ENV_CPU_LIMIT: "x"}, None, 6, 6),  # unreadable values are ignored
])
def test_the_pod_cpus_are_the_smallest_bound(
    env: dict[str, str], cpu_max: str | None, cores: int, cpus: int
) -> None:
    assert pod_cpus(env, cpu_max, cores) == cpus


@pytest.mark.parametrize(("cpus", "codecs", "threads"), [
    (8, 4, 2),  # a decoder and three copies' encoders on 8 CPUs
    (8, 3, 2),  # rounded down: 3 x 2 <= 8
    (2, 4, 1),  # more codecs than CPUs: one thread each
    (1, 1, 1),
    (16, 1, 16),
])
def test_each_codec_gets_an_equal_share(cpus: int, codecs: int, threads: int) -> None:
    assert codec_threads(cpus, codecs) == threads
    assert threads * codecs <= max(cpus, codecs)


def test_encoders_that_ignore_the_thread_count_get_their_own_setting() -> None:
    assert threaded_options("libsvtav1", {"crf": "30"}, 2) == {
        "crf": "30", "svtav1-params": "lp=2"}
    assert threaded_options("libx265", {"x265-params": "bframes=0"}, 3) == {
        "x265-params": "bframes=0:pools=3"}
    assert threaded_options("libx264", {"crf": "23"}, 2) == {"crf": "23"}


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_a_one_thread_encoder_starts_no_thread_pool(tmp_path: Path) -> None:
    fmt = VideoFormat("h264", "yuv420p", Fraction(10), 64, 48)
    frames = np.zeros((4, 48, 64, 3), np.uint8)
    before = _threads()
    with VideoEncoder(tmp_path / "one.mp4", fmt, threads=1) as encoder:
        encoder.write(frames)
        one = _threads() - before
    with VideoEncoder(tmp_path / "two.mp4", fmt, threads=2) as encoder:
        encoder.write(frames)
        two = _threads() - before
    assert one == 0 and two > 0, (one, two)


def test_transform_workers_outside_a_pod_follow_the_cgroup_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # e.g. `docker run --cpus 1` on a many-core machine: one worker, not one per core.
    monkeypatch.delenv(ENV_THREADS, raising=False)
    monkeypatch.delenv(ENV_CPU_LIMIT, raising=False)
    quota = tmp_path / "cpu.max"
    quota.write_text("100000 100000\n")
    monkeypatch.setattr(cpu_budget, "CGROUP_CPU_MAX", quota)
    assert _thread_count(frames=100) == 1
    monkeypatch.setenv(ENV_THREADS, "3")  # set by the operator (or a user): taken as is
    assert _thread_count(frames=100) == 3
