"""``fraudctl``: the command-line interface. Each command lives in its own module."""

from __future__ import annotations

from . import alerts, bench, demo, evaluate, models, replay, rules, schemas, simulate, stack  # noqa: F401  (register)
from . import trace  # noqa: F401  (register: the story of one transaction)
from . import dashboards, drift  # noqa: F401  (register: observability)
from .base import cli, run

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point (``fraudctl``)."""
    run()
