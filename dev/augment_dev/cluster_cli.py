"""`augment-dev cluster`: the embedded control plane for humans, with the CRD (Ctrl-C stops it)."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import threading
from pathlib import Path

from augment_dev.cluster import EmbeddedCluster
from augment_dev.kube import install_crd


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig-out", type=Path, default=Path("out/dev-cluster.kubeconfig"),
                        help="where to copy the admin kubeconfig (default: %(default)s)")
    parser.add_argument("--no-crd", action="store_true", help="do not install the CRD")


def main(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with EmbeddedCluster() as cluster:
        args.kubeconfig_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cluster.kubeconfig, args.kubeconfig_out)
        if not args.no_crd:
            install_crd(cluster)
        print(f"control plane up in {cluster.startup_seconds:.1f}s at {cluster.server}")
        print(f"  export KUBECONFIG={args.kubeconfig_out.resolve()}")
        print("  kubectl get nodes")
        print("Ctrl-C to stop and remove everything.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        print("stopping...")
    return 0
