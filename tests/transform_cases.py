"""The transform orders both engine-agreement tests (NumPy vs its definition, CuPy vs
NumPy) run: each transform alone, all of them both ways round, and mixed orders."""

from augment_spec.model import Transform

ALL = (Transform.lighting, Transform.noise, Transform.blur, Transform.occlusion)
ORDERS = [
    *((t,) for t in ALL),
    ALL,
    ALL[::-1],
    (Transform.noise, Transform.lighting),
    (Transform.blur, Transform.lighting, Transform.occlusion, Transform.noise),
]
