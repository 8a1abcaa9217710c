"""An embedded, real Kubernetes control plane for tests and demos.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler built from the
Kubernetes Go modules run as local processes on 127.0.0.1 with free ports and a
throwaway PKI. Authorization is Node,RBAC; PodSecurity and NodeRestriction admission
are on; ServiceAccount tokens (TokenRequest) are signed by the apiserver. Fake GPU
nodes are kept Ready by the pod executor (see executor.py), which runs the pods the
real scheduler binds to them as local processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from augment_dev.binaries import ensure_binaries
from augment_dev.lifecycle import Started
from augment_dev.pki import CertFiles, CertificateAuthority, write_service_account_keys

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


@dataclass(frozen=True)
class FakeNode:
    """A node as NVIDIA's GPU feature discovery would label it."""

    name: str
    cpu: str
    memory: str
    gpus: int = 0
    gpu_product: str = ""
    gpu_memory_mib: int = 0
    instance_type: str = ""
    extra_labels: dict[str, str] = field(default_factory=dict)

    def labels(self) -> dict[str, str]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": self.instance_type or "cpu-standard",
            **self.extra_labels,
        }
        if self.gpus:
            labels |= {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": self.gpu_product,
                "nvidia.com/gpu.memory": str(self.gpu_memory_mib),
                "nvidia.com/gpu.count": str(self.gpus),
            }
        return labels

    def manifest(self) -> dict[str, Any]:
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110"}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": self.labels()},
            "spec": {"taints": [GPU_TAINT] if self.gpus else []},
            "status": {
                "capacity": capacity,
                "allocatable": capacity,
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.name},
                ],
            },
        }


DEFAULT_NODES = (
    FakeNode("gpu-l4-0", cpu="8", memory="32Gi", gpus=1, gpu_product="NVIDIA-L4",
             gpu_memory_mib=23034, instance_type="g6.2xlarge",
             extra_labels={"nvidia.com/gpu.family": "ada-lovelace"}),
    FakeNode("gpu-h100-0", cpu="192", memory="2048Gi", gpus=8,
             gpu_product="NVIDIA-H100-80GB-HBM3", gpu_memory_mib=81559,
             instance_type="p5.48xlarge", extra_labels={"nvidia.com/gpu.family": "hopper"}),
    FakeNode("cpu-0", cpu="4", memory="16Gi", instance_type="m6i.xlarge"),
)


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child: a killed test run must not leave a control plane spinning behind,
    and a real-time policy the parent caught (SVT-AV1 sets one when run as root) must
    not pass on to Go processes that would then starve the machine."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_kubeconfig(path: Path, server: str, ca: Path, client: CertFiles, user: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "augment-dev",
                      "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(client.cert),
                                          "client-key": str(client.key)}}],
        "contexts": [{"name": "augment-dev", "context": {"cluster": "augment-dev", "user": user}}],
        "current-context": "augment-dev",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class ClusterError(RuntimeError):
    pass


