"""Video round trips, LeRobot-style statistics, and the validator as a judge."""

from __future__ import annotations

import io
import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from augment_dev.datasets import (
    make_lerobot_v3,
    make_lerobot_v21,
    make_plain_image_dataset,
    synthetic_frames,
)
from augment_runner import stats as stats_mod
from augment_runner.errors import DatasetError, VideoError
from augment_runner.formats.base import decode_image_cells, encode_png
from augment_runner.formats.detect import open_dataset
from augment_runner.validate import Problems, _decoded_times, _packet_times, validate_dataset
from augment_runner.video import (
    VideoConcatenator,
    VideoEncoder,
    VideoFormat,
    decode_episode,
    episode_packets,
    probe_video,
)

SIZE = (48, 64)


# ---------------------------------------------------------------- video


@pytest.mark.parametrize("codec", ["av1", "h264"])
def test_concatenated_episodes_decode_back_at_their_offsets(tmp_path: Path, codec: str) -> None:
    fmt = VideoFormat(codec, "yuv420p", Fraction(10), SIZE[1], SIZE[0])
    concatenator = VideoConcatenator(tmp_path / "file-000.mp4", fmt.fps)
    lengths, segments, originals = [7, 12, 5], [], []
    for n, length in enumerate(lengths):
        frames = synthetic_frames(n, length, SIZE)
        originals.append(frames)
        with VideoEncoder(tmp_path / "segment.mp4", fmt, faststart=False) as encoder:
            encoder.write(frames)
        segments.append(concatenator.append(tmp_path / "segment.mp4", length))
    concatenator.close()

    assert [s.from_timestamp for s in segments] == [0.0, 0.7, 1.9]
    assert [s.to_timestamp for s in segments] == [0.7, 1.9, 2.4]
    probed = probe_video(tmp_path / "file-000.mp4")
    assert (probed.codec, probed.pix_fmt, probed.fps) == (codec, "yuv420p", 10)
    for segment, frames in zip(segments, originals, strict=True):
        batches = list(
            decode_episode(
                tmp_path / "file-000.mp4",
                fps=10,
                num_frames=segment.frames,
                start_s=segment.from_timestamp,
                batch_frames=4,
            )
        )
        assert all(len(b) <= 4 for b in batches)
        decoded = np.concatenate(batches)
        # Lossy codecs: the right frames, in order, within a few grey levels on average.
        assert np.abs(decoded.astype(int) - frames).mean() < 6


def concatenated(tmp_path: Path, fmt: VideoFormat, lengths: list[int], name: str) -> Path:
    """A v3 video file of episodes of `lengths` frames, as the writer appends them."""
    concatenator = VideoConcatenator(tmp_path / name, fmt.fps)
    for n, length in enumerate(lengths):
        with VideoEncoder(tmp_path / "segment.mp4", fmt, faststart=False) as encoder:
            encoder.write(synthetic_frames(n, length, SIZE))
        concatenator.append(tmp_path / "segment.mp4", length)
    concatenator.close()
    return tmp_path / name


def decoded(path: Path, start_s: float, frames: int) -> np.ndarray:
    return np.concatenate(list(decode_episode(path, fps=10, num_frames=frames, start_s=start_s,
                                              batch_frames=8)))


@pytest.mark.parametrize("codec", ["av1", "h264"])
def test_episodes_of_two_files_join_into_one_without_decoding(tmp_path: Path, codec: str) -> None:
    """The merge's join: episodes cut out of two files (by their offsets) and appended to
    a third are bit for bit the frames they were, at offsets as if written there, and
    the joined file counts exactly the packet bytes appended."""
    fmt = VideoFormat(codec, "yuv420p", Fraction(10), SIZE[1], SIZE[0])
    first = concatenated(tmp_path, fmt, [7, 12], "a.mp4")
    second = concatenated(tmp_path, fmt, [5], "b.mp4")
    joined = VideoConcatenator(tmp_path / "joined.mp4", fmt.fps)
    segments, sizes = [], 0
    for path, windows in ((first, [(0.0, 7), (0.7, 12)]), (second, [(0.0, 5)])):
        for (start, length), (stream, packets) in zip(
            windows, episode_packets(path, windows, fmt.fps), strict=True
        ):
            sizes += sum(p.size for p in packets)
            segments.append((path, start, joined.append_packets(stream, packets, length, path)))
    joined.close()
    assert joined.size_bytes() == sizes
    assert [s.from_timestamp for _, _, s in segments] == [0.0, 0.7, 1.9]
    for path, start, segment in segments:
        np.testing.assert_array_equal(
            decoded(tmp_path / "joined.mp4", segment.from_timestamp, segment.frames),
            decoded(path, start, segment.frames),
        )


