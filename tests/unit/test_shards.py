"""`augment run --shard K/N` and `augment merge`: N shards merged give what one run gives
(same_dataset.py says what "the same" means)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from same_dataset import assert_same_dataset, digest, episode_rows

from augment_cli.main import main as augment_main
from augment_dev.datasets import make_lerobot_v3, make_lerobot_v21
from augment_runner.errors import AugmentError
from augment_runner.formats.detect import open_dataset
from augment_runner.shards import SHARD_MANIFEST, Shard
from augment_spec.contract import EXIT_BAD_INPUT, EXIT_OK

TOP, WRIST, SIDE = "observation.images.top", "observation.images.wrist", "observation.images.side"
COPY_FLAGS = ("--copies", "2", "--transforms", "lighting,noise", "--cameras", f"{TOP},{SIDE}")
INPLACE_FLAGS = (
    "--dataset-mode", "inplace", "--mode", "independent", "--transforms", "lighting,blur",
    "--cameras", f"{TOP},{SIDE}",
)


def augment(*args: str) -> int:
    return augment_main([*args])


def run_whole(source: Path, output: Path, flags: tuple[str, ...]) -> Path:
    assert augment("run", "--dataset", str(source), "--output", str(output), *flags) == EXIT_OK
    return output


def run_shards(source: Path, root: Path, count: int, flags: tuple[str, ...]) -> list[Path]:
    folders = []
    for index in range(count):
        folder = root / f"shard-{index}"
        code = augment("run", "--dataset", str(source), "--shard", f"{index}/{count}",
                       "--output", str(folder), *flags)
        assert code == EXIT_OK
        folders.append(folder)
    return folders


def merged(source: Path, root: Path, count: int, flags: tuple[str, ...]) -> Path:
    folders = run_shards(source, root, count, flags)
    output = root / "merged"
    # Any order: the manifests say which shard is which.
    assert augment("merge", *map(str, reversed(folders)), "--output", str(output)) == EXIT_OK
    return output


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lerobot_v3(
        tmp_path_factory.mktemp("src") / "v3", episodes=5, frames=[7, 5, 8, 4, 6],
        cameras=(TOP, WRIST), image_cameras=(SIDE,),
    )


@pytest.mark.parametrize(
    "flags", [COPY_FLAGS, INPLACE_FLAGS], ids=["copy-stacked", "inplace-independent"]
)
def test_three_shards_merge_into_what_one_run_writes(
    source: Path, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    whole = run_whole(source, tmp_path / "whole", flags)
    assert_same_dataset(whole, merged(source, tmp_path / "split", 3, flags), source)


def test_each_shard_holds_only_its_episodes(source: Path, tmp_path: Path) -> None:
    folders = run_shards(source, tmp_path, 3, COPY_FLAGS)
    provenance = [json.loads((f / "meta/augmentation.json").read_text()) for f in folders]
    sources = [sorted({e["source_episode_index"] for e in p["episodes"]}) for p in provenance]
    assert sources == [[0, 1], [2, 3], [4]]
    # Numbered as in the whole output: copy 0 of episode 2 is 5 + 2, copy 1 is 5 + 5 + 2.
    copies = [e["episode_index"] for e in provenance[1]["episodes"] if e["copy_index"] is not None]
    assert sorted(copies) == [7, 8, 12, 13]
    manifest = json.loads((folders[1] / SHARD_MANIFEST).read_text())
    assert (manifest["shard"], manifest["shards"], manifest["episodes"]) == (1, 3, [2, 4])
    assert len(manifest["original_stats"]) == 2 and len(manifest["episode_stats"]) == 4


def test_more_shards_than_episodes_leaves_the_last_ones_empty(tmp_path: Path) -> None:
    source = make_lerobot_v3(tmp_path / "src", episodes=2, frames=[5, 6], cameras=(TOP,))
    flags = ("--copies", "1", "--transforms", "noise")
    whole = run_whole(source, tmp_path / "whole", flags)
    output = merged(source, tmp_path / "split", 4, flags)
    assert not (tmp_path / "split/shard-3/preview.png").exists()
    assert_same_dataset(whole, output, source)


def test_shards_copy_only_the_source_files_of_their_episodes(
    source: Path, tmp_path: Path
) -> None:
    """A source whose episodes live in several data and video files: each shard copies
    the files of its own episodes, shard 0 also those of none; the merge has them all."""
    spread = tmp_path / "spread-src"
    shutil.copytree(source, spread)
    info = json.loads((spread / "meta/info.json").read_text())
    info.update(chunks_size=2, data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6)
    (spread / "meta/info.json").write_text(json.dumps(info))
    # One copy per episode rolls every new episode into files of its own: 1 + 5 files.
    rolled = run_whole(spread, tmp_path / "rolled", ("--copies", "1", "--transforms", "noise"))
    (rolled / "data/chunk-009").mkdir()
    (rolled / "data/chunk-009/notes.txt").write_text("no episode lives here\n")
    whole = run_whole(rolled, tmp_path / "whole", COPY_FLAGS)
    folders = run_shards(rolled, tmp_path / "split", 3, COPY_FLAGS)
    reader = open_dataset(rolled)
    for index, folder in enumerate(folders):
        mine = {
            str(path.relative_to(rolled))
            for i in Shard(index, 3).episodes(len(reader.episodes))
            for path in reader.episode_files(reader.episodes[i])
        }
        # The shard's copies of source files (its new files may reuse a source file's
        # name, never its bytes).
        copied = {
            str(p.relative_to(folder))
            for p in [*folder.glob("data/**/*"), *folder.glob("videos/**/*")]
            if p.is_file() and (rolled / p.relative_to(folder)).exists()
            and digest(rolled / p.relative_to(folder)) == digest(p)
        }
        unused = {"data/chunk-009/notes.txt"} if index == 0 else set()
        assert copied == mine | unused, index
    output = tmp_path / "merged"
    assert augment("merge", *map(str, folders), "--output", str(output)) == EXIT_OK
    assert_same_dataset(whole, output, rolled)
    assert (output / "data/chunk-009/notes.txt").exists()


def with_limits(source: Path, root: Path, data_mb: float, video_mb: float) -> Path:
    """A copy of `source` whose info.json sets the files' size limits, in chunks of 2."""
    shutil.copytree(source, root)
    info = json.loads((root / "meta/info.json").read_text())
    info.update(chunks_size=2, data_files_size_in_mb=data_mb, video_files_size_in_mb=video_mb)
    (root / "meta/info.json").write_text(json.dumps(info))
    return root


