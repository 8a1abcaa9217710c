"""Build the container images without a Docker engine or a registry (`make images`).

buildah builds images/augment.Dockerfile and images/runner.Dockerfile unchanged, in
chroot isolation (no daemon, no OCI runtime). The one thing a registry would give, the
Dockerfiles' default `BASE` (python:3.11-slim-bookworm), is replaced by a Debian image of
the same release made here by mmdebstrap, with that release's Python 3.11. Where a registry
is reachable, `docker build` of the same files uses the public base unchanged.

Images live in buildah's storage under CACHE_ROOT/images/storage, tagged twice: by version
(`localhost/augment:0.1.0`) and by a key of everything they are built from (the Dockerfile,
the build context, the build arguments, the base), so a second run builds nothing and a
change of any input rebuilds. The runner image has a CPU variant (`EXTRAS=runner`: no CuPy,
no CUDA wheels) that `make test` builds and runs; the full GPU image is built by
`make images`. Building needs root (buildah and mmdebstrap as root; no user namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from augment_dev import REPO_ROOT, chart
from augment_dev.binaries import CACHE_ROOT, exclusive
from augment_dev.debian import install_missing

IMAGES_DIR = REPO_ROOT / "images"
CACHE = CACHE_ROOT / "images"
STORAGE = CACHE / "storage"
# buildah's run state (locks, mount counts) must not outlive a reboot: /run is a tmpfs.
RUNROOT = Path("/run/augment-operator/buildah")
EXPORTS = CACHE / "oci"
# Bump when the way images are built changes, so cached ones are rebuilt.
BUILDER_VERSION = "1"
# Builds (and unpacked root filesystems) kept per image, the ones used last: a few
# checkouts of the project may share this cache.
KEEP_BUILDS = 3

# What the local base holds beyond Debian's minimal system: the release's Python with venv
# (`python` included, as in the python: images) and what the Dockerfiles' RUN lines use.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "passwd", "ca-certificates")
# Documentation and translations are left out, as in the slim images (copyrights kept).
BASE_DPKG_OPTIONS = (
    "path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright", "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/info/*",
)
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
# The build secrets the Dockerfiles mount on their `pip install` (and the CA's path there).
PIP_CONF_SECRET = "pip-conf"
PIP_CA_SECRET = "pip-ca"
PIP_CA_TARGET = "/etc/pip-ca.crt"
# The tools, by command, and the Debian packages that bring them.
TOOLS = {"buildah": "buildah", "mmdebstrap": "mmdebstrap"}


@dataclass(frozen=True)
class ImageSpec:
    """One image to build: a Dockerfile, its repository name, a variant and its arguments."""

    name: str
    dockerfile: str
    variant: str = ""
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        version = project_version()
        return f"{version}-{self.variant}" if self.variant else version

    @property
    def ref(self) -> str:
        return f"localhost/{self.name}:{self.tag}"


IMAGES = {
    "augment": ImageSpec("augment", "augment.Dockerfile"),
    "augment-runner": ImageSpec("augment-runner", "runner.Dockerfile"),
    # The runner without the `gpu` extra: what `make test` builds and runs on the CPU.
    "augment-runner-cpu": ImageSpec("augment-runner", "runner.Dockerfile", "cpu",
                                    {"EXTRAS": "runner"}),
}
RELEASED = ("augment", "augment-runner")
TESTED = ("augment", "augment-runner-cpu")


@dataclass(frozen=True)
class Built:
    """A built image, as recorded next to it in the cache."""

    name: str
    ref: str
    key_ref: str
    image_id: str
    revision: str
    size_bytes: int
    layer_bytes: list[int]
    build_seconds: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def project_version() -> str:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return str(project["version"])


def dockerfile_arg(dockerfile: str, name: str) -> str:
    """The default of `ARG name=...` in the Dockerfile (the first one)."""
    text = (IMAGES_DIR / dockerfile).read_text()
    found = re.search(rf"^ARG {name}=(\S+)$", text, re.M)
    if not found:
        raise ValueError(f"{dockerfile} declares no ARG {name} with a default")
    return found.group(1)


def base_release() -> str:
    """The Debian release of the Dockerfiles' default base (python:3.11-slim-bookworm)."""
    bases = {dockerfile_arg(spec.dockerfile, "BASE") for spec in IMAGES.values()}
    if len(bases) != 1:
        raise ValueError(f"the Dockerfiles disagree on their default BASE: {sorted(bases)}")
    found = re.fullmatch(r"python:[\d.]+-slim-(\w+)", bases.pop())
    if not found:
        raise ValueError("the default BASE is not a python:X.Y-slim-RELEASE image")
    return found.group(1)


