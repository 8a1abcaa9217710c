"""The local pod executor: a small kubelet for the embedded control plane's fake nodes.

It keeps each fake node Ready (Lease and status heartbeats, with that node's own
credentials, so the Node authorizer and NodeRestriction apply), and runs every pod the
real scheduler binds to one of them as local processes:

- Images are not pulled. A namespace can be told to run its pods from the images built
  by `make images` (`run_from_images`, what the chart's end-to-end tests and the demo do):
  a container whose image is one of those runs in the image's own filesystem (an overlay
  of the unpacked image with a writable layer of its own, entered by chroot), with the
  image's entrypoint, command, environment and working directory, as the securityContext's
  or the image's user; `readOnlyRootFilesystem` is kept. Where a kernel feature for that
  is missing (`podlaunch --probe` names it), and for any other image, the container runs
  in this project's own Python environment (its `bin/` first on PATH), and a container
  without `command` runs `augment`, the entrypoint of the project's images. An image
  from a registry under the reserved `.invalid` domain (RFC 2606; no real kubelet could
  pull it) waits in ErrImagePull / ImagePullBackOff, as a pod with an image that cannot
  be pulled does.
- A container whose environment names a Secret, ConfigMap or key that does not exist
  (and is not optional) waits in CreateContainerConfigError, and starts once it exists.
- Each container runs in a private mount namespace (`unshare --mount`) where the pod's
  volumes (emptyDir, configMap, secret, projected ServiceAccount token, downwardAPI) and
  the termination-message file are bind-mounted at their `mountPath`, so in-cluster
  clients find their token at the usual path (a volume whose mountPath would hide the
  project's own environment, e.g. /tmp when the checkout is under /tmp, is skipped).
  KUBERNETES_SERVICE_HOST/PORT point at the
  apiserver on 127.0.0.1. securityContext is checked by the apiserver (Pod Security
  admission); outside an image, processes run as the user running the tests.
- All pods share the host's network: two pods binding the same port collide.
- Status goes back through the API like a kubelet's: Running, then Succeeded or Failed
  with exit code, reason and termination message; restartPolicy OnFailure/Always
  restarts the container. Deleting a pod stops its processes, reports the terminal phase
  (a Job's pod failure policy reads it, with the DisruptionTarget condition an eviction
  adds), then removes it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from augment_dev.cluster import die_with_parent
from augment_dev.images import ImageRoot

HEARTBEAT_SECONDS = 10
START_RETRY_SECONDS = 3  # how often a pod that cannot start is tried again
UNPULLABLE_DOMAIN = ".invalid"
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
DEFAULT_ENTRYPOINT = ["augment"]


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PodExecutor:
    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.root = Path(cluster.workdir) / "pods"
        self.root.mkdir(parents=True, exist_ok=True)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.pods: dict[str, RunningPod] = {}
        self.lock = threading.Lock()
        self.clients = {
            name: config.new_client_from_config(config_file=str(path))
            for name, path in cluster.node_kubeconfigs.items()
        }
        # Per namespace, the pod image names that run from a built image's filesystem.
        self.image_roots: dict[str, dict[str, ImageRoot]] = {}
        self.image_probe: tuple[str | None] | None = None  # (missing feature,) once probed

    # ---- images ----
    def run_from_images(self, namespace: str, roots: dict[str, ImageRoot]) -> str | None:
        """From now on, run the namespace's containers whose image is named in `roots`
        from that image. Returns None, or the kernel feature this machine lacks for it
        (the containers then run in this environment, as before)."""
        missing = self.image_support(next(iter(roots.values())).rootfs)
        if missing is None:
            with self.lock:
                self.image_roots[namespace] = dict(roots)
        return missing

    def stop_images(self, namespace: str) -> None:
        with self.lock:
            self.image_roots.pop(namespace, None)

    def image_for(self, namespace: str, image: str) -> ImageRoot | None:
        with self.lock:
            return self.image_roots.get(namespace, {}).get(image)

    def image_support(self, rootfs: Path) -> str | None:
        """What running from an image needs and this machine lacks, probed once."""
        if self.image_probe is None:
            missing = probe_image_root(rootfs, self.root / ".image-probe")
            if missing:
                print(f"[executor] pods run in this environment, not from images: {missing}",
                      file=sys.stderr)
            self.image_probe = (missing,)
        return self.image_probe[0]

    def start(self) -> None:
        self._heartbeat_once()
        self._spawn_thread(self._heartbeat_loop, "node-heartbeat")
        for node in self.clients:
            self._spawn_thread(lambda n=node: self._watch_node(n), f"watch-{node}")

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            running = list(self.pods.values())
        for pod in running:
            pod.kill(grace=2)
        for thread in self.threads:
            thread.join(timeout=5)

    def _spawn_thread(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    # ---- nodes ----
    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):
                self._heartbeat_once()

    def _heartbeat_once(self) -> None:
        stamp = now()
        for node, api_client in self.clients.items():
            core = client.CoreV1Api(api_client)
            core.patch_node_status(node, {"status": {
                "conditions": node_conditions(stamp),
                "nodeInfo": node_info(),
            }})
            renew_lease(client.CoordinationV1Api(api_client), node)

    # ---- pods ----
    def _watch_node(self, node: str) -> None:
        core = client.CoreV1Api(self.clients[node])
        selector = f"spec.nodeName={node}"
        while not self.stopping.is_set():
            try:
                listed = core.list_pod_for_all_namespaces(field_selector=selector)
                for pod in listed.items:
                    self._on_pod(node, api_to_dict(pod))
                stream = watch.Watch().stream(
                    core.list_pod_for_all_namespaces, field_selector=selector,
                    resource_version=listed.metadata.resource_version, timeout_seconds=30,
                    _preload_content=False,
                )
                for event in stream:
                    if self.stopping.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._on_pod(node, event["raw_object"])
            except Exception as exc:  # the apiserver went away or the watch expired
                if self.stopping.is_set():
                    return
                print(f"[executor] watch {node}: {exc}", file=sys.stderr)
                time.sleep(1)

    def _on_pod(self, node: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            running = self.pods.get(uid)
            if running is None and not pod["metadata"].get("deletionTimestamp"):
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    return
                running = RunningPod(self, node, pod)
                self.pods[uid] = running
                self._spawn_thread(running.run, f"pod-{pod['metadata']['name']}")
                return
        if pod["metadata"].get("deletionTimestamp"):
            if running is None:
                RunningPod(self, node, pod).finish_deletion()
            else:
                running.request_deletion()

    def forget(self, uid: str) -> None:
        with self.lock:
            self.pods.pop(uid, None)


def api_to_dict(obj: Any) -> dict[str, Any]:
    return client.ApiClient().sanitize_for_serialization(obj)


def node_conditions(stamp: str) -> list[dict[str, str]]:
    healthy = {"MemoryPressure": "False", "DiskPressure": "False", "PIDPressure": "False",
               "Ready": "True"}
    return [
        {"type": kind, "status": status, "lastHeartbeatTime": stamp,
         "lastTransitionTime": stamp,
         "reason": "KubeletReady" if kind == "Ready" else f"KubeletHasNo{kind}",
         "message": "augment local pod executor"}
        for kind, status in healthy.items()
    ]


def node_info() -> dict[str, str]:
    return {
        "architecture": "amd64", "operatingSystem": "linux", "osImage": "augment local executor",
        "kernelVersion": os.uname().release, "containerRuntimeVersion": "local://processes",
        "kubeletVersion": "v1.36.3", "kubeProxyVersion": "", "machineID": "", "systemUUID": "",
        "bootID": "",
    }


def renew_lease(coordination: client.CoordinationV1Api, node: str) -> None:
    body = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                 "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
    }
    try:
        coordination.patch_namespaced_lease(node, "kube-node-lease", body)
    except ApiException as exc:
        if exc.status != 404:
            raise
        coordination.create_namespaced_lease("kube-node-lease", body)


class RunningPod:
    """One pod on one fake node: its volumes, its containers, its status."""

    def __init__(self, executor: PodExecutor, node: str, pod: dict[str, Any]) -> None:
        self.executor = executor
        self.node = node
        self.pod = pod
        meta = pod["metadata"]
        self.name, self.namespace, self.uid = meta["name"], meta["namespace"], meta["uid"]
        self.core = client.CoreV1Api(executor.clients[node])
        self.dir = executor.root / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.deleting = threading.Event()
        self.started_at = now()

    # ---- the pod's life ----
    def run(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if not self.wait_until_startable():
                self.patch_status("Failed", [], ready=False)
                self.finish_deletion()
                return
            volumes = self.prepare_volumes()
            statuses = self.run_containers(volumes)
            failed = any(s["state"]["terminated"]["exitCode"] != 0 for s in statuses)
            self.patch_status("Failed" if failed else "Succeeded", statuses, ready=False)
            if self.deleting.is_set():
                self.finish_deletion()
        except Exception as exc:
            if self.deleting.is_set():
                self.finish_deletion()
                return
            self.fail_to_start(exc)
        finally:
            self.executor.forget(self.uid)

    def wait_until_startable(self) -> bool:
        """Like a kubelet, retry what keeps a container from being created, showing it as
        the container's waiting reason; False when the pod was deleted meanwhile."""
        attempts = 0
        while True:
            problem = self.start_problem(attempts)
            if problem is None:
                return True
            self.patch_status("Pending", [self.waiting_status(c, *problem)
                                          for c in self.pod["spec"]["containers"]],
                              ready=False)
            attempts += 1
            if self.deleting.wait(START_RETRY_SECONDS) or self.executor.stopping.is_set():
                return False

    def start_problem(self, attempts: int) -> tuple[str, str] | None:
        """(waiting reason, message) as a kubelet reports them, or None: it can start."""
        for container in self.pod["spec"]["containers"]:
            image = container.get("image", "")
            registry = image.split("/")[0] if "/" in image else ""
            if registry.split(":")[0].endswith(UNPULLABLE_DOMAIN):
                if attempts == 0:
                    return "ErrImagePull", (f'failed to pull and unpack image "{image}": '
                                            f"dial tcp: lookup {registry}: no such host")
                return "ImagePullBackOff", f'Back-off pulling image "{image}"'
            try:
                self.environment(container)
            except MissingConfig as exc:
                return "CreateContainerConfigError", str(exc)
        return None

    def waiting_status(self, container: dict[str, Any], reason: str,
                       message: str) -> dict[str, Any]:
        return {"name": container["name"], "image": container.get("image", ""), "imageID": "",
                "ready": False, "started": False, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}}}

    def run_containers(self, volumes: dict[str, Path]) -> list[dict[str, Any]]:
        spec = self.pod["spec"]
        for init in spec.get("initContainers") or []:
            status = self.run_container(init, volumes, restart_count=0)
            if status["state"]["terminated"]["exitCode"] != 0:
                return [status]
        containers = spec["containers"]
        self.patch_status("Running", [self.running_status(c, 0) for c in containers],
                          ready=True)
        results: dict[str, dict[str, Any]] = {}
        threads = [threading.Thread(target=lambda c=c: results.__setitem__(
            c["name"], self.run_with_restarts(c, volumes))) for c in containers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return [results[c["name"]] for c in containers]

    def run_with_restarts(self, container: dict[str, Any], volumes: dict[str, Path]
                          ) -> dict[str, Any]:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        restarts = 0
        while True:
            status = self.run_container(container, volumes, restarts)
            code = status["state"]["terminated"]["exitCode"]
            wants_restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if self.deleting.is_set() or self.executor.stopping.is_set() or not wants_restart:
                return status
            restarts += 1
            if self.deleting.wait(min(2**restarts, 20)):
                return status
            self.patch_status("Running", [self.running_status(container, restarts)],
                              ready=True)

    def run_container(self, container: dict[str, Any], volumes: dict[str, Path],
                      restart_count: int) -> dict[str, Any]:
        name = container["name"]
        termination_file = self.dir / f"{name}.termination-log"
        termination_file.write_text("")
        termination_file.chmod(0o666)
        launch = self.dir / f"{name}.launch.json"
        plan = self.launch_plan(container, volumes, termination_file, restart_count)
        launch.write_text(json.dumps(plan))
        log = (self.dir / f"{name}.log").open("ab")
        started = now()
        proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--",
             sys.executable, "-m", "augment_dev.podlaunch", str(launch)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.dir,
            preexec_fn=die_with_parent,  # the forking thread waits for it, so this is safe
        )
        self.procs[name] = proc
        code = proc.wait()
        log.close()
        message = termination_file.read_text(errors="replace").strip()
        if not message and container.get("terminationMessagePolicy") == "FallbackToLogsOnError" \
                and code != 0:
            message = tail_lines(self.dir / f"{name}.log", 80, 4096)
        return {
            "name": name, "image": container.get("image", ""), "imageID": self.image_id(container),
            "ready": False, "started": False, "restartCount": restart_count,
            "state": {"terminated": {
                "exitCode": code if code >= 0 else 128 - code,
                "reason": "Completed" if code == 0 else "Error",
                "message": message[:4096], "startedAt": started, "finishedAt": now()}},
        }

    def image_id(self, container: dict[str, Any]) -> str:
        """The containerStatus' imageID: the built image a container runs from, or none."""
        root = self.executor.image_for(self.namespace, container.get("image", ""))
        return f"{root.ref}@sha256:{root.image_id}" if root else ""

    def launch_plan(self, container: dict[str, Any], volumes: dict[str, Path],
                    termination_file: Path, restart_count: int) -> dict[str, Any]:
        mounts = [
            {"source": str(volumes[m["name"]]) + (f"/{m['subPath']}" if m.get("subPath") else ""),
             "target": m["mountPath"], "readOnly": bool(m.get("readOnly"))}
            for m in container.get("volumeMounts") or []
        ]
        mounts.append({"source": str(termination_file),
                       "target": container.get("terminationMessagePath")
                       or DEFAULT_TERMINATION_PATH, "readOnly": False})
        root = self.executor.image_for(self.namespace, container.get("image", ""))
        if root is None:
            return {
                "argv": (container.get("command") or DEFAULT_ENTRYPOINT)
                + (container.get("args") or []),
                "env": self.environment(container),
                "workingDir": container.get("workingDir") or "/",
                "mounts": mounts,
            }
        layer = self.dir / f"{container['name']}.{restart_count}"  # fresh on each restart
        security = {**(self.pod["spec"].get("securityContext") or {}),
                    **(container.get("securityContext") or {})}
        return {
            "argv": image_argv(container, root),
            "env": self.environment(container, root),
            "workingDir": container.get("workingDir") or root.working_dir,
            "mounts": mounts,
            "root": {"lower": str(root.rootfs), "upper": str(layer / "upper"),
                     "work": str(layer / "work"), "merged": str(layer / "root"),
                     "readOnly": bool(security.get("readOnlyRootFilesystem"))},
            "user": run_as(security, root),
        }

    # ---- environment ----
    def environment(self, container: dict[str, Any],
                    root: ImageRoot | None = None) -> dict[str, str]:
        cluster = {
            "HOSTNAME": self.name, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.executor.cluster.port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.executor.cluster.port),
        }
        if root is not None:  # the image's environment, nothing of this machine's
            env = {**root.env, **cluster}
        else:
            env = {
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "HOME": str(self.dir), "PYTHONUNBUFFERED": "1", **cluster,
            }
            # PYTHONPATH: a pod runs the code the tests import, also when that is a
            # checkout placed over the installed one.
            for key in ("LANG", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "AUGMENT_BACKEND",
                        "PYTHONPATH"):
                if key in os.environ:
                    env[key] = os.environ[key]
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self.config_map(source["configMapRef"]["name"],
                                       source["configMapRef"].get("optional"))
            else:
                data = self.secret(source["secretRef"]["name"], source["secretRef"].get("optional"))
            env |= {prefix + k: v for k, v in data.items()}
        for var in container.get("env") or []:
            value = self.env_value(var)
            if value is not None:
                env[var["name"]] = expand(value, env)
        return env

    def env_value(self, var: dict[str, Any]) -> str | None:
        if "valueFrom" not in var:
            return var.get("value", "")
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            return self.key(self.secret(ref["name"], ref.get("optional")), ref, "Secret")
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self.key(self.config_map(ref["name"], ref.get("optional")), ref,
                            "ConfigMap")
        if "fieldRef" in source:
            return self.field_value(source["fieldRef"]["fieldPath"])
        if "resourceFieldRef" in source:
            return "1"
        raise ExecutorError(f"unsupported env source {source}")

    def field_value(self, path: str) -> str:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        simple = {
            "metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"], "spec.nodeName": spec.get("nodeName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
            "status.hostIP": "127.0.0.1", "status.podIP": "127.0.0.1",
        }
        if path in simple:
            return simple[path]
        for kind in ("labels", "annotations"):
            prefix = f"metadata.{kind}['"
            if path.startswith(prefix):
                return (meta.get(kind) or {}).get(path[len(prefix):-2], "")
        raise ExecutorError(f"unsupported fieldRef {path}")

    def key(self, data: dict[str, str], ref: dict[str, Any], kind: str) -> str | None:
        if ref["key"] in data or ref.get("optional"):
            return data.get(ref["key"])
        raise MissingConfig(f"couldn't find key {ref['key']} in {kind} "
                            f"{self.namespace}/{ref['name']}")

    def secret(self, name: str, optional: bool | None = False) -> dict[str, str]:
        data = self._read("secret", self.core.read_namespaced_secret, name, optional)
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    def config_map(self, name: str, optional: bool | None = False) -> dict[str, str]:
        return self._read("configmap", self.core.read_namespaced_config_map, name, optional)

    def _read(self, kind: str, read: Callable[..., Any], name: str,
              optional: bool | None) -> dict[str, str]:
        """The data of a Secret or ConfigMap the pod names; a missing one is a waiting
        state (MissingConfig, as the kubelet reports it) unless the reference is optional."""
        try:
            found = with_node_graph_retry(read, name, self.namespace)
        except ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            if exc.status == 404:
                raise MissingConfig(f'{kind} "{name}" not found') from None
            raise ExecutorError(f"{kind} {self.namespace}/{name}: {api_error(exc)}") from None
        return dict(found.data or {})

    # ---- volumes ----
    def prepare_volumes(self) -> dict[str, Path]:
        paths = {}
        for volume in self.pod["spec"].get("volumes") or []:
            target = self.dir / "volumes" / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)
            self.fill_volume(volume, target)
            paths[volume["name"]] = target
        return paths

    def fill_volume(self, volume: dict[str, Any], target: Path) -> None:
        if "emptyDir" in volume:
            return
        if "configMap" in volume:
            src = volume["configMap"]
            write_items(target, self.config_map(src["name"], src.get("optional")),
                        src.get("items"))
        elif "secret" in volume:
            src = volume["secret"]
            write_items(target, self.secret(src["secretName"], src.get("optional")),
                        src.get("items"))
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                self.fill_volume(self.projected_as_volume(source, target), target)
        elif "downwardAPI" in volume:
            for item in volume["downwardAPI"]["items"]:
                (target / item["path"]).write_text(self.field_value(item["fieldRef"]["fieldPath"]))
        elif "serviceAccountToken" in volume:
            src = volume["serviceAccountToken"]
            (target / src["path"]).write_text(self.service_account_token(src))
            (target / src["path"]).chmod(0o644)
        else:
            raise ExecutorError(f"volume {volume['name']}: type not supported by the executor")

    def projected_as_volume(self, source: dict[str, Any], target: Path) -> dict[str, Any]:
        if "configMap" in source:
            return {"name": "projected", "configMap": source["configMap"]}
        if "secret" in source:
            return {"name": "projected", "secret": {**source["secret"],
                                                    "secretName": source["secret"]["name"]}}
        return {"name": "projected", **source}

    def service_account_token(self, source: dict[str, Any]) -> str:
        account = self.pod["spec"].get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else None,
                "expirationSeconds": source.get("expirationSeconds", 3607),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.name,
                                   "uid": self.uid},
            },
        }
        response = with_node_graph_retry(
            self.core.create_namespaced_service_account_token, account, self.namespace, request)
        return response.status.token

    # ---- status ----
    def running_status(self, container: dict[str, Any], restarts: int) -> dict[str, Any]:
        return {"name": container["name"], "image": container.get("image", ""),
                "imageID": self.image_id(container),
                "ready": True, "started": True, "restartCount": restarts,
                "state": {"running": {"startedAt": now()}}}

    def patch_status(self, phase: str, statuses: list[dict[str, Any]], ready: bool) -> None:
        stamp = now()
        flag = "True" if ready else "False"
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": self.started_at},
            {"type": "Initialized", "status": "True", "lastTransitionTime": self.started_at},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": stamp},
            {"type": "Ready", "status": flag, "lastTransitionTime": stamp},
        ]
        body = {"status": {
            "phase": phase, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}], "hostIPs": [{"ip": "127.0.0.1"}],
            "startTime": self.started_at, "conditions": conditions,
            "containerStatuses": statuses,
        }}
        with contextlib.suppress(ApiException):  # the pod may be gone already
            self.core.patch_namespaced_pod_status(self.name, self.namespace, body)

    def fail_to_start(self, exc: Exception) -> None:
        reason = api_error(exc) if isinstance(exc, ApiException) else str(exc)
        message = f"executor could not start the pod: {reason}"
        print(f"[executor] {self.namespace}/{self.name}: {message}", file=sys.stderr)
        statuses = [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                     "ready": False, "restartCount": 0,
                     "state": {"terminated": {"exitCode": 128, "reason": "StartError",
                                              "message": message[:4096],
                                              "startedAt": now(), "finishedAt": now()}}}
                    for c in self.pod["spec"]["containers"]]
        self.patch_status("Failed", statuses, ready=False)

    # ---- deletion ----
    def request_deletion(self) -> None:
        if not self.deleting.is_set():
            self.deleting.set()
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
            threading.Thread(target=self.kill, args=(min(grace or 0, 10),), daemon=True).start()

    def kill(self, grace: float) -> None:
        for proc in list(self.procs.values()):
            signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in list(self.procs.values()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
            signal_group(proc, signal.SIGKILL)

    def finish_deletion(self) -> None:
        """Like a kubelet: once the containers are gone, remove the pod for good."""
        body = client.V1DeleteOptions(grace_period_seconds=0,
                                      preconditions=client.V1Preconditions(uid=self.uid))
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(self.name, self.namespace, body=body)
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)


