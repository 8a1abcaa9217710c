"""Array backend selection: CuPy on a CUDA device when there is one, NumPy otherwise.

`AUGMENT_BACKEND=numpy|cupy` forces a backend (unset, empty or `auto`: detect). The
pixel code receives the chosen module as `xp` and never imports CuPy itself, so the
NumPy path works on machines where CuPy is not even installed.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Any

import numpy

from augment_spec.contract import ENV_BACKEND


@functools.cache
def _cupy_with_device() -> ModuleType | None:
    """CuPy when it imports and sees at least one CUDA device (probed once per process)."""
    try:
        import cupy  # optional dependency (extra 'gpu'): imported only when probed
    except ImportError:
        return None
    try:
        # Importing CuPy succeeds without a driver; asking for devices is the real check.
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # CUDARuntimeError and friends: no usable driver or device
        return None
    return cupy


def array_module() -> ModuleType:
    """The array module to run transforms with (see the module docstring)."""
    forced = os.environ.get(ENV_BACKEND, "").strip().lower()
    if forced == "numpy":
        return numpy
    cupy = _cupy_with_device()
    if forced == "cupy":
        if cupy is None:
            raise RuntimeError(
                f"{ENV_BACKEND}=cupy, but CuPy is not importable or sees no CUDA device; "
                "install cupy-cuda12x (extra 'gpu') on a GPU node, or unset the variable"
            )
        return cupy
    if forced not in ("", "auto"):
        raise RuntimeError(f"{ENV_BACKEND} must be 'numpy', 'cupy' or 'auto'; got {forced!r}")
    return cupy if cupy is not None else numpy


def available_modules() -> list[ModuleType]:
    """Every backend usable on this machine: NumPy always, CuPy with a device."""
    cupy = _cupy_with_device()
    return [numpy] if cupy is None else [numpy, cupy]


def is_cupy(xp: ModuleType) -> bool:
    return xp.__name__ == "cupy"


def to_device(a: Any, xp: ModuleType) -> Any:
    """`a` as an array of `xp`; no copy when it already is one (NumPy -> NumPy)."""
    return xp.asarray(a)


def to_host(a: Any) -> numpy.ndarray:
    """`a` as a NumPy array; CuPy arrays are downloaded, NumPy arrays pass through."""
    get = getattr(a, "get", None)
    return get() if callable(get) else numpy.asarray(a)
