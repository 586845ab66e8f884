"""``fraudctl``: the command-line interface. Each command lives in its own module."""

from __future__ import annotations

from . import alerts, bench, demo, evaluate, models, replay, rules, schemas, simulate, stack  # noqa: F401  (register)
from . import dashboards, drift  # noqa: F401  (register: observability)
from . import review  # noqa: F401  (register: case review)
from .base import cli, run

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point (``fraudctl``)."""
    run()
