"""What a worker serves right now: active and shadow models and the rule set.

:class:`Controller` holds them and applies control messages (:class:`ModelControl` from
``fraud-control``, :class:`RuleSet` from ``fraud-rules``). A scoring batch calls
:meth:`Controller.snapshot` once, at its start, and uses only that immutable
:class:`Snapshot` until its end: a switch therefore happens between two batches, never
inside one, and every record of a batch names the model and rule set that decided it.

A message whose models cannot be loaded (unknown version, artifact whose sha256 or
feature names differ from its card) is refused as a whole, with the error in the
:class:`ApplyResult`; the models served do not change. A rule set that does not
validate is refused the same way, and so is one whose version is not newer than the
served one of the same id (a replayed or reordered message).

Nothing here imports Faust, Kafka or Redis: the listener that feeds messages in lives
in :mod:`app.stream.control`. :meth:`Controller.apply` may load models (seconds): call it off
the event loop (``await asyncio.to_thread(controller.apply, message)``); it is
thread-safe.

Examples
--------
>>> class Fake:
...     def __init__(self, version): self.version, self.alert_threshold = version, 0.5
>>> ctl = Controller(Fake("v1"), loader=Fake)
>>> snap = ctl.snapshot()
>>> r = ctl.apply(ModelControl(action="promote", active_version="v2", issued_time_ms=0))
>>> r.applied, snap.active.version, ctl.snapshot().active.version
(True, 'v1', 'v2')
"""

from __future__ import annotations

import threading
from types import MappingProxyType
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np
import orjson
from pydantic import ValidationError

from ..events import ModelControl, Reason, RuleSet
from ..exceptions import ControlMessageError, FraudError, RuleSetError
from ..features import FEATURE_NAMES
from .rules import EMPTY_RULE_SET, CompiledRuleSet, Decision, parse_rule_set
from .cold_start import ColdStartRule

__all__ = [
    "ScorerLike",
    "Snapshot",
    "ApplyResult",
    "Controller",
    "BatchDecisions",
    "decode_control",
    "decode_rule_set",
]


class ScorerLike(Protocol):
    """What the controller needs of a model (see :class:`app.scoring.model.Scorer`)."""

    version: str
    alert_threshold: float

    def score_many(self, X: np.ndarray) -> np.ndarray: ...

    def explain_many(
        self, X: np.ndarray, top_k: int = 3, scores: np.ndarray | None = None
    ) -> list[list[Reason]]: ...


@dataclass(frozen=True)
class BatchDecisions:
    """Scores, shadow scores, decisions and reasons of one batch (see :meth:`Snapshot.decide`).

    Attributes
    ----------
    scores : ndarray of shape (n_samples,)
        The active model's, in [0, 1].
    shadow_scores : dict of str to ndarray of shape (n_samples,)
        Shadow version -> its scores of the same rows.
    decisions : list of Decision
        One per row.
    alert_rows : list of int
        Rows whose outcome is in ``alert_outcomes``, increasing.
    reasons : list of list of Reason
        The active model's top reasons, one list per ``alert_rows`` entry.
    model_version, rule_set_version : str
    threshold : float
        The review threshold used (rule set's, else the snapshot's).
    """

    scores: np.ndarray
    shadow_scores: dict[str, np.ndarray]
    decisions: list[Decision]
    alert_rows: list[int]
    reasons: list[list[Reason]]
    model_version: str
    rule_set_version: str
    threshold: float


