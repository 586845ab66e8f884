"""Pure scoring: model registry, scores and reasons, metrics, training.

Nothing here imports Faust, Kafka or Redis. Scores are in [0, 1], higher means more
likely fraud (see :class:`Scorer`). The names below are loaded on first use, so that
importing a light submodule (:mod:`app.scoring.protocol`, :mod:`app.scoring.candidates`)
does not load scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "LoadedModel",
    "ModelCard",
    "Scorer",
    "default_version",
    "list_models",
    "load_model",
    "save_model",
]

_HOME = {"Scorer": ".model"} | dict.fromkeys(
    ("LoadedModel", "ModelCard", "default_version", "list_models", "load_model", "save_model"),
    ".registry",
)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name], __name__), name)
