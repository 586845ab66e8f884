"""Declarative decision rules: a versioned :class:`RuleSet` and its evaluation.

A rule compares one attribute of a scored transaction with a value and, when the
comparison holds, proposes an outcome. Attributes are paths:

- ``transaction.<field>``: a field of :class:`app.events.Transaction`
  (``amount_minor``, ``currency``, ``account_id``, ``terminal_id``, ``event_time_ms``,
  ...) or ``transaction.amount`` (major units);
- ``features.<name>``: one of the model's feature names
  (:data:`app.features.FEATURE_NAMES`);
- ``score``: the active model's score, in [0, 1].

The outcome of a transaction is the strongest of (precedence ``block > review >
approve``): the outcomes of the rules that fire, ``block`` when its account or terminal
is on the block list, and the score outcome (``SCORE_OUTCOME``, default ``review``) when
the score is at or above the threshold. An account or terminal on the allow list is
always approved, whatever else fires.

Everything is checked when a rule set is loaded (:func:`parse_rule_set`), so a bad rule
set is refused as a whole with one clear :class:`~app.exceptions.RuleSetError` and the
worker keeps the one it has.

Examples
--------
>>> rs = parse_rule_set({
...     "id": "default", "version": 3,
...     "rules": [{"id": "big-night", "attribute": "transaction.amount", "op": ">",
...                "value": 500, "outcome": "review"}],
...     "block": {"terminals": ["m666"]}})
>>> from app.events import Transaction
>>> tx = Transaction(transaction_id="t1", account_id="a1", terminal_id="m1",
...                  amount_minor=90_000, event_time_ms=1_522_540_800_000)
>>> rs.evaluate(tx, {}, score=0.1, threshold=0.5)
Decision(outcome='review', rules_fired=('big-night',), by_score=False)
>>> parse_rule_set({"id": "x", "version": 1, "rules": [{"id": "r", "attribute":
...     "score", "op": "in", "value": 0.5, "outcome": "block"}]})
Traceback (most recent call last):
...
app.exceptions.RuleSetError: rule set x v1: rule 'r': op 'in' needs a list value, got 0.5
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pydantic import ValidationError

from ..events import OUTCOMES, AccessList, Rule, RuleSet, Transaction
from ..exceptions import RuleSetError
from ..features import FEATURE_NAMES

__all__ = [
    "OUTCOMES",
    "Rule",
    "AccessList",
    "RuleSet",
    "Decision",
    "CompiledRuleSet",
    "EMPTY_RULE_SET",
    "parse_rule_set",
    "load_rule_set",
    "strongest",
    "attribute_kind",
]


_RANK = {o: i for i, o in enumerate(OUTCOMES)}
_ORDERING = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_EQUALITY = {"==": operator.eq, "!=": operator.ne}
#: transaction attributes and their kind ("number" or "string")
_TX_ATTRIBUTES = {
    "transaction_id": "string",
    "account_id": "string",
    "terminal_id": "string",
    "currency": "string",
    "amount_minor": "number",
    "amount": "number",
    "event_time_ms": "number",
}
#: Rule ids that name the access lists in ``Decision.rules_fired``.
ALLOW_ACCOUNT, ALLOW_TERMINAL = "allow:account", "allow:terminal"
BLOCK_ACCOUNT, BLOCK_TERMINAL = "block:account", "block:terminal"


def strongest(outcomes: Sequence[str]) -> str:
    """The outcome of highest precedence (``block > review > approve``); approve if none.

    >>> strongest(["review", "approve"]), strongest([])
    ('review', 'approve')
    """
    return max(outcomes, key=_RANK.__getitem__, default="approve")


def attribute_kind(attribute: str, feature_names: Sequence[str] = FEATURE_NAMES) -> str:
    """``"number"`` or ``"string"``: the kind of value ``attribute`` holds.

    Raises
    ------
    RuleSetError
        Unknown attribute (the message lists the allowed ones).
    """
    head, _, rest = attribute.partition(".")
    if attribute == "score":
        return "number"
    if head == "transaction" and rest in _TX_ATTRIBUTES:
        return _TX_ATTRIBUTES[rest]
    if head == "features" and rest in feature_names:
        return "number"
    raise RuleSetError(
        f"unknown attribute {attribute!r}: expected 'score', transaction.<"
        f"{'|'.join(_TX_ATTRIBUTES)}> or features.<name> with a name of the model's "
        f"features ({', '.join(feature_names[:3])}, ...)"
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one transaction.

    Attributes
    ----------
    outcome : {"approve", "review", "block"}
    rules_fired : tuple of str
        Ids of the rules that fired, in rule-set order, then ``block:account`` /
        ``block:terminal`` / ``allow:account`` / ``allow:terminal`` for list hits.
    by_score : bool
        The score reached a threshold (it may not be what decided the outcome).
    """

    outcome: str
    rules_fired: tuple[str, ...]
    by_score: bool