# ---------------------------------------------------------------------------- tools


def buildah(*args: str, capture: bool = True, check: bool = True) -> str:
    """buildah on the cache's storage; its standard output."""
    RUNROOT.mkdir(parents=True, exist_ok=True)
    command = ["buildah", "--root", str(STORAGE), "--runroot", str(RUNROOT), *args]
    result = subprocess.run(command, capture_output=capture, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:6])} ... failed ({result.returncode}): "
                           f"{(result.stderr or '').strip()[-2000:]}")
    return result.stdout or ""


def ensure_tools() -> None:
    """buildah and mmdebstrap, installed from Debian where they are missing (as root)."""
    if os.geteuid() != 0:
        raise SystemExit("building the images needs root: buildah and mmdebstrap run as "
                         "root here (no rootless setup)")
    install_missing(TOOLS, "building the images")


def image_exists(ref: str) -> bool:
    result = subprocess.run(
        ["buildah", "--root", str(STORAGE), "--runroot", str(RUNROOT),
         "inspect", "--type", "image", ref], capture_output=True, check=False)
    return result.returncode == 0


def digest(*parts: bytes) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(len(part).to_bytes(8, "big"))
        hasher.update(part)
    return hasher.hexdigest()[:16]


# ----------------------------------------------------------------------------- base


def base_key(release: str) -> str:
    return digest(BUILDER_VERSION.encode(), release.encode(), *map(str.encode, BASE_PACKAGES),
                  *map(str.encode, BASE_DPKG_OPTIONS), DEBIAN_MIRROR.encode(),
                  DEBIAN_SECURITY.encode())


def ensure_base() -> str:
    """The local Debian base image, made by mmdebstrap once; its reference."""
    release = base_release()
    ref = f"localhost/augment-base:{release}-{base_key(release)}"
    if image_exists(ref):
        return ref
    tarball = CACHE / f"base-{release}-{base_key(release)}.tar"
    if not tarball.exists():
        started = time.monotonic()
        log(f"making a Debian {release} base with mmdebstrap (a few minutes)")
        sources = [f"deb {DEBIAN_MIRROR} {release} main",
                   f"deb {DEBIAN_MIRROR} {release}-updates main",
                   f"deb {DEBIAN_SECURITY} {release}-security main"]
        partial = tarball.with_suffix(".partial.tar")
        run_logged(["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
                    *(f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS),
                    release, str(partial), *sources], CACHE / "logs" / "base.log")
        partial.replace(tarball)
        log(f"base made in {time.monotonic() - started:.0f} s")
    container = buildah("from", "--quiet", "scratch").strip()
    try:
        buildah("add", "--quiet", container, str(tarball), "/")
        buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                "/sbin:/bin", "--cmd", '["python"]', container)
        buildah("commit", "--quiet", container, ref)
    finally:
        buildah("rm", container)
    return ref


