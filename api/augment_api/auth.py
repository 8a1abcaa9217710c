"""API keys: SHA-256 digests in a YAML file, each allowed a set of projects.

File format (see examples/api-keys.yaml)::

    keys:
      - name: team-a                # shown in logs and on the jobs it creates
        sha256: <64 hex digits>     # sha256 of the key, e.g. `printf %s "$KEY" | sha256sum`
        projects:                   # project ids this key may use ...
          - 0b5c6f0e-8a53-4a0c-9a43-7a3f0f0f2c11
      - name: ops
        sha256: <64 hex digits>
        projects: "*"               # ... or every project

Only digests are stored, so a leaked file does not leak keys. The file is re-read when
it changes, so a rotated Secret takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from uuid import UUID

import yaml
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from augment_api.errors import Unauthorized
from augment_spec.model import validation_messages
from augment_spec.reloading import ReloadingFile

ALL_PROJECTS = "*"


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=63)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    projects: list[UUID] | Literal["*"] = Field(min_length=1)

    @field_validator("sha256")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("projects", mode="before")
    @classmethod
    def _star_list(cls, value: Any) -> Any:
        # `projects: ["*"]` reads naturally in YAML too.
        return ALL_PROJECTS if value == [ALL_PROJECTS] else value


class KeyFileModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry]

    @model_validator(mode="after")
    def _unique(self) -> KeyFileModel:
        for attr in ("name", "sha256"):
            values = [getattr(k, attr) for k in self.keys]
            if len(values) != len(set(values)):
                raise ValueError(f"two keys share the same {attr}")
        return self


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name and the projects it may use (None: all)."""

    name: str
    projects: frozenset[UUID] | None

    def may_use(self, project_id: UUID | str | None) -> bool:
        if self.projects is None:
            return True
        if isinstance(project_id, UUID):  # parsed already: most callers
            return project_id in self.projects
        try:
            return UUID(str(project_id)) in self.projects
        except ValueError:
            return False


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, entries: list[KeyEntry]) -> None:
        self._entries = list(entries)

    def current(self) -> KeyRing:
        return self

    def authenticate(self, key: str) -> Principal | None:
        presented = digest(key)
        found: KeyEntry | None = None
        # Compare against every entry, matched or not, so timing says nothing.
        for entry in self._entries:
            if hmac.compare_digest(entry.sha256, presented) and found is None:
                found = entry
        if found is None:
            return None
        projects = None if isinstance(found.projects, str) else frozenset(found.projects)
        return Principal(name=found.name, projects=projects)


def load_key_ring(path: Path) -> KeyRing:
    try:
        data = yaml.safe_load(path.read_text())
        return KeyRing(KeyFileModel.model_validate(data).keys)
    except OSError as exc:
        raise KeyFileError(f"cannot read API keys file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise KeyFileError(f"API keys file {path} is not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(validation_messages(exc))
        raise KeyFileError(f"API keys file {path} is invalid: {problems}") from None


class KeyRingFile(ReloadingFile[KeyRing]):
    """The API keys, re-read whenever their file changes."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, load_key_ring, KeyFileError, "the API keys")


class KeySource(Protocol):
    def current(self) -> KeyRing: ...


api_key_header = APIKeyHeader(
    name="X-Api-Key", auto_error=False,
    description="API key; the server stores only its SHA-256 digest",
)


# async, like every dependency of the read routes: they run on the event loop, never
# waiting for a threadpool that slow apiserver calls may have filled.
async def get_key_ring(request: Request) -> KeyRing:
    source: KeySource = request.app.state.keys
    return source.current()


async def authenticate(
    key: Annotated[str | None, Security(api_key_header)],
    keys: Annotated[KeyRing, Depends(get_key_ring)],
) -> Principal:
    if not key:
        raise Unauthorized("missing API key: send it in the X-Api-Key header")
    principal = keys.authenticate(key)
    if principal is None:
        raise Unauthorized("invalid API key")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]
