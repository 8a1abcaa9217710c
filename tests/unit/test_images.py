"""The container images' Dockerfiles, parsed (tests/images builds and runs the images).

These tests pin what would otherwise only fail in a registry build or at pod start: the
entrypoint, the non-root user the restricted Pod Security Standard needs, the base image,
build tools kept out of the runtime stage, the sources the distribution is built from
(never the tests or dev/), the build secrets and labels `make images` relies on, that
every command line the chart and the operator give the images is one `augment` accepts,
and that each image's extras are all its entrypoints import.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pkgutil
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from augment_api.dashboard import UI_FILES
from augment_cli.main import SUBCOMMANDS, build_parser
from augment_dev import chart, images
from augment_operator.config import OperatorConfig
from augment_operator.jobs import build_job
from augment_runner.native_threads import SINGLE_THREAD_ENV
from augment_spec.model import parse_spec

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
    """Every exact pin in pyproject.toml, dependencies and extras alike (an extra may also
    name the project itself, with other extras: that is no pin)."""
    project = PYPROJECT["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
        if not r.startswith(f"{project['name']}[")]
    return dict(r.split("==", 1) for r in requirements)


def test_a_package_in_several_extras_has_one_pin() -> None:
    project = PYPROJECT["project"]
    seen: dict[str, set[str]] = {}
    for requirement in project["dependencies"] + [
            r for extra in project["optional-dependencies"].values() for r in extra]:
        name, _, version = requirement.partition("==")
        seen.setdefault(name, set()).add(version)
    assert {name: v for name, v in seen.items() if len(v) > 1} == {}


@pytest.mark.parametrize("dockerfile", ["runner.Dockerfile", "augment.Dockerfile"])
def test_every_stage_builds_on_the_slim_python_base(dockerfile: str) -> None:
    """No CUDA base image: the runner's CUDA libraries are wheels (the `gpu` extra). Every
    stage is FROM ${BASE}, so `make images` replaces the base with one build argument."""
    text = (IMAGES / dockerfile).read_text()
    assert re.search(r"^ARG BASE=python:3\.11-slim-bookworm$", text, re.M)
    assert {args.split()[0] for keyword, args in instructions(text) if keyword == "FROM"} \
        == {"${BASE}"}
    assert images.base_release() == "bookworm"


def test_the_images_run_the_python_ci_tests() -> None:
    version = re.fullmatch(r"python:(\d+\.\d+)-slim-\w+",
                           images.dockerfile_arg("runner.Dockerfile", "BASE")).group(1)
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


def image_env(dockerfile: str) -> dict[str, str]:
    """The runtime stage's ENV, NAME=value pairs (values without spaces or quotes)."""
    pairs = " ".join(stages(dockerfile)[-1].all("ENV")).split()
    return dict(pair.split("=", 1) for pair in pairs)


def test_the_runner_image_runs_native_libraries_on_one_thread_per_call() -> None:
    env = image_env("runner.Dockerfile")
    assert {k: env.get(k) for k in SINGLE_THREAD_ENV} == SINGLE_THREAD_ENV


def arg_defaults(dockerfile: str) -> dict[str, str]:
    return dict(args.partition("=")[::2] for keyword, args in
                instructions((IMAGES / dockerfile).read_text()) if keyword == "ARG")


def installed_extras(dockerfile: str, build_args: dict[str, str] | None = None) -> set[str]:
    """The extras of the one `pip install ".[a,b]"` of the project in the Dockerfile, its
    ${ARG}s given their defaults or `build_args`."""
    text = " ".join(args for _, args in instructions((IMAGES / dockerfile).read_text()))
    values = {**arg_defaults(dockerfile), **(build_args or {})}
    text = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], text)
    targets = [word for line in re.findall(r"pip install ([^&;]+)", text)
               for word in shlex.split(line) if word == "." or word.startswith(".[")]
    assert len(targets) == 1, targets
    found = re.fullmatch(r"\.(?:\[([\w,]*)\])?", targets[0])
    assert found, targets[0]
    return set(filter(None, (found.group(1) or "").split(",")))


# What each image runs decides its extras: nothing for the others' components, no `dev`.
IMAGE_EXTRAS = {"augment.Dockerfile": {"api", "operator"},
                "runner.Dockerfile": {"runner", "gpu"}}


def test_the_tested_runner_variant_drops_only_the_gpu_extra() -> None:
    """`make test` runs the runner image built without CuPy and the CUDA wheels."""
    cpu = images.IMAGES["augment-runner-cpu"]
    assert cpu.dockerfile == images.IMAGES["augment-runner"].dockerfile == "runner.Dockerfile"
    assert installed_extras(cpu.dockerfile, cpu.build_args) == \
        IMAGE_EXTRAS["runner.Dockerfile"] - {"gpu"}
    assert images.TESTED == ("augment", "augment-runner-cpu")
    assert set(images.RELEASED) == {"augment", "augment-runner"}


