"""Settings of the API process, from the command line or the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

# A namespace is an RFC 1123 label.
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


# Each setting's environment variable (the chart sets them from its `api` values).
ENV_VARS = {
    "namespace": "AUGMENT_NAMESPACE",
    "api_keys_file": "AUGMENT_API_KEYS_FILE",
    "policy_file": "AUGMENT_POLICY_FILE",
    "max_body_bytes": "AUGMENT_MAX_BODY_BYTES",
    "kube_timeout_s": "AUGMENT_KUBE_TIMEOUT_S",
    "rate_limit_per_s": "AUGMENT_RATE_LIMIT_PER_S",
    "rate_limit_burst": "AUGMENT_RATE_LIMIT_BURST",
    "project_job_quota": "AUGMENT_PROJECT_JOB_QUOTA",
    "hub_token_file": "AUGMENT_HUB_TOKEN_FILE",
}


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    namespace: str = Field(default="default", pattern=NAMESPACE_PATTERN,
                           description="Namespace the API creates and reads AugmentationJobs in")
    api_keys_file: Path | None = Field(
        default=None, description="YAML file (or mounted Secret) of API key digests")
    policy_file: Path | None = Field(
        default=None, description="YAML Hub policy (augment_spec.policy): the Hub "
        "namespaces and token Secrets each project may use; none: nothing is checked")
    kubeconfig: Path | None = Field(
        default=None, description="kubeconfig to use outside a cluster; default: in-cluster")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024,
                                description="Larger request bodies get 413")
    kube_timeout_s: float = Field(
        default=5.0, gt=0, description="Deadline of each call to the Kubernetes API (never "
        "retried by the client): a create or cancel answers 503 after it")
    rate_limit_per_s: float = Field(
        default=10.0, ge=0, description="Requests per second each API key may make, "
        "sustained; over it: 429 with Retry-After. 0: no limit")
    rate_limit_burst: int = Field(
        default=50, ge=1, description="Requests an API key may make at once before its "
        "rate applies")
    project_job_quota: int = Field(
        default=20, ge=0, description="Unfinished (Pending, Queued or Running) jobs a project "
        "may have; creating one more: 429 with Retry-After. 0: no limit")

    hub_token_file: Path | None = Field(
        default=None, description="File (a mounted Secret) holding the Hub token the "
        "previews of jobs are read with; none, or no such file: anonymous reads, which "
        "reach public output datasets only. The Hub address is HF_ENDPOINT's")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: object) -> Settings:
        """Read AUGMENT_* variables; explicit overrides (the CLI's flags) win when not None.

        $KUBECONFIG is left to the Kubernetes client, which also understands path lists.
        """
        values: dict[str, object] = {}
        for field, var in ENV_VARS.items():
            if env.get(var):
                values[field] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)
