"""What the operator's Job tells the runner through the pod's environment.

The names are augment_spec.contract's, the same the operator writes. Outside a cluster
none is set and `augment run` is a local command. Two knobs are read where they are used
instead, at call time: the transform threads (transforms.py) and the array backend
(backend.py); the Hub token is read by hub.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from augment_spec.contract import (
    ENV_CHECKPOINT_EPISODES,
    ENV_JOB_NAME,
    ENV_JOB_NAMESPACE,
    ENV_JOB_UID,
    ENV_SHARD_INDEX,
    ENV_SPEC,
    ENV_TERMINATION_LOG,
    ENV_WORKDIR,
)


@dataclass(frozen=True)
class PodEnv:
    spec_json: str | None = None  # the full spec, snake_case JSON
    job_name: str | None = None  # the AugmentationJob to report status to ...
    job_namespace: str | None = None  # ... in this namespace
    workdir: Path | None = None  # scratch for the downloaded source and the output
    termination_log: Path | None = None  # where the one-line failure goes
    job_uid: str | None = None  # the AugmentationJob's uid (names a sharded job's branches)
    shard_index: str | None = None  # in a sharded job's runner pods: the pod's shard
    checkpoint_episodes: str | None = None  # episodes per piece a sharded pod stages

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> PodEnv:
        """From `environ` (default: this process's); an empty variable counts as unset."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            return env.get(name) or None

        def path(name: str) -> Path | None:
            value = get(name)
            return Path(value) if value else None

        return cls(spec_json=get(ENV_SPEC), job_name=get(ENV_JOB_NAME),
                   job_namespace=get(ENV_JOB_NAMESPACE), workdir=path(ENV_WORKDIR),
                   termination_log=path(ENV_TERMINATION_LOG), job_uid=get(ENV_JOB_UID),
                   shard_index=get(ENV_SHARD_INDEX),
                   checkpoint_episodes=get(ENV_CHECKPOINT_EPISODES))
