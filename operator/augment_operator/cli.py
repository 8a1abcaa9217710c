"""`augment operator`: run the kopf operator that turns AugmentationJobs into GPU Jobs."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import kopf
from prometheus_client import start_http_server

from augment_operator.config import ConfigError, load_config
from augment_operator.handlers import Reconciler, register
from augment_operator.kube import load_kube_config
from augment_spec.policy import PolicyError, PolicyFile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument("--config", type=Path, default=env("AUGMENT_OPERATOR_CONFIG"),
                        help="operator config YAML: GPU profiles and runner settings "
                             "(env AUGMENT_OPERATOR_CONFIG; default: built-in profiles)")
    parser.add_argument("--policy", type=Path, default=env("AUGMENT_POLICY_FILE"),
                        help="Hub policy YAML: the Hub namespaces and token Secrets each "
                             "project may use, re-read when it changes (env "
                             "AUGMENT_POLICY_FILE; default: none, nothing is checked)")
    parser.add_argument("--namespace", action="append", default=None,
                        help="namespace to watch (repeatable; env AUGMENT_WATCH_NAMESPACES, "
                             "comma-separated; default: all namespaces)")
    parser.add_argument("--peering", default=env("AUGMENT_PEERING", ""),
                        help="kopf peering name: replicas sharing it never double-process "
                             "(default: standalone)")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority: the highest acts, the others stand by "
                             "(default: older replicas rank higher, so leadership is stable)")
    parser.add_argument("--liveness-port", type=int, default=int(env("AUGMENT_LIVENESS_PORT",
                                                                      "8080")))
    parser.add_argument("--metrics-port", type=int, default=int(env("AUGMENT_METRICS_PORT",
                                                                     "9090")))
    parser.add_argument("--verbose", action="store_true")


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    # Keep kopf's bookkeeping in annotations: the status schema is ours, and strict.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="operator.augment.dev", v1=False)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="operator.augment.dev", key="last-handled-configuration", v1=False)
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.execution.max_workers = 8


def peering_priority(explicit: int | None) -> int:
    """kopf pauses every replica that sees a peer of equal priority, so no two replicas
    may share one: by default the earlier a replica started, the higher it ranks."""
    return explicit if explicit is not None else -(time.time_ns() // 1_000_000)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        policy = PolicyFile(args.policy) if args.policy else None
    except (ConfigError, PolicyError) as exc:
        print(f"augment operator: {exc}")
        return 2
    load_kube_config()
    namespaces = args.namespace or [
        n for n in os.environ.get("AUGMENT_WATCH_NAMESPACES", "").split(",") if n]
    registry = kopf.OperatorRegistry()
    register(Reconciler(config, policy=policy), registry)
    kopf.on.startup(registry=registry)(lambda settings, **_: configure_kopf(settings))
    # Same credentials as our own client: in-cluster ServiceAccount, else kubeconfig.
    kopf.on.login(registry=registry)(kopf.login_via_client)
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="0.0.0.0")
    kopf.run(
        registry=registry,
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=not args.peering,
        peering_name=args.peering or None,
        priority=peering_priority(args.priority),
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz"
        if args.liveness_port else None,
    )
    return 0
