"""augment_dataset and `augment run` end to end on small datasets with real AV1/H.264 video."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from augment_cli.main import main as augment_main
from augment_dev.datasets import (
    make_lerobot_v3,
    make_lerobot_v21,
    make_plain_image_dataset,
    synthetic_frames,
)
from augment_runner import pipeline
from augment_runner.errors import DatasetError, OutputError
from augment_runner.formats.detect import open_dataset
from augment_runner.preview import sheet_size
from augment_runner.validate import validate_dataset
from augment_runner.video import probe_video
from augment_spec.contract import (
    ENV_HF_TOKEN,
    ENV_SPEC,
    ENV_TERMINATION_LOG,
    ENV_WORKDIR,
    EXIT_BAD_INPUT,
)
from augment_spec.model import parse_spec

PROJECT = "00000000-0000-0000-0000-00000000abcd"
TOP, WRIST, SIDE = "observation.images.top", "observation.images.wrist", "observation.images.side"


def tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def make_spec(**fields: Any):
    return parse_spec({"project_id": PROJECT, "dataset_id": "lab/source", **fields})


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    return {
        "v3": make_lerobot_v3(
            root / "v3",
            episodes=3,
            frames=[12, 10, 14],
            cameras=(TOP, WRIST),
            image_cameras=(SIDE,),
        ),
        "v3-h264": make_lerobot_v3(root / "v3-h264", episodes=2, codec="libx264"),
        "v21": make_lerobot_v21(
            root / "v21", episodes=2, frames=[11, 13], cameras=(TOP,), image_cameras=(SIDE,)
        ),
    }


def run(source: Path, output: Path, batch_frames: int = 64, **fields: Any):
    return pipeline.augment_dataset(make_spec(**fields), source, output, batch_frames=batch_frames)


def decoded_frames(root: Path, episode_index: int, camera: str) -> np.ndarray:
    reader = open_dataset(root)
    episode = reader.episodes[episode_index]
    cam = next(c for c in reader.cameras if c.key == camera)
    return np.concatenate(list(reader.decode_frames(episode, cam, 64)))


def episode_stats(root: Path, episode_index: int) -> dict[str, dict[str, np.ndarray]]:
    reader = open_dataset(root)
    return reader.episode_stats(reader.episodes[episode_index])


def episode_column(root: Path, episode_index: int, column: str) -> list[Any]:
    reader = open_dataset(root)
    batches = reader.read_rows(reader.episodes[episode_index], 1000)
    return [v for b in batches for v in b.column(column).to_pylist()]


# ---------------------------------------------------------------- every mode


@pytest.mark.parametrize("fmt", ["v3", "v21"])
@pytest.mark.parametrize("dataset_mode", ["copy", "inplace"])
@pytest.mark.parametrize("augment_mode", ["stacked", "independent"])
def test_every_mode_writes_a_valid_bigger_dataset(
    sources: dict[str, Path], tmp_path: Path, fmt: str, dataset_mode: str, augment_mode: str
) -> None:
    source = sources[fmt]
    before = tree_hash(source)
    spec = make_spec(
        augment_transforms="lighting,occlusion",
        augment_copies=2,
        augment_mode=augment_mode,
        augment_dataset_mode=dataset_mode,
    )
    result = pipeline.augment_dataset(spec, source, tmp_path / "out")
    out = result.output

    assert validate_dataset(out) == []
    assert tree_hash(source) == before, "the source must never be written"
    n = len(open_dataset(source).episodes)
    slots = {"copy": {"stacked": 2, "independent": 4}, "inplace": {"stacked": 1, "independent": 1}}[
        dataset_mode
    ][augment_mode]
    expected = n * slots + (n if dataset_mode == "copy" else 0)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["total_episodes"] == result.output_episodes == expected
    assert info["codebase_version"] == ("v3.0" if fmt == "v3" else "v2.1")

    # Originals kept byte for byte in copy mode.
    if dataset_mode == "copy":
        for rel, digest in before.items():
            if rel.startswith(("data/", "videos/")) or rel.endswith("tasks.parquet"):
                assert tree_hash(out).get(rel) == digest, rel

    # Provenance: one entry per output episode, with the transforms of the copy plan.
    provenance = json.loads((out / "meta/augmentation.json").read_text())
    assert [e["episode_index"] for e in provenance["episodes"]] == list(range(expected))
    assert provenance["tool"]["name"] == "augment-operator"
    assert provenance["seed"] == 0 and provenance["spec"]["augment_copies"] == 2
    augmented = [e for e in provenance["episodes"] if e["copy_index"] is not None]
    assert len(augmented) == n * slots
    for entry in augmented:
        plan = spec.copy_plan(entry["source_episode_index"])[entry["copy_index"]]
        assert entry["transforms"] == [t.value for t in plan]
        assert entry["params"]["transforms"] == entry["transforms"]

    # Preview: source row plus one row per copy, at the frames' size.
    with Image.open(out / "preview.png") as preview:
        assert preview.size == sheet_size(48, 64, slots)
    assert "preview.png" in (out / "README.md").read_text()

    # Codec, pixel format and frame rate kept.
    source_video = probe_video(next(source.glob("videos/**/*.mp4")))
    for video in out.glob("videos/**/*.mp4"):
        probed = probe_video(video)
        assert (probed.codec, probed.pix_fmt, probed.fps) == (
            source_video.codec,
            source_video.pix_fmt,
            source_video.fps,
        )

    # The first augmented episode: same non-camera data as its source, new camera stats.
    first = augmented[0]
    k, src_index = first["episode_index"], first["source_episode_index"]
    assert episode_column(out, k, "observation.state") == episode_column(
        source, src_index, "observation.state"
    )
    assert episode_column(out, k, "frame_index") == list(
        range(len(episode_column(source, src_index, "frame_index")))
    )
    new_stats, old_stats = episode_stats(out, k), episode_stats(source, src_index)
    assert not np.allclose(new_stats[TOP]["mean"], old_stats[TOP]["mean"], atol=1e-3)
    frames = decoded_frames(out, k, TOP)
    np.testing.assert_allclose(
        new_stats[TOP]["mean"].ravel(), frames.reshape(-1, 3).mean(axis=0) / 255, atol=0.03
    )
    np.testing.assert_allclose(
        new_stats["observation.state"]["mean"], old_stats["observation.state"]["mean"], rtol=1e-5
    )


def test_h264_source_keeps_h264(sources: dict[str, Path], tmp_path: Path) -> None:
    result = run(sources["v3-h264"], tmp_path / "out", augment_transforms="noise,blur")
    assert validate_dataset(result.output) == []
    assert {probe_video(v).codec for v in result.output.glob("videos/**/*.mp4")} == {"h264"}


def test_same_seed_gives_identical_frames(sources: dict[str, Path], tmp_path: Path) -> None:
    fields = {"augment_transforms": "lighting,noise,blur,occlusion", "augment_seed": 7}
    first = run(sources["v3"], tmp_path / "a", **fields).output
    second = run(sources["v3"], tmp_path / "b", batch_frames=5, **fields).output
    for k in range(3, 12):
        assert np.array_equal(decoded_frames(first, k, TOP), decoded_frames(second, k, TOP))
        assert episode_column(first, k, SIDE) == episode_column(second, k, SIDE)
    other = run(sources["v3"], tmp_path / "c", **{**fields, "augment_seed": 8}).output
    assert not np.array_equal(decoded_frames(first, 3, TOP), decoded_frames(other, 3, TOP))


def test_augmenters_never_see_more_than_a_batch(
    sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real = pipeline.EpisodeCopies.augmenter

    def recording(self, slot, grey=False):
        augmenter = real(self, slot, grey)

        def call(frames: np.ndarray, offset: int) -> np.ndarray:
            seen.append(len(frames))
            return augmenter(frames, offset)

        return call

    monkeypatch.setattr(pipeline.EpisodeCopies, "augmenter", recording)
    run(sources["v3"], tmp_path / "out", batch_frames=4, augment_copies=3)
    assert max(seen) == 4
    # 3 cameras x 3 copies x 36 frames, each frame augmented exactly once per copy.
    assert sum(seen) == 3 * 3 * 36


def test_only_chosen_cameras_change(sources: dict[str, Path], tmp_path: Path) -> None:
    source = sources["v3"]
    out = run(
        source,
        tmp_path / "out",
        augment_cameras=[TOP],
        augment_copies=1,
        augment_transforms="occlusion",
    ).output
    assert validate_dataset(out) == []
    provenance = json.loads((out / "meta/augmentation.json").read_text())
    assert provenance["augmented_cameras"] == [TOP]
    # Episode 3 is copy 0 of source episode 0.
    wrist_src, wrist_out = decoded_frames(source, 0, WRIST), decoded_frames(out, 3, WRIST)
    assert np.abs(wrist_src.astype(int) - wrist_out).mean() < 4  # re-encoded, unchanged
    assert episode_column(out, 3, SIDE) == episode_column(source, 0, SIDE)  # same PNG bytes
    stats_out, stats_src = episode_stats(out, 3), episode_stats(source, 0)
    np.testing.assert_array_equal(stats_out[WRIST]["mean"], stats_src[WRIST]["mean"])
    assert (
        np.abs(decoded_frames(source, 0, TOP).astype(int) - decoded_frames(out, 3, TOP)).max() > 60
    )


def test_inplace_leaves_unaugmented_v3_videos_as_they_were(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    source = sources["v3"]
    out = run(
        source, tmp_path / "out", augment_cameras=[SIDE], augment_dataset_mode="inplace"
    ).output
    assert validate_dataset(out) == []
    for rel, digest in tree_hash(source).items():
        if rel.startswith("videos/"):
            assert tree_hash(out)[rel] == digest


# ---------------------------------------------------------------- plain datasets


def test_plain_parquet_sequences_gain_copies(tmp_path: Path) -> None:
    source = make_plain_image_dataset(tmp_path / "plain", rows=3, frames=5)
    before = tree_hash(source)
    out = run(source, tmp_path / "out", augment_copies=2, augment_transforms="blur").output
    assert validate_dataset(out) == []
    assert tree_hash(source) == before
    table = pq.read_table(next(out.glob("data/*.parquet")))
    assert table.num_rows == 3 + 3 * 2
    source_table = pq.read_table(next(source.glob("data/*.parquet")))
    assert (
        table.slice(0, 3).column("frames").to_pylist() == source_table.column("frames").to_pylist()
    )
    assert "path: data/train-*" in (out / "README.md").read_text()
    with Image.open(out / "preview.png") as preview:
        assert preview.size == sheet_size(48, 64, 2)


def test_plain_single_images_grouped_by_episode_in_place(tmp_path: Path) -> None:
    import datasets

    source = make_plain_image_dataset(
        tmp_path / "plain", rows=2, frames=4, layout="save_to_disk", per_row="single"
    )
    out = run(
        source, tmp_path / "out", augment_dataset_mode="inplace", augment_transforms="lighting"
    ).output
    assert validate_dataset(out) == []
    result = datasets.load_from_disk(str(out))
    assert result["episode_index"] == [0, 0, 0, 0, 1, 1, 1, 1]
    provenance = json.loads((out / "meta/augmentation.json").read_text())
    assert [e["source_episode_index"] for e in provenance["episodes"]] == [0, 1]


def _image_cell(frame: np.ndarray, fmt: str = "PNG") -> dict[str, Any]:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format=fmt)
    return {"bytes": buffer.getvalue(), "path": None}


def _pixels(cell: dict[str, Any]) -> np.ndarray:
    with Image.open(io.BytesIO(cell["bytes"])) as image:
        return np.asarray(image.convert("RGB"))


def test_plain_copies_are_the_augmented_source_frames_numbered_after_the_episodes(
    tmp_path: Path,
) -> None:
    import datasets

    lengths = [4, 5, 1, 3]
    features = datasets.Features(
        {"image": datasets.Image(), "episode_index": datasets.Value("int32")}
    )
    frames = [synthetic_frames(e % 3, n, (16, 20)) for e, n in enumerate(lengths)]
    rows = datasets.Dataset.from_dict(
        {
            "image": [_image_cell(f) for episode in frames for f in episode],
            "episode_index": [7 + 2 * e for e, n in enumerate(lengths) for _ in range(n)],
        },
        features=features,
    ).with_format("arrow")[:]
    source = tmp_path / "plain"
    (source / "data").mkdir(parents=True)
    # Small row groups over two files: episodes straddle both.
    pq.write_table(rows.slice(0, 7), source / "data/train-00000-of-00002.parquet", row_group_size=3)
    pq.write_table(rows.slice(7), source / "data/train-00001-of-00002.parquet", row_group_size=2)
    spec = make_spec(augment_copies=2, augment_transforms="lighting,noise,occlusion")
    pipeline.augment_dataset(spec, source, tmp_path / "out", batch_frames=2)

    out = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "out/data/*.parquet"), split="train"
    ).cast_column("image", datasets.Image(decode=False))
    assert out.with_format("arrow")[: rows.num_rows].column("image") == rows.column("image")
    provenance = json.loads((tmp_path / "out/meta/augmentation.json").read_text())["episodes"]
    copies = [e for e in provenance if e["copy_index"] is not None]
    # Episode-major: an episode's copies side by side, numbered after the originals.
    assert [(e["episode_index"], e["source_episode_index"], e["copy_index"]) for e in copies] == [
        (4 + 2 * e + slot, e, slot) for e in range(4) for slot in range(2)
    ]
    assert {e["split"] for e in provenance} == {"train"}
    row = rows.num_rows
    for e, slot in [(e, slot) for e in range(4) for slot in range(2)]:
        copy = out[row : row + lengths[e]]
        # Ids continue after the largest source id (13).
        assert copy["episode_index"] == [14 + 2 * e + slot] * lengths[e]
        augmenter = pipeline.plan_copies(spec, e).augmenter(slot)
        expected = augmenter(frames[e], 0)
        assert np.array_equal(np.stack([_pixels(c) for c in copy["image"]]), expected)
        row += lengths[e]
    assert row == len(out)


def test_plain_unaugmented_cameras_keep_their_bytes_and_jpeg_stays_jpeg(tmp_path: Path) -> None:
    import datasets

    features = datasets.Features(
        {"top": datasets.Sequence(datasets.Image()), "side": datasets.Sequence(datasets.Image())}
    )
    source = tmp_path / "plain"
    datasets.Dataset.from_dict(
        {
            "top": [[_image_cell(f) for f in synthetic_frames(r, 3, (16, 16))] for r in range(2)],
            "side": [
                [_image_cell(f, "JPEG") for f in synthetic_frames(r, 3, (16, 16), camera=1)]
                for r in range(2)
            ],
        },
        features=features,
    ).save_to_disk(str(source))
    fields = {"augment_copies": 2, "augment_cameras": ["side"], "augment_transforms": "blur"}
    out = run(source, tmp_path / "out", **fields).output

    before = datasets.load_from_disk(str(source)).cast(
        datasets.Features({k: datasets.Sequence(datasets.Image(decode=False)) for k in features})
    )
    before_rows = before.to_dict()
    after_rows = datasets.load_from_disk(str(out)).cast(before.features).to_dict()
    top = before_rows["top"]
    assert after_rows["top"] == [*top, top[0], top[0], top[1], top[1]]
    assert after_rows["side"][:2] == before_rows["side"]
    copies = after_rows["side"][2:]
    assert [[Image.open(io.BytesIO(c["bytes"])).format for c in cells] for cells in copies] == [
        ["JPEG"] * 3
    ] * 4
    assert copies[0] != before_rows["side"][0]


def test_plain_splits_number_their_episodes_and_output_repeats_byte_for_byte(
    tmp_path: Path,
) -> None:
    import datasets

    def split(n: int) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {"image": [_image_cell(f) for f in synthetic_frames(1, n, (16, 16))]},
            features=datasets.Features({"image": datasets.Image()}),
        )

    source = tmp_path / "plain"
    datasets.DatasetDict({"train": split(3), "test": split(2)}).save_to_disk(str(source))
    first = run(source, tmp_path / "a", augment_copies=1, augment_transforms="noise").output
    second = run(source, tmp_path / "b", augment_copies=1, augment_transforms="noise").output

    assert tree_hash(first) == tree_hash(second)
    provenance = json.loads((first / "meta/augmentation.json").read_text())["episodes"]
    assert [(e["split"], e["episode_index"], e["source_episode_index"]) for e in provenance] == [
        *[("train", i, i) for i in range(3)],
        *[("train", 3 + i, i) for i in range(3)],
        *[("test", i, i) for i in range(2)],
        *[("test", 2 + i, i) for i in range(2)],
    ]
    assert {k: len(v) for k, v in datasets.load_from_disk(str(first)).items()} == {
        "train": 6,
        "test": 4,
    }


def test_plain_splits_with_other_features_are_refused(tmp_path: Path) -> None:
    import datasets

    image = datasets.Image()
    cells = [_image_cell(f) for f in synthetic_frames(0, 2, (16, 16))]
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"image": cells}, features=datasets.Features({"image": image})
            ),
            "test": datasets.Dataset.from_dict(
                {"image": cells, "label": [0, 1]},
                features=datasets.Features({"image": image, "label": datasets.Value("int64")}),
            ),
        }
    ).save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(DatasetError, match="other features"):
        run(tmp_path / "plain", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- output safety


def test_refuses_a_non_empty_output_and_cleans_up_after_failure(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        run(sources["v3"], tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"

    broken = tmp_path / "broken"
    shutil.copytree(sources["v3"], broken)
    video = broken / "videos" / WRIST / "chunk-000" / "file-000.mp4"
    video.write_bytes(video.read_bytes()[:600])  # truncated mid-file
    before = tree_hash(broken)
    with pytest.raises(DatasetError, match=r"video|frames|decode"):
        run(broken, tmp_path / "out")
    assert tree_hash(broken) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "busy"]


# ---------------------------------------------------------------- the command line


def cli(*args: str) -> int:
    return augment_main(["run", *args])


def test_cli_augments_a_local_folder(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli(
        "--dataset",
        str(sources["v21"]),
        "--output",
        str(tmp_path / "out"),
        "--copies",
        "1",
        "--transforms",
        "noise",
        "--seed",
        "3",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"output: {tmp_path / 'out'}" in captured.out
    assert "preview: " in captured.out
    provenance = json.loads((tmp_path / "out/meta/augmentation.json").read_text())
    assert provenance["spec"]["augment_seed"] == 3
    # Unset flags keep the model's defaults.
    assert provenance["spec"]["augment_brightness_min"] == -15
    assert provenance["source"]["dataset_id"] == "local/v21"


def _break_info(path: Path) -> None:
    (path / "meta/info.json").write_text("{ not json")


def _drop_info(path: Path) -> None:
    (path / "meta/info.json").unlink()


def _unknown_dtype(path: Path) -> None:
    info = json.loads((path / "meta/info.json").read_text())
    info["features"]["observation.state"]["dtype"] = "tensor"
    (path / "meta/info.json").write_text(json.dumps(info))


def _garbage_video(path: Path) -> None:
    video = next(path.glob("videos/**/*.mp4"))
    video.write_bytes(b"\x00garbage" * 100)


@pytest.mark.parametrize(
    ("breakage", "flags", "message"),
    [
        (_drop_info, [], "meta/info.json"),
        (_break_info, [], "not valid JSON"),
        (_unknown_dtype, [], "tensor"),
        (_garbage_video, [], "video"),
        (None, ["--copies", "0"], "augment_copies"),
        (None, ["--brightness-min", "20", "--brightness-max", "10"], "brightness"),
        (None, ["--transforms", "lighting,sparkle"], "sparkle"),
        (None, ["--cameras", "observation.images.nope"], "nope"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(
    sources: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    breakage,
    flags: list[str],
    message: str,
) -> None:
    source = tmp_path / "src"
    shutil.copytree(sources["v21"], source)
    if breakage:
        breakage(source)
    before = tree_hash(source)
    log = tmp_path / "termination-log"
    monkeypatch.setenv(ENV_TERMINATION_LOG, str(log))
    code = cli("--dataset", str(source), "--output", str(tmp_path / "out"), *flags)
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert message in err
    assert log.read_text().strip() == err.strip()
    assert tree_hash(source) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src", "termination-log"]


def test_cli_refuses_a_busy_output_and_a_missing_folder(
    sources: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    code = cli("--dataset", str(sources["v21"]), "--output", str(tmp_path / "out"))
    assert code == EXIT_BAD_INPUT
    assert "not empty" in capsys.readouterr().err
    code = cli("--dataset", str(tmp_path / "nope"), "--output", str(tmp_path / "o2"))
    assert code == EXIT_BAD_INPUT
    assert "does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------- through the Hub


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from augment_dev.hub import LocalHub

    with LocalHub(tmp_path / "hub", tokens={"tok-alice": "alice"}) as server:
        for key, value in server.client_env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv(ENV_HF_TOKEN, "tok-alice")
        yield server


def test_hub_round_trip(
    sources: dict[str, Path], tmp_path: Path, hub, capsys: pytest.CaptureFixture[str]
) -> None:
    from augment_runner.hub import download_dataset

    source_sha = hub.seed("lab/robot", sources["v3"])
    code = cli(
        "--dataset",
        "lab/robot",
        "--output",
        str(tmp_path / "out"),
        "--push-to",
        "alice/robot-aug",
        "--copies",
        "1",
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "pushed: alice/robot-aug@" in captured.out
    assert not [c for c in hub.calls if c.is_write and c.repo and "lab/robot" in c.repo]
    assert hub.head("lab/robot") == source_sha
    fetched = tmp_path / "fetched"
    download_dataset("alice/robot-aug", fetched)
    assert validate_dataset(fetched) == []
    provenance = json.loads((fetched / "meta/augmentation.json").read_text())
    assert provenance["source"] == {
        "dataset_id": "lab/robot",
        "revision": source_sha,
        "format": "LeRobot v3.0",
    }
    assert json.loads((fetched / "meta/info.json").read_text())["total_episodes"] == 6


def test_pod_mode_takes_the_spec_from_the_environment(
    sources: dict[str, Path],
    tmp_path: Path,
    hub,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hub.seed("lab/arm", sources["v21"])
    spec = {
        "project_id": PROJECT,
        "dataset_id": "lab/arm",
        "augment_copies": 1,
        "output_dataset_id": "alice/arm-aug",
        "augment_dataset_mode": "inplace",
    }
    monkeypatch.setenv(ENV_SPEC, json.dumps(spec))
    monkeypatch.setenv(ENV_WORKDIR, str(tmp_path / "work"))
    assert augment_main(["run"]) == 0, capsys.readouterr().err
    assert hub.head("alice/arm-aug") is not None
    files = hub.files("alice/arm-aug")
    assert "meta/augmentation.json" in files and "preview.png" in files


@pytest.mark.parametrize(
    ("args", "token", "message"),
    [
        (["--dataset", "lab/missing"], "tok-alice", "lab/missing"),
        (["--dataset", "lab/robot", "--push-to", "bob/x"], "tok-wrong", "token"),
    ],
)
def test_hub_problems_exit_2(
    sources: dict[str, Path],
    tmp_path: Path,
    hub,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    token: str,
    message: str,
) -> None:
    hub.seed("lab/robot", sources["v3-h264"])
    monkeypatch.setenv(ENV_HF_TOKEN, token)
    code = cli(*args, "--output", str(tmp_path / "out"))
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, err
    assert len(err.strip().splitlines()) == 1 and message.lower() in err.lower()


def test_file_size_limits_roll_over_to_new_files_and_chunks(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "src"
    shutil.copytree(sources["v3"], source)
    info = json.loads((source / "meta/info.json").read_text())
    # Tiny limits: every episode opens a new data and video file; 2 files per chunk.
    info.update(chunks_size=2, data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6)
    (source / "meta/info.json").write_text(json.dumps(info))
    out = run(source, tmp_path / "out", augment_copies=2).output
    assert validate_dataset(out) == []
    data_files = sorted(str(p.relative_to(out)) for p in out.glob("data/*/*.parquet"))
    assert len(data_files) == 1 + 6 and "data/chunk-003/file-000.parquet" in data_files
    assert len(list(out.glob(f"videos/{TOP}/*/*.mp4"))) == 1 + 6
