"""The GPU video path: NVDEC decode and NVENC encode through PyNvVideoCodec.

PyNvVideoCodec (NVIDIA's Python bindings of the Video Codec SDK, extra `gpu`) is
imported only here and only when a camera's plan asks for an engine
(codec_plan.py), so the CPU path never needs it. What can be checked without a GPU
lives here too and is unit-tested on CPU machines: the RGB to NV12 conversion NVENC
takes (one function for NumPy and CuPy) and the muxing of NVENC's elementary stream
into an MP4 whose frame `i` sits at `i / fps`, as video.VideoEncoder writes it.
What needs the engines (NvdecReader, NvencEncoder) is kept to the calls the library's
documentation gives; `make gpu-check` runs them against the CPU path
(bench/gpu_codec_check.py). Opening either raises GpuCodecUnavailable when the
library, the device or the engine is missing; the caller then falls back to the CPU
with that reason (codec_plan.VideoPlans).

Frames still travel between the pipeline's stages as host arrays (the preview, the
statistics and the copies' queues hold NumPy batches), so a GPU camera's frames cross
PCIe once each way per stage; the engines take the codec work off the CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np

from .errors import VideoError
from .video import VideoFormat

NVC_MODULE = "PyNvVideoCodec"

# BT.601 limited range, the matrix FFmpeg's scaler uses to turn RGB into yuv420p when
# the stream names none, so GPU-encoded copies have the colours CPU-encoded ones have.
_Y = (0.256788, 0.504129, 0.097906)
_CB = (-0.148223, -0.290993, 0.439216)
_CR = (0.439216, -0.367788, -0.071427)

# NVENC settings in the spirit of video.ENCODER_OPTIONS: a key frame every 2 frames (an
# IDR, so a reader may start at any of them), no B-frames (decode order is presentation
# order), parameter sets with every key frame, constant QP near the CPU encoders' CRF
# (AV1's QP scale is 0-255). `make gpu-check` reports the PSNR these give.
NVENC_CONSTQP = {"h264": 23, "hevc": 25, "av1": 100}


class GpuCodecUnavailable(RuntimeError):
    """The GPU path cannot run here; the message says why (it goes to provenance)."""


def nvcodec_installed() -> bool:
    """Whether PyNvVideoCodec is importable, without importing it (planning is cheap)."""
    return importlib.util.find_spec(NVC_MODULE) is not None


def _nvc() -> ModuleType:
    try:
        return importlib.import_module(NVC_MODULE)
    except ImportError as exc:
        raise GpuCodecUnavailable(f"{NVC_MODULE} does not import: {exc}") from None


def _cupy() -> ModuleType:
    from .backend import _cupy_with_device

    cupy = _cupy_with_device()
    if cupy is None:
        raise GpuCodecUnavailable("CuPy is not installed or sees no CUDA device")
    return cupy


# ---------------------------------------------------------------- CPU-testable parts


def rgb_to_nv12(xp: ModuleType, frames: Any) -> Any:
    """(N, H, W, 3) uint8 RGB -> (N, H * 3 // 2, W) uint8 NV12 (a luma plane, then
    interleaved Cb Cr at half resolution, each the mean of a 2x2 block), on NumPy or
    CuPy. H and W must be even, as yuv420p needs."""
    n, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise VideoError(f"NVENC needs an even frame size for 4:2:0 video, got {w}x{h}")
    rgb = frames.astype(xp.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    out = xp.empty((n, h * 3 // 2, w), dtype=xp.uint8)
    out[:, :h] = _to_uint8(xp, 16 + _Y[0] * r + _Y[1] * g + _Y[2] * b)
    # The chroma of a 2x2 block from its mean colour (the matrix is linear).
    mean = rgb.reshape(n, h // 2, 2, w // 2, 2, 3).mean(axis=(2, 4))
    mr, mg, mb = mean[..., 0], mean[..., 1], mean[..., 2]
    chroma = out[:, h:].reshape(n, h // 2, w // 2, 2)
    chroma[..., 0] = _to_uint8(xp, 128 + _CB[0] * mr + _CB[1] * mg + _CB[2] * mb)
    chroma[..., 1] = _to_uint8(xp, 128 + _CR[0] * mr + _CR[1] * mg + _CR[2] * mb)
    return out


def _to_uint8(xp: ModuleType, values: Any) -> Any:
    return xp.clip(xp.rint(values), 0, 255).astype(xp.uint8)


_OBU_SEQUENCE_HEADER, _OBU_TEMPORAL_DELIMITER = 1, 2


def _av1_obus(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(type, start, end) of each OBU of a low-overhead AV1 bitstream."""
    pos = 0
    while pos < len(data):
        header = data[pos]
        obu_type = (header >> 3) & 0xF
        has_extension, has_size = (header >> 2) & 1, (header >> 1) & 1
        body = pos + 1 + has_extension
        if not has_size:  # only the last OBU may leave its size out
            yield obu_type, pos, len(data)
            return
        size, shift = 0, 0
        while True:  # leb128
            if body >= len(data):  # cut inside the size: the rest is one (partial) OBU
                yield obu_type, pos, len(data)
                return
            byte = data[body]
            body += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        yield obu_type, pos, body + size
        pos = body + size


