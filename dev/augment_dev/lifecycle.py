"""Started on `with`, stopped on leaving it, and stopped too when starting fails half-way
(a control plane, Kueue, the chart's stack each start several processes)."""

from __future__ import annotations

from typing import Self


class Started:
    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
