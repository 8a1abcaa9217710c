"""One copy's parameters: what they are, how they are drawn, how they are recorded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from augment_spec.model import AugmentationSpec

from .registry import DRAW_ORDER, REGISTRY, lookup


@dataclass(frozen=True)
class CopyParams:
    """Everything one augmented copy of an episode needs, drawn once per copy.

    `transforms` are registry names, in the order they apply. Every other field belongs
    to one transform (its `fields`) and is drawn whether or not that transform is listed.
    """

    transforms: tuple[str, ...]
    brightness: float  # percent
    contrast: float  # percent
    color_temp: int  # Kelvin
    noise_sigma: float  # grey levels
    blur_sigma: float  # pixels
    occlusion_rects: tuple[tuple[float, float, float, float], ...]  # x, y, w, h fractions
    noise_seed: int

    def __post_init__(self) -> None:
        # Plain names (the spec's Transform members are str too): provenance stays plain JSON.
        object.__setattr__(self, "transforms", tuple(str(t) for t in self.transforms))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready provenance: the parameters of the listed transforms only."""
        out: dict[str, Any] = {"transforms": list(self.transforms)}
        for name in self.transforms:
            for key in lookup(name).fields:
                out[key] = _json_ready(getattr(self, key))
        return out


def _json_ready(value: Any) -> Any:
    return [_json_ready(v) for v in value] if isinstance(value, tuple) else value


def sample_copy_params(
    spec: AugmentationSpec, transforms: Sequence[str], episode_index: int, copy_index: int
) -> CopyParams:
    """Draw one copy's parameters, uniformly from the spec's ranges.

    The generator is seeded by (augment_seed, episode_index, copy_index) alone and every
    stage of DRAW_ORDER runs, in that order, whichever transforms are listed: a copy's
    parameters do not depend on the batch size, on the other copies, or on the list.
    """
    if episode_index < 0 or copy_index < 0:
        raise ValueError("episode_index and copy_index must be >= 0")
    for name in transforms:
        lookup(name)
    seq = np.random.SeedSequence([spec.augment_seed, episode_index, copy_index])
    rng = np.random.default_rng(seq)
    values: dict[str, Any] = {}
    for name, stage in DRAW_ORDER:
        values |= REGISTRY[name].draws[stage](rng, spec)
    return CopyParams(transforms=tuple(transforms), **values)
