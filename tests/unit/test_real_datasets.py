"""Shapes real datasets come in that our own generators do not write by default: missing
per-episode statistics, integer statistics, grey cameras, no episodes, a full disk, and an
output that fails validation (docs/design.md, Datasets and Statistics).
LeRobot's own reader judges the same shapes in tests/e2e/test_lerobot_corpus.py."""

from __future__ import annotations

import errno
import json
import re
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from augment_cli.main import main as augment_main
from augment_dev.datasets import make_lerobot_v3, make_lerobot_v21
from augment_runner import pipeline
from augment_runner import stats as stats_mod
from augment_runner.errors import SCRATCH_FULL, AugmentError, DatasetError
from augment_runner.formats.base import Camera
from augment_runner.formats.detect import open_dataset
from augment_runner.validate import validate_dataset
from augment_runner.video import VideoEncoder, VideoFormat, decode_episode, probe_video
from augment_spec.model import parse_spec

PROJECT = "00000000-0000-0000-0000-00000000abcd"
TOP, SIDE = "observation.images.top", "observation.images.side"
WRIST = "observation.images.wrist"


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {
        "v3": make_lerobot_v3(root / "v3", episodes=2, frames=[6, 8], codec="libx264",
                              image_cameras=(SIDE,), size=(32, 48)),
        "v21": make_lerobot_v21(root / "v21", episodes=2, frames=[6, 8], codec="libx264",
                                image_cameras=(SIDE,), size=(32, 48)),
    }


def run(source: Path, output: Path, **fields: Any) -> pipeline.AugmentResult:
    spec = parse_spec({"project_id": PROJECT, "dataset_id": "lab/source", **fields})
    return pipeline.augment_dataset(spec, source, output)


def decoded_frames(root: Path, episode_index: int, camera: str) -> np.ndarray:
    reader = open_dataset(root)
    cam = next(c for c in reader.cameras if c.key == camera)
    return np.concatenate(list(reader.decode_frames(reader.episodes[episode_index], cam, 64)))


