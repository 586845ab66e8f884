"""Versioned models on disk: ``<models_dir>/<version>/{model.joblib,card.json}``.

Layout::

    models/
      ACTIVE                        one line: the version served by default
      v20180724-101500-1a2b3c4d/
        model.joblib                the fitted scikit-learn estimator (joblib)
        model.onnx                  its compiled form (ONNX Runtime), see app.scoring.compiled
        validation_rows.npy         test-window rows the compiled form is checked on
        card.json                   its ModelCard: provenance, data, metrics, sha256s,
                                    the runtime that serves it

Version names are ``v<UTC yyyymmdd-HHMMSS of creation>-<first 8 hex of the artifact's
sha256>``: they sort by creation time and name their content. Any name matching
:data:`VERSION_PATTERN` (``v1``, ``v2``) is accepted when loading.

:func:`load_model` checks the artifact's sha256 against the card and the card's
feature names against :data:`app.features.FEATURE_NAMES` *before* unpickling. The same holds
for the compiled form and its validation rows (``runtime`` in the card); loading a
version with a compiled form also checks it against scikit-learn on those rows
(:func:`app.scoring.compiled.check_compiled`) and refuses the version when they disagree.
The hash
catches corruption and accidental edits; it is no defence against someone who can
rewrite both files (a joblib file runs code when loaded: load only your own models).
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import joblib
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..exceptions import ModelError, ModelIntegrityError, ModelVersionError
from ..features import FEATURE_NAMES
from ..monitoring.drift import FeatureReference

__all__ = [
    "ARTIFACT_NAME",
    "CARD_NAME",
    "ACTIVE_NAME",
    "VERSION_PATTERN",
    "CandidateResult",
    "DataInfo",
    "LoadedModel",
    "ModelCard",
    "ModelMetrics",
    "RuntimeInfo",
    "ValidationResult",
    "WindowInfo",
    "activate",
    "check_sklearn_version",
    "compile_version",
    "ensure_compiled",
    "default_version",
    "active_file_version",
    "list_models",
    "load_model",
    "read_card",
    "save_model",
    "set_alert_threshold",
    "verify_model",
]

ARTIFACT_NAME = "model.joblib"
COMPILED_NAME = "model.onnx"
CHECK_ROWS_NAME = "validation_rows.npy"
CARD_NAME = "card.json"
ACTIVE_NAME = "ACTIVE"
#: Accepted version names: a ``v``, then letters, digits, ``.``, ``_`` or ``-``.
VERSION_PATTERN = re.compile(r"^v[0-9A-Za-z][0-9A-Za-z._-]{0,79}$")
_JOBLIB_COMPRESS = 3
_DIR_MODE = 0o755
_FILE_MODE = 0o644


class _Card(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class WindowInfo(_Card):
    """A window of days (both ends inclusive) and what it holds."""

    start: date
    end: date
    transactions: int = Field(ge=0)
    frauds: int = Field(ge=0)
    fraud_cards: int = Field(ge=0, description="Distinct customers with a fraud.")


class DataInfo(_Card):
    """Where the model's data came from and how it was split (handbook chapter 5)."""

    source: str = Field(description="File or folder name of the handbook data.")
    history_start: date = Field(description="First day read, for feature state history.")
    train: WindowInfo
    fit: WindowInfo | None = Field(
        None,
        description="Days the model was fitted on, when not the train window (a longer "
        "window ending on the same day); None: the train window.",
    )
    gap_days: int = Field(ge=0, description="Days between train and test (feedback delay).")
    test: WindowInfo = Field(
        description="Counts after dropping the cards known compromised on each test day."
    )
    test_removed_known_compromised: int = Field(
        ge=0, description="Test-window transactions dropped: card known compromised."
    )


