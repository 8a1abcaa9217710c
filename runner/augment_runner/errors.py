"""Errors a user can act on, and the rule that no secret ever reaches an error line.

Every problem caused by the input (a dataset, a spec, a folder, a token) is an
`AugmentError` with a one-line message that names the problem and what to do; the CLI
prints that line and exits with code 2. A Hub that stays unavailable exits with
EXIT_HUB_UNAVAILABLE. Anything else is a bug (exit code 1). The codes are
augment_spec.contract's.

The runner's last line becomes the pod's termination message, which the operator copies
into the job's status and Events: whatever Secret the Hub token was read from must never
appear there. `redact` removes every registered secret (and HF_TOKEN) from a line.
"""

from __future__ import annotations

import errno
import os

# What a full disk means in a pod: the scratch volume (an emptyDir of the GPU profile's
# size) holds the source and the output; a retry lands on the same size.
SCRATCH_FULL = "scratch is full: raise the profile's scratch size"

REDACTED = "[redacted]"
# Pieces of a secret shorter than this are left alone: they would match ordinary words.
_MIN_PIECE = 6
_secrets: set[str] = set()


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


def register_secret(value: str | None) -> None:
    """Remember ``value`` so that `redact` removes it from every line the runner prints."""
    if value:
        _secrets.add(value)


def redact(text: str) -> str:
    """``text`` without any secret: whole, line by line, or word by word.

    A secret may reach a message re-encoded (a ``repr`` turns its newlines into ``\\n``),
    so each whitespace-separated piece of it is removed as well as the whole.
    """
    pieces: set[str] = set()
    for secret in _secrets | {os.environ.get("HF_TOKEN") or ""}:
        pieces.update(p for p in [secret, secret.strip(), *secret.split()] if len(p) >= _MIN_PIECE)
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, REDACTED)
    return text
