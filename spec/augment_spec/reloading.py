"""A configuration file read again whenever it changes: a mounted ConfigMap or Secret
changes by swapping a symlink, so an edit takes effect without a restart. The API keys
and the Hub policy are read this way."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class ReloadingFile(Generic[T]):
    def __init__(self, path: Path, load: Callable[[Path], T], error: type[Exception],
                 what: str) -> None:
        self.path = path
        self._load, self._error, self._what = load, error, what
        self._stamp = self._stat()
        self._value = load(path)  # fail fast at startup

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def current(self) -> T:
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            try:
                self._value = self._load(self.path)
                log.info("reloaded %s from %s", self._what, self.path)
            except self._error as exc:
                # Keep the last good version: a broken edit must not open or stop everything.
                log.error("%s; keeping the previous %s", exc, self._what)
            self._stamp = stamp
        return self._value