class ExecutorError(RuntimeError):
    pass


class MissingConfig(ExecutorError):
    """A Secret, ConfigMap or key the pod needs is not there (yet): the kubelet waits."""


def image_argv(container: dict[str, Any], root: ImageRoot) -> list[str]:
    """Kubernetes' rule: `command` replaces the image's entrypoint and command; `args`
    alone replaces the image's command."""
    command, args = container.get("command"), container.get("args")
    if command:
        return [*command, *(args or [])]
    return [*root.entrypoint, *(root.cmd if args is None else args)]


def run_as(security: dict[str, Any], root: ImageRoot) -> dict[str, Any]:
    """uid, gid and supplementary groups: the securityContext's, else the image's user
    (numeric, as the project's images have it: `runAsNonRoot` needs that anyway)."""
    image_uid, _, image_gid = root.user.partition(":")
    uid = int(security.get("runAsUser", image_uid))
    gid = int(security.get("runAsGroup", image_gid or 0))
    groups = [int(g) for g in security.get("supplementalGroups") or []]
    if "fsGroup" in security:
        groups.append(int(security["fsGroup"]))
    return {"uid": uid, "gid": gid, "groups": groups}


def probe_image_root(rootfs: Path, folder: Path) -> str | None:
    """Run podlaunch's probe of an image root in a mount namespace of its own; the
    missing kernel feature, or None when containers can run from images here."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-m",
             "augment_dev.podlaunch", "--probe", str(rootfs), str(folder)],
            capture_output=True, text=True, timeout=60, check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if result.returncode == 0:
        return None
    if result.returncode == 1 and result.stdout.strip():
        return result.stdout.strip()
    return f"mount namespaces (unshare --mount): {result.stderr.strip()[-500:]}"


def with_node_graph_retry(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Retry a 403 briefly: the Node authorizer learns a new pod's links asynchronously."""
    for attempt in range(20):
        try:
            return call(*args, **kwargs)
        except ApiException as exc:
            if exc.status != 403 or attempt == 19:
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


def api_error(exc: ApiException) -> str:
    try:
        return json.loads(exc.body)["message"]
    except (TypeError, ValueError, KeyError):
        return str(exc.reason)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def write_items(target: Path, data: dict[str, str], items: list[dict[str, str]] | None) -> None:
    chosen = {i["key"]: i["path"] for i in items} if items else {k: k for k in data}
    for key, rel in chosen.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data.get(key, ""))
        path.chmod(0o644)


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in env values."""
    for key, val in env.items():
        value = value.replace(f"$({key})", val)
    return value


def tail_lines(path: Path, lines: int, limit: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])[-limit:]