#: the features a rule set that reads none is given
_NO_FEATURES: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True)
class Snapshot:
    """What one batch is scored and decided with. Immutable.

    Attributes
    ----------
    active : ScorerLike
        Scores, decides, explains and names ``model_version``.
    shadows : tuple of ScorerLike
        Score the same rows; their scores go to ``scored-transactions`` and metrics only.
    rules : CompiledRuleSet
    threshold : float
        Alert threshold of the active model: ``ALERT_THRESHOLD`` if set, else its card's.
    cold_start : ColdStartRule
        A higher threshold for accounts with little history (default: off).
    alerts_from_ms : int, optional
        UTC epoch ms: a transaction with an earlier event time never alerts (history
        loaded by ``fraudctl backfill``); None: every one may.
    """

    active: Any
    shadows: tuple[Any, ...]
    rules: CompiledRuleSet
    threshold: float
    cold_start: ColdStartRule = ColdStartRule()
    alerts_from_ms: int | None = None

    @property
    def model_version(self) -> str:
        """The active model's version."""
        return self.active.version

    @classmethod
    def of(cls, scorer: Any, threshold: float, rules: CompiledRuleSet | None = None) -> "Snapshot":
        """A fixed snapshot of one model (no shadows; no rules unless given): what a
        test or a benchmark that has no :class:`Controller` passes to the pipeline."""
        return cls(scorer, (), rules or CompiledRuleSet(EMPTY_RULE_SET), float(threshold))

    def decide(
        self,
        transactions: Sequence[Any],
        X: np.ndarray,
        feature_names: Sequence[str] = FEATURE_NAMES,
        top_reasons: int = 3,
        alert_outcomes: Sequence[str] = ("review", "block"),
    ) -> BatchDecisions:
        """Score a batch with the active and shadow models and decide each row.

        Parameters
        ----------
        transactions : sequence of Transaction
            Length ``n_samples``, aligned with ``X``.
        X : ndarray of shape (n_samples, n_features)
            Columns in ``feature_names`` order.
        feature_names : sequence of str, default=FEATURE_NAMES
        top_reasons : int, default=3
            Reasons per alert row. A scorer with ``score_and_explain`` (the compiled
            runtime) gives the scores and the reasons of the rows at or above the review
            threshold in one call; rows a rule alerts below it are explained by one more
            ``explain_many`` call, on those rows only.
        alert_outcomes : sequence of str, default=("review", "block")
            Outcomes that alert (``ALERT_OUTCOMES``).

        Returns
        -------
        BatchDecisions

        Raises
        ------
        ValueError
            ``X`` and ``transactions`` differ in length, or ``X`` has the wrong width.
        """
        X = np.asarray(X, dtype=np.float64)
        if len(X) != len(transactions):
            raise ValueError(f"X has {len(X)} rows for {len(transactions)} transactions")
        rt = self.rules.rule_set.review_threshold
        review_at = rt if rt is not None else self.threshold
        explained: dict[int, list[Reason]] = {}
        if hasattr(self.active, "score_and_explain"):
            # one runtime call: scores, and reasons of the rows the score makes alert
            scores, explained = self.active.score_and_explain(X, review_at, top_reasons)
        else:
            scores = self.active.score_many(X)
        shadow = {s.version: s.score_many(X) for s in self.shadows if s.version != self.active.version}
        names = list(feature_names)
        thresholds = self.cold_start.thresholds_many(X, names, self.threshold).tolist()
        evaluate = self.rules.evaluate
        if self.rules.uses_features:
            rows = X.tolist()
            decisions = [
                evaluate(tx, dict(zip(names, row)), sc, th)
                for tx, row, sc, th in zip(transactions, rows, scores.tolist(), thresholds)
            ]
        else:  # no rule reads a feature: no mapping per row
            decisions = [
                evaluate(tx, _NO_FEATURES, sc, th)
                for tx, sc, th in zip(transactions, scores.tolist(), thresholds)
            ]
        since = self.alerts_from_ms
        alert_rows = [i for i, d in enumerate(decisions) if d.outcome in alert_outcomes
                      and (since is None or transactions[i].event_time_ms >= since)]
        reasons: list[list[Reason]] = []
        if alert_rows and top_reasons:
            # rows a rule alerts below the score threshold: a second call, for those only
            missing = [i for i in alert_rows if i not in explained]
            if missing:
                idx = np.asarray(missing)
                more = self.active.explain_many(X[idx], top_reasons, scores=scores[idx])
                explained = {**explained, **dict(zip(missing, more))}
            reasons = [explained[i] for i in alert_rows]
        elif alert_rows:
            reasons = [[] for _ in alert_rows]
        return BatchDecisions(
            scores=scores,
            shadow_scores=shadow,
            decisions=decisions,
            alert_rows=alert_rows,
            reasons=reasons,
            model_version=self.active.version,
            rule_set_version=self.rules.label,
            threshold=rt if rt is not None else self.threshold,
        )


