"""``fraudctl``: the command-line interface. Each command lives in its own module.

Importing a command module registers its commands and must stay cheap: a module imports
Typer, Rich's console, pydantic and the settings at the top, and Faust, aiokafka,
pandas, scikit-learn (and the app modules that use them) inside its command functions,
so that ``fraudctl --help`` and a usage error answer at once
(``tests/test_cli_start.py``, ``bench/cli_start.py``).
"""

from __future__ import annotations

from . import alerts, bench, demo, evaluate, models, replay, rules, schemas, simulate, stack  # noqa: F401  (register)
from . import trace  # noqa: F401  (register: the story of one transaction)
from . import dashboards, drift  # noqa: F401  (register: observability)
from . import review  # noqa: F401  (register: case review)
from . import deadletters, sinks  # noqa: F401  (register: dead letters, alert sinks)
from . import acls  # noqa: F401  (register: Kafka ACLs)
from . import redis_acl  # noqa: F401  (register: Redis users per component)
from . import backfill, compare, data, model_doc  # noqa: F401  (register: own data, challenger, docs)
from .base import cli, run

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point (``fraudctl``)."""
    run()