class EmbeddedCluster(Started):
    """Start with `with EmbeddedCluster() as cluster:`; everything stops on exit."""

    def __init__(
        self,
        workdir: Path | None = None,
        nodes: tuple[FakeNode, ...] = DEFAULT_NODES,
        run_pods: bool = True,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="augment-cluster-"))
        self.nodes = nodes
        self.run_pods = run_pods
        self.processes: dict[str, subprocess.Popen] = {}
        self.executor = None
        self.bin: Path | None = None
        self.pki = self.workdir / "pki"
        self.logs = self.workdir / "logs"
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.node_kubeconfigs: dict[str, Path] = {}

    # ---- lifecycle ----
    def start(self) -> None:
        started = time.monotonic()
        self.bin = ensure_binaries()
        self.logs.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        self._start_etcd()
        self._start_apiserver()
        self._start_controller_manager()
        self._start_scheduler()
        self._register_nodes()
        if self.run_pods:
            from augment_dev.executor import PodExecutor

            self.executor = PodExecutor(self)
            self.executor.start()
        self._wait_for_default_service_account()
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.stop()
            self.executor = None
        for name in reversed(list(self.processes)):
            stop_process(self.processes.pop(name))
        if self._own_workdir and not os.environ.get("AUGMENT_KEEP_CLUSTER"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- set-up steps ----
    def _write_pki(self) -> None:
        ca = CertificateAuthority(self.pki)
        self.ca = ca.files.cert
        self.apiserver_cert = ca.issue(
            "apiserver", "kube-apiserver",
            server_names=("localhost", "kubernetes", "kubernetes.default",
                          "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"),
            server_ips=("127.0.0.1", "10.96.0.1"),
        )
        self.sa_keys = write_service_account_keys(self.pki)
        users = {
            "admin": ("admin", ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
        }
        self.kubeconfigs: dict[str, Path] = {}
        for stem, (cn, orgs) in users.items():
            certs = ca.issue(stem, cn, orgs)
            self.kubeconfigs[stem] = write_kubeconfig(
                self.workdir / f"{stem}.kubeconfig", self.server, self.ca, certs, cn)
        for node in self.nodes:
            certs = ca.issue(f"node-{node.name}", f"system:node:{node.name}", ("system:nodes",))
            self.node_kubeconfigs[node.name] = write_kubeconfig(
                self.workdir / f"node-{node.name}.kubeconfig", self.server, self.ca, certs,
                f"system:node:{node.name}")

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (system:masters)."""
        return self.kubeconfigs["admin"]

    def _spawn(self, name: str, args: list[str]) -> None:
        assert self.bin is not None
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [str(self.bin / name), *args], stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=die_with_parent,
        )

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        self._spawn("etcd", [
            "--name=augment-dev", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=augment-dev=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync", "--log-level=warn",
        ])
        self._wait_http("etcd", f"{self.etcd_url}/health", insecure_http=True)

    def _start_apiserver(self) -> None:
        self._spawn("kube-apiserver", [
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--tls-cert-file={self.apiserver_cert.cert}",
            f"--tls-private-key-file={self.apiserver_cert.key}",
            f"--client-ca-file={self.ca}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={self.sa_keys.cert}",
            f"--service-account-signing-key-file={self.sa_keys.key}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",  # PodSecurity is on by default
            "--service-cluster-ip-range=10.96.0.0/16",
            "--endpoint-reconciler-type=none",  # a loopback advertise address is not routable
            "--enable-priority-and-fairness=false", "--profiling=false",
            "--v=1",
        ])
        self._wait_http("kube-apiserver", f"{self.server}/readyz", timeout=120)

    def _start_controller_manager(self) -> None:
        kubeconfig = self.kubeconfigs["controller-manager"]
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cert-dir={self.workdir / 'controller-manager-certs'}",
            "--leader-elect=false",
            f"--service-account-private-key-file={self.sa_keys.key}",
            f"--root-ca-file={self.ca}",
            "--use-service-account-credentials=true",
            "--controllers=*,-nodeipam,-service-lb-controller,-persistentvolume-expander",
            "--concurrent-job-syncs=10", "--concurrent-gc-syncs=10",
            "--v=1",
        ])

    def _start_scheduler(self) -> None:
        kubeconfig = self.kubeconfigs["scheduler"]
        self._spawn("kube-scheduler", [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cert-dir={self.workdir / 'scheduler-certs'}",
            "--leader-elect=false", "--v=1",
        ])

    def _register_nodes(self) -> None:
        for node in self.nodes:
            self.kubectl("apply", "-f", "-", input=json.dumps(node.manifest()))

    def _wait_for_default_service_account(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.kubectl("get", "serviceaccount", "default", "-n", "default",
                               check=False)
            if got.returncode == 0:
                return
            self._check_alive()
            time.sleep(0.5)
        raise ClusterError("the serviceaccount controller never created default/default")

    # ---- helpers ----
    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input, capture_output=True, text=True, timeout=120,
        )
        if check and result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def ssl_context(self, user: str = "admin") -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.pki / f"{user}.crt"), str(self.pki / f"{user}.key"))
        return ctx

    def _check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ClusterError(f"{name} exited with {proc.returncode}:\n{tail}")

    def _wait_http(self, name: str, url: str, timeout: float = 60,
                   insecure_http: bool = False) -> None:
        deadline = time.monotonic() + timeout
        ctx = None if insecure_http else self.ssl_context()
        last = ""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, context=ctx, timeout=5) as resp:
                    if resp.status == 200:
                        return
            except Exception as exc:  # not up yet
                last = str(exc)
            time.sleep(0.3)
        raise ClusterError(f"{name} not ready at {url} after {timeout}s: {last}")


def stop_process(proc: subprocess.Popen, grace: float = 10) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
