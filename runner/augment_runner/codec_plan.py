"""Which engine decodes and which encodes each camera's video, and why.

Three paths, best first (docs/design.md, Video codecs):

- `nvdec-nvenc`: NVDEC decodes, the transforms run on CuPy, NVENC encodes. Wanted
  where the node's GPU has both engines for the codec: the CPU then does no codec work.
- `nvdec-cpu`: NVDEC decodes, a CPU encoder (PyAV) encodes. For GPUs without NVENC
  (H100, H200, A100) or without NVENC for the output codec (AV1 before Ada).
- `cpu`: PyAV both ways. Without PyNvVideoCodec or a CUDA device, for a codec the
  node's NVDEC lacks (AV1 on Hopper, A100, Turing), or for video that is not 8-bit 4:2:0.
  Video of more than 8 bits per sample is decoded to 16-bit frames, which the NumPy
  engine transforms (transforms/augmenter.py), and encoded back at its own depth.

The output keeps the source's codec, pixel format, size and fps whatever the path, as
LeRobot's `merge_datasets` requires them equal across the datasets it merges.

`plan_camera` is the rule, a pure function of the video format, the node's declared
engines (augment_spec.contract.ENV_VIDEO_DECODE / ENV_VIDEO_ENCODE, from the GPU
profile) and what this process can use. `VideoPlans` applies it: it opens the planned
decoder and encoder, and when an engine turns out missing (a GPU with less than the
profile declared) it falls back to the CPU, logs the reason and records it, so
provenance and the job's status say what was really done.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from augment_spec.contract import ENV_VIDEO_DECODE, ENV_VIDEO_ENCODE, video_codecs
from augment_spec.video_engines import NO_ENGINES, VideoEngines, engines_for_product

from .video import VideoEncoder, VideoFormat, decode_episode

log = logging.getLogger("augment.runner")

# 8-bit 4:2:0, the pixel formats NVDEC and NVENC take on every GPU of the table
# (augment_spec/video_engines.py); grey, 4:4:4 and 10-bit video stays on the CPU.
GPU_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})


class VideoPath(StrEnum):
    """<decoder>-<encoder>."""

    nvdec_nvenc = "nvdec-nvenc"
    nvdec_cpu = "nvdec-cpu"
    cpu = "cpu"
    # Never planned: NVENC worked but NVDEC did not open (VideoPlans' fallback).
    cpu_nvenc = "cpu-nvenc"

    @property
    def gpu_decode(self) -> bool:
        return self in (VideoPath.nvdec_nvenc, VideoPath.nvdec_cpu)

    @property
    def gpu_encode(self) -> bool:
        return self in (VideoPath.nvdec_nvenc, VideoPath.cpu_nvenc)


@dataclass(frozen=True)
class GpuCodecSupport:
    """What this process can use: PyNvVideoCodec importable, CuPy with a CUDA device."""

    nvcodec: bool
    cupy: bool


def plan_camera(
    fmt: VideoFormat, engines: VideoEngines, support: GpuCodecSupport
) -> tuple[VideoPath, str]:
    """The path for one camera's video and the reason for it (see the module docstring)."""
    codec = fmt.codec
    if fmt.bit_depth > 8:
        from .transforms.augmenter import DEEP_FRAMES_ON_NUMPY  # the transforms load lazily

        return VideoPath.cpu, (
            f"{fmt.pix_fmt} video: the GPU engines take 8-bit 4:2:0 only, and "
            f"{DEEP_FRAMES_ON_NUMPY}; {fmt.pix_fmt} kept"
        )
    if not support.nvcodec:
        return VideoPath.cpu, "PyNvVideoCodec is not installed (extra `gpu`)"
    if not support.cupy:
        return VideoPath.cpu, "CuPy is not installed or sees no CUDA device"
    if fmt.pix_fmt not in GPU_PIX_FMTS:
        return VideoPath.cpu, f"{fmt.pix_fmt} video: the GPU engines take 8-bit 4:2:0 only"
    if codec not in engines.decode:
        return VideoPath.cpu, f"the node's NVDEC does not decode {codec} ({_declared(engines)})"
    if codec not in engines.encode:
        no_nvenc = "the node has no NVENC" if not engines.encode else (
            f"the node's NVENC does not encode {codec}")
        return VideoPath.nvdec_cpu, f"{no_nvenc} ({_declared(engines)}); {codec} kept"
    return VideoPath.nvdec_nvenc, f"the node's NVDEC and NVENC both handle {codec}"


