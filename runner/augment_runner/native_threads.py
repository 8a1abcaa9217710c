"""One thread per call in the native libraries under the transforms.

The runner's parallelism is its own: AUGMENT_THREADS transform workers (the operator
sets it to the pod's CPU request: augment_spec.contract.ENV_THREADS), each running
NumPy and OpenCV kernels on one frame at a time. A library that started a pool of its
own under each call would run more threads than the pod has cores, and the spinning
waits of OpenBLAS and OpenMP pools stall whenever another process holds a core (the
normal state of a pod on a busy node). So each library runs a call on its caller.

They read these variables once, when they load: `augment run` imports this module
before anything loads NumPy or OpenCV (augment_runner/cli.py), and the runner image
sets the same values (images/runner.Dockerfile; tests/unit/test_images.py checks that
they agree). A value already in the environment wins.
"""

from __future__ import annotations

import os

SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",  # OpenMP (libgomp)
    "OPENBLAS_NUM_THREADS": "1",  # NumPy's BLAS
    "MKL_NUM_THREADS": "1",  # NumPy built on MKL
    "OPENCV_FOR_THREADS_NUM": "1",  # OpenCV's parallel loops
}


def limit_native_threads() -> None:
    for name, value in SINGLE_THREAD_ENV.items():
        os.environ.setdefault(name, value)


limit_native_threads()
