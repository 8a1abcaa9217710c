"""Decode episode frames from MP4 files and encode augmented frames back, with PyAV.

LeRobot looks a frame up by its timestamp: frame `i` of an episode must sit at
`from_timestamp + i / fps` in the file (within 1e-4 s). So every encoder here stamps
frame `i` with pts `i` in a `1/fps` time base, and appending an episode to a v3 file
shifts its packets by the frames already in that file: timestamps stay exact.

Frames travel as (N, H, W, 3) RGB arrays, N <= the batch size, so memory does not grow
with the episode length: uint8 for 8-bit video, uint16 (all 16 bits used, as FFmpeg's
rgb48le) for video of more bits per sample, so a 10-bit camera is never quantised to
8 bits on its way through (docs/design.md, Video codecs).
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .errors import VideoError


def time_base(stream: av.video.stream.VideoStream) -> Fraction:
    """The stream's tick length; every stream a demuxer opens has one."""
    if stream.time_base is None:
        raise VideoError(f"{stream.container.name}: the video stream has no time base")
    return stream.time_base

# SVT-AV1 prints a banner and tuning notes on stderr for every encoder it opens; our
# stderr carries one line per failure, so keep it to errors unless the user asks.
os.environ.setdefault("SVT_LOG", "1")

# Stream codec name (as ffprobe reports it) -> encoders to try, best first.
ENCODERS_BY_CODEC: dict[str, tuple[str, ...]] = {
    "av1": ("libsvtav1", "libaom-av1"),
    "h264": ("libx264",),
    "hevc": ("libx265",),
    "mpeg4": ("mpeg4",),
    "vp9": ("libvpx-vp9",),
}

# Fast settings in the spirit of LeRobot's own encoder defaults (GOP of 2 so a reader
# seeking any timestamp decodes at most one extra frame; CRF 30 for AV1).
ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libsvtav1": {"g": "2", "crf": "30", "preset": "12"},
    "libaom-av1": {"g": "2", "crf": "30", "cpu-used": "8", "row-mt": "1"},
    # No B-frames: decode order equals presentation order, which keeps appended
    # episodes' packet timestamps trivially monotonic.
    "libx264": {"g": "2", "crf": "23", "preset": "veryfast", "bf": "0"},
    "libx265": {
        "g": "2",
        "crf": "28",
        "preset": "veryfast",
        "x265-params": "bframes=0:log-level=error",
    },
    "mpeg4": {"g": "2", "qscale": "3"},
    "libvpx-vp9": {"g": "2", "crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"},
}

# Half a frame: how far a decoded timestamp may sit from where the frame belongs
# before we call the file inconsistent with its metadata.
HALF_FRAME = 0.5


@dataclass(frozen=True)
class VideoFormat:
    """What an encoded stream looks like; augmented videos keep all of it."""

    codec: str
    pix_fmt: str
    fps: Fraction
    width: int
    height: int

    @property
    def encoder(self) -> str:
        return encoder_for(self.codec)

    @property
    def bit_depth(self) -> int:
        """Bits per sample of the pixel format (8 for yuv420p, 10 for yuv420p10le)."""
        return bit_depth(self.pix_fmt)


def bit_depth(pix_fmt: str) -> int:
    """Bits per sample of an FFmpeg pixel format (8 for yuv420p, 10 for yuv420p10le)."""
    try:
        return max(c.bits for c in av.VideoFormat(pix_fmt).components)
    except ValueError:  # a name this FFmpeg does not know
        raise VideoError(
            f"unknown pixel format {pix_fmt!r}; re-encode the videos to yuv420p"
        ) from None


# What frames of each depth travel as: (dtype, FFmpeg's RGB format, its grey format).
# Deeper video decodes to 16 bits whatever its own depth (10, 12): FFmpeg scales the
# samples to the full 16-bit range, so one code path serves every depth above 8.
_FRAME_FORMATS = {False: (np.uint8, "rgb24", "gray"), True: (np.uint16, "rgb48le", "gray16le")}


def encoder_takes(encoder: str, pix_fmt: str) -> bool:
    """Whether `encoder` writes `pix_fmt` (libx264 and libx265 write 10-bit 4:2:0,
    libsvtav1 too; mpeg4 and this build's libvpx-vp9 do not)."""
    formats = av.codec.Codec(encoder, "w").video_formats
    return formats is None or pix_fmt in {f.name for f in formats}


def threaded_options(encoder: str, options: dict[str, str], threads: int) -> dict[str, str]:
    """`options` with the encoder's own thread setting where it ignores FFmpeg's
    thread count: SVT-AV1 sizes its pools from its level of parallelism (`lp`), x265
    from its thread pools (`pools`); the others follow the codec context's count."""
    own = {"libsvtav1": ("svtav1-params", f"lp={threads}"),
           "libx265": ("x265-params", f"pools={threads}")}.get(encoder)
    if own is None:
        return dict(options)
    key, value = own
    return {**options, key: f"{options[key]}:{value}" if options.get(key) else value}


