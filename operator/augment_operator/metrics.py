"""Prometheus metrics of the operator (served on --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TRANSITIONS = Counter(
    "augment_jobs_phase_transitions_total",
    "AugmentationJobs entering each phase", ["phase"])
RECONCILE_SECONDS = Histogram(
    "augment_reconcile_seconds", "Time to reconcile one AugmentationJob",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
RECONCILE_ERRORS = Counter(
    "augment_reconcile_errors_total", "Reconciles that raised (kopf retries them)")
