"""API keys: the file format, digest matching, project scopes, reloading."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from augment_api.auth import KeyFileError, KeyRingFile, load_key_ring

PROJECT = uuid.UUID("0b5c6f0e-8a53-4a0c-9a43-7a3f0f0f2c11")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "api-keys.yaml"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write_keys(path: Path, *entries: tuple[str, str, object]) -> Path:
    lines = ["keys:"]
    for name, key, projects in entries:
        lines += [f"  - name: {name}", f"    sha256: {sha(key)}", f"    projects: {projects}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_example_keys_file_loads_and_scopes_projects() -> None:
    ring = load_key_ring(EXAMPLE)
    team = ring.authenticate("dev-team-a-key")
    ops = ring.authenticate("dev-ops-key")
    assert team is not None and team.name == "team-a"
    assert team.may_use(PROJECT) and team.may_use(str(PROJECT).upper())
    assert not team.may_use(uuid.uuid4()) and not team.may_use(None)
    assert ops is not None and ops.projects is None and ops.may_use(uuid.uuid4())
    assert ring.authenticate("dev-team-a-key ") is None
    assert ring.authenticate("") is None


def test_star_may_be_written_as_a_list(tmp_path: Path) -> None:
    ring = load_key_ring(write_keys(tmp_path / "k.yaml", ("all", "k1", '["*"]')))
    principal = ring.authenticate("k1")
    assert principal is not None and principal.projects is None


@pytest.mark.parametrize(("text", "fragment"), [
    ("keys: [{name: a, sha256: abc, projects: ['*']}]", "sha256"),
    ("keys: [{name: a, sha256: " + "a" * 64 + ", projects: []}]", "projects"),
    ("keys: [{name: a, sha256: " + "a" * 64 + ", projects: [not-a-uuid]}]", "projects"),
    ("keys: [{name: a, sha256: " + "a" * 64 + ", projects: '*', key: plain}]", "key"),
    ("keys: [{name: a, sha256: " + "a" * 64 + ", projects: '*'}, "
     "{name: b, sha256: " + "A" * 64 + ", projects: '*'}]", "same sha256"),
    ("keys: [unclosed", "not valid YAML"),
])
def test_invalid_key_files_are_refused_with_a_reason(tmp_path: Path, text: str,
                                                     fragment: str) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(KeyFileError, match=fragment):
        load_key_ring(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read API keys file"):
        load_key_ring(tmp_path / "absent.yaml")


def test_key_file_is_reloaded_when_it_changes(tmp_path: Path) -> None:
    path = write_keys(tmp_path / "keys.yaml", ("a", "old-key", "'*'"))
    source = KeyRingFile(path)
    assert source.current().authenticate("old-key") is not None
    # A Secret volume swaps the file; a new inode (or mtime) is what we notice.
    replacement = write_keys(tmp_path / "new.yaml", ("a", "new-key", "'*'"))
    os.replace(replacement, path)
    assert source.current().authenticate("new-key") is not None
    assert source.current().authenticate("old-key") is None
    # A broken rotation keeps the last good keys instead of locking everyone out.
    broken = tmp_path / "broken.yaml"
    broken.write_text("keys: [oops")
    os.replace(broken, path)
    assert source.current().authenticate("new-key") is not None
