"""The Hub policy: which Hub namespaces and Hub-token Secrets each project's jobs may use.

One YAML file, read by the API and by the operator, so that a job made through the API,
with `kubectl apply` or by Argo CD meets the same rules: the API answers 403 before it
creates anything, the operator fails a job that breaks them before it makes any Job.
Format (the chart renders it from its `hubPolicy` value)::

    projects:
      - id: 0b5c6f0e-8a53-4a0c-9a43-7a3f0f0f2c11
        hubNamespaces: [robotics-lab]      # outputs are written, sources read, here only
        readHubNamespaces: [lerobot]       # more namespaces sources may come from; "*": any
        hubTokenSecrets: [team-a-hub]      # Secrets hfTokenSecretName may name
        defaultHubTokenSecret: team-a-hub  # the job's token when it names none
        kubernetesNamespaces: [augment]    # where its jobs may run; absent: anywhere
      - id: "*"                            # every project without an entry of its own
        hubNamespaces: [shared-org]

A job's project is its spec's `projectId` (required by the CRD, so every job has one).
The API checks that the caller's key may use it; for a resource made with kubectl
nothing can, so whoever may create AugmentationJobs in a namespace may act for any
project allowed there: `kubernetesNamespaces` is what keeps a project's Hub namespaces
to the Kubernetes namespaces its own people may write to (docs/design.md, Hub policy).

Sources are checked too: the runner reads them with a Hub token that may be shared by
projects, so a source outside the project's namespaces could be another team's private
dataset. Public datasets of others are opted into with `readHubNamespaces`.

Without a policy file nothing here is checked (the local demo and tests); the chart
always installs one, and its default lists no project, so every job is refused until
the operator's administrator lists the projects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Protocol
from uuid import UUID

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from augment_spec.model import (
    HUB_NAMESPACE_PATTERN,
    SECRET_NAME_PATTERN,
    AugmentationSpec,
    KueueName,
    validation_messages,
)
from augment_spec.reloading import ReloadingFile

ANY = "*"
DENIED = "the Hub policy forbids this job:"
HubNamespace = Annotated[str, Field(pattern=HUB_NAMESPACE_PATTERN)]
SecretName = Annotated[str, Field(max_length=253, pattern=SECRET_NAME_PATTERN)]
KubeNamespace = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]


class ProjectPolicy(BaseModel):
    """What one project's jobs (or, with id "*", any other project's) may use."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    id: UUID | Literal["*"]
    hub_namespaces: list[HubNamespace] = Field(default_factory=list, alias="hubNamespaces")
    read_hub_namespaces: list[HubNamespace] | Literal["*"] = Field(
        default_factory=list, alias="readHubNamespaces")
    hub_token_secrets: list[SecretName] = Field(default_factory=list, alias="hubTokenSecrets")
    default_hub_token_secret: SecretName | None = Field(default=None,
                                                        alias="defaultHubTokenSecret")
    kubernetes_namespaces: list[KubeNamespace] | None = Field(default=None,
                                                              alias="kubernetesNamespaces")
    # A spec may name a Kueue queue or priority class only from these (an empty list: the
    # operator's defaults for the namespace and profile only), so no key can move its
    # jobs into another team's quota or above its priority.
    kueue_queues: list[KueueName] | Literal["*"] = Field(default_factory=list,
                                                         alias="kueueQueues")
    workload_priority_classes: list[KueueName] | Literal["*"] = Field(
        default_factory=list, alias="workloadPriorityClasses")

    def may_write(self, hub_namespace: str) -> bool:
        return _folded(hub_namespace) in {_folded(n) for n in self.hub_namespaces}

    def may_read(self, hub_namespace: str) -> bool:
        return self.read_hub_namespaces == ANY or self.may_write(hub_namespace) or \
            _folded(hub_namespace) in {_folded(n) for n in self.read_hub_namespaces}

    @property
    def token_secrets(self) -> frozenset[str]:
        """Secrets a job may name: the listed ones and the project's default."""
        extra = {self.default_hub_token_secret} if self.default_hub_token_secret else set()
        return frozenset(self.hub_token_secrets) | extra


def _folded(hub_namespace: str) -> str:
    # The Hub resolves namespaces without regard to letter case.
    return hub_namespace.casefold()


def hub_namespace_of(repo_id: str) -> str | None:
    """"org" of "org/name"; None for a bare "name", which the Hub puts under whatever
    account the token belongs to."""
    namespace, slash, _ = repo_id.partition("/")
    return namespace if slash else None


class HubPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    projects: list[ProjectPolicy] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> HubPolicy:
        ids = [str(p.id) for p in self.projects]
        if len(ids) != len(set(ids)):
            raise ValueError("two projects share the same id")
        return self

    def entry(self, project_id: UUID) -> ProjectPolicy | None:
        """The project's own entry, else the "*" entry, else None."""
        by_id = {str(p.id): p for p in self.projects}
        return by_id.get(str(project_id)) or by_id.get(ANY)

    def denial(self, spec: AugmentationSpec, namespace: str) -> str | None:
        """Why the policy forbids this job in this Kubernetes namespace, as the API's 403
        and the job's status say it; None: allowed."""
        entry = self.entry(spec.project_id)
        if entry is None:
            said: str | None = f"project {spec.project_id} has no entry in the Hub policy"
        else:
            checks = (_namespace_denial(entry, spec, namespace),
                      _output_denial(entry, spec),
                      _source_denial(entry, spec),
                      _secret_denial(entry, spec),
                      _queue_denial(entry, spec))
            said = next((found for found in checks if found), None)
        return f"{DENIED} {said}" if said else None

    def default_secret(self, project_id: UUID) -> str | None:
        """The Hub token Secret of a job of this project that names none (None: the
        operator's configured one)."""
        entry = self.entry(project_id)
        return entry.default_hub_token_secret if entry else None


def _allowed(names: list[str] | frozenset[str]) -> str:
    return ", ".join(sorted(names)) if names else "none"


def _namespace_denial(entry: ProjectPolicy, spec: AugmentationSpec,
                      namespace: str) -> str | None:
    allowed = entry.kubernetes_namespaces
    if allowed is None or namespace in allowed:
        return None
    return (f"project {spec.project_id} may not run jobs in the Kubernetes namespace "
            f"{namespace} (allowed: {_allowed(allowed)})")


def _output_denial(entry: ProjectPolicy, spec: AugmentationSpec) -> str | None:
    target = spec.target_dataset_id
    namespace = hub_namespace_of(target)
    if namespace is None:
        return (f"the output dataset {target!r} names no Hub namespace: name it "
                f"'<namespace>/{target}'")
    if entry.may_write(namespace):
        return None
    return (f"project {spec.project_id} may not write to the Hub namespace {namespace!r} "
            f"(output dataset {target}; allowed: {_allowed(entry.hub_namespaces)})")


def _source_denial(entry: ProjectPolicy, spec: AugmentationSpec) -> str | None:
    namespace = hub_namespace_of(spec.dataset_id)
    if namespace is None:
        return (f"the source dataset {spec.dataset_id!r} names no Hub namespace: name it "
                f"'<namespace>/{spec.dataset_id}'")
    if entry.may_read(namespace):
        return None
    readable = entry.hub_namespaces + list(entry.read_hub_namespaces)
    return (f"project {spec.project_id} may not read from the Hub namespace {namespace!r} "
            f"(source dataset {spec.dataset_id}; allowed: {_allowed(readable)})")


def _secret_denial(entry: ProjectPolicy, spec: AugmentationSpec) -> str | None:
    secret = spec.hf_token_secret_name
    if secret is None or secret in entry.token_secrets:
        return None
    return (f"project {spec.project_id} may not use the Hub token Secret {secret!r} "
            f"(allowed: {_allowed(entry.token_secrets)})")


def _queue_denial(entry: ProjectPolicy, spec: AugmentationSpec) -> str | None:
    asked = (("Kueue queue", spec.queue_name, entry.kueue_queues),
             ("WorkloadPriorityClass", spec.workload_priority_class,
              entry.workload_priority_classes))
    for what, name, allowed in asked:
        if name is not None and allowed != ANY and name not in allowed:
            listed = list(allowed)
            return (f"project {spec.project_id} may not name the {what} {name!r} "
                    f"(allowed: {_allowed(listed)})")
    return None


class PolicyError(ValueError):
    pass


def load_policy(path: Path) -> HubPolicy:
    try:
        return HubPolicy.model_validate(yaml.safe_load(path.read_text()) or {})
    except OSError as exc:
        raise PolicyError(f"cannot read Hub policy file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"Hub policy file {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(validation_messages(exc))
        raise PolicyError(f"Hub policy file {path} is invalid: {problems}") from None


class PolicySource(Protocol):
    def current(self) -> HubPolicy: ...


class PolicyFile(ReloadingFile[HubPolicy]):
    """The Hub policy, re-read whenever its file changes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, load_policy, PolicyError, "the Hub policy")