def test_a_file_that_does_not_hold_the_episodes_said_is_not_joined(tmp_path: Path) -> None:
    fmt = VideoFormat("h264", "yuv420p", Fraction(10), SIZE[1], SIZE[0])
    path = concatenated(tmp_path, fmt, [7, 12], "a.mp4")
    for windows in ([(0.0, 6), (0.7, 12)], [(0.0, 7), (0.7, 11)], [(0.0, 7)]):
        with pytest.raises(VideoError):
            list(episode_packets(path, windows, fmt.fps))


@pytest.mark.parametrize("codec", ["av1", "h264"])
def test_grey_frames_encode_and_decode_with_one_channel(tmp_path: Path, codec: str) -> None:
    fmt = VideoFormat(codec, "yuv420p", Fraction(10), SIZE[1], SIZE[0])
    frames = synthetic_frames(0, 6, SIZE)[..., :1]
    with VideoEncoder(tmp_path / "grey.mp4", fmt) as encoder:
        encoder.write(frames)
    assert probe_video(tmp_path / "grey.mp4").pix_fmt == "yuv420p"  # the file's own format
    decoded = np.concatenate(list(decode_episode(tmp_path / "grey.mp4", fps=10, num_frames=6,
                                                 grey=True)))
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 6


def test_grey_images_round_trip_as_8_bit_grey_pngs() -> None:
    frames = synthetic_frames(0, 3, SIZE)[..., :1]
    cells = [{"bytes": encode_png(frame), "path": None} for frame in frames]
    assert all(Image.open(io.BytesIO(c["bytes"])).mode == "L" for c in cells)
    assert np.array_equal(decode_image_cells(cells, "test", channels=1), frames)
    sixteen = io.BytesIO()
    Image.fromarray(frames[0, ..., 0].astype(np.uint16) * 256).save(sixteen, format="PNG")
    with pytest.raises(DatasetError, match="8-bit grey"):
        decode_image_cells([{"bytes": sixteen.getvalue(), "path": None}], "test", channels=1)


def test_decoding_past_the_end_of_a_video_is_a_clear_error(tmp_path: Path) -> None:
    fmt = VideoFormat("av1", "yuv420p", Fraction(10), SIZE[1], SIZE[0])
    with VideoEncoder(tmp_path / "v.mp4", fmt) as encoder:
        encoder.write(synthetic_frames(0, 5, SIZE))
    with pytest.raises(VideoError, match="found 5 frames"):
        list(decode_episode(tmp_path / "v.mp4", fps=10, num_frames=8))
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 50)
    with pytest.raises(VideoError, match="cannot open video"):
        list(decode_episode(tmp_path / "bad.mp4", fps=10, num_frames=8))


# ---------------------------------------------------------------- stats


