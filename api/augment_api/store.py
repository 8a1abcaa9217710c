"""The job store: AugmentationJob custom resources in one namespace (etcd is the database).

This is the only module that talks to Kubernetes. It speaks in CR dicts and raises
`ServiceError`s with readable details; it knows nothing about HTTP requests.

Creating and cancelling go to the apiserver; reading goes to the watch cache
(augment_api.cache), which this store feeds with `list_jobs` and `watch_jobs`. A job's
Events are read from the apiserver when asked for (`events_of`): they are not cached. Every
call has a deadline and none is retried by the client: an apiserver that does not
answer costs a request at most `kube_timeout_s`, then a 503.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from augment_api.errors import BadGateway, Conflict, Invalid, NotFound, ServiceError, Unavailable
from augment_api.settings import Settings
from augment_spec.contract import (
    ANNOTATION_CREATED_BY,
    ANNOTATION_IDEMPOTENCY,
    ANNOTATION_REQUEST_HASH,
    API_VERSION,
    GROUP,
    KIND,
    LABEL_MANAGED_BY,
    LABEL_PROJECT,
    MANAGED_BY_API,
    PLURAL,
    TERMINAL_PHASES,
    VERSION,
    cancel_annotations,
    cancel_requested,
    phase_of,
)
from augment_spec.crd import cr_spec_from_spec
from augment_spec.model import AugmentationSpec

log = logging.getLogger(__name__)

NAME_PREFIX = "aug-"
LIST_CHUNK = 500
CREATE_ATTEMPTS = 3
# The apiserver ends each watch after this long and the informer opens the next one
# where it left off; a watch whose connection goes silent is given up after it too.
WATCH_SECONDS = 60
HTTP_GONE = 410
# A job gets an Event per phase change and per failed shard pod: a few, rarely hundreds.
EVENTS_LIMIT = 500


class Expired(Exception):
    """The resourceVersion to resume from is gone (410): list again."""


# ---- reading a CR (its phase and cancel request: augment_spec.contract) ----
def project_of(cr: dict[str, Any]) -> UUID | None:
    try:
        return UUID(str((cr.get("spec") or {}).get("projectId")))
    except ValueError:
        return None


def annotations_of(cr: dict[str, Any]) -> dict[str, str]:
    return cr.get("metadata", {}).get("annotations") or {}


def newest_first(crs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # creationTimestamp has one-second resolution: the uid breaks ties stably.
    return sorted(crs, key=lambda cr: (cr["metadata"].get("creationTimestamp", ""),
                                       cr["metadata"]["uid"]), reverse=True)


# ---- naming and idempotency ----
def request_hash(spec: AugmentationSpec) -> str:
    """sha256 of the validated spec's canonical JSON: defaults explicit, keys sorted."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotent_name(project_id: UUID, idempotency_key: str) -> str:
    """The same (project, key) always names the same CR: AlreadyExists is the lock."""
    digest = hashlib.sha256(f"{project_id}\n{idempotency_key}".encode()).hexdigest()
    return NAME_PREFIX + digest[:20]


def random_name() -> str:
    return NAME_PREFIX + secrets.token_hex(10)


@dataclass(frozen=True)
class Created:
    cr: dict[str, Any]
    created: bool  # False: an earlier request with the same Idempotency-Key made it