@dataclass(frozen=True)
class ApplyResult:
    """What :meth:`Controller.apply` did.

    Attributes
    ----------
    kind : {"model", "rules"}
    applied : bool
        False: refused or stale; what is served did not change.
    detail : str
        One line, for logs: what changed, or why not.
    """

    kind: str
    applied: bool
    detail: str


def decode_control(raw: bytes) -> ModelControl:
    """Parse a ``fraud-control`` record value.

    Raises
    ------
    ControlMessageError
        Not JSON, or not a valid :class:`ModelControl`.
    """
    try:
        return ModelControl.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise ControlMessageError(f"control message: {loc}: {err['msg']}") from None


def decode_rule_set(raw: bytes, score_outcome: str = "review",
                    feature_names: Sequence[str] = FEATURE_NAMES) -> CompiledRuleSet:
    """Parse and validate a ``fraud-rules`` record value (see :func:`parse_rule_set`).

    Raises
    ------
    RuleSetError
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RuleSetError(f"rules message is not JSON ({exc})"[:200]) from None
    if not isinstance(data, Mapping):
        raise RuleSetError(f"rules message: expected an object, got {type(data).__name__}")
    return parse_rule_set(data, feature_names, score_outcome)


@dataclass
class _State:
    active: Any
    shadows: tuple[Any, ...]
    rules: CompiledRuleSet
    history: list[str] = field(default_factory=list)


class Controller:
    """Active and shadow models and the rule set of one worker; see the module doc.

    Parameters
    ----------
    active : ScorerLike
        The model served at start.
    loader : callable
        ``version -> ScorerLike``, verifying the artifact (e.g.
        ``lambda v: Scorer.from_registry(models_dir, v)``); raises
        :class:`~app.exceptions.FraudError` (``ModelIntegrityError``) to refuse.
    rules : CompiledRuleSet, optional
        Default: no rules (the threshold only).
    shadows : sequence of ScorerLike, default=()
    threshold : float, optional
        ``ALERT_THRESHOLD``; None: each active model's card's ``alert_threshold``.
    score_outcome : {"review", "block"}, default="review"
        ``SCORE_OUTCOME``, for rule sets decoded by :meth:`apply`.
    feature_names : sequence of str, default=FEATURE_NAMES
    cold_start : ColdStartRule, default=off
        ``COLD_START_MIN_ACCOUNT_TX`` and ``COLD_START_THRESHOLD``.
    alerts_from_ms : int, optional
        ``ALERTS_FROM``: see :class:`Snapshot`.
    """

    def __init__(
        self,
        active: ScorerLike,
        loader: Callable[[str], ScorerLike],
        rules: CompiledRuleSet | None = None,
        shadows: Sequence[ScorerLike] = (),
        threshold: float | None = None,
        score_outcome: str = "review",
        feature_names: Sequence[str] = FEATURE_NAMES,
        cold_start: ColdStartRule = ColdStartRule(),
        alerts_from_ms: int | None = None,
    ) -> None:
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold: expected None or a float in [0, 1], got {threshold!r}")
        self._loader = loader
        self._threshold = threshold
        self._cold_start = cold_start
        self._alerts_from_ms = alerts_from_ms
        self._score_outcome = score_outcome
        self._feature_names = tuple(feature_names)
        self._lock = threading.Lock()
        self._state = _State(
            active, tuple(shadows),
            rules or CompiledRuleSet(EMPTY_RULE_SET, feature_names, score_outcome),
        )
        self._retired: dict[str, Any] = {}
        self.last_error: str | None = None

    #: Models no longer served that stay loaded for a fast rollback.
    KEEP_RETIRED = 2

    # --- reading -------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The models and rules of the next batch (call once at batch start)."""
        with self._lock:
            st = self._state
        threshold = self._threshold if self._threshold is not None else st.active.alert_threshold
        return Snapshot(st.active, st.shadows, st.rules, float(threshold), self._cold_start,
                        self._alerts_from_ms)

    @property
    def versions(self) -> tuple[str, tuple[str, ...], str]:
        """``(active version, shadow versions, rule-set label)``."""
        with self._lock:
            st = self._state
        return st.active.version, tuple(s.version for s in st.shadows), st.rules.label

    # --- changing -------------------------------------------------------------------

    def apply(self, message: ModelControl | RuleSet | CompiledRuleSet) -> ApplyResult:
        """Apply a control message; the next :meth:`snapshot` sees it.

        Parameters
        ----------
        message : ModelControl, RuleSet or CompiledRuleSet

        Returns
        -------
        ApplyResult
            ``applied=False`` with the reason when refused (bad or unloadable model,
            invalid or stale rule set); never raises for those.
        """
        if isinstance(message, ModelControl):
            return self._apply_models(message)
        if isinstance(message, RuleSet):
            try:
                message = CompiledRuleSet(message, self._feature_names, self._score_outcome)
            except RuleSetError as exc:
                return self._refused("rules", str(exc))
        if isinstance(message, CompiledRuleSet):
            return self._apply_rules(message)
        raise TypeError(f"message: expected ModelControl or RuleSet, got {type(message).__name__}")

    def apply_raw(self, kind: str, raw: bytes) -> ApplyResult:
        """:meth:`apply` of a record value of the control (``kind="model"``) or rules
        (``kind="rules"``) topic; an undecodable value is refused, not raised."""
        try:
            if kind == "model":
                return self.apply(decode_control(raw))
            if kind == "rules":
                return self.apply(decode_rule_set(raw, self._score_outcome, self._feature_names))
        except FraudError as exc:
            return self._refused(kind, str(exc))
        raise ValueError(f"kind: expected 'model' or 'rules', got {kind!r}")

    def _refused(self, kind: str, detail: str) -> ApplyResult:
        self.last_error = detail
        return ApplyResult(kind, False, detail)

    def _apply_models(self, msg: ModelControl) -> ApplyResult:
        with self._lock:
            st = self._state
        loaded = {**self._retired, st.active.version: st.active,
                  **{s.version: s for s in st.shadows}}
        wanted = [msg.active_version] + [v for v in msg.shadow_versions if v != msg.active_version]
        try:
            for v in wanted:
                if v not in loaded:
                    loaded[v] = self._loader(v)
        except FraudError as exc:
            return self._refused(
                "model",
                f"{msg.action} to {msg.active_version} refused, still serving "
                f"{st.active.version}: {exc}",
            )
        active = loaded[msg.active_version]
        shadows = tuple(loaded[v] for v in wanted[1:])
        with self._lock:
            before = self._state.active.version
            self._state = _State(active, shadows, self._state.rules,
                                 self._state.history + [msg.active_version])
            # keep the models just left in memory: a rollback then loads nothing
            for v, scorer in loaded.items():
                if v not in wanted:
                    self._retired.pop(v, None)
                    self._retired[v] = scorer
            while len(self._retired) > self.KEEP_RETIRED:
                self._retired.pop(next(iter(self._retired)))
        self.last_error = None
        return ApplyResult(
            "model", True,
            f"{msg.action}: active {before} -> {active.version}, shadows "
            f"{[s.version for s in shadows]}",
        )

    def _apply_rules(self, rules: CompiledRuleSet) -> ApplyResult:
        with self._lock:
            current = self._state.rules.rule_set
            new = rules.rule_set
            if new.id == current.id and new.version <= current.version:
                detail = (f"rule set {new.label} ignored: not newer than the served "
                          f"{current.label}")
                return ApplyResult("rules", False, detail)
            self._state = _State(self._state.active, self._state.shadows, rules,
                                 self._state.history)
        self.last_error = None
        return ApplyResult("rules", True, f"rules {current.label} -> {new.label}")
