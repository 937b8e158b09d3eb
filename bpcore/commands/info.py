"""``bpcore info``: which backends and devices are usable here."""

from __future__ import annotations

import argparse
import platform

HELP = "show bpcore's version and which backends and devices are usable here"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``info`` takes no options."""


def run(args: argparse.Namespace) -> int:
    """Print one line per backend: version and devices, or why it is unusable."""
    import bpcore

    print(f"bpcore {bpcore.__version__} on Python {platform.python_version()} "
          f"({platform.machine()}, {platform.system()})")
    for info in bpcore.backends().values():
        print(f"  {info}")
    return 0
