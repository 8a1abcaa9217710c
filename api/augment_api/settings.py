"""Settings of the API process, from the command line or the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

# A namespace is an RFC 1123 label.
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    namespace: str = Field(default="default", pattern=NAMESPACE_PATTERN,
                           description="Namespace the API creates and reads AugmentationJobs in")
    api_keys_file: Path | None = Field(
        default=None, description="YAML file (or mounted Secret) of API key digests")
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig to use outside a cluster; default: in-cluster")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024,
                                description="Larger request bodies get 413")
    kube_timeout_s: float = Field(default=10.0, gt=0,
                                  description="Timeout of each call to the Kubernetes API")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: object) -> Settings:
        """Read AUGMENT_* variables; explicit overrides (the CLI's flags) win when not None.

        $KUBECONFIG is left to the Kubernetes client, which also understands path lists.
        """
        values: dict[str, object] = {}
        for field, var in (
            ("namespace", "AUGMENT_NAMESPACE"),
            ("api_keys_file", "AUGMENT_API_KEYS_FILE"),
            ("max_body_bytes", "AUGMENT_MAX_BODY_BYTES"),
        ):
            if env.get(var):
                values[field] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
