"""Pure decision code: rule sets and the controller of models and rules.

Nothing here imports Faust, Redis or Kafka. :mod:`.rules` validates and evaluates
declarative rule sets; :mod:`.controller` holds a worker's active and shadow models and
its rule set, and switches them between batches.
"""

from .controller import ApplyResult, BatchDecisions, Controller, Snapshot, decode_control, decode_rule_set
from .rules import (
    EMPTY_RULE_SET,
    OUTCOMES,
    CompiledRuleSet,
    Decision,
    load_rule_set,
    parse_rule_set,
    strongest,
)

__all__ = [
    "ApplyResult",
    "BatchDecisions",
    "CompiledRuleSet",
    "Controller",
    "Decision",
    "EMPTY_RULE_SET",
    "OUTCOMES",
    "Snapshot",
    "decode_control",
    "decode_rule_set",
    "load_rule_set",
    "parse_rule_set",
    "strongest",
]
