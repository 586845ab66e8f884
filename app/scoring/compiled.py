"""The compiled model runtime: a fitted estimator in ONNX Runtime, scores and reasons
from one call.

A model is compiled when it is registered (:func:`app.scoring.registry.save_model`,
``fraudctl models promote`` and ``fraudctl models compile``): skl2onnx converts the
fitted estimator to an ONNX graph that ONNX Runtime runs on one thread. The graph is
built here around the converted estimator so that one ``run`` returns both

- ``scores``: the fraud score of every row of the batch, float32 in [0, 1] (higher
  means more likely fraud), and
- the occlusion scores of the rows whose score reaches the explanation threshold: for
  each such row ``x`` and each feature ``j``, the score of ``x`` with ``x_j`` set to its
  training median (the model card's ``baseline``). These occluded rows are appended to
  the batch inside the graph and go through the same estimator node.

So a batch pays one call whatever its alerts; the reasons are those of
:meth:`app.scoring.model.Scorer.explain_many` (``score(x) - score(x with x_j :=
median_j)``), computed by the runtime that scores.

Before a compiled form serves, :func:`check_compiled` compares it with scikit-learn's
``predict_proba`` on the model's own validation rows (stored beside it): the largest
score difference must be at most :data:`MAX_SCORE_DIFFERENCE` and the decisions at the
card's threshold identical, otherwise :class:`~app.exceptions.CompiledRuntimeError`
refuses the version.

Nothing here imports Faust, Kafka or Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..exceptions import CompiledRuntimeError

__all__ = [
    "ENGINE",
    "MAX_SCORE_DIFFERENCE",
    "CheckResult",
    "CompiledModel",
    "check_compiled",
    "choose_check_rows",
    "compile_estimator",
    "engine_version",
]

#: The engine that runs compiled forms.
ENGINE = "onnxruntime"
#: Largest |compiled - scikit-learn| score accepted on the validation rows.
MAX_SCORE_DIFFERENCE = 1e-6
_OPSET = {"": 17, "ai.onnx.ml": 3}
_LOCAL = "fraud.runtime"
#: Occluded rows of at most this many alerting rows are compared by the check.
_CHECK_EXPLAINED_ROWS = 20


def engine_version() -> str:
    """The installed ONNX Runtime's version (e.g. ``"1.32.0"``)."""
    import onnxruntime

    return onnxruntime.__version__


def converter_version() -> str:
    """``"skl2onnx <version>"``: what compiles the estimators."""
    from importlib.metadata import version

    return f"skl2onnx {version('skl2onnx')}"


def _fraud_column(estimator: Any) -> int:
    classes = [int(c) for c in getattr(estimator, "classes_", [])]
    if sorted(classes) != [0, 1]:
        raise CompiledRuntimeError(f"expected classes [0, 1], got {classes}")
    return classes.index(1)


