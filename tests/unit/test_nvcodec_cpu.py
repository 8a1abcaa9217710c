"""The parts of the GPU video path that need no GPU (augment_runner/nvcodec.py): the RGB to
NV12 conversion NVENC is fed, and the muxing of an encoder's elementary stream into an
MP4 that reads like the CPU encoder's. The stream here comes from FFmpeg's encoders,
which write the same bitstream formats NVENC does (Annex B H.264 and HEVC, low-overhead
AV1 with temporal delimiters)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from augment_runner.errors import VideoError
from augment_runner.nvcodec import (
    ElementaryStreamMuxer,
    _Nv12Surface,
    encoded_bytes,
    rgb_to_nv12,
)
from augment_runner.video import (
    ENCODER_OPTIONS,
    VideoConcatenator,
    VideoFormat,
    decode_episode,
    encoder_for,
)

W, H, FPS = 64, 48, Fraction(30)


def gradient(frames: int) -> np.ndarray:
    """Smooth colour ramps (no edge), different in every frame."""
    y, x = np.mgrid[0:H, 0:W]
    out = np.empty((frames, H, W, 3), np.uint8)
    for i in range(frames):
        out[i, ..., 0] = x * 3 + i * 7
        out[i, ..., 1] = y * 4 + i * 3
        out[i, ..., 2] = x + y + 100
    return out


def test_nv12_matches_ffmpegs_conversion_within_a_grey_level() -> None:
    frames = gradient(3)
    ours = rgb_to_nv12(np, frames)
    assert ours.shape == (3, H * 3 // 2, W) and ours.dtype == np.uint8
    for frame, nv12 in zip(frames, ours, strict=True):
        theirs = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="nv12")
        luma = np.frombuffer(bytes(theirs.planes[0]), np.uint8).reshape(H, -1)[:, :W]
        chroma = np.frombuffer(bytes(theirs.planes[1]), np.uint8).reshape(H // 2, -1)[:, :W]
        assert np.abs(nv12[:H].astype(int) - luma).max() <= 1
        assert np.abs(nv12[H:].astype(int) - chroma).max() <= 2  # FFmpeg's chroma siting


def test_nv12_needs_an_even_size() -> None:
    with pytest.raises(VideoError, match="even frame size"):
        rgb_to_nv12(np, np.zeros((1, 5, 4, 3), np.uint8))


def elementary_stream(codec: str, frames: np.ndarray) -> tuple[list[bytes], list[bool]]:
    """What an encoder hands back, call by call: the encoded frames' bytes; and which
    frames it made key frames."""
    encoder = encoder_for(codec)
    ctx = av.CodecContext.create(encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = W, H, "yuv420p"
    ctx.time_base, ctx.framerate = 1 / FPS, FPS
    ctx.options = dict(ENCODER_OPTIONS[encoder])
    packets = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    return [bytes(p) for p in packets], [p.is_keyframe for p in packets]


@pytest.mark.parametrize("codec", ["h264", "hevc", "av1"])
@pytest.mark.parametrize("chunking", ["per call", "one blob"])
def test_the_muxed_stream_reads_like_the_cpu_encoders(
    tmp_path: Path, codec: str, chunking: str
) -> None:
    frames = gradient(6)
    chunks, encoders_keys = elementary_stream(codec, frames)
    if chunking == "one blob":  # NVENC's flush may return several frames at once
        chunks = [b"".join(chunks)]
    fmt = VideoFormat(codec, "yuv420p", FPS, W, H)
    muxer = ElementaryStreamMuxer(tmp_path / "seg.mp4", fmt, faststart=False)
    for chunk in chunks:
        muxer.add(chunk)
    assert muxer.close() == len(frames)

    with av.open(str(tmp_path / "seg.mp4")) as container:
        stream = container.streams.video[0]
        keys = [p.is_keyframe for p in container.demux(stream) if p.size]
    assert keys == encoders_keys and keys[0]  # the key frames flagged, for seeking
    # Every frame where the metadata puts it, seeking to a key frame included.
    decoded = np.concatenate(list(decode_episode(tmp_path / "seg.mp4", fps=float(FPS),
                                                 num_frames=4, start_s=2 / float(FPS))))
    assert np.abs(decoded.astype(int) - frames[2:]).mean() < 6
    # It joins a v3 file as the CPU encoder's segments do.
    joined = VideoConcatenator(tmp_path / "file.mp4", FPS)
    joined.append(tmp_path / "seg.mp4", len(frames))
    segment = joined.append(tmp_path / "seg.mp4", len(frames))
    joined.close()
    assert segment.from_timestamp == pytest.approx(6 / 30)
    again = np.concatenate(list(decode_episode(tmp_path / "file.mp4", fps=float(FPS),
                                               num_frames=6, start_s=segment.from_timestamp)))
    assert np.array_equal(again[2:], decoded)


def test_both_forms_of_nvencs_output_become_bytes() -> None:
    packets = [{"data": b"\x00\x00\x01a", "timestamp": 0, "picture_type": 3},
               {"data": b"\x00\x00\x01b", "timestamp": 1, "picture_type": 0}]
    assert encoded_bytes(packets) == b"\x00\x00\x01a\x00\x00\x01b"  # 2.2: packets
    assert encoded_bytes(np.frombuffer(b"\x00\x01", np.uint8)) == b"\x00\x01"  # earlier
    assert encoded_bytes([]) == b""


def test_an_nv12_surface_describes_its_two_planes_as_nvenc_reads_them() -> None:
    # The layout PyNvVideoCodec documents for a device NV12 frame: luma (H, W, 1), then
    # interleaved chroma (H/2, W/2, 2) right after it, both rows W bytes apart.
    frame = SimpleNamespace(data=SimpleNamespace(ptr=1 << 20))
    luma, chroma = (p.__cuda_array_interface__ for p in _Nv12Surface(frame, H, W).cuda())
    assert (luma["data"], luma["shape"], luma["strides"]) == ((1 << 20, False), (H, W, 1),
                                                              (W, 1, 1))
    assert (chroma["data"], chroma["shape"], chroma["strides"]) == (
        ((1 << 20) + H * W, False), (H // 2, W // 2, 2), (W, 2, 1))
    assert luma["typestr"] == chroma["typestr"] == "|u1"
