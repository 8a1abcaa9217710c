"""The operator's reads and writes against the Kubernetes API (sync client)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from augment_spec.contract import (
    GROUP,
    KUEUE_GROUP,
    KUEUE_VERSION,
    KUEUE_WORKLOADS,
    LABEL_KUEUE_JOB_UID,
    PLURAL,
    VERSION,
)


def load_kube_config() -> None:
    """In a pod, its ServiceAccount; elsewhere KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


# Independent writes of one reconcile go out together (Reconciler.concurrently): at most
# this many at once per process, and as many pooled apiserver connections, so that no
# call waits for a connection or opens a new one (a new TLS handshake each time).
CONCURRENT_CALLS = 32


class Kube:
    @cached_property
    def api(self) -> client.ApiClient:
        configuration = client.Configuration.get_default_copy()
        configuration.connection_pool_maxsize = CONCURRENT_CALLS
        return client.ApiClient(configuration)

    @cached_property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @cached_property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @cached_property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.api)

    def to_dict(self, obj: Any) -> dict[str, Any]:
        plain: dict[str, Any] = self.api.sanitize_for_serialization(obj)
        return plain

    def get_cr(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            cr: Any = self.custom.get_namespaced_custom_object(  # typed `object`: a JSON dict
                GROUP, VERSION, namespace, PLURAL, name)
            return dict(cr)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch_cr_status(self, namespace: str, name: str,
                        status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the status; the CR as it now is."""
        cr: Any = self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": status})
        return dict(cr)

    def patch_cr_labels(self, namespace: str, name: str,
                        labels: dict[str, str]) -> dict[str, Any]:
        """Merge-patch the labels; the CR as it now is."""
        cr: Any = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"labels": labels}})
        return dict(cr)

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.to_dict(self.batch.read_namespaced_job(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Create, or adopt the Job a previous run of the operator already created."""
        namespace = job["metadata"]["namespace"]
        try:
            body: Any = job  # the client serialises plain dicts as they are
            return self.to_dict(self.batch.create_namespaced_job(namespace, body))
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.get_job(namespace, job["metadata"]["name"])
        if existing is None:
            raise RuntimeError(f"job {job['metadata']['name']} vanished while adopting it")
        return existing

    def job_workload(self, namespace: str, job: dict[str, Any]) -> dict[str, Any] | None:
        """The Kueue Workload a Job owns; None when there is none yet, or when Kueue (its
        CRD) is not installed or the operator may not read Workloads: the status then says
        less, and nothing else changes."""
        uid = job["metadata"]["uid"]
        try:
            found: Any = self.custom.list_namespaced_custom_object(  # a JSON dict
                KUEUE_GROUP, KUEUE_VERSION, namespace, KUEUE_WORKLOADS,
                label_selector=f"{LABEL_KUEUE_JOB_UID}={uid}")
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        for workload in found.get("items") or []:
            owners = workload["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners):
                return dict(workload)
        return None

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(name, namespace,
                                             propagation_policy="Background")
        except ApiException as exc:
            if exc.status != 404:
                raise

    def job_pods(self, namespace: str, job_name: str) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job_name}")
        return [self.to_dict(p) for p in pods.items]

    # ---- a runner's own credentials (augment_operator.jobs.runner_access) ----
    def _access_calls(self, kind: str) -> tuple[Any, Any]:
        """(create, delete) of one kind of the runner's credentials."""
        calls = {
            "ServiceAccount": (self.core.create_namespaced_service_account,
                               self.core.delete_namespaced_service_account),
            "Role": (self.rbac.create_namespaced_role, self.rbac.delete_namespaced_role),
            "RoleBinding": (self.rbac.create_namespaced_role_binding,
                            self.rbac.delete_namespaced_role_binding),
        }
        return calls[kind]

    def create_access_object(self, obj: dict[str, Any]) -> None:
        """Create one of them; one already there is ours (named after the CR's uid, its
        content fixed), left by an earlier attempt."""
        create, _ = self._access_calls(obj["kind"])
        try:
            create(obj["metadata"]["namespace"], obj)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def delete_access(self, namespace: str, name: str) -> None:
        """Revoke first (the binding), then remove the Role and the account; gone is fine."""
        for kind in ("RoleBinding", "Role", "ServiceAccount"):
            _, delete = self._access_calls(kind)
            try:
                delete(name, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def access_granted(self, namespace: str, name: str) -> bool:
        """Whether the runner's RoleBinding still exists (so it may still write status)."""
        try:
            self.rbac.read_namespaced_role_binding(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True