def run_logged(command: list[str], logfile: Path) -> None:
    """Run with its output in `logfile`; a failure raises with the log's last lines."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("w") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "\n".join(logfile.read_text().splitlines()[-40:])
        raise RuntimeError(f"{command[0]} failed ({result.returncode}); {logfile}:\n{tail}")


# ------------------------------------------------------------------------- building


def context_files() -> list[Path]:
    """The files of the build context: the allow-list of .dockerignore, without caches."""
    allowed = [line[1:].rstrip("/") for line in (REPO_ROOT / ".dockerignore").read_text().split()
               if line.startswith("!")]
    files: list[Path] = []
    for name in allowed:
        path = REPO_ROOT / name
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [p for p in candidates if p.is_file() and "__pycache__" not in p.parts
                  and not p.name.endswith(".pyc")
                  and not any(part.endswith(".egg-info") for part in p.parts)]
    return files


def image_key(spec: ImageSpec, base: str) -> str:
    """Everything the image is built from, hashed; README.md is left out: in the image it
    is only the distribution's long description, and a README change would otherwise
    rebuild every image."""
    parts = [BUILDER_VERSION.encode(), base.encode(), (IMAGES_DIR / spec.dockerfile).read_bytes(),
             json.dumps(spec.build_args, sort_keys=True).encode(), project_version().encode()]
    for path in context_files():
        if path.name == "README.md" and path.parent == REPO_ROOT:
            continue
        parts += [path.relative_to(REPO_ROOT).as_posix().encode(), path.read_bytes()]
    return digest(*parts)


def source_revision() -> str:
    """The commit the build context comes from, `-dirty` when it differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        head = git("rev-parse", "HEAD")
        context = [str(p.relative_to(REPO_ROOT)) for p in context_files()]
        dirty = git("status", "--porcelain", "--", *context)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def pip_secrets(folder: Path) -> list[str]:
    """How this machine's pip reaches its index (a private index, a TLS-intercepting
    proxy's CA), passed to the build as the secrets the Dockerfiles mount on their
    `pip install` only: nothing of it reaches an image layer."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                            capture_output=True, text=True, check=False).stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        found = re.fullmatch(r"[^.]*\.([\w-]+)='(.*)'", line.strip())
        if found and found.group(1) in {"index-url", "extra-index-url", "trusted-host", "cert"}:
            settings[found.group(1)] = found.group(2)
    args: list[str] = []
    cert = settings.pop("cert", None)
    if cert and Path(cert).is_file():
        settings["cert"] = PIP_CA_TARGET
        args += ["--secret", f"id={PIP_CA_SECRET},src={cert}"]
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "pip.conf"
    conf.write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())))
    conf.chmod(0o600)
    return [*args, "--secret", f"id={PIP_CONF_SECRET},src={conf}"]


def image_record(ref: str) -> dict[str, Any]:
    return json.loads(buildah("inspect", "--type", "image", ref))


def layer_sizes(ref: str) -> list[int]:
    """Sizes of the image's layers as stored (uncompressed tar streams)."""
    manifest = json.loads(image_record(ref)["Manifest"])
    return [int(layer["size"]) for layer in manifest["layers"]]


def record_path(spec: ImageSpec, key: str) -> Path:
    return CACHE / "records" / f"{spec.name}-{spec.tag}-{key}.json"


def ensure_image(spec: ImageSpec) -> Built:
    """The image, built unless an image of the same inputs is in the cache."""
    base = ensure_base()
    key = image_key(spec, base)
    key_ref = f"localhost/{spec.name}:{spec.tag}-{key}"
    record = record_path(spec, key)
    if image_exists(key_ref) and record.exists():
        buildah("tag", key_ref, spec.ref)
        record.touch()  # used last: kept by prune_other_builds
        return Built(**json.loads(record.read_text()))
    revision = source_revision()
    started = time.monotonic()
    log(f"building {spec.ref} from images/{spec.dockerfile} (cold: minutes)")
    args = {"BASE": base, "VERSION": project_version(), "REVISION": revision,
            **spec.build_args}
    run_logged(["buildah", "--root", str(STORAGE), "--runroot", str(RUNROOT), "bud",
                "--isolation", "chroot", "--layers", "-f", str(IMAGES_DIR / spec.dockerfile),
                *(f"--build-arg={k}={v}" for k, v in args.items()),
                *pip_secrets(CACHE / "secrets"), "-t", key_ref, "-t", spec.ref,
                str(REPO_ROOT)], CACHE / "logs" / f"{spec.name}-{spec.tag}.log")
    check = run_in(key_ref, ["python", "-m", "pip", "check"])
    if check.returncode != 0:  # a pin conflict: not an image to hand to a cluster
        buildah("rmi", key_ref, spec.ref)
        raise RuntimeError(f"pip check fails in {spec.ref}:\n{check.stdout}{check.stderr}")
    sizes = layer_sizes(key_ref)
    built = Built(name=spec.name, ref=spec.ref, key_ref=key_ref,
                  image_id=image_record(key_ref)["FromImageID"], revision=revision,
                  size_bytes=sum(sizes), layer_bytes=sizes,
                  build_seconds=round(time.monotonic() - started, 1))
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(built.to_json(), indent=2) + "\n")
    log(f"built {spec.ref} in {built.build_seconds:.0f} s, {built.size_bytes / 1e6:.0f} MB")
    prune_other_builds(spec)
    return built


