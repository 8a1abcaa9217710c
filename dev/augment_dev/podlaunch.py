"""Inside a fresh mount namespace: mount the pod's volumes, then exec the container.

Run by the executor as `unshare --mount --propagation private -- python -m
augment_dev.podlaunch PLAN.json`; the mounts are private to this one container.

A plan with a `root` runs the container from a built image's filesystem: an overlay of
the unpacked image (read-only lower layer) and the container's own upper layer becomes
the root, with a small /dev, /proc and the volumes mounted under it; the process then
chroots into it and drops to the container's user before exec. `--probe ROOTFS DIR`
tries exactly those steps and prints the first kernel feature that is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

# Device nodes a container gets (bind-mounted from the host), as container runtimes do.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def mount(*args: str, pass_fds: tuple[int, ...] = ()) -> None:
    subprocess.run(["mount", *args], check=True, pass_fds=pass_fds, capture_output=True,
                   text=True)


def bind(source_fd: int, is_dir: bool, target: str, read_only: bool) -> None:
    dst = Path(target)
    src = f"/proc/self/fd/{source_fd}"
    if is_dir:
        dst.mkdir(parents=True, exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.touch()
    mount("--bind", src, str(dst), pass_fds=(source_fd,))
    if read_only:
        mount("-o", "remount,bind,ro", str(dst))


def hides_environment(target: str) -> bool:
    """A volume over a folder holding this Python environment would hide the program
    itself (say, an emptyDir on /tmp when the checkout lives under /tmp): skip it."""
    environment = Path(sys.prefix).resolve()
    return Path(target).resolve() in environment.parents


def inside(top: Path, path: str, hops: int = 40) -> Path:
    """`path` as the container sees it, on this side of its root `top`: symbolic links on
    the way are followed within the root (the image's /var/run is a link to /run), never
    out of it."""
    resolved = top
    parts = [p for p in path.split("/") if p not in ("", ".")]
    while parts:
        part = parts.pop(0)
        if part == "..":
            resolved = resolved.parent if resolved != top else top
            continue
        candidate = resolved / part
        if candidate.is_symlink():
            if hops == 0:
                raise OSError(f"too many symbolic links in {path}")
            hops -= 1
            link = os.readlink(candidate)
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
            if link.startswith("/"):
                resolved = top
            continue
        resolved = candidate
    return resolved


def mount_image_root(root: dict[str, str]) -> Path:
    """The container's root: the image's files under its own writable layer, a /dev of a
    few device nodes and a /proc. Returns where it is mounted."""
    merged = Path(root["merged"])
    for folder in (root["upper"], root["work"], root["merged"]):
        Path(folder).mkdir(parents=True, exist_ok=True)
    mount("-t", "overlay", "overlay", "-o",
          f"lowerdir={root['lower']},upperdir={root['upper']},workdir={root['work']}",
          str(merged))
    dev = merged / "dev"
    dev.mkdir(exist_ok=True)
    mount("-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs", str(dev))
    for name in DEVICES:
        (dev / name).touch()
        mount("--bind", f"/dev/{name}", str(dev / name))
    (dev / "shm").mkdir()
    mount("-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", str(dev / "shm"))
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        (dev / name).symlink_to(target)
    (merged / "proc").mkdir(exist_ok=True)
    mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", str(merged / "proc"))
    return merged


def enter(root: Path, read_only: bool, user: dict[str, Any]) -> None:
    """chroot into the mounted root, read-only if asked, as the container's user."""
    if read_only:  # the volumes mounted under it stay as they are
        mount("-o", "remount,bind,ro", str(root))
    os.chroot(root)
    os.chdir("/")
    os.setgroups(user.get("groups", []))
    os.setgid(user["gid"])
    os.setuid(user["uid"])


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    image_root = plan.get("root")
    top = mount_image_root(image_root) if image_root else None
    # Open every source first: a volume mounted over /tmp must not hide the sources of
    # the mounts that follow it (the pod folders may live under /tmp).
    mounts = plan["mounts"] if top else [m for m in plan["mounts"]
                                          if not hides_environment(m["target"])]
    sources = [(os.open(m["source"], os.O_PATH), Path(m["source"]).is_dir()) for m in mounts]
    for (fd, is_dir), entry in zip(sources, mounts, strict=True):
        target = str(inside(top, entry["target"])) if top else entry["target"]
        bind(fd, is_dir, target, entry["readOnly"])
        os.close(fd)
    if top:
        enter(top, image_root["readOnly"], plan["user"])
    os.chdir(plan["workingDir"])
    argv = plan["argv"]
    try:
        os.execvpe(argv[0], argv, plan["env"])
    except OSError as exc:
        print(f"cannot run {argv[0]!r}: {exc.strerror}", file=sys.stderr)
        sys.exit(127)


def probe(rootfs: str, folder: str) -> str | None:
    """The first step of an image root that fails here, named by the kernel feature."""
    base = Path(folder)
    root = {"lower": rootfs, "upper": str(base / "upper"), "work": str(base / "work"),
            "merged": str(base / "merged")}
    steps = [("overlayfs (mount -t overlay)", lambda: mount_image_root(root)),
             ("chroot", lambda: os.chroot(root["merged"])),
             ("setuid to a non-root user", lambda: (os.setgid(65534), os.setuid(65534)))]
    for feature, action in steps:
        try:
            action()
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            return f"{feature}: {detail.strip()}"
    return None


if __name__ == "__main__":
    if sys.argv[1] == "--probe":
        missing = probe(sys.argv[2], sys.argv[3])
        print(missing or "ok")
        sys.exit(1 if missing else 0)
    main(sys.argv[1])
