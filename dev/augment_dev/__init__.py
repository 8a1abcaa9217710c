"""augment-operator's development tools (dev/pyproject.toml; never in the images).

They work from a checkout: the chart, the sample dataset, the Go modules of the control
plane (tests/cluster/gobin) and LeRobot's reader (tests/judge) are found from here.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