def prune_other_builds(spec: ImageSpec) -> None:
    """Remove all but the KEEP_BUILDS builds of this image used last: every change of
    code makes one, and a runner image weighs a gigabyte."""
    keyed = re.compile(rf"{re.escape(spec.name)}-{re.escape(spec.tag)}-([0-9a-f]{{16}})\.json")
    found = [(r, m.group(1)) for r in (CACHE / "records").glob("*.json")
             if (m := keyed.fullmatch(r.name))]
    found.sort(key=lambda pair: pair[0].stat().st_mtime, reverse=True)
    for record, key in found[KEEP_BUILDS:]:
        buildah("rmi", f"localhost/{spec.name}:{spec.tag}-{key}", check=False)
        record.unlink()
    if found[KEEP_BUILDS:]:
        buildah("rmi", "--prune", check=False)


def ensure(names: Sequence[str]) -> dict[str, Built]:
    """The named images (keys of IMAGES), building what is missing, one build at a time."""
    ensure_tools()
    with exclusive(CACHE):
        return {name: ensure_image(IMAGES[name]) for name in names}


def archive_path(ref: str) -> Path:
    """Where `make images` writes the OCI archive of the image `localhost/NAME:TAG`."""
    name, _, tag = ref.removeprefix("localhost/").partition(":")
    return EXPORTS / f"{name}-{tag}.oci.tar"


def export(built: Built) -> Path:
    """The image as an OCI archive (gzip layers), what `skopeo copy` pushes to a registry."""
    name, _, tag = built.ref.removeprefix("localhost/").partition(":")
    archive = archive_path(built.ref)
    stamp = archive.with_suffix(".id")
    if archive.exists() and stamp.exists() and stamp.read_text() == built.image_id:
        return archive
    EXPORTS.mkdir(parents=True, exist_ok=True)
    archive.unlink(missing_ok=True)
    log(f"exporting {built.ref} to {archive}")
    buildah("push", "--quiet", built.key_ref, f"oci-archive:{archive}:{name}:{tag}")
    stamp.write_text(built.image_id)
    return archive


# ------------------------------------------------------------------- running inside


@contextlib.contextmanager
def container(ref: str) -> Iterator[str]:
    """A working container of the image (its own writable layer), removed afterwards."""
    name = buildah("from", "--quiet", "--pull-never", ref).strip()
    try:
        yield name
    finally:
        buildah("rm", name)


@contextlib.contextmanager
def mounted(ref: str) -> Iterator[Path]:
    """The image's root filesystem, mounted read-write on a throwaway container."""
    with container(ref) as name:
        root = Path(buildah("mount", name).strip())
        try:
            yield root
        finally:
            buildah("umount", name)


