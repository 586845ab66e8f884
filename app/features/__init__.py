"""Pure feature code: per-account state and feature extraction.

Nothing here imports Faust, Redis or Kafka. The stream (``app.agents``) and training
(``app.features.offline``) both call :func:`extract_one` and
:meth:`AccountState.update_one`, so the features served equal the features trained on.
"""

from .extract import FEATURE_NAMES, WINDOWS_DAYS, extract_one
from .state import AccountState

__all__ = ["AccountState", "FEATURE_NAMES", "WINDOWS_DAYS", "extract_one"]
