"""Case review: alerts become cases, analysts' verdicts become labels.

:mod:`app.cases.model` is pure (fold events into cases, check requests); the shell is
:mod:`app.cases.service` (Kafka) and :mod:`app.cases.web` (the console).
"""

from .model import ACTIONS, Case, CaseError, Decision, Request, apply_one, decide, fold, queue

__all__ = ["ACTIONS", "Case", "CaseError", "Decision", "Request", "apply_one", "decide", "fold", "queue"]
