"""`augment api`: serve the REST API with uvicorn.

    augment api --namespace augment --api-keys /etc/augment/api-keys.yaml --port 8080

Flags fall back to AUGMENT_* variables (augment_api.settings.ENV_VARS). Inside a pod the
service account's in-cluster config is used; elsewhere --kubeconfig, $KUBECONFIG or
~/.kube/config. The keys file format is described in augment_api.auth and
examples/api-keys.yaml; the Hub policy's (--policy) in augment_spec.policy.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from augment_api.auth import KeyRingFile
from augment_api.settings import Settings
from augment_api.store import JobStore, kube_client
from augment_spec.policy import PolicyFile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--namespace", help="namespace of the AugmentationJobs "
                        "(env AUGMENT_NAMESPACE, default: default)")
    parser.add_argument("--api-keys", type=Path, metavar="FILE",
                        help="YAML file of API key digests (env AUGMENT_API_KEYS_FILE)")
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        help="Hub policy YAML: the Hub namespaces and token Secrets each "
                             "project may use (env AUGMENT_POLICY_FILE; none: no checks)")
    parser.add_argument("--kubeconfig", type=Path,
                        help="kubeconfig to use instead of the in-cluster config")
    parser.add_argument("--max-body-bytes", type=int,
                        help="413 above this (env AUGMENT_MAX_BODY_BYTES, default 65536)")
    parser.add_argument("--rate-limit", type=float, metavar="PER_SECOND",
                        help="requests per second per API key, 0: no limit "
                             "(env AUGMENT_RATE_LIMIT_PER_S, default 10)")
    parser.add_argument("--rate-limit-burst", type=int, metavar="N",
                        help="requests an API key may make at once before its rate applies "
                             "(env AUGMENT_RATE_LIMIT_BURST, default 50)")
    parser.add_argument("--project-job-quota", type=int, metavar="N",
                        help="unfinished jobs per project, 0: no limit "
                             "(env AUGMENT_PROJECT_JOB_QUOTA, default 20)")
    parser.add_argument("--hub-token-file", type=Path, metavar="FILE",
                        help="file holding the Hub token job previews are read with "
                             "(env AUGMENT_HUB_TOKEN_FILE; default: anonymous reads); the "
                             "Hub address is $HF_ENDPOINT's (default: huggingface.co)")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from augment_api.app import create_app

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env(namespace=args.namespace, api_keys_file=args.api_keys,
                                     policy_file=args.policy,
                                     kubeconfig=args.kubeconfig,
                                     max_body_bytes=args.max_body_bytes,
                                     rate_limit_per_s=args.rate_limit,
                                     rate_limit_burst=args.rate_limit_burst,
                                     project_job_quota=args.project_job_quota,
                                     hub_token_file=args.hub_token_file)
    except ValidationError as exc:
        print(f"augment api: invalid settings: {exc}", file=sys.stderr)
        return 2
    if settings.api_keys_file is None:
        print("augment api: no API keys: pass --api-keys FILE or set AUGMENT_API_KEYS_FILE",
              file=sys.stderr)
        return 2
    try:
        keys = KeyRingFile(settings.api_keys_file)
        policy = PolicyFile(settings.policy_file) if settings.policy_file else None
        client = kube_client(settings)  # fail fast on a missing or broken kubeconfig
    except Exception as exc:  # KeyFileError, ConfigException...: one line, no traceback
        print(f"augment api: {exc}", file=sys.stderr)
        return 2
    store = JobStore(settings.namespace, lambda: client, settings.kube_timeout_s)
    app = create_app(settings, store=store, keys=keys, policy=policy)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