class ModelMetrics(_Card):
    """Metrics on the test window (handbook chapter 4); higher is better for each."""

    roc_auc: float | None = Field(description="None when the test window has one class.")
    average_precision: float | None
    card_precision_at_100: float | None = Field(
        description="Mean daily card precision@100, detected cards removed."
    )
    card_precision_daily: list[float]
    fraud_cards_daily: list[int] = Field(
        description="Compromised cards left to find per day (bounds card precision)."
    )
    threshold_precision: float | None = Field(
        description="Transaction precision at the recommended alert threshold."
    )
    threshold_recall: float | None
    threshold_alerts_per_day: float = Field(description="Alerted transactions per test day.")
    known_compromised_rule: str = Field(
        "handbook-daily",
        description="Which cards were dropped from the test window as known compromised "
        "(see app.scoring.evaluate.KnownCompromised); cards older than this field used "
        "the handbook's daily rule.",
    )
    test_transactions: int | None = Field(None, description="Test rows kept by the rule.")
    test_frauds: int | None = None
    test_removed_known_compromised: int | None = Field(
        None, description="Test-window rows dropped by the rule."
    )
    perfect_card_precision_at_100: float | None = Field(
        None, description="Card precision@100 of a perfect ranking of the same rows."
    )
    oracle_card_precision_at_100: float | None = Field(
        None,
        description="Card precision@100 of an oracle that ranks exactly the frauds the "
        "features can see first (app.scoring.evaluate.detectable_frauds): a ceiling.",
    )
    oracle_roc_auc: float | None = Field(None, description="ROC AUC of the same oracle.")
    oracle_average_precision: float | None = Field(
        None, description="Average precision of the same oracle."
    )


class CandidateResult(_Card):
    """One model family tried on the same split, for the card's justification."""

    name: str
    roc_auc: float | None
    average_precision: float | None
    card_precision_at_100: float | None
    fit_seconds: float
    artifact_bytes: int


class ValidationResult(_Card):
    """Prequential validation of one candidate (handbook chapter 5): mean and std over
    folds of each metric, on windows before the model's test window."""

    name: str
    folds: list[tuple[date, date]] = Field(description="Train window of each fold.")
    fit_days: int | None = Field(
        None, description="Days fitted, ending on each fold's last train day; None: its "
        "train window."
    )
    known_compromised_rule: str
    roc_auc_mean: float | None
    roc_auc_std: float | None
    average_precision_mean: float | None
    average_precision_std: float | None
    card_precision_at_100_mean: float | None
    card_precision_at_100_std: float | None
    fit_seconds: float = Field(description="Mean fit time of a fold.")
    selected: bool = False


class RuntimeInfo(_Card):
    """Which runtime serves a version, and how its compiled form was checked."""

    engine: str = Field(description="'onnxruntime' (the compiled form) or 'scikit-learn' "
                        "(the pickle's predict_proba).")
    engine_version: str
    artifact: str | None = Field(None, description="The compiled form's file name.")
    artifact_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    artifact_bytes: int | None = Field(None, ge=0)
    converter: str | None = Field(None, description="What compiled it (skl2onnx version).")
    check_rows: str | None = Field(None, description="File of the validation rows it is "
                                   "checked on (float64 .npy).")
    check_rows_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    rows_checked: int | None = Field(None, ge=0, description="Rows compared with "
                                     "scikit-learn (occluded rows included).")
    max_score_difference: float | None = Field(
        None, ge=0.0, description="Largest |compiled - scikit-learn| score on those rows.")
    decisions_identical: bool | None = Field(
        None, description="Same decisions at the card's alert threshold.")
    note: str = Field("", description="Why scikit-learn serves, when it does.")


class ModelCard(_Card):
    """Everything known about one model version; stored as ``card.json``."""

    version: str
    created_at: str = Field(description="UTC ISO 8601 time the model was saved.")
    artifact: str = ARTIFACT_NAME
    artifact_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    artifact_bytes: int = Field(ge=0)
    feature_names: list[str]
    python_version: str
    sklearn_version: str
    numpy_version: str
    model_family: str = Field(description="Qualified class name of the estimator.")
    hyperparameters: dict[str, Any]
    data: DataInfo
    metrics: ModelMetrics
    baseline: dict[str, float] = Field(
        description="Training median of each feature: the reference value for reasons."
    )
    drift_reference: dict[str, FeatureReference] | None = Field(
        None,
        description="Training distribution of each feature (quantile bins and shares) for "
        "the drift metric (app.monitoring.drift); None: no drift is reported.",
    )
    alert_threshold: float = Field(ge=0.0, le=1.0, description="Recommended ALERT_THRESHOLD.")
    threshold_rationale: str
    justification: str
    train_seconds: float = Field(ge=0.0)
    comparison: list[CandidateResult] = Field(default_factory=list)
    metrics_other_rules: list[ModelMetrics] = Field(
        default_factory=list,
        description="The same test window under the other known-compromised rules.",
    )
    validation: list[ValidationResult] = Field(
        default_factory=list, description="Model selection by prequential validation."
    )
    runtime: RuntimeInfo | None = Field(
        None, description="The runtime that serves this version; None: scikit-learn "
        "(a card written before compiled forms)."
    )

    @property
    def engine(self) -> str:
        """``"onnxruntime"`` or ``"scikit-learn"``: what scores with this version."""
        return self.runtime.engine if self.runtime is not None else "scikit-learn"