def _declared(engines: VideoEngines) -> str:
    def names(codecs: frozenset[str]) -> str:
        return ",".join(sorted(codecs)) or "none"

    return f"decode: {names(engines.decode)}; encode: {names(engines.encode)}"


@dataclass(frozen=True)
class CameraPlan:
    """One camera's plan, as provenance records it."""

    camera: str
    codec: str  # the source's, and so the output's
    pix_fmt: str
    path: VideoPath
    reason: str
    cpu_threads: int  # for each CPU codec of this camera (cpu_budget.codec_threads)

    def describe(self) -> str:
        return f"{self.camera}: {self.path.value} ({self.codec}), {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": self.path.value}

    def without_nvenc(self, reason: str) -> CameraPlan:
        path = VideoPath.nvdec_cpu if self.path.gpu_decode else VideoPath.cpu
        return replace(self, path=path, reason=f"NVENC did not open, CPU encoder: {reason}")

    def without_nvdec(self, reason: str) -> CameraPlan:
        path = VideoPath.cpu_nvenc if self.path.gpu_encode else VideoPath.cpu
        return replace(self, path=path, reason=f"NVDEC did not open, CPU decoder: {reason}")


def declared_engines(
    environ: Mapping[str, str], gpu_name: str | None
) -> VideoEngines:
    """The node's engines: what the GPU profile declared (the operator always sets both
    variables, empty for none); outside a cluster, what the table says of this GPU."""
    if ENV_VIDEO_DECODE in environ or ENV_VIDEO_ENCODE in environ:
        return VideoEngines(video_codecs(environ.get(ENV_VIDEO_DECODE)),
                            video_codecs(environ.get(ENV_VIDEO_ENCODE)))
    found = engines_for_product(gpu_name) if gpu_name else None
    return found or NO_ENGINES


def this_process() -> tuple[VideoEngines, GpuCodecSupport]:
    """The declared engines and the GPU support of this process (probed, not assumed)."""
    from .backend import _cupy_with_device
    from .nvcodec import nvcodec_installed

    cupy = _cupy_with_device()
    gpu_name = None
    if cupy is not None:
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
        gpu_name = name.decode() if isinstance(name, bytes) else str(name)
    return (declared_engines(os.environ, gpu_name),
            GpuCodecSupport(nvcodec=nvcodec_installed(), cupy=cupy is not None))


class FrameWriter(Protocol):
    path: Path

    def write(self, frames: np.ndarray) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class VideoPlans:
    """The plan of every video camera of a run; opens each camera's decoder and
    encoders, falling back to the CPU (logged, recorded) when an engine fails to open."""

    def __init__(self, plans: dict[str, CameraPlan] | None = None) -> None:
        self.plans = dict(plans or {})

    def get(self, camera: str) -> CameraPlan | None:
        return self.plans.get(camera)

    def describe(self) -> list[str]:
        return [plan.describe() for plan in self.plans.values()]

    def decode(
        self, camera: str, path: Path, *, fps: float, num_frames: int, start_s: float,
        batch_frames: int, grey: bool = False,
    ) -> Iterator[np.ndarray]:
        plan = self.plans.get(camera)
        threads = plan.cpu_threads if plan is not None else None
        if plan is not None and plan.path.gpu_decode and not grey:
            from .nvcodec import GpuCodecUnavailable, NvdecReader

            try:
                reader = NvdecReader(path)
            except GpuCodecUnavailable as exc:
                self._fall_back(plan.without_nvdec(str(exc)))
            else:
                return reader.episode(fps=fps, num_frames=num_frames, start_s=start_s,
                                      batch_frames=batch_frames)
        return decode_episode(path, fps=fps, num_frames=num_frames, start_s=start_s,
                              batch_frames=batch_frames, grey=grey, threads=threads)

    def encoder(
        self, camera: str, path: Path, fmt: VideoFormat, *, faststart: bool = True
    ) -> FrameWriter:
        plan = self.plans.get(camera)
        threads = plan.cpu_threads if plan is not None else None
        if plan is not None and plan.path.gpu_encode:
            from .nvcodec import GpuCodecUnavailable, NvencEncoder

            try:
                return NvencEncoder(path, fmt, faststart=faststart)
            except GpuCodecUnavailable as exc:
                self._fall_back(plan.without_nvenc(str(exc)))
        return VideoEncoder(path, fmt, faststart=faststart, threads=threads)

    def _fall_back(self, plan: CameraPlan) -> None:
        log.warning("video %s", plan.describe())
        self.plans[plan.camera] = plan
