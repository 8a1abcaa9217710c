"""How the pod executor starts a container from a built image (docs: README, The local
executor's limits): Kubernetes' command/args rule over the image's entrypoint and
command, and the user from the securityContext, else from the image."""

from __future__ import annotations

from pathlib import Path

import pytest

from augment_dev.executor import image_argv, probe_image_root, run_as
from augment_dev.images import ImageRoot
from augment_dev.podlaunch import inside

ROOT = ImageRoot(ref="localhost/augment-runner:0.1.0-cpu", image_id="0" * 64,
                 rootfs=Path("/nowhere"), entrypoint=["augment"], cmd=["run", "--help"],
                 env={"PATH": "/opt/venv/bin"}, working_dir="/scratch", user="65532:65532")


@pytest.mark.parametrize(("container", "argv"), [
    ({}, ["augment", "run", "--help"]),
    ({"args": ["operator", "--verbose"]}, ["augment", "operator", "--verbose"]),
    ({"args": []}, ["augment"]),
    ({"command": ["sh", "-c"]}, ["sh", "-c"]),
    ({"command": ["augment", "run"], "args": ["--dataset", "x"]},
     ["augment", "run", "--dataset", "x"]),
])
def test_command_and_args_override_the_image_as_kubernetes_does(container: dict,
                                                                 argv: list[str]) -> None:
    assert image_argv(container, ROOT) == argv


def test_the_user_is_the_security_contexts_else_the_images() -> None:
    assert run_as({}, ROOT) == {"uid": 65532, "gid": 65532, "groups": []}
    assert run_as({"runAsUser": 1000}, ROOT) == {"uid": 1000, "gid": 65532, "groups": []}
    assert run_as({"runAsUser": 1000, "runAsGroup": 2000, "supplementalGroups": [5],
                   "fsGroup": 7}, ROOT) == {"uid": 1000, "gid": 2000, "groups": [5, 7]}
    assert run_as({}, ImageRoot(**{**ROOT.__dict__, "user": "10"}))["gid"] == 0


def test_mount_targets_follow_links_within_the_image_root(tmp_path: Path) -> None:
    """A volume on /var/run/secrets lands in the root's /run when /var/run -> /run, and a
    link pointing out of the root (absolute, or up past it) stays inside."""
    top = tmp_path / "root"
    (top / "var").mkdir(parents=True)
    (top / "run").mkdir()
    (top / "var" / "run").symlink_to("/run")
    (top / "escape").symlink_to("../../..")
    assert inside(top, "/var/run/secrets/token") == top / "run" / "secrets" / "token"
    assert inside(top, "/escape/etc") == top / "etc"
    assert inside(top, "/scratch") == top / "scratch"


def test_a_failing_probe_names_the_missing_feature(tmp_path: Path) -> None:
    """No image files to overlay: the probe stops at the overlay (or earlier, where mount
    namespaces are refused) and says so; the executor logs it and runs pods here."""
    missing = probe_image_root(tmp_path / "no-such-rootfs", tmp_path / "probe")
    assert missing is not None
    assert missing.startswith(("overlayfs (mount -t overlay): ",
                               "mount namespaces (unshare --mount): ")), missing
    assert not (tmp_path / "probe").exists()
