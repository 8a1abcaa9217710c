"""Convert v2.1 dataset folders to v3.0 with LeRobot's own converter, in place.

Runs inside the judge virtualenv (LeRobot + torch), never in the project's. The v2.1
folder becomes v3.0; its v2.1 files are kept beside it as <folder>_old (the converter's
own habit). Usage: python lerobot_convert.py V21_FOLDER [V21_FOLDER ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from lerobot.datasets.v30.convert_dataset_v21_to_v30 import convert_dataset

# Small files so several episodes share one, as in a converted Hub dataset.
FILE_SIZE_IN_MB = 1


def convert(folder: Path) -> None:
    folder = folder.resolve()
    convert_dataset(
        repo_id=folder.name, root=folder.parent, push_to_hub=False,
        data_file_size_in_mb=FILE_SIZE_IN_MB, video_file_size_in_mb=FILE_SIZE_IN_MB,
    )


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        convert(Path(arg))