@pytest.mark.parametrize(("dockerfile", "extras"), IMAGE_EXTRAS.items())
def test_installs_the_project_with_pyproject_pins(dockerfile: str, extras: set[str]) -> None:
    assert installed_extras(dockerfile) == extras
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])
    text = " ".join(args for _, args in instructions((IMAGES / dockerfile).read_text()))
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


def copy_build_context(dockerfile: str, into: Path) -> None:
    """What the build stage COPYs into its WORKDIR, copied to the same paths under `into`."""
    for args in stages(dockerfile)[0].all("COPY"):
        *sources, dest = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            assert dest in ("./", source), args
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, into / source,
                                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                (into / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, into / source)


@pytest.mark.parametrize("dockerfile", IMAGE_EXTRAS)
def test_the_build_context_makes_a_distribution_of_every_product_module(
        dockerfile: str, tmp_path: Path) -> None:
    """What `pip install` builds from the image's context (setuptools' build_py and
    egg_info, the steps of a wheel): every module of the product, subpackages included,
    no development tools, the one `augment` command."""
    context, lib, egg = tmp_path / "context", tmp_path / "lib", tmp_path / "egg"
    copy_build_context(dockerfile, context)
    egg.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q",
         "build_py", "-d", str(lib), "egg_info", "-e", str(egg)],
        cwd=context, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    built = {path.relative_to(lib).as_posix() for path in lib.rglob("*.py")}
    product = {f"{package}/{path.relative_to(ROOT / folder).as_posix()}"
               for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items()
               for path in (ROOT / folder).rglob("*.py") if "__pycache__" not in path.parts}
    assert built == product
    files = {path.relative_to(lib).as_posix() for path in lib.rglob("*") if path.is_file()}
    assert {f"augment_api/ui/{name}" for name in UI_FILES} <= files  # the dashboard's
    (entry_points,) = egg.glob("*.egg-info/entry_points.txt")
    assert entry_points.read_text().split() == [
        "[console_scripts]", "augment", "=", PYPROJECT["project"]["scripts"]["augment"]]


def test_neither_the_tests_nor_the_development_tools_reach_an_image() -> None:
    allowed = [Path(line[1:].rstrip("/"))
               for line in (ROOT / ".dockerignore").read_text().split() if line.startswith("!")]
    for kept_out in (Path("tests"), Path("dev")):
        assert not [a for a in allowed if a == kept_out or kept_out in a.parents], allowed
    assert "augment_dev" not in PYPROJECT["tool"]["setuptools"]["packages"]
    assert "augment_dev" not in PYPROJECT["tool"]["setuptools"]["package-dir"]
    assert "augment-dev" not in PYPROJECT["project"]["scripts"]


@pytest.mark.parametrize("dockerfile", IMAGE_EXTRAS)
def test_pip_settings_reach_only_the_build_stage_as_secrets(dockerfile: str) -> None:
    """The build's pip settings (a proxy's CA, a private index) are secrets mounted on the
    one `pip install`, at the paths the builder's pip.conf names: never an image layer."""
    build, *rest = stages(dockerfile)
    (install,) = [args for args in build.all("RUN") if "pip install" in args]
    mounts = dict(re.findall(r"--mount=type=secret,id=([\w-]+),target=(\S+)", install))
    assert mounts == {images.PIP_CONF_SECRET: "/etc/pip.conf",
                      images.PIP_CA_SECRET: images.PIP_CA_TARGET}
    assert not any("--mount" in args for stage in rest for args in stage.all("RUN"))


@pytest.mark.parametrize("dockerfile", IMAGE_EXTRAS)
def test_the_runtime_stage_carries_the_oci_labels(dockerfile: str) -> None:
    labels = " ".join(stages(dockerfile)[-1].all("LABEL"))
    for label, arg in (("source", "SOURCE"), ("version", "VERSION"),
                       ("revision", "REVISION")):
        assert f'org.opencontainers.image.{label}="${{{arg}}}"' in labels, label
    assert arg_defaults(dockerfile)["VERSION"] == PYPROJECT["project"]["version"]
    assert arg_defaults(dockerfile)["SOURCE"].startswith("https://github.com/")


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


# ---- each image's extras hold everything its entrypoints import, and nothing more ----
# A subprocess imports and runs the image's entrypoints with its sys.meta_path finders
# wrapped so that every top-level module is missing unless the image would hold it: the
# standard library, the product's own packages, and the distributions the image's extras
# resolve to (pyproject.toml's requirements, then the installed ones' own, transitively).

def project_requirements(extras: set[str]) -> list[Requirement]:
    """pyproject.toml's requirements with these extras; `project[extra]` items expanded."""
    project = PYPROJECT["project"]
    own = canonicalize_name(project["name"])
    found = [Requirement(r) for r in project["dependencies"]]
    todo, done = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in done:
            continue
        done.add(extra)
        for requirement in map(Requirement, project["optional-dependencies"][extra]):
            if canonicalize_name(requirement.name) == own:
                todo.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