def new_files(output: Path, slot_episodes: range) -> dict[str, list[tuple[int, int]]]:
    """Per data or video kind, the (chunk, file) of each episode in `slot_episodes`."""
    rows = [r for r in episode_rows(output) if r["episode_index"] in slot_episodes]
    kinds = ["data", *(f"videos/{camera}" for camera in (TOP, WRIST))]
    return {k: [(r[f"{k}/chunk_index"], r[f"{k}/file_index"]) for r in rows] for k in kinds}


def test_four_shards_join_their_files_as_one_run_fills_them(
    source: Path, tmp_path: Path
) -> None:
    """Limits that hold about two new episodes per data and video file: one run rolls
    over to new files (and chunks) mid-way; four shards of one or two episodes each are
    joined into the very same files, rolling over at the same episodes."""
    flags = ("--copies", "2", "--transforms", "noise", "--cameras", f"{TOP},{SIDE}")
    sized = run_whole(source, tmp_path / "sized", flags)
    # Per new episode of one run (copy 0: episodes 5-9, one file per kind): its rows' bytes in
    # the file and in memory (an episode's first rows count before they are written), and
    # its video's bytes. A file then holds about two episodes.
    data = sized / "data/chunk-000/file-001.parquet"
    in_file, in_memory = data.stat().st_size / 5, pq.read_table(data).nbytes / 5
    video_bytes = (sized / f"videos/{TOP}/chunk-000/file-001.mp4").stat().st_size / 5
    limited = with_limits(source, tmp_path / "src", (1.5 * in_file + in_memory) / 2**20,
                          1.5 * video_bytes / 2**20)
    whole = run_whole(limited, tmp_path / "whole", flags)
    layout = new_files(whole, range(5, 15))
    for kind, places in layout.items():
        # Several files, some holding episodes that four shards made apart.
        assert len(set(places)) >= 3, (kind, places)
        assert len(set(places)) < len(places), (kind, places)
    output = merged(limited, tmp_path / "split", 4, flags)
    assert new_files(output, range(5, 15)) == layout
    assert_same_dataset(whole, output, limited)


