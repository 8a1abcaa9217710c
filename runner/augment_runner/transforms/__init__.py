"""The deterministic transforms: lighting, noise, blur, occlusion (docs/design.md, Transforms).

Parameters are drawn once per (episode, copy) by `sample_copy_params`; an `Augmenter`
applies them to batches of uint8 RGB frames, on NumPy or CuPy, with identical results
up to one grey level (a `GreyAugmenter` to 1-channel frames), and to uint16 frames of
deeper video on NumPy, in the same grey levels (numpy_engine._deep_program).

- base.py: what a transform is (`TransformDef`) and the three kinds the engines run;
- lighting.py, noise.py, blur.py, occlusion.py: one transform each, with its
  definition, parameters, their drawing, its NumPy step and its CUDA code;
- registry.py: the transforms by name, and the order their parameters are drawn in;
- params.py: `CopyParams` and `sample_copy_params`;
- numpy_engine.py, cupy_engine.py, augmenter.py: running them.
"""

from __future__ import annotations

from .augmenter import Augmenter, GreyAugmenter
from .base import TransformDef
from .blur import gaussian_kernel
from .lighting import (
    ENCODING_GAMMA,
    LUMA,
    REFERENCE_KELVIN,
    color_temp_gains,
    lighting_affine,
    luma_means,
)
from .noise import noise_frame_key, noise_stream_key
from .occlusion import OCCLUSION_FILL, occlusion_pixels
from .params import CopyParams, sample_copy_params
from .registry import DRAW_ORDER, REGISTRY

__all__ = [
    "DRAW_ORDER",
    "ENCODING_GAMMA",
    "LUMA",
    "OCCLUSION_FILL",
    "REFERENCE_KELVIN",
    "REGISTRY",
    "Augmenter",
    "CopyParams",
    "GreyAugmenter",
    "TransformDef",
    "color_temp_gains",
    "gaussian_kernel",
    "lighting_affine",
    "luma_means",
    "noise_frame_key",
    "noise_stream_key",
    "occlusion_pixels",
    "sample_copy_params",
]
