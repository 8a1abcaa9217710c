"""Datasets written by LeRobot's own writer, in the shapes public datasets come in, augment
into datasets LeRobot's reader loads and agrees with (docs/design.md, Datasets).

The corpus (tests/judge/lerobot_write.py) is written once per module by LeRobot 0.4.4
(v3.0) and LeRobot 0.3.3 (v2.1) in their judge environments; each shape is augmented in
three modes, and the source and the three outputs are read back by the LeRobot of their
version in one judge process per shape and checked by lerobot-doctor, a second judge that
shares no code with LeRobot. The language shape, which LeRobot 0.4.4 cannot load, is
judged on its files and by lerobot-doctor; so are the HEVC shapes, whose sources LeRobot
0.4.4 cannot read either (see HEVC), but whose outputs it reads where we encoded every
frame. A 10-bit camera, which LeRobot's writer does not make, comes from our generator
(TEN_BIT) and is judged like the others.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from same_dataset import frames_of

from augment_dev.datasets import make_lerobot_v3, make_lerobot_v21
from augment_dev.judge import (
    doctor_failures,
    lerobot_convert,
    lerobot_doctor,
    lerobot_read_many,
    lerobot_write_many,
)
from augment_runner.formats.detect import open_dataset
from augment_runner.pipeline import augment_dataset
from augment_runner.video import probe_video
from augment_spec.model import parse_spec

WRITTEN = (
    "two_videos",
    "image_cameras",
    "odd_size",
    "numeric",
    "per_frame_tasks",
    "rollover",
    "grey_image",
    "h264_15fps",
    "two_sessions",
    "mixed_extras",
)
# Language columns and tools, as LeRobot releases after 0.4.4 add them to a dataset.
LANGUAGE = "language"
# HEVC written by LeRobot 0.4.4 (vcodec="hevc"), which its own reader refuses at every size
# and rate tried (64x64 to 480x640, 15 and 30 fps) with FrameTimestampError on frame 1
# ("queried timestamps: tensor([0.0333]) loaded timestamps: tensor([0.0667])"): x265's
# default open GOP decodes a key frame (CRA) before the B-frame shown ahead of it; the
# reader's PyAV backend seeks to that key frame for the B-frame, and the decoder drops the
# B-frame, whose reference before the key frame it never saw. (Its writer with x265's
# open-gop=0 makes files it reads.) Our encoders write no B-frames.
HEVC = ("hevc_30fps", "hevc_15fps")
LEROBOT_HEVC_ERROR = "FrameTimestampError"
# Our v2.1 generator's dataset, turned into v3.0 by LeRobot's own converter.
CONVERTED = "converted_from_v21"
# Our generator's 10-bit HEVC (yuv420p10le; LeRobot 0.4.4's writer encodes 8 bits only):
# its copies are written at 10 bits, and LeRobot reads source and outputs.
TEN_BIT = "hevc_10bit"
# v2.1 datasets written by LeRobot 0.3.3 (which encodes AV1): corpus name -> shape.
WRITTEN_V21 = {
    "v21_mixed_extras": "mixed_extras",
    "v21_per_frame_tasks": "per_frame_tasks",
    "v21_grey_image": "grey_image",
}
SHAPES = (*WRITTEN, CONVERTED, TEN_BIT, *WRITTEN_V21)
MODES: dict[str, dict[str, Any]] = {
    "copy-stacked": {"augment_dataset_mode": "copy", "augment_mode": "stacked"},
    "copy-independent": {"augment_dataset_mode": "copy", "augment_mode": "independent"},
    "inplace": {"augment_dataset_mode": "inplace", "augment_mode": "stacked"},
}
SIDE = "observation.images.side"
GREY = "observation.images.depth"  # the grey_image shape's 1-channel image (not a depth map)
# Columns whose values an augmented copy renumbers; every other value is the source's.
RENUMBERED = {"episode_index", "index"}
# Camera stats are ours from the frames we encode; LeRobot's code runs on the frames it
# decodes: they differ by what the codec loses (tiny frames, high quantiser, noise).
CAMERA_MEAN_ATOL, CAMERA_STD_ATOL = 0.02, 0.03
# Quantiles are read off a 5000-bin histogram: LeRobot's writer bins the float64 values
# it was handed, we bin the float32 values in the files, so one bin apart is agreement.
QUANTILE_BINS = 5000


@dataclass
class Judged:
    """One corpus shape: LeRobot's view of the source and of each mode's output."""

    source: dict[str, Any]
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    doctor: dict[str, list[str]] = field(default_factory=dict)  # per mode, its FAIL lines
    folders: dict[str, Path] = field(default_factory=dict)  # per mode, the output


def augment(source: Path, output: Path, mode: str, grey: bool = False) -> dict[str, Any]:
    spec = parse_spec({
        "project_id": str(uuid.uuid4()), "dataset_id": "lab/corpus",
        "augment_transforms": "lighting,noise", "augment_copies": 1,
        "augment_brightness_min": 25, "augment_brightness_max": 30,
        "augment_noise_sigma_min": 4, "augment_noise_sigma_max": 6,
        "augment_grey_cameras": grey, **MODES[mode],
    })
    augment_dataset(spec, source, output)
    return json.loads((output / "meta" / "augmentation.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    lerobot_write_many({shape: root / shape for shape in (*WRITTEN, LANGUAGE, *HEVC)})
    lerobot_write_many({shape: root / name for name, shape in WRITTEN_V21.items()}, "v2.1")
    make_lerobot_v21(root / CONVERTED, episodes=3, frames=[5, 7, 6], codec="libx264",
                     cameras=("observation.images.top",), image_cameras=(SIDE,), size=(32, 48))
    lerobot_convert(root / CONVERTED)
    # x265 (in PyAV's wheel) corrupts its heap on frames as small as 32x48: 64x64 it is.
    make_lerobot_v3(root / TEN_BIT, episodes=2, frames=[6, 8], codec="libx265",
                    size=(64, 64), pix_fmt="yuv420p10le")
    return root


@pytest.fixture(scope="module")
def judged(
    corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Judged]:
    """judge(shape, grey=False): the shape augmented in every mode (with grey, its grey
    cameras too), judged once per module."""
    cache: dict[tuple[str, bool], Judged] = {}

    def judge(shape: str, grey: bool = False) -> Judged:
        if (shape, grey) not in cache:
            outputs = tmp_path_factory.mktemp(shape + ("-grey" if grey else ""))
            cache[(shape, grey)] = _judge(corpus / shape, outputs, grey)
        return cache[(shape, grey)]

    return judge


def _judge(source: Path, outputs: Path, grey: bool) -> Judged:
    made: dict[str, Path] = {}
    provenance: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    for mode in MODES:
        try:
            provenance[mode] = augment(source, outputs / mode, mode, grey)
            made[mode] = outputs / mode
        except Exception as exc:  # each mode's failure is that mode's test's verdict
            failures[mode] = f"{type(exc).__name__}: {exc}"
    before, *after = lerobot_read_many([source, *made.values()])
    if source.name not in HEVC:  # which it cannot read: see HEVC
        assert "error" not in before, f"LeRobot cannot read its own dataset:\n{before['error']}"
    doctor = [doctor_failures(report) for report in lerobot_doctor([source, *made.values()])]
    assert not doctor[0], f"lerobot-doctor fails LeRobot's own dataset: {doctor[0]}"
    return Judged(before, dict(zip(made, after, strict=True)), provenance, failures,
                  dict(zip(made, doctor[1:], strict=True)), made)


def kept_values(frame: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in frame["values"].items() if k not in RENUMBERED}


def assert_stats_agree(
    ours: dict[str, Any], source: dict[str, Any], lerobot_cameras: dict[str, Any],
    augmented: set[str], where: str,
) -> None:
    """A copy's numeric stats are its source episode's (same values), its augmented
    cameras' what LeRobot's own statistics code finds in the decoded frames."""
    for feature, stats in source.items():
        if feature in RENUMBERED or feature in lerobot_cameras:
            continue
        spread = np.asarray(stats["max"], dtype=float) - np.asarray(stats["min"], dtype=float)
        for stat, value in stats.items():
            theirs, mine = np.asarray(value, dtype=float), np.asarray(ours[feature][stat], float)
            allowed = 1e-6 + 1e-5 * np.abs(theirs)
            if stat.startswith("q"):
                allowed = allowed + spread / QUANTILE_BINS
            assert np.all(np.abs(mine - theirs) <= allowed), (
                f"{where}: {feature} {stat} is {mine.tolist()}, LeRobot's {theirs.tolist()}")
    for camera in augmented:
        for stat, atol in (("mean", CAMERA_MEAN_ATOL), ("std", CAMERA_STD_ATOL)):
            np.testing.assert_allclose(ours[camera][stat], lerobot_cameras[camera][stat],
                                       atol=atol, err_msg=f"{where}: {camera} {stat}")


def assert_same_kinds(after: dict[str, Any], before: dict[str, Any], where: str) -> None:
    """Every statistic the source has, the output has with the same dtype and shape."""
    for feature, stats in before.items():
        assert feature in after, f"{where}: no stats for {feature}"
        for stat, kind in stats.items():
            assert after[feature].get(stat) == kind, (
                f"{where}: {feature} {stat} is {after[feature].get(stat)}, the source's {kind}"
            )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_lerobot_reads_the_augmented_copy_of_its_own_dataset(
    judged: Callable[..., Judged], shape: str, mode: str
) -> None:
    assert_lerobot_agrees(judged(shape), mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", ["grey_image", "v21_grey_image"])
def test_grey_cameras_are_augmented_when_asked(
    judged: Callable[..., Judged], shape: str, mode: str
) -> None:
    """With augment_grey_cameras the 1-channel camera's copies change too, and stay one
    channel of the source's kind, in LeRobot's eyes."""
    result = judged(shape, grey=True)
    assert GREY in result.provenance[mode]["augmented_cameras"]
    assert_lerobot_agrees(result, mode)


def assert_lerobot_agrees(result: Judged, mode: str) -> None:
    """LeRobot loads the output: originals equal the source frame for frame, copies
    differ exactly in the augmented cameras, every statistic keeps its kind, and the
    copies' statistics agree with LeRobot's own code."""
    assert mode not in result.failures, result.failures[mode]
    before, after = result.source, result.outputs[mode]
    assert "error" not in after, after.get("error")
    assert not result.doctor[mode], f"lerobot-doctor: {result.doctor[mode]}"
    provenance = result.provenance[mode]
    augmented = set(provenance["augmented_cameras"])
    copies = provenance["copies_per_episode"]
    originals = before["num_episodes"] if mode != "inplace" else 0
    assert after["num_episodes"] == originals + copies * before["num_episodes"]
    assert after["num_frames"] == (after["num_episodes"] // before["num_episodes"]) * before[
        "num_frames"]
    assert after["camera_keys"] == before["camera_keys"]
    assert after["stats_keys"] == before["stats_keys"]
    assert_same_kinds(after["stats"], before["stats"], "meta/stats.json")
    for episode in after["episodes"]:
        made = provenance["episodes"][episode["episode_index"]]
        source = before["episodes"][made["source_episode_index"]]
        where = f"episode {episode['episode_index']} ({made})"
        assert_same_kinds(after["episode_stats"][episode["episode_index"]],
                          before["episode_stats"][made["source_episode_index"]], where)
        assert episode["length"] == source["length"], where
        if made["copy_index"] is None:  # an original: equal to the source, frame for frame
            assert episode["frames"] == source["frames"], where
            continue
        ours_stats = after["episode_stat_values"][episode["episode_index"]]
        if ours_stats:  # a source keeps per-episode stats, so its output does
            assert_stats_agree(
                ours_stats, before["episode_stat_values"][made["source_episode_index"]],
                episode["camera_stats"], augmented, where)
        for ours, theirs in zip(episode["frames"], source["frames"], strict=True):
            assert ours["task"] == theirs["task"], where
            assert kept_values(ours) == kept_values(theirs), where
            for camera, pixels in ours["cameras"].items():
                assert pixels["shape"] == theirs["cameras"][camera]["shape"], (where, camera)
                changed = pixels["digest"] != theirs["cameras"][camera]["digest"]
                assert changed == (camera in augmented), (where, camera)


@pytest.mark.parametrize("shape", WRITTEN_V21)
def test_lerobot_converts_the_v21_outputs_of_its_own_datasets(
    judged: Callable[..., Judged], shape: str, tmp_path: Path
) -> None:
    """What LeRobot 0.3.3 read from each v2.1 output, LeRobot 0.4.4 reads from the output
    turned into v3.0 by its converter."""
    result = judged(shape)
    outputs = [tmp_path / mode for mode in result.folders]
    for output, folder in zip(outputs, result.folders.values(), strict=True):
        shutil.copytree(folder, output)  # the converter moves its input aside
    lerobot_convert(*outputs)
    for mode, summary in zip(result.folders, lerobot_read_many(outputs), strict=True):
        assert "error" not in summary, (mode, summary.get("error"))
        assert summary["codebase_version"] == "v3.0"
        v21 = result.outputs[mode]
        assert summary["num_frames"] == v21["num_frames"], mode
        for converted, read in zip(summary["episodes"], v21["episodes"], strict=True):
            assert converted["frames"] == read["frames"], (mode, read["episode_index"])


def test_grey_cameras_are_left_as_they_are(judged: Callable[..., Judged]) -> None:
    result = judged("grey_image")
    for mode, provenance in result.provenance.items():
        assert provenance["augmented_cameras"] == ["observation.images.top"], mode
    episode = result.source["episodes"][0]["frames"][0]
    assert episode["cameras"][GREY]["shape"][0] == 1


def as_lerobot_v21_writes_stats(root: Path) -> None:
    """Integer features' min and max as ints in episodes_stats.jsonl, as LeRobot 0.3 writes
    them (whatever our generator does)."""
    features = json.loads((root / "meta/info.json").read_text())["features"]
    integers = [k for k, ft in features.items() if ft["dtype"].startswith(("int", "uint"))]
    path = root / "meta/episodes_stats.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for line in lines:
        for feature in integers:
            for stat in ("min", "max"):
                values = line["stats"][feature][stat]
                line["stats"][feature][stat] = [int(v) for v in values]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_lerobot_reads_and_converts_every_v21_output(tmp_path: Path) -> None:
    """Our generator's v2.1 dataset: LeRobot 0.3.3 and lerobot-doctor accept every output,
    and LeRobot's v2.1 -> v3.0 converter, which concatenates every episode's stats and
    refuses ints next to floats, turns each into a dataset LeRobot 0.4.4 reads."""
    source = make_lerobot_v21(tmp_path / "src", episodes=2, frames=[5, 7], codec="libx264",
                              image_cameras=(SIDE,), size=(32, 48))
    as_lerobot_v21_writes_stats(source)
    outputs = [tmp_path / mode for mode in MODES]
    totals = [len(augment(source, output, mode)["episodes"])
              for mode, output in zip(MODES, outputs, strict=True)]
    for mode, total, summary in zip(MODES, totals, lerobot_read_many(outputs), strict=True):
        assert "error" not in summary, (mode, summary.get("error"))  # LeRobot 0.3.3's verdict
        assert summary["codebase_version"] == "v2.1"
        assert summary["num_episodes"] == total, mode
    for mode, report in zip(MODES, lerobot_doctor(outputs), strict=True):
        assert not doctor_failures(report), (mode, doctor_failures(report))
    lerobot_convert(*outputs)
    for mode, total, summary in zip(MODES, totals, lerobot_read_many(outputs), strict=True):
        assert "error" not in summary, (mode, summary.get("error"))
        assert summary["codebase_version"] == "v3.0"
        assert summary["num_episodes"] == total == len(summary["episode_stats"]), mode


def data_rows(root: Path) -> dict[int, list[dict[str, Any]]]:
    """Every data row of a v3.0 folder, per episode index, in frame order."""
    files = sorted(root.glob("data/*/*.parquet"))
    table = pa.concat_tables(pq.read_table(f) for f in files).sort_by("index")
    episodes: dict[int, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        episodes.setdefault(row["episode_index"], []).append(row)
    return episodes


@pytest.mark.parametrize("mode", MODES)
def test_language_columns_and_tools_pass_through(
    corpus: Path, tmp_path: Path, mode: str
) -> None:
    """language_persistent / language_events rows, string, bool and numeric columns and
    info.json's tools reach every output episode as the source has them.

    lerobot-doctor 0.2.0 fails LeRobot's own annotated dataset (it expects a column to have
    one length on every frame, and events are on a few frames only): the output may fail
    that same way, and no other."""
    source = corpus / LANGUAGE
    provenance = augment(source, tmp_path / mode, mode)
    before_doctor, after_doctor = (
        set(_any_episode(doctor_failures(report)))
        for report in lerobot_doctor([source, tmp_path / mode])
    )
    assert after_doctor <= before_doctor, after_doctor - before_doctor
    augmented = set(provenance["augmented_cameras"])
    before_info = json.loads((source / "meta/info.json").read_text())
    after_info = json.loads((tmp_path / mode / "meta/info.json").read_text())
    assert after_info["tools"] == before_info["tools"]
    assert after_info["features"] == before_info["features"]
    before_schema = pq.read_schema(next((source / "data").glob("*/*.parquet")))
    for path in (tmp_path / mode / "data").glob("*/*.parquet"):
        assert pq.read_schema(path).equals(before_schema), path
    before, after = data_rows(source), data_rows(tmp_path / mode)
    assert len(after) == len(provenance["episodes"])
    for made in provenance["episodes"]:
        ours, theirs = after[made["episode_index"]], before[made["source_episode_index"]]
        left_out = RENUMBERED if made["copy_index"] is None else RENUMBERED | augmented
        assert [{k: v for k, v in row.items() if k not in left_out} for row in ours] == [
            {k: v for k, v in row.items() if k not in left_out} for row in theirs
        ], made
        assert any(row["language_events"] for row in ours), made


def _any_episode(lines: list[str]) -> list[str]:
    return [re.sub(r"Episode \d+", "Episode N", line) for line in lines]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", HEVC)
def test_lerobot_hevc_datasets_augment(
    judged: Callable[..., Judged], corpus: Path, shape: str, mode: str
) -> None:
    """LeRobot's own HEVC: every mode passes our validator and lerobot-doctor; the copies
    keep the codec and pixel format and differ in every frame, the originals are the
    source frame for frame (decoded from start to end, as LeRobot's reader cannot). That
    reader refuses the source and the copy modes' outputs, which keep the source's packets,
    as it refuses the source (see HEVC), and reads the inplace output, every frame of
    which we encoded."""
    result = judged(shape)
    assert LEROBOT_HEVC_ERROR in result.source.get("error", ""), (
        f"LeRobot reads its own HEVC now: move {shape} into WRITTEN")
    assert mode not in result.failures, result.failures[mode]
    assert not result.doctor[mode], f"lerobot-doctor: {result.doctor[mode]}"
    source, output = corpus / shape, result.folders[mode]
    after = result.outputs[mode]
    if mode == "inplace":
        assert "error" not in after, after.get("error")
        assert [e["length"] for e in after["episodes"]] == [6, 8]
        assert {tuple(f["cameras"]["observation.images.top"]["shape"])
                for e in after["episodes"] for f in e["frames"]} == {(3, 64, 64)}
    else:
        assert LEROBOT_HEVC_ERROR in after.get("error", ""), after.get("error")
    top = "observation.images.top"
    before_format, after_format = (
        {c.key: reader.video_format(c) for c in reader.cameras}
        for reader in (open_dataset(source), open_dataset(output)))
    assert after_format == before_format
    assert before_format[top].codec == "hevc"
    before_frames, after_frames = frames_of(source), frames_of(output)
    before_rows, after_rows = data_rows(source), data_rows(output)
    for made in result.provenance[mode]["episodes"]:
        ours = after_frames[(made["episode_index"], top)]
        theirs = before_frames[(made["source_episode_index"], top)]
        assert ours.shape == theirs.shape, made
        if made["copy_index"] is None:
            assert np.array_equal(ours, theirs), made
        else:
            assert all(not np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True)), made
        assert [{k: v for k, v in r.items() if k not in RENUMBERED}
                for r in after_rows[made["episode_index"]]] == [
            {k: v for k, v in r.items() if k not in RENUMBERED}
            for r in before_rows[made["source_episode_index"]]], made


@pytest.mark.parametrize("mode", MODES)
def test_hevc_10bit_copies_are_written_at_10_bits(
    judged: Callable[..., Judged], mode: str
) -> None:
    """The 10-bit shape's outputs, which LeRobot reads (the SHAPES test), keep the source's
    codec and 10-bit pixel format in every video file, copies included."""
    result = judged(TEN_BIT)
    assert mode not in result.failures, result.failures[mode]
    top = "observation.images.top"
    files = sorted((result.folders[mode] / "videos" / top).glob("*/*.mp4"))
    assert files
    assert {(probe_video(f).codec, probe_video(f).pix_fmt) for f in files} == {
        ("hevc", "yuv420p10le")}
