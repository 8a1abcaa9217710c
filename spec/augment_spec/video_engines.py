"""The video engines of NVIDIA GPUs: which codecs NVDEC decodes and NVENC encodes.

One table, read by the operator (a GPU profile's default `videoEngines`: what every GPU
it prefers has) and by the runner (a machine whose profile declared nothing, such as a
local run or `make gpu-check`, looks its GPU up here). Codec names are FFmpeg's, as
PyAV reports a stream's codec: h264, hevc, av1.

Source of every row: NVIDIA's "Video Encode and Decode GPU Support Matrix" (the NVIDIA
Video Codec SDK documentation), read per GPU. Only 8-bit 4:2:0 video is planned on
these engines (augment_runner/codec_plan.py), which every listed engine handles.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

H264, HEVC, AV1 = "h264", "hevc", "av1"
CODECS = (H264, HEVC, AV1)  # the codecs the GPU path knows, in the order the docs list them


@dataclass(frozen=True)
class VideoEngines:
    """The codecs a node's GPU decodes (NVDEC) and encodes (NVENC) in hardware."""

    decode: frozenset[str] = frozenset()
    encode: frozenset[str] = frozenset()

    def __and__(self, other: VideoEngines) -> VideoEngines:
        """What both have: the engines a pod may count on whichever of two GPUs it gets."""
        return VideoEngines(self.decode & other.decode, self.encode & other.encode)


NO_ENGINES = VideoEngines()

# GPU model (as it appears in the GPU feature discovery label nvidia.com/gpu.product and in
# the CUDA device name) -> its engines, every row from NVIDIA's support matrix:
GPU_VIDEO_ENGINES: dict[str, VideoEngines] = {
    # Hopper (H100, H200): NVDEC for H.264 and HEVC, no AV1 decode; no NVENC at all.
    "H100": VideoEngines(frozenset({H264, HEVC})),
    "H200": VideoEngines(frozenset({H264, HEVC})),
    # Ampere A100 (GA100): NVDEC for H.264 and HEVC, no AV1 decode (only the GA10x chips
    # have it); no NVENC.
    "A100": VideoEngines(frozenset({H264, HEVC})),
    # Ampere A10G: NVDEC for H.264, HEVC and AV1; NVENC for H.264 and HEVC (AV1 encode
    # came with Ada).
    "A10G": VideoEngines(frozenset({H264, HEVC, AV1}), frozenset({H264, HEVC})),
    # Ada L4 and L40S: NVDEC and NVENC both for H.264, HEVC and AV1.
    "L40S": VideoEngines(frozenset({H264, HEVC, AV1}), frozenset({H264, HEVC, AV1})),
    "L4": VideoEngines(frozenset({H264, HEVC, AV1}), frozenset({H264, HEVC, AV1})),
    # Turing T4: NVDEC and NVENC for H.264 and HEVC; no AV1 either way.
    "T4": VideoEngines(frozenset({H264, HEVC}), frozenset({H264, HEVC})),
}


def engines_for_product(product: str) -> VideoEngines | None:
    """The engines of a GPU named like "NVIDIA-H100-80GB-HBM3" (a node label) or
    "NVIDIA L4" (a CUDA device name); None for a GPU not in the table."""
    words = product.upper().replace(" ", "-").split("-")
    for model, engines in GPU_VIDEO_ENGINES.items():
        if model in words:
            return engines
    return None


def common_engines(products: list[str]) -> VideoEngines:
    """What every listed GPU has; none when one of them is not in the table."""
    known = [e for e in map(engines_for_product, products) if e is not None]
    if not products or len(known) != len(products):
        return NO_ENGINES
    return functools.reduce(operator.and_, known)
