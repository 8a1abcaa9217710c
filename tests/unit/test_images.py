"""The container images, checked without a Docker engine (none runs here).

The Dockerfiles are parsed, not built: these tests pin what would otherwise only fail
in a registry build or at pod start: the entrypoint, the non-root user the restricted
Pod Security Standard needs, the base image families, build tools kept out of the
runtime stage, the sources the distribution is built from, and that every command
line the chart and the operator give the images is one `augment` accepts.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from augment_cli.main import SUBCOMMANDS, build_parser
from augment_operator.config import OperatorConfig
from augment_operator.jobs import build_job
from augment_spec.model import parse_spec
from augment_testing import chart

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VALUES = yaml.safe_load((chart.CHART / "values.yaml").read_text())
AUGMENT = str(Path(sys.executable).parent / "augment")
UID = 65532


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuations joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
    return out


def stages(dockerfile: str) -> list[Stage]:
    """Build stages with their base image resolved from the global ARG defaults."""
    args: dict[str, str] = {}
    found: list[Stage] = []
    for keyword, rest in instructions((IMAGES / dockerfile).read_text()):
        if keyword == "ARG" and not found and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            found.append(Stage(base, words[2] if len(words) > 2 else None))
        elif found:
            found[-1].instructions.append((keyword, rest))
    return found


def pins() -> dict[str, str]:
    """Every exact pin in pyproject.toml, dependencies and extras alike."""
    project = PYPROJECT["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra]
    return dict(r.split("==", 1) for r in requirements)


@pytest.mark.parametrize(("dockerfile", "family"), [
    ("runner.Dockerfile", r"^nvidia/cuda:12\.\d+(\.\d+)?-runtime-ubuntu24\.04$"),
    ("augment.Dockerfile", r"^python:3\.11(\.\d+)?-slim(-\w+)?$"),
])
def test_the_runtime_stage_uses_the_intended_base_image(dockerfile: str, family: str) -> None:
    final = stages(dockerfile)[-1]
    assert re.match(family, final.base), final.base


def test_the_runner_runs_the_python_ci_tests() -> None:
    text = (IMAGES / "runner.Dockerfile").read_text()
    version = re.search(r"^ARG PYTHON_VERSION=(\S+)$", text, re.M).group(1)
    assert version == "3.11"
    low, high = re.match(r">=(\d+\.\d+),<(\d+\.\d+)",
                         PYPROJECT["project"]["requires-python"]).groups()
    assert version_tuple(low) <= version_tuple(version) < version_tuple(high)


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@pytest.mark.parametrize("dockerfile", ["runner.Dockerfile", "augment.Dockerfile"])
def test_runtime_stage_holds_the_built_venv_and_no_build_tools(dockerfile: str) -> None:
    *builders, final = stages(dockerfile)
    assert builders, "multi-stage: the project is installed in a build stage"
    assert "--from=build /opt/venv /opt/venv" in final.all("COPY")
    runtime_commands = " ".join(final.all("RUN"))
    for tool in (r"\bpip install\b", r"software-properties-common", r"build-essential",
                 r"\bgcc\b", r"\S+-dev\b", r"\S+-venv\b", r"\bgit\b"):
        assert not re.search(tool, runtime_commands), f"{tool} in the runtime stage of {dockerfile}"


@pytest.mark.parametrize("dockerfile", ["runner.Dockerfile", "augment.Dockerfile"])
def test_runs_as_the_numeric_non_root_user_the_chart_expects(dockerfile: str) -> None:
    final = stages(dockerfile)[-1]
    user = final.all("USER")[-1]
    # Numeric: the kubelet can only check `runAsNonRoot` against a numeric image user.
    assert re.fullmatch(r"\d+(:\d+)?", user), user
    assert int(user.split(":")[0]) == UID
    assert VALUES["podSecurityContext"]["runAsUser"] == UID
    assert VALUES["runner"]["runAsUser"] == OperatorConfig().runner.run_as_user == UID


@pytest.mark.parametrize("dockerfile", ["runner.Dockerfile", "augment.Dockerfile"])
def test_entrypoint_is_the_augment_console_script(dockerfile: str) -> None:
    final = stages(dockerfile)[-1]
    entrypoint = json.loads(final.all("ENTRYPOINT")[-1])
    assert entrypoint == ["augment"]
    assert "augment" in PYPROJECT["project"]["scripts"]
    assert Path(AUGMENT).exists()


@pytest.mark.parametrize(("dockerfile", "target"), [
    ("runner.Dockerfile", ".[gpu]"), ("augment.Dockerfile", ".")])
def test_installs_the_project_with_pyproject_pins(dockerfile: str, target: str) -> None:
    text = " ".join(args for _, args in instructions((IMAGES / dockerfile).read_text()))
    installs = re.findall(r"pip install ([^&;]+)", text)
    assert any(target in shlex.split(line) for line in installs), installs
    extras = re.findall(r"\.\[(\w+)\]", target)
    assert set(extras) <= set(PYPROJECT["project"]["optional-dependencies"])
    known = pins()
    for name, version in re.findall(r"([A-Za-z0-9_.-]+)==([\w.]+)", text):
        assert known.get(name) == version, f"{name}=={version} in {dockerfile}, " \
            f"pyproject.toml pins {known.get(name)}"


@pytest.mark.parametrize("dockerfile", ["runner.Dockerfile", "augment.Dockerfile"])
def test_build_context_holds_every_package_of_the_distribution(dockerfile: str) -> None:
    build = stages(dockerfile)[0]
    copied = {Path(part.rstrip("/")) for args in build.all("COPY")
              for part in args.split()[:-1] if not part.startswith("--")}
    needed = {Path(p) for p in PYPROJECT["tool"]["setuptools"]["package-dir"].values()}
    needed |= {Path("pyproject.toml"), Path(PYPROJECT["project"]["readme"])}
    covered = {n for n in needed if any(n == c or c in n.parents for c in copied)}
    assert covered == needed
    allowed = [line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().split()
               if line.startswith("!")]
    for source in copied:
        assert (ROOT / source).exists(), source
        assert str(source) in allowed, f"{source} is excluded by .dockerignore"


def test_the_distribution_lists_every_package_folder() -> None:
    # An explicit `packages` list installs only the packages it names: a subpackage left
    # out imports from a checkout (editable install) but is missing from the images.
    setuptools = PYPROJECT["tool"]["setuptools"]
    found = {
        ".".join((name, *init.parent.relative_to(ROOT / folder).parts))
        for name, folder in setuptools["package-dir"].items()
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert found == set(setuptools["packages"])


def test_image_tags_follow_the_version() -> None:
    version = PYPROJECT["project"]["version"]
    meta = yaml.safe_load((chart.CHART / "Chart.yaml").read_text())
    assert VALUES["image"]["tag"] == meta["appVersion"] == version
    for name, profile in VALUES["profiles"].items():
        assert profile["image"].endswith(f"/augment-runner:{version}"), name


# ---- every command line given to the images is one `augment` accepts ----

def help_text(subcommand: str) -> str:
    result = subprocess.run([AUGMENT, subcommand, "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_accepted(argv: list[str]) -> None:
    """argv is `augment SUB --flags...`: the parser takes it and --help lists each flag."""
    assert argv[0] == "augment" and argv[1] in SUBCOMMANDS, argv
    build_parser(argv[1]).parse_args(argv[1:])  # SystemExit(2) on an unknown flag
    listed = help_text(argv[1])
    for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
        assert flag in listed, f"{flag} not in `augment {argv[1]} --help`"


def rendered_deployments() -> dict[str, dict[str, Any]]:
    values = {"operator": {"replicas": 2, "logLevel": "debug"},
              "watchNamespaces": ["team-a", "team-b"]}
    return {d["metadata"]["name"]: d for d in chart.of_kind(chart.template(values),
                                                            "Deployment")}


@pytest.mark.parametrize(("deployment", "container"), [
    ("augment-operator", "operator"), ("augment-api", "api")])
def test_chart_commands_are_accepted_by_augment(deployment: str, container: str) -> None:
    argv = chart.container_argv(rendered_deployments()[deployment], container)
    assert argv[1] == container
    assert_accepted(argv)


def test_runner_job_command_is_accepted_by_augment() -> None:
    config = OperatorConfig()
    spec = parse_spec({"project_id": str(uuid.uuid4()), "dataset_id": "robotics-lab/sample"})
    cr = {"metadata": {"name": "sample", "namespace": "augment", "uid": str(uuid.uuid4())}}
    job = build_job(cr, spec, config.profile_for(spec.augmentation_type), config)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    argv = [*container["command"], *container.get("args", [])]
    assert argv[:2] == ["augment", "run"]
    assert_accepted(argv)