class AccessUnitSplitter:
    """Cuts an encoder's output bytes, however the encoder chunked them, into one
    (bytes, is_key_frame) per frame: H.264 and HEVC with FFmpeg's parsers, AV1 at its
    temporal delimiters (a key frame's temporal unit repeats the sequence header)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self._parser = None if codec == "av1" else av.CodecContext.create(codec, "r")
        self._pending = b""

    def push(self, data: bytes) -> list[tuple[bytes, bool]]:
        if self._parser is not None:
            return [(bytes(p), p.is_keyframe) for p in self._parser.parse(data)]
        self._pending += data
        units = self._av1_units()
        self._pending = units.pop()[0] if units else self._pending
        return units

    def flush(self) -> list[tuple[bytes, bool]]:
        if self._parser is not None:
            return [(bytes(p), p.is_keyframe) for p in self._parser.parse(None)]
        units = self._av1_units()
        self._pending = b""
        return units

    def _av1_units(self) -> list[tuple[bytes, bool]]:
        """Every temporal unit in the pending bytes, the last (maybe incomplete) included."""
        data = self._pending
        starts: list[int] = []
        keys: list[bool] = []
        for obu_type, start, _ in _av1_obus(data):
            if obu_type == _OBU_TEMPORAL_DELIMITER or not starts:
                starts.append(start)
                keys.append(False)
            if obu_type == _OBU_SEQUENCE_HEADER:
                keys[-1] = True
        ends = [*starts[1:], len(data)]
        return [(data[s:e], k) for s, e, k in zip(starts, ends, keys, strict=True)]


class ElementaryStreamMuxer:
    """Writes encoded frames into an MP4, frame `i` at pts `i` in a 1/fps time base."""

    def __init__(self, path: Path, fmt: VideoFormat, *, faststart: bool = True) -> None:
        self.path = Path(path)
        self.frames = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container: av.container.OutputContainer | None = av.open(
            str(self.path), "w", options={"movflags": "faststart"} if faststart else {}
        )
        stream = self._container.add_stream(fmt.codec, rate=fmt.fps)
        if not isinstance(stream, av.video.stream.VideoStream):
            raise VideoError(f"{fmt.codec} is not a video codec")
        stream.width, stream.height, stream.pix_fmt = fmt.width, fmt.height, fmt.pix_fmt
        self._time_base = Fraction(1) / Fraction(fmt.fps)
        stream.time_base = self._time_base
        self._stream = stream
        self._splitter = AccessUnitSplitter(fmt.codec)

    def add(self, data: bytes) -> None:
        self._mux(self._splitter.push(data))

    def close(self) -> int:
        """Flush and finish the file; the number of frames it holds."""
        if self._container is not None:
            try:
                self._mux(self._splitter.flush())
            finally:
                self._container.close()
                self._container = None
        return self.frames

    def abort(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self.path.unlink(missing_ok=True)

    def _mux(self, units: list[tuple[bytes, bool]]) -> None:
        if self._container is None:
            raise VideoError(f"{self.path}: written after it was closed")
        for data, key in units:
            packet = av.Packet(data)
            packet.pts = packet.dts = self.frames
            packet.time_base = self._time_base
            packet.is_keyframe = key
            packet.stream = self._stream
            self._container.mux(packet)
            self.frames += 1


# ---------------------------------------------------------------- the engines (GPU only)


class _Plane:
    """One plane of an NV12 surface as the CUDA Array Interface describes it."""

    def __init__(self, pointer: int, shape: tuple[int, ...], strides: tuple[int, ...]) -> None:
        self.__cuda_array_interface__ = {
            "shape": shape, "strides": strides, "typestr": "|u1",
            "data": (pointer, False), "version": 3,
        }


class _Nv12Surface:
    """A device NV12 frame in the form NVENC's Encode takes: an object whose `cuda()`
    returns one CUDA Array Interface per plane (luma, then interleaved chroma)."""

    def __init__(self, frame: Any, height: int, width: int) -> None:
        self.frame = frame  # keeps the device memory alive while NVENC reads it
        pointer = frame.data.ptr
        self.planes = [
            _Plane(pointer, (height, width, 1), (width, 1, 1)),
            _Plane(pointer + height * width, (height // 2, width // 2, 2), (width, 2, 1)),
        ]

    def cuda(self) -> list[_Plane]:
        return self.planes


def encoded_bytes(output: Any) -> bytes:
    """Encode's or EndEncode's output as bytes: PyNvVideoCodec 2.2 returns a list of
    packets (dicts holding `data`), earlier versions one array of bytes."""
    if isinstance(output, list) and output and isinstance(output[0], dict):
        return b"".join(bytes(packet["data"]) for packet in output)
    return bytes(output)


class NvencEncoder:
    """video.VideoEncoder's interface on NVENC: (N, H, W, 3) RGB batches in, one MP4 out."""

    def __init__(self, path: Path, fmt: VideoFormat, *, faststart: bool = True) -> None:
        if fmt.pix_fmt not in ("yuv420p", "yuvj420p") or fmt.codec not in NVENC_CONSTQP:
            raise GpuCodecUnavailable(f"NVENC is not used for {fmt.codec} {fmt.pix_fmt} video")
        nvc, self._xp = _nvc(), _cupy()
        self.path, self.format, self.frames = Path(path), fmt, 0
        try:
            self._encoder = nvc.CreateEncoder(
                fmt.width, fmt.height, "NV12", False,
                codec=fmt.codec, fps=max(1, round(float(fmt.fps))), gop=2, idrperiod=2,
                bf=0, rc="constqp", constqp=NVENC_CONSTQP[fmt.codec], repeatspspps=1,
            )
        except Exception as exc:  # the library's errors: no NVENC, codec or size refused
            raise GpuCodecUnavailable(f"NVENC cannot encode {fmt.codec} here: {exc}") from None
        self._muxer = ElementaryStreamMuxer(path, fmt, faststart=faststart)

    def write(self, frames: np.ndarray) -> None:
        height, width = self.format.height, self.format.width
        nv12 = rgb_to_nv12(self._xp, self._xp.asarray(frames))
        # NVENC reads on its own stream: the conversion must have finished.
        self._xp.cuda.get_current_stream().synchronize()
        for frame in nv12:
            surface = _Nv12Surface(self._xp.ascontiguousarray(frame), height, width)
            self._muxer.add(encoded_bytes(self._encoder.Encode(surface)))
        self.frames += len(frames)

    def close(self) -> None:
        if self._encoder is not None:
            self._muxer.add(encoded_bytes(self._encoder.EndEncode()))
            self._encoder = None
        written = self._muxer.close()
        if written != self.frames:
            raise VideoError(f"{self.path}: NVENC wrote {written} frames of {self.frames}")

    def abort(self) -> None:
        self._encoder = None
        self._muxer.abort()

    def __enter__(self) -> NvencEncoder:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class NvdecReader:
    """Frames of one video file decoded by NVDEC into RGB, as video.decode_episode
    yields them: (N, H, W, 3) uint8 host batches of the episode's frames."""

    def __init__(self, path: Path) -> None:
        nvc, self._xp = _nvc(), _cupy()
        self.path = Path(path)
        try:
            self._decoder = nvc.SimpleDecoder(
                str(path), use_device_memory=True, output_color_type=nvc.OutputColorType.RGB
            )
            # NVDEC checks the codec against the GPU on the first frame: do it here, so a
            # missing engine is a fallback, not a failure halfway through an episode.
            self._decoder[0]
        except Exception as exc:  # the library's errors: no NVDEC for this codec, ...
            raise GpuCodecUnavailable(f"NVDEC cannot decode {path.name} here: {exc}") from None

    def episode(
        self, *, fps: float, num_frames: int, start_s: float, batch_frames: int
    ) -> Iterator[np.ndarray]:
        """Frame `i` of the file is the one at i / fps (LeRobot's files: every frame at
        its index over the rate), so an episode is a run of indices."""
        self._decoder.seek_to_index(round(start_s * fps))
        produced = 0
        while produced < num_frames:
            frames = self._decoder.get_batch_frames(min(batch_frames, num_frames - produced))
            if not frames:
                break
            batch = self._xp.stack([self._xp.from_dlpack(frame) for frame in frames])
            produced += len(frames)
            yield self._xp.asnumpy(batch)
        if produced != num_frames:
            raise VideoError(
                f"{self.path}: NVDEC found {produced} frames from {start_s:.4f}s, the metadata "
                f"says {num_frames}; the video is truncated or the metadata is wrong"
            )
