"""`augment run` flags: derived from the spec model, parsed to each field's type."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from augment_runner.cli import _build_spec, add_arguments
from augment_runner.native_threads import SINGLE_THREAD_ENV
from augment_spec.model import AugmentMode, DatasetMode, Transform


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_set_their_spec_fields_with_the_field_types():
    args = parse(
        "--dataset", "lab/pick", "--transforms", "noise,blur", "--mode", "independent",
        "--dataset-mode", "inplace", "--copies", "4", "--seed", "9", "--color-temp-max", "9000",
        "--noise-sigma-max", "7.5", "--occlusion-count", "2", "--cameras", "top, wrist,",
        "--revision", "v1",
    )  # fmt: skip
    spec = _build_spec({}, args, "lab/pick", None)
    assert spec.transforms == [Transform.noise, Transform.blur]
    assert spec.augment_mode is AugmentMode.independent
    assert spec.augment_dataset_mode is DatasetMode.inplace
    assert (spec.augment_copies, spec.augment_seed, spec.augment_color_temp_max) == (4, 9, 9000)
    assert spec.augment_noise_sigma_max == 7.5 and spec.augment_occlusion_count == 2
    assert spec.augment_cameras == ["top", "wrist"] and spec.source_revision == "v1"


def test_unset_flags_keep_the_model_defaults_and_bad_values_are_refused():
    spec = _build_spec({"augment_copies": 5}, parse("--seed", "3"), "lab/pick", None)
    assert spec.augment_copies == 5 and spec.augment_seed == 3
    assert spec.augment_brightness_min == -15  # the model's default
    with pytest.raises(SystemExit):
        parse("--mode", "sideways")
    with pytest.raises(SystemExit):
        parse("--copies", "two")


def test_augment_run_limits_native_threads_before_numpy_loads() -> None:
    """What the libraries read when they load, seen from an import hook on NumPy and cv2."""
    probe = """
import importlib.abc, json, os, sys
seen = {}
class Probe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("numpy", "cv2") and name not in seen:
            seen[name] = {k: os.environ.get(k) for k in json.loads(sys.argv[1])}
sys.meta_path.insert(0, Probe())
from augment_cli.main import main
try:
    main(["run", "--help"])
except SystemExit:
    pass
import augment_runner.transforms  # cv2, if --help did not load it
print(json.dumps(seen))
"""
    env = {k: v for k, v in os.environ.items() if k not in SINGLE_THREAD_ENV}
    result = subprocess.run([sys.executable, "-c", probe, json.dumps(sorted(SINGLE_THREAD_ENV))],
                            capture_output=True, text=True, env=env, timeout=120, check=True)
    seen = json.loads(result.stdout.splitlines()[-1])
    assert seen == {"numpy": SINGLE_THREAD_ENV, "cv2": SINGLE_THREAD_ENV}
