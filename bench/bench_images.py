"""Container image sizes and build times, from `make images`' builder.

`run(results, quick, names=None)` adds `results["images"]`: for each image (the released
ones and the runner's CPU variant that `make test` runs; quick: the tested ones only,
not exported) its layers' sizes as stored (uncompressed tar streams, the base included),
the size of its OCI archive (gzip layers: about what a node pulls) for the exported
ones, and how long the build that made the cached image took (the base excluded). Images
already in the cache are not rebuilt: their build time is the one recorded when built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from augment_dev import images

MB = 1e6


def run(results: dict, quick: bool, names: Sequence[str] | None = None) -> dict:
    chosen = list(names or (images.TESTED if quick else
                            dict.fromkeys([*images.RELEASED, *images.TESTED])))
    built = images.ensure(chosen)
    section: dict[str, Any] = {"base": {"release": images.base_release(),
                                        "packages": list(images.BASE_PACKAGES)},
                               "images": {}}
    for name, image in built.items():
        exported = not quick and name in images.RELEASED
        archive = images.export(image) if exported else None
        section["images"][name] = {
            "ref": image.ref,
            "size_mb": round(image.size_bytes / MB, 1),
            "layers_mb": [round(size / MB, 1) for size in image.layer_bytes],
            "archive_mb": round(archive.stat().st_size / MB, 1) if archive else None,
            "build_seconds": image.build_seconds,
            "revision": image.revision,
        }
    results["images"] = section
    return results