def _check_rule(rule: Rule, feature_names: Sequence[str]) -> Callable[[Any], bool]:
    """The rule's predicate on the attribute's value, after checking types."""
    kind = attribute_kind(rule.attribute, feature_names)
    value = rule.value

    def bad(what: str) -> RuleSetError:
        return RuleSetError(f"rule {rule.id!r}: {what}")

    def fits(v: Any) -> bool:
        if kind == "number":
            return isinstance(v, (int, float)) and not isinstance(v, bool)
        return isinstance(v, str)

    if rule.op in ("in", "not_in"):
        if not isinstance(value, list):
            raise bad(f"op {rule.op!r} needs a list value, got {value!r}")
        wrong = [v for v in value if not fits(v)]
        if wrong:
            raise bad(f"{rule.attribute} holds {kind}s; list has {wrong[0]!r}")
        members = frozenset(value)
        return (lambda x: x in members) if rule.op == "in" else (lambda x: x not in members)
    if isinstance(value, list):
        raise bad(f"op {rule.op!r} needs a single value, got a list")
    if not fits(value):
        raise bad(f"{rule.attribute} holds {kind}s; value {value!r} is not one")
    if rule.op in _ORDERING:
        if kind != "number":
            raise bad(f"op {rule.op!r} compares numbers; {rule.attribute} is a string")
        cmp = _ORDERING[rule.op]
    else:
        cmp = _EQUALITY[rule.op]
    return lambda x: cmp(x, value)


def _getter(attribute: str, feature_names: Sequence[str]) -> Callable[..., Any]:
    head, _, rest = attribute.partition(".")
    if attribute == "score":
        return lambda tx, feats, score: score
    if head == "transaction":
        if rest == "amount":
            return lambda tx, feats, score: tx.amount_minor / 100.0
        return lambda tx, feats, score: getattr(tx, rest)
    return lambda tx, feats, score: feats[rest]