def stats_lines(root: Path) -> list[dict[str, Any]]:
    text = (root / "meta/episodes_stats.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------- statistics


def test_min_and_max_keep_the_features_dtype() -> None:
    done = stats_mod.numeric_stats(np.array([False, False, True]), with_quantiles=True)
    assert done["min"].dtype == bool and done["max"].dtype == bool
    assert done["min"].tolist() == [False] and done["max"].tolist() == [True]
    np.testing.assert_allclose(done["mean"], [1 / 3])
    contacts = stats_mod.numeric_stats(np.array([[1, -2], [3, 4]], dtype=np.int32),
                                       with_quantiles=False)
    assert contacts["min"].dtype == np.int32 and contacts["min"].tolist() == [1, -2]
    assert contacts["mean"].dtype == np.float64
    merged = stats_mod.aggregate([{"done": done}, {"done": done}])["done"]
    assert merged["max"].dtype == bool and json.dumps(stats_mod.to_json({"d": merged}))


def test_v21_new_lines_keep_integer_stats_integers(sources: dict[str, Path],
                                                   tmp_path: Path) -> None:
    run(sources["v21"], tmp_path / "out", augment_transforms="lighting", augment_copies=1)
    lines = stats_lines(tmp_path / "out")
    assert len(lines) == 4
    for line in lines:
        for feature in ("frame_index", "episode_index", "index", "task_index"):
            for stat in ("min", "max"):
                assert all(isinstance(v, int) for v in line["stats"][feature][stat]), (
                    line["episode_index"], feature, stat)


def test_v21_new_lines_follow_a_source_that_keeps_floats(sources: dict[str, Path],
                                                         tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(sources["v21"], source)
    lines = stats_lines(source)
    for line in lines:  # written by an older tool: integer features with float stats
        for stat in ("min", "max"):
            line["stats"]["frame_index"][stat] = [float(v) for v in
                                                  line["stats"]["frame_index"][stat]]
    (source / "meta/episodes_stats.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines))
    run(source, tmp_path / "out", augment_transforms="lighting", augment_copies=1)
    for line in stats_lines(tmp_path / "out"):
        assert all(isinstance(v, float) for v in line["stats"]["frame_index"]["min"])


def test_validator_refuses_v21_stats_that_mix_ints_and_floats(sources: dict[str, Path],
                                                              tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(sources["v21"], broken)
    lines = stats_lines(broken)
    lines[1]["stats"]["index"]["max"] = [float(v) for v in lines[1]["stats"]["index"]["max"]]
    (broken / "meta/episodes_stats.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines))
    assert any("mix types" in p for p in validate_dataset(broken))


def test_v21_source_without_some_episode_stats_gets_them_computed(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "src"
    shutil.copytree(sources["v21"], source)
    lines = stats_lines(source)
    full = json.loads(json.dumps(lines[0]["stats"]))
    del lines[0]["stats"]["action"], lines[0]["stats"][SIDE]
    (source / "meta/episodes_stats.jsonl").write_text(json.dumps(lines[0]) + "\n")  # no ep 1
    run(source, tmp_path / "out", augment_transforms="lighting", augment_copies=1)
    out = tmp_path / "out"
    assert validate_dataset(out) == []
    computed = {line["episode_index"]: line["stats"] for line in stats_lines(out)}
    assert sorted(computed) == [0, 1, 2, 3]
    for feature in ("action", SIDE):  # what the source had, computed again from its frames
        for stat in ("min", "max", "mean", "std", "count"):
            np.testing.assert_allclose(computed[0][feature][stat], full[feature][stat],
                                       rtol=1e-5, atol=1e-6)


def test_v3_source_without_episode_stats_columns_is_augmented(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "src"
    shutil.copytree(sources["v3"], source)
    for path in (source / "meta/episodes").glob("*/*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(
            [c for c in table.column_names if c.startswith("stats/")]), path)
    before = json.loads((sources["v3"] / "meta/stats.json").read_text())
    for mode in ("copy", "inplace"):
        out = tmp_path / mode
        run(source, out, augment_transforms="lighting", augment_copies=1,
            augment_dataset_mode=mode)
        assert validate_dataset(out) == []
        after = json.loads((out / "meta/stats.json").read_text())
        assert sorted(after) == sorted(before)
        if mode == "copy":  # the originals' share of the frames is unchanged
            assert after["action"]["min"] == before["action"]["min"]


# ---------------------------------------------------------------- cameras


def test_grey_and_depth_cameras_are_not_augmented_by_default(tmp_path: Path) -> None:
    rgb = Camera(TOP, "video", 32, 48)
    grey = Camera("observation.images.grey", "image", 32, 48, channels=1)
    depth = Camera("observation.images.depth", "video", 32, 48, depth=True)
    assert pipeline.select_cameras([rgb, grey, depth], None, tmp_path) == [rgb]
    with pytest.raises(AugmentError, match="grey or depth"):
        pipeline.select_cameras([rgb, grey], [grey.key], tmp_path)
    with pytest.raises(DatasetError, match="RGB camera"):
        pipeline.select_cameras([grey, depth], None, tmp_path)


def test_grey_cameras_are_augmented_when_asked_and_depth_maps_never(tmp_path: Path) -> None:
    rgb = Camera(TOP, "video", 32, 48)
    grey = Camera("observation.images.grey", "image", 32, 48, channels=1)
    depth = Camera("observation.images.depth", "video", 32, 48, channels=1, depth=True)
    cameras = [rgb, grey, depth]
    assert pipeline.select_cameras(cameras, None, tmp_path, grey=True) == [rgb, grey]
    assert pipeline.select_cameras(cameras, [grey.key], tmp_path, grey=True) == [grey]
    assert pipeline.select_cameras([grey, depth], None, tmp_path, grey=True) == [grey]
    with pytest.raises(AugmentError, match="a depth map never"):
        pipeline.select_cameras(cameras, [depth.key], tmp_path, grey=True)


# ---------------------------------------------------------------- input problems


def cli(*args: str) -> int:
    return augment_main(["run", *args])


def test_a_dataset_without_episodes_exits_2(sources: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "src"
    shutil.copytree(sources["v21"], source)
    (source / "meta/episodes.jsonl").write_text("")
    info = json.loads((source / "meta/info.json").read_text())
    (source / "meta/info.json").write_text(json.dumps({**info, "total_episodes": 0}))
    assert cli("--dataset", str(source), "--output", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no episodes" in err
    assert not (tmp_path / "out").exists()


def test_a_full_disk_exits_2_and_says_to_raise_the_scratch_size(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full(*_: Any, **__: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pipeline, "write_provenance", full)
    assert cli("--dataset", str(sources["v21"]), "--output", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and SCRATCH_FULL in err
    assert list(tmp_path.iterdir()) == []


def test_an_invalid_output_is_never_moved_into_place(
    sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import augment_runner.validate as validate

    monkeypatch.setattr(validate, "validate_dataset", lambda _: ["a planted problem"])
    with pytest.raises(RuntimeError, match="a planted problem"):
        run(sources["v3"], tmp_path / "out", augment_transforms="lighting")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("codec", ["libx264", "libsvtav1"])
def test_copies_carry_unaugmented_video_cameras_packet_for_packet(
    tmp_path: Path, codec: str
) -> None:
    source = make_lerobot_v3(tmp_path / "src", episodes=3, frames=[5, 7, 6], codec=codec,
                             cameras=(TOP, WRIST), size=(32, 48))
    out = tmp_path / "out"
    run(source, out, augment_transforms="lighting", augment_copies=2, augment_cameras=[TOP])
    assert validate_dataset(out) == []
    provenance = json.loads((out / "meta/augmentation.json").read_text())
    for made in provenance["episodes"]:
        wrist = decoded_frames(out, made["episode_index"], WRIST)
        original = decoded_frames(source, made["source_episode_index"], WRIST)
        np.testing.assert_array_equal(wrist, original)  # not re-encoded: no grey level lost


# ---------------------------------------------------------------- high bit depth

TEN_BIT = "yuv420p10le"


def deep_frames(path: Path) -> list[bytes]:
    """Every frame of a video file as 16-bit RGB, in order: all of its bits."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb48le").tobytes()
                for frame in container.decode(video=0)]


def video_files(root: Path, camera: str) -> list[Path]:
    return sorted((root / "videos" / camera).glob("*/*.mp4"))


@pytest.mark.parametrize("codec", ["libx264", "libsvtav1"])
@pytest.mark.parametrize("mode", ["copy", "inplace"])
def test_a_10bit_video_camera_is_augmented_at_10_bits(
    tmp_path: Path, codec: str, mode: str
) -> None:
    """Every video file of the camera is in the source's codec and 10-bit pixel format
    and decodes to 16-bit frames; originals are the source's frame for frame, copies
    differ in every frame, and the camera's statistics lie in [0, 1]."""
    source = make_lerobot_v3(tmp_path / "src", episodes=2, frames=[5, 6], size=(32, 48),
                             codec=codec, pix_fmt=TEN_BIT)
    out = tmp_path / "out"
    run(source, out, augment_transforms="lighting,noise", augment_copies=1,
        augment_dataset_mode=mode)
    assert validate_dataset(out) == []
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"][TOP]["info"]["video.pix_fmt"] == TEN_BIT
    source_format = probe_video(video_files(source, TOP)[0])
    for path in video_files(out, TOP):
        assert probe_video(path).pix_fmt == TEN_BIT, path
        assert probe_video(path).codec == source_format.codec, path
    provenance = json.loads((out / "meta/augmentation.json").read_text())
    assert "16-bit frames are transformed by the NumPy engine" in provenance["video"][0]["reason"]
    for made in provenance["episodes"]:
        ours = decoded_frames(out, made["episode_index"], TOP)
        theirs = decoded_frames(source, made["source_episode_index"], TOP)
        assert ours.dtype == theirs.dtype == np.uint16 and ours.shape == theirs.shape, made
        if made["copy_index"] is None:
            np.testing.assert_array_equal(ours, theirs)
        else:
            assert all(not np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    camera_stats = json.loads((out / "meta/stats.json").read_text())[TOP]
    assert 0.5 < np.max(camera_stats["max"]) <= 1.0  # divided by 65535, not by 255
    assert np.min(camera_stats["min"]) >= 0.0


def test_10bit_video_decodes_to_all_16_bits(tmp_path: Path) -> None:
    """A 10-bit camera's frames reach the transforms as uint16 holding values no 8-bit
    frame has (not multiples of 257)."""
    source = make_lerobot_v3(tmp_path / "src", episodes=1, frames=[4], size=(32, 48),
                             codec="libx264", pix_fmt=TEN_BIT)
    frames = decoded_frames(source, 0, TOP)
    assert frames.dtype == np.uint16
    assert np.count_nonzero(frames % 257) > frames.size // 2


def test_16bit_frames_are_encoded_without_an_8bit_step(tmp_path: Path) -> None:
    """A grey ramp across two 8-bit grey levels, encoded at 10 bits from 16-bit frames and
    decoded again, keeps more than the three levels an 8-bit step would leave of it."""
    width = 64
    ramp = np.linspace(100 * 257, 102 * 257, width).round().astype(np.uint16)
    frames = np.broadcast_to(ramp[None, None, :, None], (4, 16, width, 3)).copy()
    fmt = VideoFormat("h264", TEN_BIT, Fraction(10), width, 16)
    path = tmp_path / "ramp.mp4"
    options = {"crf": "0", "preset": "veryfast", "bf": "0", "g": "2"}
    with VideoEncoder(path, fmt, options) as encoder:
        encoder.write(frames)
    decoded = np.concatenate(list(decode_episode(path, fps=10, num_frames=4)))
    assert decoded.dtype == np.uint16
    row = decoded[0, 8, :, 1]
    assert len(np.unique(row)) > 6, np.unique(row)
    assert np.abs(row.astype(np.int64) - ramp).max() < 257  # within a grey level


def test_a_10bit_camera_its_encoder_cannot_write_exits_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 10-bit codec whose encoder here writes 8 bits only (VP9, MPEG-4 in this build):
    one line and exit 2, never an 8-bit copy."""
    source = make_lerobot_v3(tmp_path / "src", episodes=2, frames=[5, 6], size=(32, 48),
                             pix_fmt=TEN_BIT)
    monkeypatch.setattr(pipeline, "encoder_takes", lambda encoder, pix_fmt: False)
    assert cli("--dataset", str(source), "--output", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"'{TOP}' is 10-bit av1 video ({TEN_BIT}), which libsvtav1 cannot write" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no staging


@pytest.mark.parametrize("mode", ["copy", "inplace"])
def test_a_10bit_video_camera_left_out_keeps_its_bits(tmp_path: Path, mode: str) -> None:
    """Augmenting the image camera only: the 10-bit video camera of every episode is the
    source's, all 10 bits of it, in a file of the source's pixel format."""
    source = make_lerobot_v3(tmp_path / "src", episodes=2, frames=[5, 6], size=(32, 48),
                             image_cameras=(SIDE,), pix_fmt=TEN_BIT)
    out = tmp_path / "out"
    run(source, out, augment_transforms="lighting", augment_cameras=[SIDE],
        augment_dataset_mode=mode)
    assert validate_dataset(out) == []
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"][TOP]["info"]["video.pix_fmt"] == TEN_BIT
    reader = open_dataset(out)
    top = next(c for c in reader.cameras if c.key == TOP)
    assert reader.video_format(top).pix_fmt == TEN_BIT
    before = deep_frames(next((source / "videos" / TOP).glob("*/*.mp4")))
    after = [frame for path in sorted((out / "videos" / TOP).glob("*/*.mp4"))
             for frame in deep_frames(path)]
    assert len(after) == info["total_frames"]
    assert set(after) == set(before)


# ---------------------------------------------------------------- malformed sources


def _first(root: Path, pattern: str) -> Path:
    return sorted(root.glob(pattern))[0]


def _edit_info(root: Path, change: Callable[[dict[str, Any]], None]) -> None:
    info = json.loads((root / "meta/info.json").read_text())
    change(info)
    (root / "meta/info.json").write_text(json.dumps(info))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# (source, how it is broken, a pattern the one line the runner prints must contain)
MALFORMED: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "v3 missing video": ("v3", lambda r: _first(r, "videos/*/*/*.mp4").unlink(), "is missing"),
    "v21 missing video": ("v21", lambda r: _first(r, "videos/*/*/*.mp4").unlink(),
                          "is missing"),
    # Where the cut falls in the stream decides which of the two the decoder meets first.
    "v3 truncated video": ("v3", lambda r: _truncate(_first(r, "videos/*/*/*.mp4")),
                           "the video is truncated|cannot decode"),
    "v3 truncated data": ("v3", lambda r: _truncate(_first(r, "data/*/*.parquet")),
                          "cannot read"),
    "v21 truncated data": ("v21", lambda r: _truncate(_first(r, "data/*/*.parquet")),
                           "cannot read"),
    "v3 info without features": ("v3", lambda r: _edit_info(r, lambda i: i.pop("features")),
                                 "lacks features"),
    "v21 info without features": ("v21", lambda r: _edit_info(r, lambda i: i.pop("features")),
                                  "lacks features"),
    "v3 fps not a number": ("v3", lambda r: _edit_info(r, lambda i: i.update(fps="thirty")),
                            "fps 'thirty', not a positive number"),
    "v3 truncated tasks": ("v3", lambda r: _truncate(r / "meta/tasks.parquet"),
                           "cannot read meta/tasks.parquet"),
    "v21 broken tasks": ("v21", lambda r: (r / "meta/tasks.jsonl").write_text("{oops\n"),
                         "src/meta/tasks.jsonl line 1 is not valid JSON"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_source_exits_2_with_one_line(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    version, breaks, says = MALFORMED[case]
    source = tmp_path / "src"
    shutil.copytree(sources[version], source)
    breaks(source)
    assert cli("--dataset", str(source), "--output", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(says, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no output, no staging
