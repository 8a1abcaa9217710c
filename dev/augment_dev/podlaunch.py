"""Inside a fresh mount namespace: mount the pod's volumes, then exec the container.

Run by the executor as `unshare --mount --propagation private -- python -m
augment_dev.podlaunch PLAN.json`; the mounts are private to this one container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def bind(source_fd: int, is_dir: bool, target: str, read_only: bool) -> None:
    dst = Path(target)
    src = f"/proc/self/fd/{source_fd}"
    if is_dir:
        dst.mkdir(parents=True, exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.touch()
    subprocess.run(["mount", "--bind", src, str(dst)], check=True, pass_fds=(source_fd,))
    if read_only:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)


def hides_environment(target: str) -> bool:
    """A volume over a folder holding this Python environment would hide the program
    itself (say, an emptyDir on /tmp when the checkout lives under /tmp): skip it."""
    environment = Path(sys.prefix).resolve()
    return Path(target).resolve() in environment.parents


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    # Open every source first: a volume mounted over /tmp must not hide the sources of
    # the mounts that follow it (the pod folders may live under /tmp).
    mounts = [m for m in plan["mounts"] if not hides_environment(m["target"])]
    sources = [(os.open(m["source"], os.O_PATH), Path(m["source"]).is_dir()) for m in mounts]
    for (fd, is_dir), mount in zip(sources, mounts, strict=True):
        bind(fd, is_dir, mount["target"], mount["readOnly"])
        os.close(fd)
    os.chdir(plan["workingDir"])
    argv = plan["argv"]
    try:
        os.execvpe(argv[0], argv, plan["env"])
    except OSError as exc:
        print(f"cannot run {argv[0]!r}: {exc.strerror}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main(sys.argv[1])
