"""Pure feature code: per-account and per-terminal state and feature extraction.

Nothing here imports Faust, Redis or Kafka. The stream (``app.stream.agents``) and training
(``app.features.offline``) both call the same ``update_one`` / ``label_one`` /
``extract_*`` functions, so the features served equal the features trained on.
"""

from .extract import (
    ACCOUNT_FEATURE_NAMES,
    FEATURE_NAMES,
    WINDOWS_DAYS,
    extract_account,
    extract_one,
    feature_names,
)
from .state import AccountState
from .terminal import (
    DEFAULT_DELAY_DAYS,
    TERMINAL_WINDOWS_DAYS,
    TerminalState,
    extract_terminal,
    terminal_feature_names,
)

__all__ = [
    "ACCOUNT_FEATURE_NAMES",
    "AccountState",
    "DEFAULT_DELAY_DAYS",
    "FEATURE_NAMES",
    "TERMINAL_WINDOWS_DAYS",
    "TerminalState",
    "WINDOWS_DAYS",
    "extract_account",
    "extract_one",
    "extract_terminal",
    "feature_names",
    "terminal_feature_names",
]
