"""The container images, built and run: what a cluster would pull.

`make test` builds (cached, dev/augment_dev/images.py) the API/operator image and the
runner image's CPU variant: the same runner.Dockerfile with EXTRAS=runner, without CuPy
and the CUDA wheels, whose build is `make images`. Commands run inside them with buildah
in chroot isolation, as the image's own user, with the image's environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

# bench/ is a folder of the repository, not an installed package (as in tests/unit/test_bench.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from augment_dev import chart, images
from bench import bench_images, run

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VALUES = yaml.safe_load((chart.CHART / "values.yaml").read_text())
UID = VALUES["podSecurityContext"]["runAsUser"]
SAMPLE = ROOT / "examples" / "sample-dataset"
RUN_ARGS = ["--transforms", "lighting,noise,blur,occlusion", "--copies", "1", "--seed", "7"]


@pytest.fixture(scope="module")
def built() -> dict[str, images.Built]:
    return images.ensure(images.TESTED)


def config(built: images.Built) -> dict:
    return images.image_record(built.key_ref)["OCIv1"]["config"]


def inside(built: images.Built, *argv: str, **kwargs) -> subprocess.CompletedProcess[str]:
    result = images.run_in(built.key_ref, argv, **kwargs)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def distributions(built: images.Built) -> set[str]:
    listing = inside(built, "python", "-c", "import importlib.metadata as m, json; "
                     "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))")
    return {re.sub(r"[-_.]+", "-", name).lower() for name in json.loads(listing.stdout)}


@pytest.mark.parametrize("name", images.TESTED)
def test_runs_as_the_charts_numeric_non_root_user(built: dict, name: str) -> None:
    image = built[name]
    assert config(image)["User"] == f"{UID}:{UID}"
    assert inside(image, "id", "-u").stdout.split() == [str(UID)]
    assert config(image)["Entrypoint"] == ["augment"]


@pytest.mark.parametrize("name", images.TESTED)
def test_carries_the_oci_labels_of_its_source(built: dict, name: str) -> None:
    image = built[name]
    labels = config(image)["Labels"]
    spec = images.IMAGES[name]
    assert labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]
    assert labels["org.opencontainers.image.source"] == \
        images.dockerfile_arg(spec.dockerfile, "SOURCE")
    revision = labels["org.opencontainers.image.revision"]
    assert revision == image.revision
    commit = re.fullmatch(r"([0-9a-f]{40})(-dirty)?", revision)
    assert commit, revision
    known = subprocess.run(["git", "cat-file", "-e", f"{commit.group(1)}^{{commit}}"],
                           cwd=ROOT, check=False)
    assert known.returncode == 0, f"{revision} is no commit of this repository"


@pytest.mark.parametrize("name", images.TESTED)
def test_pip_check_passes_inside(built: dict, name: str) -> None:
    assert "No broken requirements found." in inside(built[name], "python", "-m", "pip",
                                                     "check").stdout


def file_digests(folders: list[Path]) -> dict[str, Path]:
    """sha256 of every file of at least 200 bytes (below that, empty __init__.py and the
    like are shared by chance) under the folders."""
    found: dict[str, Path] = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_size >= 200 \
                    and "__pycache__" not in path.parts:
                found[hashlib.sha256(path.read_bytes()).hexdigest()] = path
    return found


@pytest.mark.parametrize("name", images.TESTED)
def test_holds_nothing_from_the_tests_or_the_development_tools(built: dict,
                                                               name: str) -> None:
    ours = file_digests([ROOT / "tests", ROOT / "dev"])
    with images.mounted(built[name].key_ref) as root:
        assert not (root / "src").exists(), "the build stage's sources reached the image"
        venv = root / "opt" / "venv"
        assert not list(venv.rglob("augment_dev*")), "augment_dev is in the image"
        assert not (venv / "bin" / "augment-dev").exists()
        leaked = {str(path.relative_to(root)) for digest, path in
                  file_digests([root / "opt", root / "usr" / "local"]).items()
                  if digest in ours}
    assert leaked == set()


def test_the_api_image_holds_no_runner_dependencies(built: dict) -> None:
    api = distributions(built["augment"])
    assert api.isdisjoint({"av", "datasets", "pyarrow", "numpy", "cupy-cuda12x"}), api
    assert {"fastapi", "uvicorn", "kopf", "kubernetes", "augment-operator"} <= api
    runner = distributions(built["augment-runner-cpu"])
    assert runner.isdisjoint({"fastapi", "uvicorn", "kopf", "cupy-cuda12x"}), runner
    assert not any(name.startswith("nvidia-") for name in runner), runner
    assert {"av", "datasets", "pyarrow", "numpy", "augment-operator"} <= runner


def test_the_api_image_serves_its_openapi(built: dict) -> None:
    """The API's and the operator's commands start in their image (no cluster needed)."""
    image = built["augment"]
    spec = json.loads(inside(image, *config(image)["Entrypoint"], "openapi").stdout)
    assert spec["info"]["version"] == PYPROJECT["project"]["version"]
    inside(image, *config(image)["Entrypoint"], "operator", "--help")


def output_files(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_augment_run_in_the_runner_image_matches_the_host(built: dict,
                                                          tmp_path: Path) -> None:
    """The runner image augments the sample dataset on the CPU as its pods do (the scratch
    volume on /scratch, the image's user, entrypoint and environment), and writes what
    the project's own environment writes from the same inputs."""
    image = built["augment-runner-cpu"]
    dataset, scratch = tmp_path / "dataset", tmp_path / "scratch"
    shutil.copytree(SAMPLE, dataset)
    scratch.mkdir()
    os.chown(scratch, UID, UID)
    # Mounted under its own name: the output names its source after the folder.
    argv = [*config(image)["Entrypoint"], "run", "--dataset", "/dataset", "--output",
            "/scratch/out", *RUN_ARGS]
    inside(image, *argv, volumes=[f"{dataset}:/dataset:ro", f"{scratch}:/scratch"])
    host_out = tmp_path / "host-out"
    host = subprocess.run([str(Path(sys.executable).parent / "augment"), "run", "--dataset",
                           str(dataset), "--output", str(host_out), *RUN_ARGS],
                          capture_output=True, text=True, check=False, timeout=600)
    assert host.returncode == 0, host.stderr[-4000:]
    in_image, on_host = output_files(scratch / "out"), output_files(host_out)
    assert in_image.keys() == on_host.keys()
    info = json.loads(in_image["meta/info.json"])
    assert info["total_episodes"] == 2 * json.loads(
        (SAMPLE / "meta" / "info.json").read_text())["total_episodes"]
    differing = sorted(name for name in in_image if in_image[name] != on_host[name])
    assert differing == [], differing


# ---- sizes: measured by the benchmark, recorded in bench/results.md ----

def test_the_benchmark_reports_the_built_images(built: dict) -> None:
    """`make bench` (bench/bench_images.py) reports the cached images without rebuilding."""
    section = bench_images.run({}, quick=True)["images"]
    assert list(section["images"]) == list(images.TESTED)
    for name, image in section["images"].items():
        assert image["size_mb"] == round(built[name].size_bytes / 1e6, 1)
        assert image["build_seconds"] == built[name].build_seconds > 0
        assert image["archive_mb"] is None  # quick: nothing exported
    text = "\n".join(run.md_images(section))
    assert all(f"| {name} |" in text for name in images.TESTED)


def test_bench_results_record_the_image_sizes(built: dict) -> None:
    """bench/results.md records every image's size; the record must stay near what the
    images weigh now (15%: a pin bump moves a few MB; a new dependency or a lost stage
    boundary moves much more, and then the record is written again)."""
    recorded = json.loads((ROOT / "bench" / "results.json").read_text())["images"]["images"]
    assert set(recorded) == {*images.RELEASED, *images.TESTED}
    markdown = (ROOT / "bench" / "results.md").read_text()
    for name, image in recorded.items():
        assert f"| {name} | {image['ref']} | {image['size_mb']} |" in markdown
    for name in images.RELEASED:
        assert recorded[name]["archive_mb"] > 0
    for name in images.TESTED:
        assert recorded[name]["size_mb"] == pytest.approx(built[name].size_bytes / 1e6,
                                                          rel=0.15), name