@pytest.mark.parametrize(
    ("shards", "expected"),
    [
        ((1, 5), [range(0, 5)]),
        ((3, 5), [range(0, 2), range(2, 4), range(4, 5)]),
        ((4, 2), [range(0, 1), range(1, 1), range(1, 2), range(2, 2)]),
    ],
)
def test_shards_are_contiguous_ranges(shards: tuple[int, int], expected: list[range]) -> None:
    count, total = shards
    assert [Shard(k, count).episodes(total) for k in range(count)] == expected


def test_every_split_covers_each_episode_once_and_shard_0_is_never_empty() -> None:
    for total in range(1, 12):
        for count in range(1, 14):
            ranges = [Shard(k, count).episodes(total) for k in range(count)]
            assert [i for r in ranges for i in r] == list(range(total))
            assert len(ranges[0]) >= 1
            assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


@pytest.mark.parametrize("text", ["3/3", "-1/3", "1/0", "a/b", "1", "1/2/3"])
def test_shard_must_be_k_of_n(text: str) -> None:
    with pytest.raises(AugmentError):
        Shard.parse(text)


def one_line_failure(capsys: pytest.CaptureFixture[str], code: int, prog: str) -> str:
    err = capsys.readouterr().err
    assert code == EXIT_BAD_INPUT, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"augment {prog}: "), err
    return lines[0]


def test_merge_refuses_an_incomplete_or_mixed_set(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folders = run_shards(source, tmp_path / "a", 3, COPY_FLAGS)
    other_seed = tmp_path / "b/shard-2"
    assert augment("run", "--dataset", str(source), "--shard", "2/3", "--output",
                   str(other_seed), *COPY_FLAGS, "--seed", "7") == EXIT_OK
    capsys.readouterr()

    def merge(*shards: Path) -> int:
        return augment("merge", *map(str, shards), "--output", str(tmp_path / "out"))

    line = one_line_failure(capsys, merge(folders[0], folders[2]), "merge")
    assert "shard 1/3 is missing" in line
    line = one_line_failure(capsys, merge(folders[0], folders[1], folders[1]), "merge")
    assert "given more than once" in line
    line = one_line_failure(capsys, merge(folders[0], folders[1], other_seed), "merge")
    assert "another spec, seed" in line
    line = one_line_failure(capsys, merge(folders[0], source), "merge")
    assert "not a shard" in line
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(".out.partial-*")) == []


def test_v21_and_pushing_a_shard_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    v21 = make_lerobot_v21(tmp_path / "v21", episodes=2, frames=[4, 5], cameras=(TOP,))
    code = augment("run", "--dataset", str(v21), "--shard", "0/2", "--output", str(tmp_path / "o"))
    assert "cannot be split into shards" in one_line_failure(capsys, code, "run")
    code = augment("run", "--dataset", str(v21), "--shard", "0/2", "--push-to", "me/out",
                   "--output", str(tmp_path / "o"))
    assert "augment merge" in one_line_failure(capsys, code, "run")
    assert not (tmp_path / "o").exists()