def resolved_distributions(requirements: list[Requirement]) -> set[str]:
    """Canonical names of the distributions these requirements pull in, transitively, as
    installed here (their markers evaluated for this interpreter and the extras asked)."""
    seen: set[tuple[str, str]] = set()  # (distribution, extra or "")
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        wanted = {(name, extra) for extra in {"", *requirement.extras}} - seen
        if not wanted:
            continue
        seen |= wanted
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here (CuPy without a GPU): nothing of it imports anyway
        for sub in map(Requirement, requires):
            if sub.marker is None or any(sub.marker.evaluate({"extra": extra})
                                         for _, extra in wanted):
                todo.append(sub)
    return {name for name, _ in seen}


def image_contents(extras: set[str]) -> tuple[set[str], set[str]]:
    """(top-level modules, canonical distribution names) an image with these extras holds."""
    dists = resolved_distributions(project_requirements(extras))
    third_party = {top for top, names in importlib.metadata.packages_distributions().items()
                   if any(canonicalize_name(n) in dists for n in names)}
    own = set(PYPROJECT["tool"]["setuptools"]["packages"])
    return third_party | own | STDLIB, dists | {canonicalize_name(PYPROJECT["project"]["name"])}


# sys.stdlib_module_names lacks the platform's generated modules (_sysconfigdata_*).
STDLIB = set(sys.stdlib_module_names) | {
    module.name for module in pkgutil.iter_modules(
        [sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")])}


BLOCKER = '''
import importlib, importlib.metadata, json, os, re, sys

allowed = set(json.loads(os.environ.pop("IMAGE_IMPORTABLE")))
distributions = set(json.loads(os.environ.pop("IMAGE_DISTRIBUTIONS")))


class OnlyTheImage:
    """The interpreter's finders, for top-level modules in `allowed` only: any other module
    is not found (an import raises ModuleNotFoundError, importlib.util.find_spec gives
    None), as in the image; likewise importlib.metadata sees only `distributions`."""

    def __init__(self, finders):
        self.finders = finders

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in allowed:
            return None
        for finder in self.finders:
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                return spec
        return None

    def find_distributions(self, context=importlib.metadata.DistributionFinder.Context()):
        for finder in self.finders:
            for dist in getattr(finder, "find_distributions", lambda _: ())(context):
                name = dist.metadata["Name"] or ""
                if re.sub(r"[-_.]+", "-", name).lower() in distributions:
                    yield dist


sys.meta_path[:] = [OnlyTheImage(list(sys.meta_path))]
from augment_cli.main import main  # the images' ENTRYPOINT


def missing(name):
    """`name` cannot be imported: the finders are wrapped, and the extras lack it."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        return
    raise SystemExit(f"{name} was importable: the image would not lack it")
'''

# What each image runs: its subcommands (the API's and the operator's, as the chart starts
# them; `augment run` on the sample dataset with its status reports on, towards a server
# that refuses: reporting is best effort), then modules its extras must not provide.
ENTRYPOINTS = {
    "augment.Dockerfile": '''
for argv in (["crd"], ["openapi"]):
    assert main(argv) == 0, argv
for argv in (["api", "--help"], ["operator", "--help"]):
    try:
        main(argv)
    except SystemExit as done:
        assert done.code == 0, (argv, done.code)
import uvicorn  # `augment api` imports it when it starts serving
from augment_api.app import create_app
from augment_api.settings import Settings
create_app(Settings())
for name in ("numpy", "av", "datasets", "augment_dev"):
    missing(name)
''',
    "runner.Dockerfile": '''
assert main(["run", "--dataset", sys.argv[1], "--output", sys.argv[2],
             "--transforms", "lighting,noise,blur,occlusion", "--copies", "1"]) == 0
assert main(["crd"]) == 0
assert "kubernetes" in sys.modules, "the status reports were not exercised"
for name in ("fastapi", "kopf", "augment_dev"):
    missing(name)
try:  # the other image's command: one line naming the extra it would need
    main(["api", "--help"])
except SystemExit as refused:
    assert "lacks the 'api' extra (No module named " in str(refused.code), refused.code
else:
    raise SystemExit("`augment api` ran without the api extra")
''',
}
REFUSING_KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "c",
    "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
}


@pytest.mark.parametrize("dockerfile", ENTRYPOINTS)
def test_the_image_extras_hold_all_its_entrypoints_import(dockerfile: str,
                                                          tmp_path: Path) -> None:
    importable, distributions = image_contents(installed_extras(dockerfile))
    assert "augment_dev" not in importable
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(REFUSING_KUBECONFIG))
    env = {**os.environ, "IMAGE_IMPORTABLE": json.dumps(sorted(importable)),
           "IMAGE_DISTRIBUTIONS": json.dumps(sorted(distributions)),
           "KUBECONFIG": str(kubeconfig), "AUGMENT_JOB_NAME": "sample",
           "AUGMENT_JOB_NAMESPACE": "augment"}
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER + ENTRYPOINTS[dockerfile],
         str(ROOT / "examples" / "sample-dataset"), str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
