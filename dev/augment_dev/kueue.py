"""Kueue (sigs.k8s.io/kueue), the real controller, as a process of the embedded control plane.

Built from its Go module with its CRDs and webhook manifests (augment_dev.binaries), it
runs as a local process with the admin kubeconfig. Its webhooks need TLS and the
apiserver reaching them: there is no Service network here, so every webhook (admission,
and the CRDs' conversion) is given a `url` on 127.0.0.1 instead of Kueue's Service.
Kueue manages its certificate itself (internalCertManagement); its rotator keeps the one
it finds in its Secret when that one is valid for its Service's name, signed by a CA
named `kueue-ca` (with an RSA key), and not expiring within 90 days. So the test bed
writes such a pair, with 127.0.0.1 as a name too, into the Secret and into the webhook
server's certificate folder (in a pod, the Secret mounted there), and Kueue injects the
CA it finds into the webhook configurations and the CRDs, as in a real installation.

Only the `batch/job` integration is enabled; the webhooks kept are those of Jobs and of
Kueue's own objects (a Pod webhook with no server behind it would refuse every pod). The
visibility API (queue positions) is an aggregated API server and is switched off.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from augment_dev.binaries import ensure_kueue
from augment_dev.cluster import ClusterError, EmbeddedCluster, die_with_parent, free_port
from augment_dev.kube import get_json, wait_for
from augment_dev.lifecycle import Started
from augment_dev.pki import CertificateAuthority

NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"  # what the certificate is for: <service>.<namespace>.svc
SECRET = "kueue-webhook-server-cert"
WEBHOOK_CONFIGURATIONS = {"MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
                          "ValidatingWebhookConfiguration":
                              "kueue-validating-webhook-configuration"}
# The CRDs Kueue serves conversions for (its rotator injects the CA into each).
CONVERTED = ("localqueues", "clusterqueues", "workloads", "cohorts", "multikueueclusters")
KEPT_GROUPS = {"batch", "kueue.x-k8s.io"}
# Kueue's rotator renews a certificate that expires within 90 days.
CERT_DAYS = 365


class Kueue(Started):
    """`with Kueue(cluster):` Kueue's CRDs and webhooks installed, its controller running
    (stopped with the cluster, or on exit)."""

    def __init__(self, cluster: EmbeddedCluster) -> None:
        self.cluster = cluster
        self.folder = cluster.workdir / "kueue"
        self.port = free_port()
        self.health_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        source = ensure_kueue()
        self.folder.mkdir(parents=True, exist_ok=True)
        ca = self._write_certificates()
        self._install_crds(source, ca)
        self.cluster.kubectl("create", "namespace", NAMESPACE)
        self._create_secret()
        self._install_webhooks(source, ca)
        self._spawn(source / "kueue")
        self._wait_ready()

    def stop(self) -> None:
        from augment_dev.cluster import stop_process

        if self.process is not None:
            self.cluster.processes.pop("kueue", None)
            stop_process(self.process)
            self.process = None

    # ---- set-up steps ----
    def _write_certificates(self) -> bytes:
        """The CA's certificate (PEM); the pair goes to the webhook server's folder."""
        authority = CertificateAuthority(self.folder / "pki", "kueue-ca", days=CERT_DAYS,
                                         names=("kueue-ca",), rsa_key=True)
        served = authority.issue("tls", f"{SERVICE}.{NAMESPACE}.svc",
                                 server_names=(f"{SERVICE}.{NAMESPACE}.svc",),
                                 server_ips=("127.0.0.1",))
        self.certs = {"ca.crt": authority.files.cert, "ca.key": authority.files.key,
                      "tls.crt": served.cert, "tls.key": served.key}
        return authority.files.cert.read_bytes()

    def _client_config(self, path: str, ca: bytes) -> dict[str, Any]:
        return {"url": f"{self.url}{path}", "caBundle": base64.b64encode(ca).decode()}

    def _install_crds(self, source: Path, ca: bytes) -> None:
        crds = [yaml.safe_load(p.read_text()) for p in sorted((source / "crds").glob("*.yaml"))]
        for crd in crds:
            if crd["spec"]["names"]["plural"] in CONVERTED:
                crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                    "clientConfig": self._client_config("/convert", ca),
                    "conversionReviewVersions": ["v1"]}}
        # Server-side: Kueue's CRDs are too big for the last-applied annotation.
        self.cluster.kubectl("apply", "--server-side", "-f", "-",
                             input=json.dumps({"apiVersion": "v1", "kind": "List",
                                               "items": crds}))
        names = [c["metadata"]["name"] for c in crds]
        wait_for(lambda: all(self._established(n) for n in names), timeout=60,
                 what="Kueue's CRDs to be established")

    def _established(self, crd: str) -> bool:
        found = get_json(self.cluster, "crd", crd)
        return any(c.get("type") == "Established" and c.get("status") == "True"
                   for c in (found.get("status") or {}).get("conditions") or [])

    def _create_secret(self) -> None:
        self.cluster.kubectl("create", "secret", "generic", SECRET, "-n", NAMESPACE,
                             *(f"--from-file={k}={v}" for k, v in self.certs.items()))
        served = self.folder / "serving-certs"  # as the Secret would be mounted in a pod
        served.mkdir(exist_ok=True)
        for name in ("tls.crt", "tls.key"):
            (served / name).write_bytes(self.certs[name].read_bytes())

    def _install_webhooks(self, source: Path, ca: bytes) -> None:
        manifests = yaml.safe_load_all((source / "webhook" / "manifests.yaml").read_text())
        for manifest in manifests:
            if not manifest or manifest.get("kind") not in WEBHOOK_CONFIGURATIONS:
                continue
            manifest["metadata"] = {"name": WEBHOOK_CONFIGURATIONS[manifest["kind"]]}
            manifest["webhooks"] = [self._local(hook, ca) for hook in manifest["webhooks"]
                                    if self._kept(hook)]
            self.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))

    @staticmethod
    def _kept(hook: dict[str, Any]) -> bool:
        groups = {g for rule in hook.get("rules") or [] for g in rule.get("apiGroups") or []}
        return bool(groups) and groups <= KEPT_GROUPS

    def _local(self, hook: dict[str, Any], ca: bytes) -> dict[str, Any]:
        path = hook["clientConfig"]["service"]["path"]
        return {**hook, "clientConfig": self._client_config(path, ca)}

    def _config(self) -> Path:
        config = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health_port}"},
            "metrics": {"bindAddress": "0"},
            "webhook": {"host": "127.0.0.1", "port": self.port,
                        "certDir": str(self.folder / "serving-certs")},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": True, "webhookServiceName": SERVICE,
                                       "webhookSecretName": SECRET},
            "integrations": {"frameworks": ["batch/job"]},
        }
        path = self.folder / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def _spawn(self, binary: Path) -> None:
        log = (self.cluster.logs / "kueue.log").open("ab")
        self.process = subprocess.Popen(
            [str(binary), f"--config={self._config()}", "--feature-gates=VisibilityOnDemand=false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=die_with_parent,
            env={**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)},
        )
        # Stopped with the control plane, and reported by its liveness checks.
        self.cluster.processes["kueue"] = self.process

    def _wait_ready(self, timeout: float = 180) -> None:
        """Until Kueue says it is ready and its webhook server answers (the probe port
        also serves a first, certificate-only stage of Kueue's start)."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = (self.cluster.logs / "kueue.log").read_text(errors="replace")[-3000:]
                raise ClusterError(f"kueue exited with {self.process.returncode}:\n{tail}")
            if self._answers(url) and self._answers(f"{self.url}/readyz", self._tls()):
                return
            time.sleep(0.5)
        raise ClusterError(f"kueue not ready at {url} and {self.url} after {timeout}s")

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.certs["ca.crt"]))

    @staticmethod
    def _answers(url: str, context: ssl.SSLContext | None = None) -> bool:
        """Whether an HTTP server answers at `url` (any status: the webhook server has no
        /readyz, a 404 is an answer)."""
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError:
            return context is not None
        except OSError:
            return False