def compile_estimator(estimator: Any, baseline: Sequence[float]) -> bytes:
    """The ONNX graph of a fitted classifier with in-graph occlusion (see the module doc).

    Parameters
    ----------
    estimator : object
        A fitted scikit-learn binary classifier that skl2onnx converts (forests,
        gradient boosting, logistic regression, ...).
    baseline : sequence of float of length n_features
        Training medians, the occlusion reference values.

    Returns
    -------
    bytes
        A serialized ONNX model. Inputs ``X`` (float64, shape (n_samples, n_features))
        and ``explain_at`` (float32, shape (1,)); outputs ``scores`` (float32, shape
        (n_samples,)), ``explained`` (int64, shape (k,): rows with a score at or above
        ``explain_at``) and ``occluded_scores`` (float32, shape (k * n_features,): row
        ``i * n_features + j`` is explained row ``i`` with feature ``j`` at its baseline).

    Raises
    ------
    CompiledRuntimeError
        skl2onnx cannot convert this estimator (the message names it), or the classes
        are not ``{0, 1}``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType

    base = np.asarray(baseline, dtype=np.float64).reshape(-1)
    f = int(getattr(estimator, "n_features_in_", len(base)))
    if len(base) != f:
        raise CompiledRuntimeError(f"baseline: expected {f} values, got {len(base)}")
    column = _fraud_column(estimator)
    try:
        converted = to_onnx(
            estimator,
            initial_types=[("X", DoubleTensorType([None, f]))],
            options={id(estimator): {"zipmap": False}},
            target_opset=_OPSET,
        )
    except Exception as exc:  # noqa: BLE001  (skl2onnx raises many kinds)
        raise CompiledRuntimeError(
            f"skl2onnx cannot compile {type(estimator).__name__}: {exc}"[:300]
        ) from None
    _exact_thresholds(converted, estimator)
    g = converted.graph
    proba = [o.name for o in g.output if "prob" in o.name]
    if len(proba) != 1:
        raise CompiledRuntimeError(f"compiled graph: no single probability output in "
                                   f"{[o.name for o in g.output]}")
    # The converted graph becomes a local function ``forest(X) -> probabilities``, called
    # on the batch and on its occluded rows: one copy of the trees in the file.
    fn = helper.make_function(
        _LOCAL, "forest", inputs=[g.input[0].name], outputs=[proba[0]],
        nodes=list(g.node), opset_imports=list(converted.opset_import),
    )
    for init in g.initializer:  # a function holds no initializers: make them constants
        fn.node.insert(0, helper.make_node("Constant", [], [init.name], value=init))
    consts = [
        numpy_helper.from_array(np.array([column], dtype=np.int64), "fraud_column"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "flat"),
        numpy_helper.from_array(np.array([-1, f], dtype=np.int64), "rows_of_f"),
        numpy_helper.from_array(np.array([1, f, 1], dtype=np.int64), "f_copies"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.eye(f, dtype=bool), "diagonal"),
        numpy_helper.from_array(base.reshape(1, f), "baseline"),
    ]
    nodes = [
        helper.make_node("forest", ["X"], ["proba"], domain=_LOCAL),
        helper.make_node("Gather", ["proba", "fraud_column"], ["scores_col"], axis=1),
        helper.make_node("Reshape", ["scores_col", "flat"], ["scores"]),
        helper.make_node("GreaterOrEqual", ["scores", "explain_at"], ["alerting"]),
        helper.make_node("NonZero", ["alerting"], ["nz"]),
        helper.make_node("Reshape", ["nz", "flat"], ["explained"]),
        helper.make_node("Gather", ["X", "explained"], ["X_explained"], axis=0),
        helper.make_node("Unsqueeze", ["X_explained", "axis1"], ["X_k1f"]),
        helper.make_node("Tile", ["X_k1f", "f_copies"], ["X_kff"]),
        helper.make_node("Where", ["diagonal", "baseline", "X_kff"], ["occluded_kff"]),
        helper.make_node("Reshape", ["occluded_kff", "rows_of_f"], ["occluded"]),
        helper.make_node("forest", ["occluded"], ["occluded_proba"], domain=_LOCAL),
        helper.make_node("Gather", ["occluded_proba", "fraud_column"], ["occluded_col"], axis=1),
        helper.make_node("Reshape", ["occluded_col", "flat"], ["occluded_scores"]),
    ]
    graph = helper.make_graph(
        nodes, "fraud_scores_and_reasons",
        inputs=[helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, f]),
                helper.make_tensor_value_info("explain_at", TensorProto.FLOAT, [1])],
        outputs=[helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None]),
                 helper.make_tensor_value_info("explained", TensorProto.INT64, [None]),
                 helper.make_tensor_value_info("occluded_scores", TensorProto.FLOAT, [None])],
        initializer=consts,
    )
    model = helper.make_model(
        graph, functions=[fn],
        opset_imports=[*converted.opset_import, helper.make_opsetid(_LOCAL, 1)],
        producer_name="fraud-stream", producer_version=converter_version(),
    )
    model.ir_version = converted.ir_version
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _trees(estimator: Any) -> list[Any] | None:
    """The scikit-learn trees of a forest or a tree, in skl2onnx's order; else None."""
    if hasattr(estimator, "tree_"):
        return [estimator.tree_]
    members = getattr(estimator, "estimators_", None)
    if isinstance(members, list) and members and all(hasattr(m, "tree_") for m in members):
        return [m.tree_ for m in members]
    return None