# ---- Kubernetes errors -> ServiceError ----
def _server_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body or "").get("message") or str(exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def translate(exc: ApiException, action: str) -> ServiceError:
    message = _server_message(exc)
    status = exc.status or 0
    if status == 422:
        return Invalid(f"the cluster rejected the job: {message}")
    if status == 404:
        return Unavailable(f"cannot {action}: {message} (is the AugmentationJob CRD installed "
                           "and the API's namespace present?)")
    if status in (401, 403):
        return BadGateway(f"the API is not allowed to {action}: {message} (check its RBAC)")
    if status in (429, 500, 503, 504):
        return Unavailable(f"the Kubernetes API is unavailable ({status}); try again later")
    return BadGateway(f"Kubernetes API error while trying to {action}: {message}")


@contextmanager
def kube_errors(action: str) -> Iterator[None]:
    try:
        yield
    except ApiException as exc:
        if exc.status == HTTP_GONE:
            raise Expired(str(exc.reason)) from exc
        log.warning("kubernetes API error (%s): %s %s", action, exc.status, exc.reason)
        raise translate(exc, action) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise _unreachable(exc, action) from exc


def _unreachable(exc: urllib3.exceptions.HTTPError, action: str) -> Unavailable:
    # urllib3 makes a refused connection a ConnectTimeoutError too: it is not a timeout.
    if isinstance(exc, urllib3.exceptions.TimeoutError) and \
            not isinstance(exc, urllib3.exceptions.NewConnectionError):
        log.warning("the kubernetes API did not answer in time (%s): %s", action, exc)
        return Unavailable("the Kubernetes API server did not answer in time; try again later")
    log.warning("cannot reach the kubernetes API (%s): %s", action, exc)
    return Unavailable("cannot reach the Kubernetes API server; try again later")


API_POOL_CONNECTIONS = 40  # Starlette's threadpool runs up to 40 sync handlers at once


def kube_client(settings: Settings) -> k8s.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (flag, $KUBECONFIG, ~)."""
    configuration = k8s.Configuration()
    # As many pooled apiserver connections as request threads: a smaller pool makes busy
    # threads drop connections and pay a new TLS handshake on each request.
    configuration.connection_pool_maxsize = API_POOL_CONNECTIONS
    # No client retries: each call already has a deadline, and retrying a call that timed
    # out multiplies the wait (urllib3's default of 3 retries made a 10 s timeout 40 s).
    # A failed read is retried by the informer; a failed write is the client's to retry.
    configuration.retries = False
    if settings.kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            return k8s.ApiClient(configuration)
        except k8s_config.ConfigException:
            pass
    k8s_config.load_kube_config(
        config_file=str(settings.kubeconfig) if settings.kubeconfig else None,
        client_configuration=configuration,
    )
    return k8s.ApiClient(configuration)


class JobStore:
    def __init__(self, namespace: str, client_factory: Callable[[], k8s.ApiClient],
                 timeout_s: float = 5.0) -> None:
        self.namespace = namespace
        self._client_factory = client_factory
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self._client: k8s.ApiClient | None = None
        self._objects: k8s.CustomObjectsApi | None = None
        self._core: k8s.CoreV1Api | None = None
        self._watch: k8s_watch.Watch | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        # Lazy: building the app (e.g. for `augment openapi`) needs no cluster.
        return cls(settings.namespace, lambda: kube_client(settings), settings.kube_timeout_s)

    def _api_client(self) -> k8s.ApiClient:
        """The one client (and connection pool) of both APIs; call with the lock held."""
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    @property
    def _api(self) -> k8s.CustomObjectsApi:
        with self._lock:
            if self._objects is None:
                self._objects = k8s.CustomObjectsApi(self._api_client())
            return self._objects

    @property
    def _events_api(self) -> k8s.CoreV1Api:
        with self._lock:
            if self._core is None:
                self._core = k8s.CoreV1Api(self._api_client())
            return self._core

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """One CustomObjectsApi call on this namespace's CRs; the client returns JSON dicts."""
        fn = getattr(self._api, method)
        result: dict[str, Any] = fn(GROUP, VERSION, self.namespace, PLURAL,
                                    _request_timeout=self._timeout, **kwargs)
        return result

    # ---- create ----
    def _manifest(self, name: str, spec: AugmentationSpec, created_by: str,
                  idempotency_key: str | None) -> dict[str, Any]:
        annotations = {ANNOTATION_REQUEST_HASH: request_hash(spec),
                       ANNOTATION_CREATED_BY: created_by}
        if idempotency_key is not None:
            annotations[ANNOTATION_IDEMPOTENCY] = idempotency_key
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": {LABEL_PROJECT: str(spec.project_id), LABEL_MANAGED_BY: MANAGED_BY_API},
                "annotations": annotations,
            },
            "spec": cr_spec_from_spec(spec),
        }

    def _try_create(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """The created CR, or None when one of that name exists already."""
        try:
            # Strict: a field the CRD would prune means model and CRD disagree; say so.
            return self._call("create_namespaced_custom_object", body=manifest,
                              field_validation="Strict")
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def create(self, spec: AugmentationSpec, *, created_by: str,
               idempotency_key: str | None = None) -> Created:
        with kube_errors("create AugmentationJobs"):
            for _ in range(CREATE_ATTEMPTS):
                name = (idempotent_name(spec.project_id, idempotency_key)
                        if idempotency_key is not None else random_name())
                cr = self._try_create(self._manifest(name, spec, created_by, idempotency_key))
                if cr is not None:
                    log.info("created %s for project %s (key %s)", name, spec.project_id,
                             created_by)
                    return Created(cr, created=True)
                if idempotency_key is None:
                    continue  # an 80-bit random name collided: draw another
                existing = self._read(name)
                if existing is not None:  # else deleted meanwhile: create again
                    return Created(self._replay(existing, spec, idempotency_key), created=False)
        raise Conflict("could not create the job: its name kept colliding; try again")

    @staticmethod
    def _replay(existing: dict[str, Any], spec: AugmentationSpec,
                idempotency_key: str) -> dict[str, Any]:
        annotations = annotations_of(existing)
        same_key = annotations.get(ANNOTATION_IDEMPOTENCY) == idempotency_key
        if same_key and annotations.get(ANNOTATION_REQUEST_HASH) == request_hash(spec):
            return existing
        raise Conflict("this Idempotency-Key was already used with a different request body "
                       f"(job {existing['metadata']['uid']}); use a new key for a new job")

    # ---- read ----
    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            return self._call("get_namespaced_custom_object", name=name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_jobs(self) -> tuple[list[dict[str, Any]], str]:
        """Every AugmentationJob of the namespace, in chunks so no response is huge, and
        the resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        with kube_errors("list AugmentationJobs"):
            while True:
                page = self._call("list_namespaced_custom_object", limit=LIST_CHUNK,
                                  _continue=token)
                items.extend(page.get("items", []))
                metadata = page.get("metadata", {})
                token = metadata.get("continue")
                if not token:  # every chunk is of the first one's resourceVersion
                    return items, str(metadata.get("resourceVersion", ""))

    def watch_jobs(self, resource_version: str) -> Iterator[dict[str, Any]]:
        """Watch events after `resource_version`, until the apiserver ends the watch
        (WATCH_SECONDS); Expired when that version is too old."""
        watch = k8s_watch.Watch()
        self._watch = watch
        with kube_errors("watch AugmentationJobs"):
            yield from watch.stream(
                self._api.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                PLURAL, resource_version=resource_version, allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS, deserialize=False,
                _request_timeout=(self._timeout, WATCH_SECONDS + self._timeout))

    def stop_watch(self) -> None:
        """Make a watch in progress return (from another thread)."""
        watch = self._watch
        if watch is not None:
            watch.stop()

    # ---- events ----
    def events_of(self, cr: dict[str, Any]) -> list[dict[str, Any]]:
        """The Kubernetes Events about the job's CR (the operator posts them), as JSON
        dicts in the apiserver's order."""
        selector = f"involvedObject.uid={cr['metadata']['uid']}"
        with kube_errors("list Events"):
            # Not preloaded: the JSON itself, as for the CRs, rather than client models
            # (the client's type hints describe the preloaded model, hence Any).
            response: Any = self._events_api.list_namespaced_event(
                self.namespace, field_selector=selector, limit=EVENTS_LIMIT,
                _request_timeout=self._timeout, _preload_content=False)
            items: list[dict[str, Any]] = json.loads(response.data).get("items", [])
            return items

    # ---- cancel ----
    def request_cancel(self, cr: dict[str, Any]) -> dict[str, Any]:
        """Annotate the CR for the operator; refuse if it has already finished."""
        name = cr["metadata"]["name"]
        with kube_errors("update AugmentationJobs"):
            for _ in range(CREATE_ATTEMPTS):
                phase = phase_of(cr)
                if phase in TERMINAL_PHASES:
                    raise Conflict(f"job {cr['metadata']['uid']} has already finished "
                                   f"({phase.value}); there is nothing to cancel")
                if cancel_requested(cr):
                    return cr
                # resourceVersion makes the patch conditional: if the operator moved the
                # job to a final phase since we read it, we get 409 and look again.
                patch = {"metadata": {"resourceVersion": cr["metadata"]["resourceVersion"],
                                      "annotations": cancel_annotations()}}
                try:
                    return self._call("patch_namespaced_custom_object", name=name, body=patch)
                except ApiException as exc:
                    if exc.status not in (404, 409):
                        raise
                    fresh = self._read(name)
                    if fresh is None:
                        raise NotFound(f"augmentation job {cr['metadata']['uid']} not found")\
                            from None
                    cr = fresh
        raise Conflict("the job kept changing while cancelling it; try again")
