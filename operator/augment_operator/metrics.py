"""Prometheus metrics of the operator (served on --metrics-port)."""

from __future__ import annotations

import threading
from collections import Counter as Counter_

from prometheus_client import Counter, Gauge, Histogram

from augment_spec.contract import Phase

TRANSITIONS = Counter(
    "augment_jobs_phase_transitions_total",
    "AugmentationJobs entering each phase", ["phase"])
RECONCILE_SECONDS = Histogram(
    "augment_reconcile_seconds", "Time to reconcile one AugmentationJob",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
RECONCILES = Counter(
    "augment_reconciles_total", "Reconciles started, by what triggered them: a change of "
    "the AugmentationJob (cr), of its Job or pods (child), or the periodic resync",
    ["trigger"])
RECONCILE_ERRORS = Counter(
    "augment_reconcile_errors_total", "Reconciles that raised (kopf retries them)")
JOBS_BY_PHASE = Gauge(
    "augment_jobs", "AugmentationJobs this operator replica has seen, by phase", ["phase"])


class PhaseBook:
    """The last phase seen per job, so the gauge counts jobs rather than events."""

    def __init__(self) -> None:
        self.phases: dict[str, str] = {}
        self.counts: Counter_[str] = Counter_()
        self._lock = threading.Lock()

    def record(self, key: str, phase: str | None) -> None:
        with self._lock:  # reconciles of different jobs run on several threads
            before = self.phases.pop(key, None)
            if before is not None:
                self.counts[before] -= 1
            if phase is not None:
                self.phases[key] = phase
                self.counts[phase] += 1
            for known in Phase:
                JOBS_BY_PHASE.labels(phase=known.value).set(self.counts[known.value])
