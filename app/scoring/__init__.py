"""Pure scoring: model registry, scores and reasons, metrics, training.

Nothing here imports Faust, Kafka or Redis. Scores are in [0, 1], higher means more
likely fraud (see :class:`Scorer`).
"""

from .model import Scorer
from .registry import (
    LoadedModel,
    ModelCard,
    default_version,
    list_models,
    load_model,
    save_model,
)

__all__ = [
    "LoadedModel",
    "ModelCard",
    "Scorer",
    "default_version",
    "list_models",
    "load_model",
    "save_model",
]
