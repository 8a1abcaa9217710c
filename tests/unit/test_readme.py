"""README.md: every command in it is checked, the cheap ones are run, the docs match the code.

Each `$ ` line of a ```console block is either run here (`augment crd`, `augment
openapi`, `augment run` on the sample dataset, the spec-table generator, the helm
install as `helm template`), or matched in COVERED to the test that runs it: a new
README command without a test fails `test_every_command_is_run_here_or_covered`.
Every command is also checked statically: make targets exist, `augment` subcommands
accept the flags shown, curl requests match the API's OpenAPI document and their
bodies the spec model, files named exist.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from same_dataset import files_of

from augment_api.app import create_app
from augment_api.settings import Settings
from augment_cli.main import SUBCOMMANDS, build_parser
from augment_dev import chart, images
from augment_dev.cli import SUBCOMMANDS as DEV_SUBCOMMANDS
from augment_dev.readme import README, USER_FILES, console_commands, program, simple_commands
from augment_operator.config import GpuProfile
from augment_runner.validate import validate_dataset
from augment_spec.contract import Phase
from augment_spec.model import AugmentationSpec

ROOT = README.parent
AUGMENT = str(Path(sys.executable).parent / "augment")
TEXT = README.read_text()
COMMANDS = console_commands()
SIMPLE = [argv for command in COMMANDS for argv in simple_commands(command)]
KNOWN_PROGRAMS = {"make", "augment", "python", "curl", "kubectl", "helm", "docker", "skopeo"}

# Commands too expensive (or impossible) to run here, and the test that runs them.
COVERED: list[tuple[str, str]] = [
    (r"^make install && make run$", "test_make_run_is_the_readme_command runs what `make run` "
     "runs; every test runs in the environment `make install` makes"),
    (r"^make test$", ".ci/run: CI runs exactly this"),
    (r"^make demo$", "tests/e2e/test_demo.py runs `augment-dev demo`, the target's command"),
    (r"^make cluster$", "tests/e2e/test_cluster.py runs `augment-dev cluster`, the target's "
     "command, and tests the EmbeddedCluster it starts"),
    (r"^make crd$", "`make test` runs augment_spec.check_crd; tests/e2e/test_chart.py checks "
     "the chart's copy byte for byte"),
    # Measurements, not tests (docs/design.md, Testing): no test runs these two.
    (r"^make bench$", "none: bench/ measures and asserts nothing; results in bench/results.md"),
    (r"^make gpu-check$", "none here: the GPU device check runs it on a GPU machine "
     "(tests/gpu, bench/gpu_check.sh)"),
    (r"augment api ", "tests/e2e/test_api.py::test_served_api_is_ready_and_idempotent_under_"
     "concurrency serves `augment api`; tests/e2e/test_chart.py runs it as the chart's pod"),
    (r"^curl -sS -X POST ", "tests/e2e/test_api.py::test_idempotency_key_returns_the_same_job; "
     "tests/e2e/test_demo.py"),
    (r'^curl -sS "\$API/v1/augmentation/\$JOB/events"', "tests/e2e/test_api.py::"
     "test_events_lists_the_events_about_that_job_only"),
    (r'^curl -sS "\$API/v1/augmentation/\$JOB"', "tests/e2e/test_chart.py::"
     "test_a_job_submitted_through_the_api_succeeds; tests/e2e/test_demo.py"),
    (r'^curl -sS "\$API/v1/augmentation\?', "tests/e2e/test_api.py::"
     "test_list_paginates_newest_first_and_filters"),
    (r'^curl -sS -o preview.png "\$API/v1/augmentation/\$JOB/preview"', "tests/unit/"
     "test_api_preview.py::test_serves_the_sheet_of_the_published_commit, from the local Hub"),
    (r"^curl -sS -X DELETE ", "tests/e2e/test_api.py::"
     "test_delete_requests_cancel_and_refuses_finished_jobs"),
    (r"augment jobs ", "tests/e2e/test_jobs_client.py runs each action against the API on the "
     "embedded cluster; tests/unit/test_jobs_cli.py against the API app"),
    (r"^kubectl (-n argocd patch|apply -n argocd) ", "tests/unit/test_argocd_health.py: the "
     "patch's and the Applications' content (no Argo CD here)"),
    (r"^kubectl ", "tests/e2e/test_chart.py::test_readme_kubectl_commands_run_on_the_cluster"),
    (r"^docker build ", "tests/unit/test_images.py: the Dockerfiles, parsed (no Docker "
     "engine here); tests/images builds them with buildah"),
    (r"^make images$", "tests/images/test_built_images.py builds the images with "
     "`augment-dev images` (make test-images); bench/results.md records the released ones"),
    (r"^skopeo copy ", "none here: no registry is reachable; test_skopeo_pushes_the_archives"
     "_make_images_writes_to_the_charts_images checks its source and destination"),
]


def run_here(argv: list[str]) -> bool:
    if program(argv) == "augment":
        return argv[1] in ("crd", "openapi", "run", "merge")
    return program(argv) in ("python", "helm")


def commands_of(name: str, sub: str | None = None) -> list[list[str]]:
    return [a for a in SIMPLE if program(a) == name and (sub is None or a[1] == sub)]


def the_run_command() -> list[str]:
    """The README's `augment run` of the whole sample dataset (the others make shards,
    test_the_shard_commands_merge_into_what_one_run_writes runs them)."""
    (shown,) = [argv for argv in commands_of("augment", "run") if "--shard" not in argv]
    return shown


def test_the_readme_has_commands_of_every_kind() -> None:
    assert {program(argv) for argv in SIMPLE} == KNOWN_PROGRAMS


def test_every_command_is_run_here_or_covered() -> None:
    for command in COMMANDS:
        if all(run_here(argv) for argv in simple_commands(command)):
            continue
        assert any(re.search(pattern, command) for pattern, _ in COVERED), \
            f"no test runs `{command}`: run it here or name its test in COVERED"


# ---- make ----

def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


def test_make_targets_exist() -> None:
    targets = {argv[1] for argv in commands_of("make")}
    assert targets >= {"install", "run", "test", "demo", "cluster", "bench", "gpu-check"}
    assert targets <= makefile_targets()
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def makefile_recipe(target: str) -> list[str]:
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", text, re.M)
    assert recipe, target
    return [" ".join(line.split()).replace("$(BIN)/", ".venv/bin/")
            for line in recipe.group(1).splitlines()]


def test_make_run_is_the_readme_command() -> None:
    shown = the_run_command()
    assert " ".join(shown) in makefile_recipe("run")


@pytest.mark.parametrize("target", ["cluster", "demo"])
def test_make_runs_the_development_tools_from_augment_dev(target: str) -> None:
    assert makefile_recipe(target) == [f".venv/bin/augment-dev {target}"]
    assert target in DEV_SUBCOMMANDS
    scripts = tomllib.loads((ROOT / "dev" / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"augment-dev": "augment_dev.cli:main"}
    assert DEV_SUBCOMMANDS.keys().isdisjoint(SUBCOMMANDS), "`augment` is the product's only"


# ---- augment ----

# Subcommands made of actions (`augment jobs list`): the action's help lists its flags.
NESTED = {"jobs"}


def help_text(*subcommand: str) -> str:
    result = subprocess.run([AUGMENT, *subcommand, "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_augment_commands_exist_and_accept_their_flags() -> None:
    shown = commands_of("augment")
    assert {argv[1] for argv in shown} >= {"run", "api", "crd", "openapi"}
    for argv in shown:
        assert argv[1] in SUBCOMMANDS, argv
        build_parser(argv[1]).parse_args(argv[1:])  # SystemExit(2) on a bad flag or value
        command = argv[1:3] if argv[1] in NESTED else argv[1:2]
        listed = help_text(*command)
        for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
            assert flag in listed, f"{flag} not in `augment {' '.join(command)} --help`"


def run_augment(argv: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([AUGMENT, *argv[1:]], capture_output=True, text=True, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_augment_crd_prints_the_committed_crd() -> None:
    (argv,) = commands_of("augment", "crd")
    printed = run_augment(argv).stdout
    assert printed == (ROOT / "crds" / "augmentationjobs.augment.dev.yaml").read_text()


def test_augment_openapi_prints_the_api_the_readme_shows() -> None:
    (argv,) = commands_of("augment", "openapi")
    document = json.loads(run_augment(argv).stdout)
    assert {"/v1/augmentation", "/v1/augmentation/{job_id}"} <= set(document["paths"])


def test_the_shard_commands_merge_into_what_one_run_writes(tmp_path: Path) -> None:
    shard_runs = [argv for argv in commands_of("augment", "run") if "--shard" in argv]
    (merge,) = commands_of("augment", "merge")
    assert len(shard_runs) >= 2

    def here(argv: list[str]) -> list[str]:  # out/... into the test's folder
        return [str(tmp_path / a) if a.startswith("out/") else a for a in argv]

    for argv in [*shard_runs, merge]:
        run_augment(here(argv))
    at = shard_runs[0].index("--shard")
    whole = [*here(shard_runs[0][:at]), *shard_runs[0][at + 2:]]
    at = whole.index("--output")
    whole[at + 1] = str(tmp_path / "whole")
    run_augment(whole)
    merged = tmp_path / merge[merge.index("--output") + 1]
    assert validate_dataset(merged) == []
    assert files_of(merged) == files_of(tmp_path / "whole")
    for name in ("meta/augmentation.json", "meta/stats.json", "meta/info.json", "README.md"):
        assert (merged / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_augment_run_augments_the_sample_dataset(tmp_path: Path) -> None:
    argv = the_run_command()
    output = tmp_path / "sample-augmented"
    at = argv.index("--output")
    result = run_augment([*argv[:at + 1], str(output), *argv[at + 2:]])
    assert result.stdout.splitlines() == [f"output: {output}",
                                          f"preview: {output / 'preview.png'}"]
    assert (output / "preview.png").read_bytes().startswith(b"\x89PNG")
    assert validate_dataset(output) == []


# ---- the spec table ----

def test_spec_table_is_generated_from_the_model(tmp_path: Path) -> None:
    (argv,) = commands_of("python")
    assert argv[1:] == ["docs/gen_spec_table.py", "--write"]
    copy = tmp_path / "README.md"
    shutil.copyfile(README, copy)
    result = subprocess.run([sys.executable, *argv[1:], "--readme", str(copy)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert copy.read_text() == TEXT, "README's spec table is stale: run the command above"
    for name in AugmentationSpec.model_fields:
        assert f"| `{name}` |" in TEXT


# ---- curl: the requests the API's OpenAPI document describes ----

def curl_request(argv: list[str]) -> tuple[str, str, dict[str, str], str | None]:
    method, url, headers, body = None, "", {}, None
    words = iter(argv[1:])
    for word in words:
        if word == "-X":
            method = next(words)
        elif word == "-H":
            name, _, value = next(words).partition(":")
            headers[name.strip()] = value.strip()
        elif word in ("-d", "--data"):
            body = next(words)
        elif word in ("-o", "--output"):
            next(words)  # the file the answer is saved to
        elif not word.startswith("-"):
            url = word
    return method or ("POST" if body else "GET"), url, headers, body


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, item in document["paths"].items():
        if re.fullmatch(re.sub(r"\{\w+\}", r"[^/]+", template), path):
            assert method.lower() in item, f"{method} {template} is not in the API"
            return item[method.lower()]
    raise AssertionError(f"{path} is not a path of the API")


def test_curl_examples_are_requests_the_api_serves() -> None:
    document = create_app(Settings()).openapi()
    schemes = document["components"]["securitySchemes"].values()
    seen = set()
    for argv in commands_of("curl"):
        method, url, headers, body = curl_request(argv)
        assert url.startswith("$API/"), url
        path, _, query = url.removeprefix("$API").partition("?")
        op = operation(document, method, path)
        seen.add(method)
        params = {p["name"]: p for p in op.get("parameters", [])}
        for name, value in (pair.split("=") for pair in query.split("&") if pair):
            assert params[name]["in"] == "query"
            if name == "status":
                assert value in {p.value for p in Phase}
        for name in headers:
            if name == "X-Api-Key":
                assert any(s.get("name") == name and s["in"] == "header" for s in schemes)
            elif name != "Content-Type":
                assert params[name]["in"] == "header", name
        if body is not None:
            AugmentationSpec.model_validate(json.loads(body))
    assert seen == {"GET", "POST", "DELETE"}


# ---- helm, kubectl, docker ----

def test_helm_install_renders_with_the_values_shown() -> None:
    (argv,) = commands_of("helm")
    assert argv[1:4] == ["install", "augment", "charts/augment-operator"]
    result = chart.helm("template", *argv[2:3], str(ROOT / argv[3]), *argv[4:])
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout


def named_files(argv: list[str]) -> list[str]:
    """Repository paths a command names: -f FILE, --patch-file FILE, --from-file=K=FILE."""
    files = []
    for word, following in zip(argv, [*argv[1:], ""], strict=True):
        if word in ("-f", "--patch-file"):
            files.append(following)
        elif word.startswith("--from-file="):
            files.append(word.rsplit("=", 1)[-1])
    return files


@pytest.mark.parametrize("name", ["kubectl", "docker"])
def test_files_the_commands_name_exist(name: str) -> None:
    named = [f for argv in commands_of(name) for f in named_files(argv)]
    assert named
    for path in named:
        if path in USER_FILES:
            assert f"Write `{path}`" in TEXT, f"the README never says to write {path}"
        else:
            assert (ROOT / path).is_file(), path


DEMO_KEYS = ROOT / "examples" / "api-keys.yaml"


def test_no_documented_install_uses_the_public_demo_keys() -> None:
    """The demo keys are public (one may use every project): the local API of the
    README's REST section may read them, no Secret, chart value or Application may."""
    for doc in (README, ROOT / "deploy" / "argocd" / "README.md"):
        for command in console_commands(doc):
            for argv in simple_commands(command):
                if program(argv) in ("kubectl", "helm"):
                    assert not any(str(DEMO_KEYS.relative_to(ROOT)) in w for w in argv), \
                        (doc.name, command)
    digests = {key["sha256"] for key in yaml.safe_load(DEMO_KEYS.read_text())["keys"]}
    assert len(digests) == 2
    deployed = [p for folder in ("charts", "deploy") for p in (ROOT / folder).rglob("*")
                if p.is_file()]
    for path in deployed:
        text = path.read_text(errors="replace")
        assert not any(digest in text for digest in digests), path
    assert yaml.safe_load((chart.CHART / "values.yaml").read_text())["api"]["apiKeys"] == []