def encoder_for(codec: str) -> str:
    """The encoder we use to write `codec` streams (the source's codec is kept)."""
    available = av.codecs_available
    for name in ENCODERS_BY_CODEC.get(codec, (codec,)):
        if name in available:
            try:
                if av.codec.Codec(name, "w").type == "video":
                    return name
            except av.error.FFmpegError:  # pragma: no cover - listed but unusable
                continue
    raise VideoError(
        f"no encoder for the source video codec {codec!r} is available here "
        f"(supported: {', '.join(sorted(ENCODERS_BY_CODEC))}); re-encode the source videos "
        f"to AV1 or H.264 first"
    )


def _open_input(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path), "r")
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot open video {path}: {exc}; re-download the dataset") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream; re-download the dataset")
    return container


def probe_video(path: Path) -> VideoFormat:
    """Codec, pixel format, frame rate and size of the first video stream of `path`."""
    with _open_input(path) as container:
        stream = container.streams.video[0]
        rate = stream.base_rate or stream.average_rate or stream.guessed_rate
        if not rate or stream.pix_fmt is None:
            raise VideoError(f"{path} does not say its frame rate or pixel format; re-encode it")
        return VideoFormat(
            codec=stream.codec.canonical_name,
            pix_fmt=stream.pix_fmt,
            fps=Fraction(rate),
            width=stream.width,
            height=stream.height,
        )


def decode_episode(
    path: Path,
    *,
    fps: float,
    num_frames: int,
    start_s: float = 0.0,
    batch_frames: int = 64,
    grey: bool = False,
    threads: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield the `num_frames` frames that start at `start_s`, in (N,H,W,3) RGB batches,
    or with `grey` (a 1-channel camera) (N,H,W,1) grey levels: uint8 for 8-bit video,
    uint16 (the full 16-bit range) for deeper video.

    v3 files hold many episodes: we seek to the key frame before `start_s`, skip the
    frames of earlier episodes and stop after `num_frames`. Each frame must sit where
    the metadata says (start + i/fps, within half a frame): a gap or a short file means
    the metadata and the video disagree, which we report instead of shifting frames.
    `threads`: the decoder's threads (cpu_budget.py); None: FFmpeg's choice (every core).
    """
    if batch_frames < 1:
        raise ValueError("batch_frames must be >= 1")
    frame_s = 1.0 / float(fps)
    with _open_input(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        dtype, rgb, gray = _FRAME_FORMATS[bit_depth(stream.pix_fmt or "yuv420p") > 8]
        if threads is not None:
            stream.codec_context.thread_count = threads
        batch: np.ndarray | None = None
        filled = produced = 0
        try:
            if start_s > 0:
                container.seek(
                    max(0, int((start_s - frame_s) / time_base(stream))),
                    stream=stream,
                    backward=True,
                    any_frame=False,
                )
            for frame in container.decode(stream):
                if produced + filled >= num_frames:
                    break
                t = _frame_time(frame, stream)
                if t < start_s - HALF_FRAME * frame_s:
                    continue  # an earlier episode's frame, decoded from the key frame on
                expected = start_s + (produced + filled) * frame_s
                if abs(t - expected) > HALF_FRAME * frame_s:
                    raise VideoError(
                        f"{path}: frame {produced + filled} of the episode at {start_s:.4f}s is "
                        f"at {t:.4f}s, expected {expected:.4f}s; the video does not match the "
                        f"dataset metadata"
                    )
                if batch is None:
                    batch = np.empty(
                        (min(batch_frames, num_frames - produced), frame.height, frame.width,
                         1 if grey else 3),
                        dtype=dtype,
                    )
                if grey:
                    batch[filled, ..., 0] = frame.to_ndarray(format=gray)
                else:
                    batch[filled] = frame.to_ndarray(format=rgb)
                filled += 1
                if filled == len(batch):
                    yield batch
                    produced += filled
                    batch, filled = None, 0
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot decode {path}: {exc}; re-download the dataset") from None
        if batch is not None and filled:
            yield batch[:filled]
            produced += filled
    if produced != num_frames:
        raise VideoError(
            f"{path}: found {produced} frames from {start_s:.4f}s, the metadata says "
            f"{num_frames}; the video is truncated or the metadata is wrong"
        )


def _frame_time(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> float:
    if frame.pts is not None:
        return float(frame.pts * time_base(stream))
    return float(frame.time or 0.0)


def keep_normal_scheduling() -> None:
    """Run as root, SVT-AV1 switches the thread that opens an encoder, and its own
    worker threads, to real-time SCHED_FIFO priority 99; every thread and process started
    from them would inherit it and could starve the machine. Put all of ours back."""
    if not hasattr(os, "sched_getscheduler"):
        return
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            if os.sched_getscheduler(int(task.name)) != os.SCHED_OTHER:
                os.sched_setscheduler(int(task.name), os.SCHED_OTHER, os.sched_param(0))


class VideoEncoder:
    """Encode frames into one new MP4 with the given format; frame i gets time i/fps."""

    def __init__(
        self,
        path: Path,
        fmt: VideoFormat,
        options: dict[str, str] | None = None,
        *,
        faststart: bool = True,
        threads: int | None = None,
    ) -> None:
        """`threads`: the encoder's threads (cpu_budget.py); None: its own choice."""
        self.path = Path(path)
        self.format = fmt
        self.frames = 0
        encoder = fmt.encoder
        container_options = {"movflags": "faststart"} if faststart else {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        container = av.open(str(self.path), "w", options=container_options)
        self._container: av.container.OutputContainer | None = container
        chosen = dict(options or ENCODER_OPTIONS.get(encoder, {}))
        if threads is not None:
            chosen = threaded_options(encoder, chosen, threads)
        try:
            stream = container.add_stream(encoder, rate=fmt.fps, options=chosen)
            if not isinstance(stream, av.video.stream.VideoStream):
                raise ValueError(f"{encoder} is not a video encoder")
            if threads is not None:
                stream.codec_context.thread_count = threads
            self._stream = stream
            self._stream.width = fmt.width
            self._stream.height = fmt.height
            self._stream.pix_fmt = fmt.pix_fmt
        except (av.error.FFmpegError, ValueError) as exc:
            container.close()
            raise VideoError(
                f"cannot set up {encoder} for {fmt.width}x{fmt.height} {fmt.pix_fmt} at "
                f"{fmt.fps} fps: {exc}"
            ) from None

    def write(self, frames: np.ndarray) -> None:
        """Encode a (N,H,W,3) RGB or (N,H,W,1) grey batch, uint8 or uint16 (decode_episode's
        frames), after the frames already written, in the file's own pixel format."""
        _, rgb, gray = _FRAME_FORMATS[frames.dtype == np.uint16]
        for pixels in frames:
            if pixels.shape[-1] == 1:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels[..., 0]), gray)
            else:
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format=rgb)
            frame.pts = self.frames
            try:
                packets = self._stream.encode(frame)
            except av.error.FFmpegError as exc:  # the encoder opens on the first frame
                fmt = self.format
                raise VideoError(
                    f"{fmt.encoder} cannot encode {fmt.width}x{fmt.height} {fmt.pix_fmt} video "
                    f"({exc}); re-encode the source videos to yuv420p first"
                ) from None
            if self.frames == 0:  # the first encode opened the codec
                keep_normal_scheduling()
            self._mux(packets)
            self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._container is None:
            return
        try:
            self._mux(self._stream.encode(None))
        finally:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self.path.unlink(missing_ok=True)

    def _mux(self, packets: list[av.Packet]) -> None:
        if self._container is None:
            raise VideoError(f"{self.path}: written after it was closed")
        for packet in packets:
            self._container.mux(packet)

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


