"""`augment-dev`: the development tools, kept out of the product's `augment` command.

Installed from dev/pyproject.toml by `make install`, never in the images.
"""

from __future__ import annotations

import sys

from augment_cli.main import Command

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "cluster": ("augment_dev.cluster_cli",
                "start the embedded Kubernetes control plane, with the CRD, until Ctrl-C"),
    "hub": ("augment_dev.hub_cli", "serve a local Hugging Face Hub for tests and demos"),
    "demo": ("augment_dev.demo", "the whole stack on the embedded control plane"),
    "images": ("augment_dev.images",
               "build (cached) the container images with buildah; print how to push them"),
}

AUGMENT_DEV = Command("augment-dev", __doc__, SUBCOMMANDS)
build_parser = AUGMENT_DEV.build_parser
main = AUGMENT_DEV.main


if __name__ == "__main__":
    sys.exit(main())