def test_docker_tags_are_the_images_the_chart_uses() -> None:
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    wanted = {f"{values['image']['repository']}:{values['image']['tag']}",
              *(p["image"] for p in values["profiles"].values())}
    tags = {argv[argv.index("-t") + 1] for argv in commands_of("docker")}
    assert tags == wanted


def test_skopeo_pushes_the_archives_make_images_writes_to_the_charts_images() -> None:
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    wanted = {f"{values['image']['repository']}:{values['image']['tag']}",
              *(p["image"] for p in values["profiles"].values())}
    shown = commands_of("skopeo")
    assert {argv[-1] for argv in shown} == {f"docker://{image}" for image in wanted}
    archives = {str(images.archive_path(images.IMAGES[name].ref)) for name in images.RELEASED}
    home = str(Path.home())
    assert {argv[2].removeprefix("oci-archive:").replace("$HOME", home) for argv in shown} \
        == archives
    assert makefile_recipe("images") == [".venv/bin/augment-dev images"]


# ---- the reference sections match the code ----

def section(title: str) -> str:
    return TEXT.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


OPAQUE_VALUES = {"podSecurityContext", "containerSecurityContext"}


def test_values_table_names_every_chart_value() -> None:
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    helm = section("Helm")
    for key, value in values.items():
        if isinstance(value, dict) and key not in OPAQUE_VALUES:
            for sub in value:
                assert f"`{key}.{sub}`" in helm, f"{key}.{sub} missing from the values table"
        else:
            assert f"`{key}`" in helm, key


def test_gpu_profile_fields_are_the_operators() -> None:
    profiles = section("GPU profiles")
    for name, field in GpuProfile.model_fields.items():
        assert f"`{field.alias or name}`" in profiles, field.alias or name


def test_the_links_point_at_files() -> None:
    for target in re.findall(r"\]\(([^)#]+)\)", TEXT):
        if target.startswith("bench/results."):
            continue  # written by `make bench` (a colleague's), not committed with this README
        assert (ROOT / target).exists(), target