def _exact_thresholds(model: Any, estimator: Any) -> None:
    """Make a converted tree ensemble decide as scikit-learn does, bit for bit.

    scikit-learn compares ``float32(x) <= threshold`` with a float64 threshold; skl2onnx
    stores float32 thresholds, so a value between the two roundings goes the other way
    (on the handbook data this moved scores by 1e-2). Here the thresholds become the
    trees' float64 ones (``nodes_values_as_tensor``, ai.onnx.ml opset 3) and the input
    is rounded to float32 and back first, as scikit-learn does. Estimators other than
    forests and trees are left as converted (the check decides).
    """
    from onnx import TensorProto, helper, numpy_helper

    trees = _trees(estimator)
    nodes = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    if trees is None or len(nodes) != 1:
        return
    node = nodes[0]
    attrs = {a.name: a for a in node.attribute}
    if "nodes_values" not in attrs:
        return
    tids, nids = list(attrs["nodes_treeids"].ints), list(attrs["nodes_nodeids"].ints)
    modes = list(attrs["nodes_modes"].strings)
    old = np.asarray(attrs["nodes_values"].floats, dtype=np.float64)
    exact = np.array([trees[t].threshold[n] if m != b"LEAF" else 0.0
                      for t, n, m in zip(tids, nids, modes)])
    if not np.allclose(exact, old, rtol=1e-6, atol=1e-6):
        raise CompiledRuntimeError("compiled trees: node thresholds do not map onto "
                                   "scikit-learn's")
    kept = [a for a in node.attribute if a.name != "nodes_values"]
    del node.attribute[:]
    node.attribute.extend(kept)
    node.attribute.append(helper.make_attribute(
        "nodes_values_as_tensor", numpy_helper.from_array(exact.astype(np.float64))))
    source = node.input[0]
    node.input[0] = f"{source}_as_float32_in_float64"
    at = list(model.graph.node).index(node)
    model.graph.node.insert(at, helper.make_node(
        "Cast", [f"{source}_as_float32"], [node.input[0]], to=TensorProto.DOUBLE))
    model.graph.node.insert(at, helper.make_node(
        "Cast", [source], [f"{source}_as_float32"], to=TensorProto.FLOAT))
    for opset in model.opset_import:
        if opset.domain == "ai.onnx.ml" and opset.version < 3:
            opset.version = 3


def _below_or_at(threshold: float) -> np.ndarray:
    """The largest float32 not above ``threshold`` (the graph compares in float32)."""
    t = np.float32(threshold)
    if float(t) > threshold:
        t = np.nextafter(t, np.float32(-np.inf))
    return np.array([t], dtype=np.float32)


