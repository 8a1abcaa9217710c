"""Errors a user can act on.

Every problem caused by the input (a dataset, a spec, a folder, a token) is an
`AugmentError` with a one-line message that names the problem and what to do; the CLI
prints that line and exits with code 2. Anything else is a bug (exit code 1).
"""

from __future__ import annotations

import errno

# What a full disk means in a pod: the scratch volume (an emptyDir of the GPU profile's
# size) holds the source and the output; a retry lands on the same size.
SCRATCH_FULL = "scratch is full: raise the profile's scratch size"


class AugmentError(Exception):
    """A problem with the user's input, explained in one line."""

    def __init__(self, message: str) -> None:
        # Newlines would break the "one line on stderr / termination log" contract.
        super().__init__(" ".join(message.split()))


class DatasetError(AugmentError):
    """The source dataset is missing, corrupt, or in a layout we cannot read."""


class VideoError(DatasetError):
    """A video cannot be decoded or encoded as the dataset's metadata says."""


class OutputError(AugmentError):
    """The output folder cannot be used (exists and is not empty, not writable)."""


def is_disk_full(exc: BaseException) -> bool:
    """An OSError saying the disk is full (PyArrow and PyAV raise it without errno)."""
    return isinstance(exc, OSError) and (
        exc.errno == errno.ENOSPC or "No space left on device" in str(exc)
    )