def run_in(ref: str, argv: Sequence[str], *, volumes: Sequence[str] = (),
           env: dict[str, str] | None = None, user: str | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run argv in a fresh container of the image (chroot isolation, the host's network):
    the image's environment, working directory and user unless `user` is given;
    `volumes` are buildah's HOST:CONTAINER[:ro] bind mounts."""
    with container(ref) as name:
        command = ["buildah", "--root", str(STORAGE), "--runroot", str(RUNROOT), "run",
                   "--isolation", "chroot", *(f"--volume={v}" for v in volumes),
                   *(f"--env={k}={v}" for k, v in (env or {}).items()),
                   *([f"--user={user}"] if user else []), name, "--", *argv]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              check=False)


# ------------------------------------------------------------ images for the executor


@dataclass(frozen=True)
class ImageRoot:
    """A built image unpacked for the pod executor: its files and its configuration."""

    ref: str
    image_id: str
    rootfs: Path
    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    working_dir: str
    user: str


def unpacked(built: Built) -> ImageRoot:
    """The image's root filesystem as a plain folder (copied once out of buildah's
    storage, cached by image id): the lower layer of every container run from it."""
    name, _, tag = built.ref.removeprefix("localhost/").partition(":")
    rootfs = CACHE / "rootfs" / f"{name}-{tag}-{built.image_id[:16]}"
    if not rootfs.exists():
        partial = rootfs.with_name(rootfs.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        with mounted(built.key_ref) as root:
            subprocess.run(["cp", "-a", f"{root}/.", str(partial)], check=True)
        partial.rename(rootfs)
        # Earlier builds of this image, but the latest few: another checkout sharing this
        # cache may be running pods on its own.
        earlier = re.compile(rf"{re.escape(name)}-{re.escape(tag)}-[0-9a-f]{{16}}")
        unpacked_before = sorted((d for d in rootfs.parent.iterdir()
                                  if earlier.fullmatch(d.name)),
                                 key=lambda d: d.stat().st_mtime, reverse=True)
        for old in unpacked_before[KEEP_BUILDS:]:
            shutil.rmtree(old, ignore_errors=True)
    rootfs.touch()  # used last
    config = image_record(built.key_ref)["OCIv1"]["config"]
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    return ImageRoot(ref=built.ref, image_id=built.image_id, rootfs=rootfs,
                     entrypoint=list(config.get("Entrypoint") or []),
                     cmd=list(config.get("Cmd") or []), env=env,
                     working_dir=config.get("WorkingDir") or "/",
                     user=config.get("User") or "0:0")


def pod_images() -> dict[str, ImageRoot]:
    """The images the chart's pods name, each mapped to the built image `make test`
    runs: the operator's and the API's to the API image, every GPU profile's to the
    runner's CPU variant (the fake GPU nodes run NumPy)."""
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    built = ensure(TESTED)
    api, runner = unpacked(built["augment"]), unpacked(built["augment-runner-cpu"])
    image = values["image"]
    return {f"{image['repository']}:{image['tag']}": api,
            **{profile["image"]: runner for profile in values["profiles"].values()}}


# ------------------------------------------------------------------------- command


def push_instructions(built: Built, archive: Path | None) -> list[str]:
    name, _, tag = built.ref.removeprefix("localhost/").partition(":")
    storage = f"containers-storage:[overlay@{STORAGE}+{RUNROOT}]{built.ref}"
    lines = [f"{built.ref}  ({built.size_bytes / 1e6:.0f} MB, revision {built.revision})",
             f"  storage: {storage}"]
    if archive:
        lines.append(f"  archive: {archive}")
        lines.append(f"  push:    skopeo copy oci-archive:{archive} "
                     f"docker://REGISTRY/{name}:{tag}")
    else:
        lines.append(f"  push:    skopeo copy '{storage}' docker://REGISTRY/{name}:{tag}")
    lines.append(f"       or podman --root {STORAGE} --runroot {RUNROOT} push "
                 f"{built.ref} docker://REGISTRY/{name}:{tag}")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", choices=[*IMAGES, []], metavar="IMAGE",
                        help=f"images to build (default: {' '.join(RELEASED)}); "
                             f"one of {', '.join(IMAGES)}")
    parser.add_argument("--no-export", action="store_true",
                        help="do not write OCI archives (the images stay in buildah's storage)")


def main(args: argparse.Namespace) -> int:
    built = ensure(args.names or RELEASED)
    print("Images (set image.repository / the profiles' image in the chart to where you "
          "push them; REGISTRY is yours):")
    for image in built.values():
        archive = None if args.no_export else export(image)
        print("\n".join(push_instructions(image, archive)))
    return 0


if __name__ == "__main__":
    cli = argparse.ArgumentParser(prog="python -m augment_dev.images", description=__doc__)
    add_arguments(cli)
    sys.exit(main(cli.parse_args()))