@dataclass(frozen=True)
class Segment:
    """Where an appended episode landed in a concatenated file, in seconds."""

    from_timestamp: float
    to_timestamp: float
    frames: int


class VideoConcatenator:
    """Append standalone episode MP4s into one v3 video file without re-encoding.

    This is what LeRobot itself does when it records (encode each episode, then
    concatenate the streams). Each episode starts on a key frame of its own and its
    packets are shifted by the frames already in the file, so episode k's frame i sits
    at exactly (frames before k + i) / fps.
    """

    def __init__(self, path: Path, fps: Fraction) -> None:
        self.path = Path(path)
        self.fps = Fraction(fps)
        self.frames = 0
        self.packet_bytes = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None

    def append(self, segment: Path, expected_frames: int) -> Segment:
        with _open_input(segment) as source:
            in_stream = source.streams.video[0]
            return self.append_packets(
                in_stream, source.demux(in_stream), expected_frames, segment
            )

    def append_packets(
        self, in_stream: av.video.stream.VideoStream, packets: Iterable[av.Packet],
        expected_frames: int, where: Path,
    ) -> Segment:
        """Append one episode's packets, timed from 0 in `in_stream`'s time base (a
        segment's, or an episode cut out of a file by `episode_packets`)."""
        start_frames = self.frames
        base = time_base(in_stream)
        if self._container is None or self._stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self.path), "w", options={"movflags": "faststart"})
            self._stream = self._container.add_stream_from_template(in_stream, opaque=True)
            self._stream.time_base = base
        shift = round(Fraction(start_frames) / self.fps / base)
        copied = 0
        for packet in packets:
            if packet.dts is None or packet.pts is None:
                continue  # the demuxer's end-of-stream marker
            packet.pts += shift
            packet.dts += shift
            packet.stream = self._stream
            self.packet_bytes += packet.size
            self._container.mux(packet)
            copied += 1
        if copied != expected_frames:
            raise VideoError(f"{where}: encoded {copied} frames, expected {expected_frames}")
        self.frames += copied
        return Segment(float(start_frames / self.fps), float(self.frames / self.fps), copied)

    def size_bytes(self) -> int:
        """The bytes of the packets appended so far: what the file's size limit counts.
        Counted, not read from the disk (where the muxer's buffer makes it lag), so a
        merge appending the same packets fills its files exactly as the writer did."""
        return self.packet_bytes

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _times(packet: av.Packet) -> tuple[int, int]:
    """A packet's (pts, dts), which the demuxing loops only keep when both are set."""
    assert packet.pts is not None and packet.dts is not None
    return packet.pts, packet.dts