class CompiledRuleSet:
    """A validated rule set, ready to evaluate many transactions.

    Build it with :func:`parse_rule_set` or :func:`load_rule_set`.

    Parameters
    ----------
    rule_set : RuleSet
    feature_names : sequence of str, default=FEATURE_NAMES
        Names a ``features.<name>`` attribute may use.
    score_outcome : {"review", "block"}, default="review"
        Outcome of a score at or above the threshold (``SCORE_OUTCOME``).

    Raises
    ------
    RuleSetError
        A rule does not fit its attribute, or two rules share an id.
    """

    def __init__(
        self,
        rule_set: RuleSet,
        feature_names: Sequence[str] = FEATURE_NAMES,
        score_outcome: str = "review",
    ) -> None:
        where = f"rule set {rule_set.id} v{rule_set.version}"
        if score_outcome not in ("review", "block"):
            raise RuleSetError(f"score_outcome: expected review or block, got {score_outcome!r}")
        ids = [r.id for r in rule_set.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise RuleSetError(f"{where}: duplicate rule ids {dupes}")
        reserved = [i for i in ids if i.startswith(("allow:", "block:"))]
        if reserved:
            raise RuleSetError(f"{where}: rule ids {reserved} use a reserved prefix allow:/block:")
        rt, bt = rule_set.review_threshold, rule_set.block_threshold
        if rt is not None and bt is not None and bt < rt:
            raise RuleSetError(f"{where}: block_threshold {bt} is below review_threshold {rt}")
        compiled = []
        for rule in rule_set.rules:
            try:
                pred = _check_rule(rule, feature_names)
            except RuleSetError as exc:
                raise RuleSetError(f"{where}: {exc}") from None
            if rule.enabled:
                compiled.append((rule.id, rule.outcome, _getter(rule.attribute, feature_names), pred))
        self.rule_set = rule_set
        self.score_outcome = score_outcome
        self._compiled = compiled
        self._allow_accounts = frozenset(rule_set.allow.accounts)
        self._allow_terminals = frozenset(rule_set.allow.terminals)
        self._block_accounts = frozenset(rule_set.block.accounts)
        self._block_terminals = frozenset(rule_set.block.terminals)
        #: no rule, list or block threshold: the score alone decides (the usual case)
        self._score_only = not (compiled or self._allow_accounts or self._allow_terminals
                                or self._block_accounts or self._block_terminals
                                or bt is not None)
        self._by_score = (Decision("approve", (), False), Decision(score_outcome, (), True))

    @property
    def uses_features(self) -> bool:
        """True when an enabled rule may read the features (else :meth:`evaluate`
        ignores its ``features`` argument)."""
        return bool(self._compiled)

    @property
    def label(self) -> str:
        """``<id>@<version>``."""
        return self.rule_set.label

    def evaluate(
        self,
        tx: Transaction,
        features: Mapping[str, float],
        score: float,
        threshold: float,
    ) -> Decision:
        """The outcome of one scored transaction.

        Parameters
        ----------
        tx : Transaction
        features : mapping of str to float
            Feature name -> value (the ``features`` of the scored record).
        score : float
            In [0, 1], higher is more likely fraud.
        threshold : float
            The model's alert threshold, in [0, 1]; the rule set's
            ``review_threshold`` replaces it when set.

        Returns
        -------
        Decision
        """
        rs = self.rule_set
        if self._score_only:
            review_at = rs.review_threshold if rs.review_threshold is not None else threshold
            return self._by_score[score >= review_at]
        allowed = [
            name for name, hit in (
                (ALLOW_ACCOUNT, tx.account_id in self._allow_accounts),
                (ALLOW_TERMINAL, tx.terminal_id in self._allow_terminals),
            ) if hit
        ]
        review_at = rs.review_threshold if rs.review_threshold is not None else threshold
        by_score = score >= review_at
        if allowed:
            return Decision("approve", tuple(allowed), by_score)
        fired: list[str] = []
        outcomes: list[str] = [self.score_outcome] if by_score else []
        if rs.block_threshold is not None and score >= rs.block_threshold:
            outcomes.append("block")
            by_score = True
        for rule_id, outcome, get, pred in self._compiled:
            try:
                hit = pred(get(tx, features, score))
            except (KeyError, TypeError):  # a feature absent from this row: rule silent
                hit = False
            if hit:
                fired.append(rule_id)
                outcomes.append(outcome)
        for name, hit in (
            (BLOCK_ACCOUNT, tx.account_id in self._block_accounts),
            (BLOCK_TERMINAL, tx.terminal_id in self._block_terminals),
        ):
            if hit:
                fired.append(name)
                outcomes.append("block")
        return Decision(strongest(outcomes), tuple(fired), by_score)

    def evaluate_many(
        self,
        txs: Sequence[Transaction],
        features: Sequence[Mapping[str, float]],
        scores: Sequence[float],
        threshold: float,
    ) -> list[Decision]:
        """:meth:`evaluate` for a batch; all sequences of length ``n_samples``."""
        if not len(txs) == len(features) == len(scores):
            raise ValueError(
                f"txs, features, scores: expected equal lengths, got {len(txs)}, "
                f"{len(features)}, {len(scores)}"
            )
        return [self.evaluate(t, f, float(s), threshold) for t, f, s in zip(txs, features, scores)]


def parse_rule_set(
    data: Mapping[str, Any] | str | bytes,
    feature_names: Sequence[str] = FEATURE_NAMES,
    score_outcome: str = "review",
) -> CompiledRuleSet:
    """Validate a rule set (a mapping, or its JSON text) and compile it.

    Raises
    ------
    RuleSetError
        Not JSON, a missing or unknown field, or a rule that does not fit its
        attribute; the message names the rule set, the rule and the field.
    """
    try:
        rs = (
            RuleSet.model_validate_json(data)
            if isinstance(data, (str, bytes))
            else RuleSet.model_validate(data)
        )
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        name = data.get("id", "?") if isinstance(data, Mapping) else "?"
        rules = data.get("rules") if isinstance(data, Mapping) else None
        if (
            len(err["loc"]) > 1 and err["loc"][0] == "rules" and isinstance(rules, list)
            and isinstance(err["loc"][1], int) and err["loc"][1] < len(rules)
            and isinstance(rules[err["loc"][1]], Mapping)
        ):
            loc += f" (rule {rules[err['loc'][1]].get('id', '?')!r})"
        raise RuleSetError(
            f"rule set {name}: {loc}: {err['msg']} (got {str(err.get('input'))[:80]!r})"
        ) from None
    return CompiledRuleSet(rs, feature_names, score_outcome)


def load_rule_set(
    path: str | Path,
    feature_names: Sequence[str] = FEATURE_NAMES,
    score_outcome: str = "review",
) -> CompiledRuleSet:
    """:func:`parse_rule_set` of a ``.json`` or ``.yaml``/``.yml`` file.

    Raises
    ------
    RuleSetError
        Unreadable file, bad JSON/YAML, or an invalid rule set.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleSetError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise RuleSetError(f"{path}: YAML needs pyyaml; use JSON") from None
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001  (json or yaml syntax error)
        raise RuleSetError(f"{path}: not valid {path.suffix[1:] or 'JSON'} ({exc})"[:300]) from None
    if not isinstance(data, Mapping):
        raise RuleSetError(f"{path}: expected an object at the top, got {type(data).__name__}")
    return parse_rule_set(data, feature_names, score_outcome)


#: The rule set of a worker that has received none: the model's threshold only.
EMPTY_RULE_SET = RuleSet(id="none", version=0, description="no rules: score threshold only")
