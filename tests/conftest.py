"""Shared fixtures: the embedded Kubernetes control plane, started once per session."""

from __future__ import annotations

import os

# The local Hub speaks plain LFS, not Xet storage: the client must know before it is imported.
os.environ["HF_HUB_DISABLE_XET"] = "1"

import uuid
from collections.abc import Iterator

import pytest

from augment_dev.cluster import EmbeddedCluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster() as running:
        yield running


@pytest.fixture
def namespace(cluster: EmbeddedCluster) -> Iterator[str]:
    """A fresh namespace per test, removed afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