@dataclass(frozen=True)
class LoadedModel:
    """A verified model: its card and the unpickled estimator.

    Attributes
    ----------
    version : str
    card : ModelCard
    estimator : object
        A fitted scikit-learn classifier with ``predict_proba`` and ``classes_``.
    path : Path
        The version's folder.
    compiled : CompiledModel or None
        Its compiled form, checked against ``estimator`` on the validation rows; None:
        scikit-learn serves.
    """

    version: str
    card: ModelCard
    estimator: Any
    path: Path
    compiled: Any = None


def _check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        raise ModelError(
            f"invalid model version {version!r}: expected 'v', a letter or digit, then up "
            "to 79 letters, digits, '.', '_' or '-' (e.g. v20180724-101500-1a2b3c4d)"
        )
    return version


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _hyperparameters(estimator: Any) -> dict[str, Any]:
    get = getattr(estimator, "get_params", None)
    params = get(deep=False) if get else {}
    return {k: _jsonable(v) for k, v in sorted(params.items())}


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(
    estimator: Any,
    models_dir: str | Path,
    *,
    data: DataInfo,
    metrics: ModelMetrics,
    baseline: dict[str, float],
    alert_threshold: float,
    threshold_rationale: str,
    justification: str,
    train_seconds: float = 0.0,
    comparison: Sequence[CandidateResult] = (),
    metrics_other_rules: Sequence[ModelMetrics] = (),
    validation: Sequence[ValidationResult] = (),
    feature_names: Sequence[str] = FEATURE_NAMES,
    version: str | None = None,
    created_at: datetime | None = None,
    drift_reference: dict[str, Any] | None = None,
    check_rows: np.ndarray | None = None,
) -> ModelCard:
    """Write a fitted estimator, its compiled form and its card as a new version.

    Parameters
    ----------
    estimator : object
        Fitted classifier with ``predict_proba``; pickled with joblib.
    models_dir : str or Path
        The registry folder; created if missing.
    data, metrics, baseline, alert_threshold, threshold_rationale, justification
        Card fields, see :class:`ModelCard`. ``baseline`` needs one value per feature.
    train_seconds : float, default=0.0
    comparison : sequence of CandidateResult, default=()
    metrics_other_rules : sequence of ModelMetrics, default=()
    validation : sequence of ValidationResult, default=()
    feature_names : sequence of str, default=FEATURE_NAMES
        Columns the estimator was fitted on, in order.
    version : str, optional
        Default: ``v<yyyymmdd-HHMMSS>-<sha8>`` from ``created_at`` and the artifact.
    created_at : datetime, optional
        Default: now (UTC).
    drift_reference : dict, optional
    check_rows : ndarray of shape (n_rows, n_features), optional
        The model's validation rows (:func:`app.scoring.compiled.choose_check_rows`):
        with them the estimator is compiled for ONNX Runtime, checked on them and both
        are stored (``runtime`` in the card); without them, or when the estimator cannot
        be compiled or its compiled form disagrees, scikit-learn serves it (the card's
        ``runtime.note`` says why).

    Returns
    -------
    ModelCard
        The card written to ``<models_dir>/<version>/card.json``.

    Raises
    ------
    ModelError
        The version exists already, a name is invalid or ``baseline`` lacks a feature.
    """
    models_dir = Path(models_dir)
    names = list(feature_names)
    missing = [n for n in names if n not in baseline]
    if missing:
        raise ModelError(f"baseline: no value for features {missing}")
    now = (created_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    buf = io.BytesIO()
    joblib.dump(estimator, buf, compress=_JOBLIB_COMPRESS)
    artifact = buf.getvalue()
    sha = _sha256(artifact)
    version = _check_version(version or f"v{now:%Y%m%d-%H%M%S}-{sha[:8]}")
    runtime, files = _build_runtime(
        estimator, [float(baseline[n]) for n in names], check_rows, alert_threshold, version
    )
    card = ModelCard(
        runtime=runtime,
        drift_reference=drift_reference,
        version=version,
        created_at=now.isoformat(timespec="seconds").replace("+00:00", "Z"),
        artifact_sha256=sha,
        artifact_bytes=len(artifact),
        feature_names=names,
        python_version=platform.python_version(),
        sklearn_version=_running_sklearn_version(),
        numpy_version=np.__version__,
        model_family=f"{type(estimator).__module__}.{type(estimator).__qualname__}",
        hyperparameters=_hyperparameters(estimator),
        data=data,
        metrics=metrics,
        baseline={n: float(baseline[n]) for n in names},
        alert_threshold=alert_threshold,
        threshold_rationale=threshold_rationale,
        justification=justification,
        train_seconds=train_seconds,
        comparison=list(comparison),
        metrics_other_rules=list(metrics_other_rules),
        validation=list(validation),
    )
    models_dir.mkdir(parents=True, exist_ok=True)
    final = models_dir / version
    if final.exists():
        raise ModelError(f"model version {version} already exists in {models_dir}")
    tmp = Path(tempfile.mkdtemp(dir=models_dir, prefix=f".{version}."))
    try:
        os.chmod(tmp, _DIR_MODE)  # mkdtemp makes it private; a registry is shared
        (tmp / ARTIFACT_NAME).write_bytes(artifact)
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        (tmp / CARD_NAME).write_text(card.model_dump_json(indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return card


def _sklearn_runtime(note: str) -> RuntimeInfo:
    return RuntimeInfo(engine="scikit-learn", engine_version=_running_sklearn_version(),
                       note=note)


def _npy_bytes(rows: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(rows, dtype=np.float64), allow_pickle=False)
    return buf.getvalue()


def _build_runtime(
    estimator: Any, baseline: list[float], rows: np.ndarray | None, threshold: float,
    version: str, strict: bool = False,
) -> tuple[RuntimeInfo, dict[str, bytes]]:
    """Compile ``estimator``, check it on ``rows``: its RuntimeInfo and the files to store.

    An estimator skl2onnx cannot compile keeps scikit-learn (said in the note); a
    compiled form that disagrees raises with ``strict``, else keeps scikit-learn too."""
    from ..exceptions import CompiledRuntimeError
    from .compiled import (ENGINE, CompiledModel, check_compiled, compile_estimator,
                           converter_version, engine_version)

    if rows is None or len(rows) == 0:
        return _sklearn_runtime("no validation rows given: not compiled"), {}
    rows = np.ascontiguousarray(rows, dtype=np.float64)
    try:
        compiled = compile_estimator(estimator, baseline)
    except CompiledRuntimeError as exc:
        return _sklearn_runtime(f"not compiled: {exc}"[:500]), {}
    try:
        result = check_compiled(estimator, CompiledModel(compiled, len(baseline)), rows,
                                threshold, baseline, version)
    except CompiledRuntimeError as exc:
        if strict:
            raise
        return _sklearn_runtime(f"compiled form refused: {exc}"[:500]), {}
    rows_bytes = _npy_bytes(rows)
    info = RuntimeInfo(
        engine=ENGINE, engine_version=engine_version(), artifact=COMPILED_NAME,
        artifact_sha256=_sha256(compiled), artifact_bytes=len(compiled),
        converter=converter_version(), check_rows=CHECK_ROWS_NAME,
        check_rows_sha256=_sha256(rows_bytes), rows_checked=result.rows,
        max_score_difference=result.max_score_difference,
        decisions_identical=result.decisions_identical,
    )
    return info, {COMPILED_NAME: compiled, CHECK_ROWS_NAME: rows_bytes}


def _read_checked(models_dir: Path, version: str, name: str, sha: str | None) -> bytes:
    path = models_dir / version / name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"model {version}: cannot read {path} ({exc.strerror})")
    got = _sha256(data)
    if got != sha:
        raise ModelIntegrityError(
            f"model {version}: sha256 of {name} is {got}, expected {sha} (the card's): "
            "the file was changed"
        )
    return data


def _check_rows(models_dir: Path, card: ModelCard) -> np.ndarray | None:
    rt = card.runtime
    if rt is None or rt.check_rows is None:
        return None
    raw = _read_checked(models_dir, card.version, rt.check_rows, rt.check_rows_sha256)
    return np.load(io.BytesIO(raw), allow_pickle=False)


def _verify_runtime_files(models_dir: Path, card: ModelCard) -> None:
    rt = card.runtime
    if rt is None or rt.engine == "scikit-learn":
        return
    if rt.artifact is None or rt.check_rows is None:
        raise ModelIntegrityError(
            f"model {card.version}: runtime {rt.engine} names no compiled form or no "
            "validation rows"
        )
    _read_checked(models_dir, card.version, rt.artifact, rt.artifact_sha256)
    _read_checked(models_dir, card.version, rt.check_rows, rt.check_rows_sha256)


def compile_version(
    version: str, models_dir: str | Path = "models", rows: np.ndarray | None = None
) -> ModelCard:
    """Compile a registered version for ONNX Runtime, check it, record it in its card.

    The artifact is untouched, so the version keeps its name. The compiled form and the
    validation rows are written beside it, then the card (atomically).

    Parameters
    ----------
    version : str
    models_dir : str or Path, default="models"
    rows : ndarray of shape (n_rows, n_features), optional
        Validation rows to store and check on; default: those stored with the version.

    Returns
    -------
    ModelCard
        The updated card; ``runtime.engine`` is ``"onnxruntime"``, or ``"scikit-learn"``
        with a note when the estimator cannot be compiled or there are no rows.

    Raises
    ------
    ModelError, ModelIntegrityError, ModelVersionError
        As :func:`load_model` (the pickle is verified and loaded).
    CompiledRuntimeError
        The compiled form disagrees with scikit-learn on the rows.
    """
    models_dir = Path(models_dir)
    loaded = load_model(version, models_dir, compiled=False)
    card = loaded.card
    if rows is None:
        rows = _check_rows(models_dir, card)
    if rows is None:
        runtime, files = _sklearn_runtime(
            "no validation rows stored: not compiled (fraudctl models compile --data)"), {}
    else:
        runtime, files = _build_runtime(
            loaded.estimator, [card.baseline[n] for n in card.feature_names], rows,
            card.alert_threshold, version, strict=True,
        )
    for name, data in files.items():
        tmp = models_dir / version / f".{name}.tmp"
        tmp.write_bytes(data)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, models_dir / version / name)
    card = card.model_copy(update={"runtime": runtime})
    _atomic_write_text(models_dir / version / CARD_NAME, card.model_dump_json(indent=2) + "\n")
    return card


def ensure_compiled(version: str, models_dir: str | Path = "models") -> ModelCard:
    """The card of ``version`` with a runtime chosen: compiled now when the card names
    none yet (:func:`compile_version`), then loaded and checked (:func:`load_model`).
    What ``fraudctl models promote``, ``rollback``, ``shadow`` and ``activate`` run
    before a version serves.

    Raises
    ------
    ModelError, ModelIntegrityError, ModelVersionError
        As :func:`load_model`.
    CompiledRuntimeError
        The compiled form disagrees with scikit-learn on the validation rows.
    """
    models_dir = Path(models_dir)
    card = read_card(version, models_dir)
    if card.runtime is None:
        card = compile_version(version, models_dir)
    return load_model(version, models_dir).card


def _known(models_dir: Path) -> list[str]:
    if not models_dir.is_dir():
        return []
    return sorted(
        p.name for p in models_dir.iterdir()
        if p.is_dir() and VERSION_PATTERN.match(p.name) and (p / CARD_NAME).is_file()
    )


def read_card(version: str, models_dir: str | Path) -> ModelCard:
    """The card of ``version``, parsed but not checked against the artifact.

    Raises
    ------
    ModelError
        Unknown version (the message lists the known ones) or an unreadable card.
    """
    models_dir = Path(models_dir)
    _check_version(version)
    card_path = models_dir / version / CARD_NAME
    if not card_path.is_file():
        known = _known(models_dir)
        raise ModelError(
            f"no model version {version} in {models_dir}; known versions: "
            f"{', '.join(known) if known else '(none)'}"
        )
    try:
        card = ModelCard.model_validate_json(card_path.read_bytes())
    except (ValidationError, OSError) as exc:
        first = str(exc).splitlines()[0:3]
        raise ModelError(f"model {version}: {card_path} is not a valid card ({' '.join(first)})")
    if card.version != version:
        raise ModelIntegrityError(
            f"model {version}: card names version {card.version!r}, expected {version!r}"
        )
    return card


def _running_sklearn_version() -> str:
    """The installed scikit-learn's version, read from its distribution's metadata
    (importing scikit-learn takes about a second, which a worker's start check need
    not pay)."""
    from importlib.metadata import version

    return version("scikit-learn")


def check_sklearn_version(card: ModelCard, running: str | None = None) -> None:
    """Refuse a model whose card names another scikit-learn version than the running one.

    The artifact is a joblib pickle of a scikit-learn estimator: scikit-learn only
    supports unpickling it under the version that wrote it (another version may fail to
    load it, warn, or load it and predict differently).

    Parameters
    ----------
    card : ModelCard
    running : str, optional
        The running version; default: the installed scikit-learn's.

    Raises
    ------
    ModelVersionError
        The versions differ; the message names both and the way out.
    """
    running = running or _running_sklearn_version()
    if card.sklearn_version != running:
        raise ModelVersionError(
            f"model {card.version}: written by scikit-learn {card.sklearn_version}, this is "
            f"{running}: its pickle is only known to load and predict the same under the "
            f"version that wrote it; retrain it (fraudctl train) or install scikit-learn "
            f"{card.sklearn_version}"
        )


def verify_model(
    version: str, models_dir: str | Path = "models", feature_names: Sequence[str] = FEATURE_NAMES
) -> tuple[ModelCard, bytes]:
    """Check a version without unpickling it: card, scikit-learn version, feature names, sha256.

    Parameters
    ----------
    version : str
    models_dir : str or Path, default="models"
    feature_names : sequence of str, default=FEATURE_NAMES
        The names the running code computes, in order.

    Returns
    -------
    card : ModelCard
    artifact : bytes
        The artifact, whose sha256 equals the card's.

    Raises
    ------
    ModelError
        Unknown version (known ones listed), unreadable card or artifact.
    ModelVersionError
        The card's scikit-learn version differs from the running one.
    ModelIntegrityError
        The card's feature names differ from ``feature_names`` (the message lists the
        names on either side only), a baseline is missing, or the artifact's sha256
        differs from the card's.
    """
    models_dir = Path(models_dir)
    card = read_card(version, models_dir)
    check_sklearn_version(card)
    expected = list(feature_names)
    if card.feature_names != expected:
        extra = [n for n in card.feature_names if n not in expected]
        lacking = [n for n in expected if n not in card.feature_names]
        raise ModelIntegrityError(
            f"model {version}: feature names differ from the code's FEATURE_NAMES "
            f"(expected {len(expected)} names, card has {len(card.feature_names)}; "
            f"not in code: {extra}; not in card: {lacking}"
            + ("; same names, other order" if not extra and not lacking else "")
            + ")"
        )
    missing = [n for n in expected if n not in card.baseline]
    if missing:
        raise ModelIntegrityError(f"model {version}: card has no baseline for {missing}")
    artifact_path = models_dir / version / card.artifact
    try:
        artifact = artifact_path.read_bytes()
    except OSError as exc:
        raise ModelError(f"model {version}: cannot read {artifact_path} ({exc.strerror})")
    got = _sha256(artifact)
    if got != card.artifact_sha256:
        raise ModelIntegrityError(
            f"model {version}: sha256 of {card.artifact} is {got}, "
            f"expected {card.artifact_sha256} (the card's): the artifact was changed"
        )
    _verify_runtime_files(models_dir, card)
    return card, artifact


def load_model(
    version: str | None = None,
    models_dir: str | Path = "models",
    feature_names: Sequence[str] = FEATURE_NAMES,
    compiled: bool = True,
) -> LoadedModel:
    """Load one version after verifying it, with its compiled form checked.

    Parameters
    ----------
    version : str, optional
        Default: :func:`default_version`.
    models_dir : str or Path, default="models"
    feature_names : sequence of str, default=FEATURE_NAMES
        The names the model must take, in order (an older model of other names can be
        loaded by passing its card's, e.g. to order the simulated investigators' queue).
    compiled : bool, default=True
        Load the compiled form the card names and check it against the estimator on the
        validation rows (:func:`app.scoring.compiled.check_compiled`); False: the
        estimator only.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelError
        Unknown version (known ones listed), unreadable card or artifact.
    ModelVersionError
        The card's scikit-learn version differs from the running one.
    ModelIntegrityError
        The artifact's sha256 differs from the card's, the card's feature names differ
        from :data:`FEATURE_NAMES`, or the estimator does not fit them; the compiled
        form or the validation rows differ from the card's sha256.
    CompiledRuntimeError
        The compiled form cannot be loaded or disagrees with scikit-learn.
    """
    models_dir = Path(models_dir)
    version = version or default_version(models_dir)
    card, artifact = verify_model(version, models_dir, feature_names)
    expected = list(feature_names)
    artifact_path = models_dir / version / card.artifact
    try:
        estimator = joblib.load(io.BytesIO(artifact))
    except Exception as exc:  # noqa: BLE001  (any unpickling failure)
        raise ModelError(f"model {version}: cannot unpickle {card.artifact} ({exc!r})"[:500])
    n_in = getattr(estimator, "n_features_in_", None)
    if not hasattr(estimator, "predict_proba") or n_in != len(expected):
        raise ModelIntegrityError(
            f"model {version}: estimator expects {n_in} features with predict_proba, "
            f"expected {len(expected)}"
        )
    runtime = None
    rt = card.runtime
    if compiled and rt is not None and rt.engine != "scikit-learn":
        from .compiled import ENGINE, CompiledModel, check_compiled

        if rt.engine != ENGINE:
            raise ModelIntegrityError(f"model {version}: unknown runtime {rt.engine!r}")
        onnx_bytes = _read_checked(models_dir, version, rt.artifact or "", rt.artifact_sha256)
        runtime = CompiledModel(onnx_bytes, len(expected))
        rows = _check_rows(models_dir, card)
        check_compiled(estimator, runtime, rows if rows is not None else np.empty((0, 0)),
                       card.alert_threshold, [card.baseline[n] for n in card.feature_names],
                       version)
    return LoadedModel(version=version, card=card, estimator=estimator,
                       path=artifact_path.parent, compiled=runtime)


def list_models(models_dir: str | Path = "models") -> list[ModelCard]:
    """Cards of every version, oldest first (by ``created_at``, then version).

    Raises
    ------
    ModelError
        A version folder holds an unreadable card.
    """
    models_dir = Path(models_dir)
    cards = [read_card(v, models_dir) for v in _known(models_dir)]
    return sorted(cards, key=lambda c: (c.created_at, c.version))


def active_file_version(models_dir: str | Path = "models") -> str | None:
    """The version named in ``<models_dir>/ACTIVE``, or None without that file."""
    path = Path(models_dir) / ACTIVE_NAME
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def default_version(models_dir: str | Path = "models") -> str:
    """The version to serve when none is named.

    The one in ``<models_dir>/ACTIVE``; without that file, the newest version.

    Raises
    ------
    ModelError
        ``ACTIVE`` names an unknown or invalid version, or there is no model at all.
    """
    models_dir = Path(models_dir)
    named = active_file_version(models_dir)
    if named is not None:
        _check_version(named)
        if named not in _known(models_dir):
            read_card(named, models_dir)  # raises, listing the known versions
        return named
    cards = list_models(models_dir)
    if not cards:
        raise ModelError(f"no model in {models_dir}: train one with `fraudctl train PATH`")
    return cards[-1].version


def activate(version: str, models_dir: str | Path = "models") -> None:
    """Write ``version`` to ``<models_dir>/ACTIVE`` (atomically) after checking it exists.

    Raises
    ------
    ModelError
        Unknown version.
    """
    models_dir = Path(models_dir)
    read_card(version, models_dir)
    _atomic_write_text(models_dir / ACTIVE_NAME, version + "\n")


def set_alert_threshold(
    version: str, threshold: float, rationale: str, models_dir: str | Path = "models"
) -> ModelCard:
    """Rewrite a card's ``alert_threshold`` and ``threshold_rationale`` (atomically).

    The artifact and its sha256 are untouched, so the version keeps its name.

    Raises
    ------
    ModelError
        Unknown version, or ``threshold`` outside [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:
        raise ModelError(f"threshold: expected a float in [0, 1], got {threshold!r}")
    models_dir = Path(models_dir)
    card = read_card(version, models_dir).model_copy(
        update={"alert_threshold": float(threshold), "threshold_rationale": rationale}
    )
    _atomic_write_text(models_dir / version / CARD_NAME, card.model_dump_json(indent=2) + "\n")
    return card
