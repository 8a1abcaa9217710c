"""Fail when crds/ (or the chart's copy) drifts from the spec model."""

from __future__ import annotations

import sys

from augment_spec.cli import CHART_CRD_PATH, CRD_PATH
from augment_spec.crd import crd_yaml

COPIES = [CRD_PATH, CHART_CRD_PATH]


def main() -> int:
    expected = crd_yaml()
    stale = [str(p) for p in COPIES if not p.exists() or p.read_text() != expected]
    if stale:
        print(f"stale CRD: {', '.join(stale)}; run `make crd`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