def test_numeric_stats_follow_lerobot_shapes_and_values() -> None:
    values = np.random.default_rng(0).normal(size=(500, 3)).astype(np.float32)
    stats = stats_mod.numeric_stats(values, with_quantiles=True)
    assert {k: v.shape for k, v in stats.items()} == {
        **{k: (3,) for k in ("min", "max", "mean", "std", "q01", "q10", "q50", "q90", "q99")},
        "count": (1,),
    }
    np.testing.assert_allclose(stats["mean"], values.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["std"], values.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(stats["q50"], np.quantile(values, 0.5, axis=0), atol=5e-3)
    np.testing.assert_allclose(stats["q99"], np.quantile(values, 0.99, axis=0), atol=2e-2)
    scalar = stats_mod.numeric_stats(np.arange(10), with_quantiles=False)
    assert scalar["mean"].shape == (1,) and "q50" not in scalar


def test_image_stats_are_per_channel_in_unit_range() -> None:
    frames = np.zeros((20, 8, 8, 3), dtype=np.uint8)
    frames[..., 0] = 255
    frames[..., 1] = 51
    sampler = stats_mod.FrameSampler(20)
    sampler.add(frames[:7], 0)
    sampler.add(frames[7:], 7)
    stats = sampler.stats(with_quantiles=True)
    assert stats["mean"].shape == (3, 1, 1) and stats["count"].tolist() == [20]
    np.testing.assert_allclose(stats["mean"].ravel(), [1.0, 0.2, 0.0])
    assert stats_mod.sample_frame_indices(1000)[:3] == [0, 6, 11]  # ~177 of 1000 sampled
    assert len(stats_mod.sample_frame_indices(1000)) == 177


def test_grey_image_stats_are_those_of_its_rgb_rendering() -> None:
    """LeRobot loads images as RGB for statistics: a grey camera's are (3,1,1)."""
    grey = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    ours = stats_mod.image_stats(grey, with_quantiles=True)
    rgb = stats_mod.image_stats(np.repeat(grey, 3, axis=-1), with_quantiles=True)
    assert ours.keys() == rgb.keys()
    for key, value in rgb.items():
        np.testing.assert_allclose(ours[key], value, rtol=1e-12, err_msg=key)


def test_aggregation_matches_pooled_statistics() -> None:
    rng = np.random.default_rng(1)
    parts = [rng.normal(loc=i, size=(n, 2)) for i, n in enumerate([30, 50, 20])]
    per_episode = [stats_mod.numeric_stats(p, with_quantiles=False) for p in parts]
    total = stats_mod.aggregate_feature(per_episode)
    pooled = np.concatenate(parts)
    np.testing.assert_allclose(total["mean"], pooled.mean(axis=0))
    np.testing.assert_allclose(total["std"], pooled.std(axis=0))
    assert total["count"].tolist() == [100]


# ---------------------------------------------------------------- the validator


@pytest.fixture(scope="module")
def v3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lerobot_v3(
        tmp_path_factory.mktemp("v3") / "ds",
        episodes=3,
        frames=[12, 10, 14],
        cameras=("observation.images.top", "observation.images.wrist"),
        image_cameras=("observation.images.side",),
    )


@pytest.fixture(scope="module")
def v21(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lerobot_v21(
        tmp_path_factory.mktemp("v21") / "ds",
        episodes=2,
        codec="libx264",
        image_cameras=("observation.images.side",),
    )


def test_generated_datasets_are_valid(v3: Path, v21: Path, tmp_path: Path) -> None:
    assert validate_dataset(v3) == []
    assert validate_dataset(v21) == []
    assert validate_dataset(v3, decode_videos=False) == []
    assert validate_dataset(v21, decode_videos=False) == []
    plain = make_plain_image_dataset(tmp_path / "plain")
    assert validate_dataset(plain) == []
    reader = open_dataset(v3)
    assert reader.format_name == "LeRobot v3.0"
    assert [c.key for c in reader.cameras] == [
        "observation.images.top",
        "observation.images.wrist",
        "observation.images.side",
    ]
    assert [e.length for e in reader.episodes] == [12, 10, 14]


def _broken_copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "broken"
    shutil.copytree(source, target)
    return target


def test_validator_catches_wrong_totals_and_offsets(v3: Path, tmp_path: Path) -> None:
    broken = _broken_copy(v3, tmp_path)
    info = json.loads((broken / "meta/info.json").read_text())
    info["total_frames"] += 1
    (broken / "meta/info.json").write_text(json.dumps(info))
    meta = broken / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(meta)
    column = "videos/observation.images.top/from_timestamp"
    shifted = table.set_column(
        table.schema.get_field_index(column),
        column,
        [[v + 0.05 for v in table.column(column).to_pylist()]],
    )
    pq.write_table(shifted, meta)
    problems = validate_dataset(broken)
    assert any("total_frames" in p for p in problems)
    assert any("observation.images.top" in p and "frame" in p for p in problems)
    # Timestamps read from the packets are those the decoder stamps the frames with.
    assert validate_dataset(broken, decode_videos=False) == problems


def test_packet_timestamps_are_the_decoded_frames_timestamps(v3: Path, v21: Path) -> None:
    for video in [*v3.glob("videos/**/*.mp4"), *v21.glob("videos/**/*.mp4")]:
        problems = Problems()
        assert _packet_times(video, problems) == _decoded_times(video, problems), video
        assert problems == []


def test_validator_catches_missing_stats_and_videos(v21: Path, tmp_path: Path) -> None:
    broken = _broken_copy(v21, tmp_path)
    lines = (broken / "meta/episodes_stats.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    del first["stats"]["action"]
    (broken / "meta/episodes_stats.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]))
    next(broken.glob("videos/**/episode_000001.mp4")).unlink()
    problems = validate_dataset(broken)
    assert any("'action'" in p for p in problems)
    assert any("missing" in p and "episode 1" in p for p in problems)


def test_unknown_layouts_and_versions_are_refused(v3: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither a LeRobot dataset"):
        open_dataset(tmp_path / "empty")
    broken = _broken_copy(v3, tmp_path)
    info = json.loads((broken / "meta/info.json").read_text())
    info["codebase_version"] = "v1.6"
    (broken / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"v1\.6"):
        open_dataset(broken)


def test_the_shipped_sample_dataset_is_valid_and_small() -> None:
    from augment_dev.datasets import SAMPLE_DATASET

    assert validate_dataset(SAMPLE_DATASET) == []
    reader = open_dataset(SAMPLE_DATASET)
    assert (reader.format_name, len(reader.episodes), len(reader.cameras)) == ("LeRobot v3.0", 3, 2)
    assert sum(p.stat().st_size for p in SAMPLE_DATASET.rglob("*") if p.is_file()) < 1_000_000
