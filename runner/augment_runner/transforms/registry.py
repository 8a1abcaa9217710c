"""The transforms, by name, and the order their parameters are drawn in.

Adding a transform: a module defining its `TransformDef`, a line in REGISTRY, and a
member of the spec's `Transform` enum (augment_spec.model, which imports nothing of
the runner); tests/unit/test_transform_registry.py checks the two lists agree. One
with parameters also needs their CopyParams fields, the spec fields they are drawn
from, and its drawing stages appended to DRAW_ORDER.
"""

from __future__ import annotations

from .base import TransformDef
from .blur import BLUR
from .lighting import LIGHTING
from .noise import NOISE
from .occlusion import OCCLUSION

REGISTRY: dict[str, TransformDef] = {t.name: t for t in (LIGHTING, NOISE, BLUR, OCCLUSION)}

# (transform, stage): every stage, in the order sample_copy_params runs them on a copy's
# generator, whichever transforms the copy lists. Append only: a stage placed anywhere
# else shifts every draw after it, and so changes the output of every existing job.
DRAW_ORDER: tuple[tuple[str, str], ...] = (
    ("lighting", "levels"),
    ("noise", "sigma"),
    ("blur", "sigma"),
    ("occlusion", "rects"),
    ("noise", "seed"),
)


def lookup(name: str) -> TransformDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown transform {name!r}; known: {', '.join(REGISTRY)}") from None
