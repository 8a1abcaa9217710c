"""The REST API's client for `augment jobs`: where the API is, its key, and its requests.

The address and the key come from, first to last: the flags, the environment
(AUGMENT_API_URL, AUGMENT_API_KEY), the config file (AUGMENT_CONFIG, default
$XDG_CONFIG_HOME/augment/config.yaml, i.e. ~/.config/augment/config.yaml):

    api_url: https://augment.example.com
    api_key: ak_...              # keep the file private: chmod 600
    project_id: 0b5c6f0e-...     # the project `augment jobs submit` uses by default

Only the standard library, httpx and PyYAML: no server package is imported. No message
ever holds the key: it travels in a header only, and `redact` removes it from any text
built from an error.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

ENV_URL = "AUGMENT_API_URL"
ENV_KEY = "AUGMENT_API_KEY"
ENV_CONFIG = "AUGMENT_CONFIG"
KEY_HEADER = "X-Api-Key"
JOBS_PATH = "/v1/augmentation"
TIMEOUT_S = 30.0
# Answers worth waiting for and asking again (the API restarting, a rate limit).
RETRIED_STATUSES = {429, 503}
MAX_RETRY_WAIT_S = 30.0


class ClientError(Exception):
    """One line for the user; `status` is the API's HTTP status when it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(ClientError):
    """The config file cannot be used: a setting to fix, not a request that failed."""


class ClientConfig(BaseModel):
    """The config file's fields (all optional; an unknown one is a mistake worth naming)."""

    model_config = ConfigDict(extra="forbid")

    api_url: str | None = Field(default=None, description="The API's base URL")
    api_key: str | None = Field(default=None, description="The API key (X-Api-Key)")
    project_id: UUID | None = Field(default=None, description="Default project of submit")


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else \
        Path.home() / ".config"
    return base / "augment" / "config.yaml"


def load_config(path: Path) -> ClientConfig:
    """The file's settings; none when it does not exist."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return ClientConfig()
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"the config file {path} must be a mapping of settings")
    try:
        return ClientConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors())
        raise ConfigError(f"the config file {path}: {problems}") from None


def resolve(flag: str | None, env_name: str, from_file: str | None,
            env: Mapping[str, str]) -> str | None:
    return flag or env.get(env_name) or from_file


# Shorter keys are not redacted: replacing every "k" would garble the message, and a
# key that short is no secret anyway.
MIN_REDACTED_KEY = 8


def redact(text: str, key: str) -> str:
    return text.replace(key, "***") if len(key) >= MIN_REDACTED_KEY else text


class ApiClient:
    """Requests to the API with its key; every failure is a one-line ClientError."""

    def __init__(self, url: str, key: str, transport: httpx.BaseTransport | None = None,
                 timeout_s: float = TIMEOUT_S,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.on_wait = on_wait  # told each time a 429/503 is waited out, and for how long
        self.http = httpx.Client(base_url=self.url, headers={KEY_HEADER: key},
                                 timeout=timeout_s, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the API's operations ----
    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", JOBS_PATH, json=spec, headers=headers).json()

    def get(self, job_id: str) -> Any:
        return self.request("GET", f"{JOBS_PATH}/{job_id}").json()

    def list(self, **params: Any) -> Any:
        query = {name: value for name, value in params.items() if value is not None}
        return self.request("GET", JOBS_PATH, params=query).json()

    def cancel(self, job_id: str) -> Any:
        return self.request("DELETE", f"{JOBS_PATH}/{job_id}").json()

    def preview(self, job_id: str) -> bytes:
        return self.request("GET", f"{JOBS_PATH}/{job_id}/preview").content

    # ---- the one place requests are made ----
    def request(self, method: str, path: str, *, retries: int = 3,
                **kwargs: Any) -> httpx.Response:
        """The answer to a request, waiting out a 429 or 503 (Retry-After) a few times:
        a POST too, as every create the CLI sends is safe to repeat only with an
        Idempotency-Key, which `submit` always sends."""
        for attempt in range(retries + 1):
            response = self._send(method, path, **kwargs)
            if response.status_code not in RETRIED_STATUSES or attempt == retries:
                break
            wait = retry_after(response)
            if self.on_wait is not None:
                self.on_wait(f"waiting {wait:g} s and trying again: "
                             f"{self._describe(response)}")
            time.sleep(wait)
        if response.is_error:
            raise ClientError(self._describe(response), response.status_code)
        return response

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ClientError(f"the API at {self.url} did not answer within "
                              f"{self.http.timeout.read} s") from None
        except httpx.HTTPError as exc:
            reason = redact(str(exc), self.key) or type(exc).__name__
            raise ClientError(f"cannot reach the API at {self.url}: {reason}") from None

    def _describe(self, response: httpx.Response) -> str:
        """The API's `detail` (its error format), else the status line."""
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if not isinstance(detail, str) or not detail:
            detail = response.reason_phrase or "error"
        return redact(f"{detail} (HTTP {response.status_code})", self.key)


def retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", "1")), 0.1), MAX_RETRY_WAIT_S)
    except ValueError:
        return 1.0