def episode_packets(
    source: Path, windows: Sequence[tuple[float, int]], fps: Fraction
) -> Iterator[tuple[av.video.stream.VideoStream, list[av.Packet]]]:
    """The packets of each episode of a file VideoConcatenator wrote, in order: one
    (stream, packets) per window (from_timestamp, frames), the episodes back to back as
    the file holds them, each timed from 0, in decode order. Read in one pass. A file
    that does not hold exactly these episodes, each starting on a key frame of its own,
    is refused: joining it could not be exact."""
    with _open_input(source) as container:
        stream = container.streams.video[0]
        base = time_base(stream)
        frame_ticks = 1 / (Fraction(fps) * base)
        # Each window's lowest pts: half a frame before its first frame's.
        starts = [Fraction(start) / base - frame_ticks / 2 for start, _ in windows]
        episodes: list[list[av.Packet]] = [[] for _ in windows]
        current = 0

        def finished(index: int) -> list[av.Packet]:
            packets = episodes[index]
            episodes[index] = []
            if len(packets) != windows[index][1] or not packets or not packets[0].is_keyframe:
                raise VideoError(f"{source}: episode {index} of the file is not "
                                 f"{windows[index][1]} frames from a key frame of its own")
            times = [_times(p) for p in packets]
            shift = min(pts for pts, _ in times)
            if times[0][0] != shift:
                raise VideoError(f"{source}: episode {index} does not start on its first frame")
            for packet, (pts, dts) in zip(packets, times, strict=True):
                packet.pts, packet.dts = pts - shift, dts - shift
            return packets

        for packet in container.demux(stream):
            if packet.dts is None or packet.pts is None:
                continue
            index = bisect.bisect_right(starts, packet.pts) - 1
            if index < current:
                raise VideoError(f"{source}: a packet of episode {index} comes after episode "
                                 f"{current}'s; the file is not one VideoConcatenator wrote")
            while current < index:
                yield stream, finished(current)
                current += 1
            episodes[index].append(packet)
        while current < len(windows):
            yield stream, finished(current)
            current += 1


class EpisodeCut:
    """One episode's packets copied out of a (v3) video file into a standalone MP4,
    without decoding: frames come out bit for bit as the source's, whatever the codec,
    pixel format or bit depth. It stands where an encoder's segment would (`path`,
    `close`), so a writer appends it the same way.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def close(self) -> None:
        """Nothing to flush: the file is complete when `cut_episode` returns."""


def cut_episode(
    source: Path, start_s: float, frames: int, fps: Fraction, out: Path
) -> EpisodeCut | None:
    """The packets of the `frames` frames from `start_s` in `source`, shifted to start at
    0, in `out`; None (and no `out`) when a cut cannot be exact: the episode does not
    start on a key frame of its own, or the window holds another number of frames."""
    with _open_input(source) as container:
        stream = container.streams.video[0]
        if stream.time_base is None:
            return None
        frame_ticks = 1 / (Fraction(fps) * stream.time_base)
        first = Fraction(start_s) / stream.time_base
        low, high = first - frame_ticks / 2, first + (frames - Fraction(1, 2)) * frame_ticks
        # (pts, dts, packet) of the window, in decode order.
        window = [
            (p.pts, p.dts, p) for p in container.demux(stream)
            if p.dts is not None and p.pts is not None and low <= p.pts < high
        ]
        if len(window) != frames or not window[0][2].is_keyframe:
            return None
        shift = min(pts for pts, _, _ in window)
        if window[0][0] != shift:
            return None  # the first packet to decode is not the episode's first frame
        out.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(out), "w") as target:
            target_stream = target.add_stream_from_template(stream, opaque=True)
            target_stream.time_base = stream.time_base
            for pts, dts, packet in window:
                packet.pts, packet.dts = pts - shift, dts - shift
                packet.stream = target_stream
                target.mux(packet)
    return EpisodeCut(out)