class CompiledModel:
    """A compiled form loaded in ONNX Runtime (one thread).

    Parameters
    ----------
    onnx_bytes : bytes
        From :func:`compile_estimator`.
    n_features : int

    Raises
    ------
    CompiledRuntimeError
        ONNX Runtime cannot load the bytes, or their inputs are not those of
        :func:`compile_estimator`.
    """

    def __init__(self, onnx_bytes: bytes, n_features: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                onnx_bytes, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001  (ONNX Runtime raises its own types)
            raise CompiledRuntimeError(f"ONNX Runtime cannot load the compiled form: {exc}"[:300])
        names = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        if names != ["X", "explain_at"] or outputs != ["scores", "explained", "occluded_scores"]:
            raise CompiledRuntimeError(
                f"compiled form: inputs {names} and outputs {outputs} are not those of "
                "compile_estimator"
            )
        self.n_features = n_features
        self.engine = f"{ENGINE} {engine_version()}"
        self._never = np.array([np.inf], dtype=np.float32)

    def score_many(self, X: np.ndarray) -> np.ndarray:
        """Fraud scores, shape (n_samples,), float64 of float32 values, in [0, 1]."""
        scores, _, _ = self._session.run(None, {"X": X, "explain_at": self._never})
        return scores.astype(np.float64)

    def score_and_occlude(
        self, X: np.ndarray, explain_at: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scores and the occlusion scores of the rows at or above ``explain_at``, in one call.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features), float64
        explain_at : float
            Rows with a score at or above it are explained; ``inf``: none.

        Returns
        -------
        scores : ndarray of shape (n_samples,)
        explained : ndarray of shape (k,), int64
            Row indices, increasing.
        occluded : ndarray of shape (k, n_features)
            ``occluded[i, j]``: the score of row ``explained[i]`` with feature ``j`` at
            its baseline.
        """
        at = self._never if not np.isfinite(explain_at) else _below_or_at(explain_at)
        scores, explained, occ = self._session.run(None, {"X": X, "explain_at": at})
        return (scores.astype(np.float64), explained,
                occ.astype(np.float64).reshape(len(explained), self.n_features))


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check_compiled` measured.

    Attributes
    ----------
    rows : int
        Validation rows compared (plus their occluded rows for up to 20 alerting ones).
    max_score_difference : float
        Largest |compiled - scikit-learn| score.
    decisions_identical : bool
        Always True when returned (a difference raises).
    """

    rows: int
    max_score_difference: float
    decisions_identical: bool


def _sklearn_scores(estimator: Any, X: np.ndarray) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    if len(X) == 0:
        return np.empty(0)
    with threadpool_limits(1, user_api="openmp"):
        return estimator.predict_proba(X)[:, _fraud_column(estimator)].astype(np.float64)


def check_compiled(
    estimator: Any,
    compiled: CompiledModel,
    rows: np.ndarray,
    threshold: float,
    baseline: Sequence[float],
    version: str = "",
) -> CheckResult:
    """Compare a compiled form with scikit-learn on the model's validation rows.

    The rows' scores, and the occluded rows of up to 20 rows at or above ``threshold``,
    are computed by both; the largest score difference must be at most
    :data:`MAX_SCORE_DIFFERENCE` and ``score >= threshold`` must hold for the same rows.

    Parameters
    ----------
    estimator : object
        The fitted scikit-learn classifier (the pickle's).
    compiled : CompiledModel
    rows : ndarray of shape (n_rows, n_features)
        The model's validation rows (``validation_rows.npy`` beside it).
    threshold : float
        The card's alert threshold, in [0, 1].
    baseline : sequence of float
        The card's training medians.
    version : str, default=""
        For the error message.

    Returns
    -------
    CheckResult

    Raises
    ------
    CompiledRuntimeError
        No rows, a score difference above the limit, or a decision that differs; the
        message gives the worst row's two scores.
    """
    X = np.ascontiguousarray(rows, dtype=np.float64)
    who = f"model {version}: " if version else ""
    if X.ndim != 2 or len(X) == 0 or X.shape[1] != compiled.n_features:
        raise CompiledRuntimeError(f"{who}no validation rows of {compiled.n_features} "
                                   f"features to check the compiled form on (got {X.shape})")
    ref = _sklearn_scores(estimator, X)
    got, explained, occ = compiled.score_and_occlude(X, threshold)
    worst = int(np.argmax(np.abs(got - ref)))
    diff = float(abs(got[worst] - ref[worst]))
    flipped = np.flatnonzero((got >= threshold) != (ref >= threshold))
    if diff > MAX_SCORE_DIFFERENCE or len(flipped):
        raise CompiledRuntimeError(
            f"{who}the compiled form ({compiled.engine}) disagrees with scikit-learn on "
            f"its validation rows: largest score difference {diff:.3g} (row {worst}: "
            f"{got[worst]:.7f} vs {ref[worst]:.7f}; limit {MAX_SCORE_DIFFERENCE:g}), "
            f"{len(flipped)} of {len(X)} decisions at threshold {threshold:g} differ; "
            "the version is refused (recompile it: fraudctl models compile)"
        )
    expected = np.flatnonzero(ref >= float(_below_or_at(threshold)[0]))
    if not np.array_equal(explained, expected):
        raise CompiledRuntimeError(f"{who}the compiled form explains rows "
                                   f"{explained[:5].tolist()}..., expected "
                                   f"{expected[:5].tolist()}...")
    n = min(len(explained), _CHECK_EXPLAINED_ROWS)
    checked = len(X)
    if n:
        f = compiled.n_features
        base = np.asarray(baseline, dtype=np.float64)
        occluded = np.repeat(X[explained[:n]], f, axis=0)
        cols = np.tile(np.arange(f), n)
        occluded[np.arange(n * f), cols] = base[cols]
        ref_occ = _sklearn_scores(estimator, occluded)
        d = float(np.max(np.abs(occ[:n].reshape(-1) - ref_occ)))
        if d > MAX_SCORE_DIFFERENCE:
            raise CompiledRuntimeError(
                f"{who}the compiled form's occluded scores differ from scikit-learn's by "
                f"{d:.3g} (limit {MAX_SCORE_DIFFERENCE:g}); the version is refused"
            )
        diff = max(diff, d)
        checked += n * f
    return CheckResult(rows=checked, max_score_difference=diff, decisions_identical=True)


def choose_check_rows(
    X: np.ndarray, scores: np.ndarray, threshold: float, n_random: int = 2000,
    n_top: int = 1000, seed: int = 0,
) -> np.ndarray:
    """The validation rows stored beside a model for :func:`check_compiled`.

    The ``n_top`` highest-scored rows of its test window (those that alert and those
    nearest the threshold, where a decision can flip) and ``n_random`` others drawn
    uniformly, in their original order.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        The model's test-window feature rows.
    scores : ndarray of shape (n_samples,)
        scikit-learn's scores of ``X``.
    threshold : float
        The card's alert threshold (rows nearest it are kept).
    n_random, n_top : int
    seed : int, default=0

    Returns
    -------
    ndarray of shape (at most n_top + n_random, n_features), float64
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    near = np.argsort(np.abs(np.asarray(scores) - threshold), kind="stable")[: n_top // 2]
    top = np.argsort(-np.asarray(scores), kind="stable")[: n_top - len(near)]
    rng = np.random.default_rng(seed)
    rest = np.setdiff1d(np.arange(n), np.concatenate([near, top]))
    pick = rng.choice(rest, size=min(n_random, len(rest)), replace=False)
    return X[np.unique(np.concatenate([near, top, pick]).astype(np.int64))]
