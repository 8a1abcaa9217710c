"""Inside a fresh mount namespace: mount the pod's volumes, drop privileges, exec.

Run by the executor as `unshare --mount --propagation private -- python -m
augment_testing.podlaunch PLAN.json`; the mounts are private to this one container.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def bind(source: str, target: str, read_only: bool) -> None:
    src, dst = Path(source), Path(target)
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.touch()
    subprocess.run(["mount", "--bind", str(src), str(dst)], check=True)
    if read_only:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(dst)], check=True)


def main(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    for mount in plan["mounts"]:
        bind(mount["source"], mount["target"], mount["readOnly"])
    if plan.get("runAsGroup") is not None:
        os.setgid(int(plan["runAsGroup"]))
    if plan.get("runAsUser") is not None:
        os.setgroups([])
        os.setuid(int(plan["runAsUser"]))
    os.chdir(plan["workingDir"])
    argv = plan["argv"]
    try:
        os.execvpe(argv[0], argv, plan["env"])
    except OSError as exc:
        print(f"cannot run {argv[0]!r}: {exc.strerror}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main(sys.argv[1])
