"""``fraudctl train`` and ``fraudctl models list|show|activate|promote|rollback|shadow``.

Training, the registry and the lifecycle planners are pure (:mod:`app.scoring`); this
module adds a progress bar, tables, the Redis keys ``{REDIS_KEY_PREFIX}model:active`` and
``model:shadows`` (written with redis-py directly, synchronously), and the
``fraud-control`` message that tells running workers to switch (:mod:`app.stream.control`).

``promote``, ``rollback`` and ``shadow`` first verify every version they name (card,
feature names, sha256s, and the compiled form compiled if the card names no runtime yet
and checked against scikit-learn on the validation rows:
:func:`app.scoring.registry.ensure_compiled`), then publish the new
state on ``CONTROL_TOPIC`` (nothing has changed if that fails), then write Redis, then
``models/LIFECYCLE.json`` and ``models/ACTIVE``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Optional
from urllib.parse import urlsplit, urlunsplit

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..config import Settings, get_settings
from ..events import ModelControl, encode
from ..exceptions import FraudError
from ..scoring.candidates import CANDIDATES, DEFAULT_MODEL
from ..scoring.protocol import (
    DEFAULT_KNOWN_COMPROMISED,
    DEFAULT_TRAIN_END,
    DEFAULT_TRAIN_START,
    VALIDATION_FOLDS,
    KnownCompromised,
)
from .data import mapping_option
from .base import (
    KAFKA_CLIENT_SETTINGS,
    broker_option,
    cli,
    console,
    err_console,
    fail,
    investigation_policy,
    investigators_option,
    policy_model_option,
    settings_epilog,
    stage_progress,
    verdict_delay_option,
)

if TYPE_CHECKING:  # imported where used: `fraudctl --help` loads none of them
    import redis
    from ..scoring.registry import ModelCard, ModelMetrics
    from ..scoring.lifecycle import Lifecycle

__all__ = [
    "models_cli",
    "train_command",
    "list_command",
    "show_command",
    "activate_command",
    "set_active_in_redis",
    "get_active_in_redis",
    "promote_command",
    "rollback_command",
    "shadow_set_command",
    "shadow_clear_command",
    "apply_lifecycle",
    "compile_command",
]

models_cli = typer.Typer(
    name="models",
    help="The model registry: list, show, promote, roll back and shadow versions (see `fraudctl train`).",
    no_args_is_help=True,
)
cli.add_typer(models_cli, name="models")
shadow_cli = typer.Typer(
    name="shadow",
    help="Challenger versions that score alongside the active one and never alert.",
    no_args_is_help=True,
)
models_cli.add_typer(shadow_cli, name="shadow")

_STAGE_LABELS = {
    "read": "reading data",
    "features": "computing features",
    "validate": "prequential validation",
    "fit": "fitting the model",
    "evaluate": "choosing the threshold, evaluating",
    "save": "saving",
}
_REDIS_TIMEOUT_SECONDS = 3.0


# --- Redis (the active version) --------------------------------------------------------


def _redacted(url: str) -> str:
    """``redis://:secret@host:6379/0`` -> ``redis://***@host:6379/0``."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _client(url: str) -> redis.Redis:
    import redis
    from ..redis_store import RedisUnavailableError

    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=_REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=_REDIS_TIMEOUT_SECONDS,
        )
    except ValueError as exc:
        raise RedisUnavailableError(f"bad Redis URL {_redacted(url)!r}: {exc}") from None


def set_active_in_redis(url: str, prefix: str, version: str) -> None:
    """Write ``version`` to ``{prefix}model:active``.

    Raises
    ------
    RedisUnavailableError
        Redis cannot be reached or refuses the write.
    """
    import redis
    from ..redis_store import RedisUnavailableError, active_model_key

    client = _client(url)
    try:
        client.set(active_model_key(prefix), version.encode())
    except (redis.RedisError, OSError) as exc:
        raise RedisUnavailableError(
            f"cannot write {active_model_key(prefix)} to Redis at {_redacted(url)}: {exc}"
        ) from None
    finally:
        client.close()


def get_active_in_redis(url: str, prefix: str) -> str | None:
    """The version in ``{prefix}model:active``, or None when unset.

    Raises
    ------
    RedisUnavailableError
        Redis cannot be reached.
    """
    import redis
    from ..redis_store import RedisUnavailableError, active_model_key

    client = _client(url)
    try:
        raw = client.get(active_model_key(prefix))
    except (redis.RedisError, OSError) as exc:
        raise RedisUnavailableError(
            f"cannot read {active_model_key(prefix)} from Redis at {_redacted(url)}: {exc}"
        ) from None
    finally:
        client.close()
    return raw.decode() if raw else None


def _activate_everywhere(version: str, models_dir: Path, redis_url: str, prefix: str) -> None:
    from ..scoring.registry import activate, ensure_compiled

    # unknown, tampered or a disagreeing compiled form: fail before touching anything
    ensure_compiled(version, models_dir)
    set_active_in_redis(redis_url, prefix, version)  # Redis first: a failure leaves ACTIVE
    activate(version, models_dir)


# --- output ------------------------------------------------------------------------------


def _fmt(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _metrics_rows(table: Table, m: ModelMetrics) -> None:
    table.add_row(
        f"rule {m.known_compromised_rule}",
        f"AUC {_fmt(m.roc_auc)}, AP {_fmt(m.average_precision)}, CP@100 "
        f"{_fmt(m.card_precision_at_100)} (perfect ranking CP "
        f"{_fmt(m.perfect_card_precision_at_100)}; oracle AUC {_fmt(m.oracle_roc_auc)}, AP "
        f"{_fmt(m.oracle_average_precision)}, CP {_fmt(m.oracle_card_precision_at_100)}); "
        + (f"{m.test_transactions:,} tx, {m.test_frauds:,} frauds, "
           f"{m.test_removed_known_compromised:,} tx of known compromised cards dropped"
           if m.test_transactions is not None else ""),
    )


def _print_card(card: ModelCard, models_dir: Path) -> None:
    m, d = card.metrics, card.data
    table = Table(title=f"model {card.version}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("saved in", escape(str(models_dir / card.version)))
    table.add_row("family", card.model_family.rsplit(".", 1)[-1])
    table.add_row(
        "artifact", f"{card.artifact_bytes / 1e6:.2f} MB, sha256 {card.artifact_sha256[:16]}…"
    )
    table.add_row(
        "train window",
        f"{d.train.start}..{d.train.end}: {d.train.transactions:,} tx, {d.train.frauds:,} frauds",
    )
    if d.fit is not None:
        table.add_row(
            "fitted on",
            f"{d.fit.start}..{d.fit.end}: {d.fit.transactions:,} tx, {d.fit.frauds:,} frauds",
        )
    table.add_row(
        "test window",
        f"{d.test.start}..{d.test.end} (gap {d.gap_days} d): {d.test.transactions:,} tx, "
        f"{d.test.frauds:,} frauds, {d.test_removed_known_compromised:,} tx of known "
        f"compromised cards dropped (rule {m.known_compromised_rule})",
    )
    table.add_row("ROC AUC", _fmt(m.roc_auc))
    table.add_row("average precision", _fmt(m.average_precision))
    table.add_row("card precision@100", _fmt(m.card_precision_at_100))
    table.add_row("daily CP@100", " ".join(f"{x:.2f}" for x in m.card_precision_daily))
    for other in (m, *card.metrics_other_rules):
        _metrics_rows(table, other)
    table.add_row(
        "alert threshold",
        f"{card.alert_threshold:g} (test: precision {_fmt(m.threshold_precision)}, "
        f"recall {_fmt(m.threshold_recall)}, {m.threshold_alerts_per_day:.1f} alerts/day)",
    )
    table.add_row("train time", f"{card.train_seconds:.1f} s")
    console.print(table)
    if card.validation:
        v = card.validation[0]
        console.print(
            f"prequential validation: {len(v.folds)} folds, train windows "
            f"{v.folds[-1][0]}..{v.folds[0][1]}, rule {v.known_compromised_rule} "
            "(mean +- std)",
            highlight=False,
        )
    for r in card.validation:
        console.print(
            f"  {'*' if r.selected else ' '} {r.name}: AUC {_fmt(r.roc_auc_mean)} +- "
            f"{_fmt(r.roc_auc_std)}, AP {_fmt(r.average_precision_mean)} +- "
            f"{_fmt(r.average_precision_std)}, CP@100 {_fmt(r.card_precision_at_100_mean)} +- "
            f"{_fmt(r.card_precision_at_100_std)}, fit {r.fit_seconds:.1f} s",
            highlight=False,
        )
    for c in card.comparison:
        console.print(
            f"  {c.name}: AUC {_fmt(c.roc_auc)}, AP {_fmt(c.average_precision)}, "
            f"CP@100 {_fmt(c.card_precision_at_100)}, fit {c.fit_seconds:.1f} s, "
            f"{c.artifact_bytes / 1e6:.2f} MB",
            highlight=False,
        )


def _runtime_line(card: ModelCard) -> str:
    rt = card.runtime
    if rt is None:
        return "scikit-learn (card names no runtime: `fraudctl models compile` compiles it)"
    if rt.engine == "scikit-learn":
        return f"scikit-learn {rt.engine_version} ({rt.note})"
    return (f"{rt.engine} {rt.engine_version}, {rt.artifact} sha256 {rt.artifact_sha256}, "
            f"checked on {rt.rows_checked:,} rows: largest score difference "
            f"{rt.max_score_difference:.2g}, decisions identical")


# --- commands ----------------------------------------------------------------------------


@cli.command(
    "train",
    epilog=settings_epilog(
        "MODELS_DIR", "REDIS_URL", "REDIS_PASSWORD", "REDIS_KEY_PREFIX"
    ),
)
def train_command(
    path: Path = typer.Argument(..., help="Handbook data: a .csv/.csv.gz/.pkl file or a folder."),
    train_start: str = typer.Option(
        DEFAULT_TRAIN_START.isoformat(), "--train-start", help="First training day, YYYY-MM-DD."
    ),
    train_end: str = typer.Option(
        DEFAULT_TRAIN_END.isoformat(), "--train-end", help="Last training day, YYYY-MM-DD."
    ),
    gap_days: int = typer.Option(
        7, "--gap-days", help="Days between train and test (the label delay)."
    ),
    test_days: int = typer.Option(7, "--test-days", help="Days in the test window."),
    activate_: bool = typer.Option(
        False, "--activate", help="Make the new version active (Redis key and models/ACTIVE)."
    ),
    redis_url: str = typer.Option(
        None, "--redis-url", help="Redis for --activate; default: REDIS_URL.", show_default=False
    ),
    models_dir: Path = typer.Option(
        None, "--models-dir", help="Model registry; default: MODELS_DIR.", show_default=False
    ),
    model: Optional[list[str]] = typer.Option(
        None, "--model", metavar="NAME",
        help=f"Model to fit: {', '.join(CANDIDATES)}; default {DEFAULT_MODEL}. With "
        "--compare, repeat it to name the candidates (default: all).",
        show_default=False,
    ),
    compare: bool = typer.Option(
        False, "--compare",
        help="Choose the model by prequential validation on windows before the test "
        "window (--validation-folds folds per candidate; slower).",
    ),
    validation_folds: int = typer.Option(
        VALIDATION_FOLDS, "--validation-folds", min=1, help="Folds of --compare."
    ),
    known_compromised: KnownCompromised = typer.Option(
        DEFAULT_KNOWN_COMPROMISED.value, "--known-compromised",
        help="Cards dropped from test windows: every card with a fraud from the train "
        "start to the day before the test (before-test), or the handbook code's daily "
        "rule (handbook-daily). The card reports both.",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of the model."),
    threads: int = typer.Option(
        0, "--threads", min=0, help="Threads of the fit; 0: all cores."
    ),
    investigators: int = investigators_option(),
    verdict_delay_hours: float = verdict_delay_option(),
    policy_model: Optional[str] = policy_model_option(),
    mapping: Optional[Path] = mapping_option(),
) -> None:
    """Train a model on a handbook-style split, evaluate it and save it as a new version.

    Default split (the handbook's): train 2018-07-04..10, gap 7 days, test 2018-07-18..24.
    """
    from ..scoring.train import STAGES, train

    settings = get_settings()
    models_dir = models_dir or settings.models_dir
    url = redis_url or settings.redis_url.get_secret_value()
    try:
        with stage_progress() as bar:
            tasks = {s: bar.add_task(_STAGE_LABELS[s], total=None, visible=False) for s in STAGES}

            def progress(stage: str, done: int, total: int) -> None:
                bar.update(tasks[stage], completed=done, total=max(total, 1), visible=True)

            card = train(
                path, train_start, train_end, gap_days, test_days,
                models_dir=models_dir, model=model, compare=compare,
                validation_folds=validation_folds, known_compromised=known_compromised,
                random_state=seed, n_threads=threads or None, progress=progress,
                investigators=investigation_policy(investigators, verdict_delay_hours),
                policy_model=policy_model, mapping=mapping,
            )
        _print_card(card, models_dir)
    except FraudError as exc:
        fail(escape(str(exc)), getattr(exc, "exit_code", 2))
        return
    if activate_:
        try:
            _activate_everywhere(card.version, models_dir, url, settings.redis_key_prefix)
        except FraudError as exc:
            fail(escape(f"model {card.version} saved but not activated: {exc}"))
            return
        console.print(
            f"activated {card.version} (Redis and {escape(str(models_dir / 'ACTIVE'))})",
            highlight=False,
        )


@models_cli.command(
    "list",
    epilog=settings_epilog(
        "MODELS_DIR", "REDIS_URL", "REDIS_PASSWORD", "REDIS_KEY_PREFIX"
    ),
)
def list_command(
    models_dir: Path = typer.Option(
        None, "--models-dir", help="Model registry; default: MODELS_DIR.", show_default=False
    ),
    redis_url: str = typer.Option(
        None, "--redis-url", help="Redis to read the active version from; default: REDIS_URL.",
        show_default=False,
    ),
    no_redis: bool = typer.Option(False, "--no-redis", help="Do not ask Redis."),
) -> None:
    """Table of model versions, their test metrics and which one is active."""
    from ..redis_store import active_model_key
    from ..scoring.registry import active_file_version, list_models
    from ..scoring.lifecycle import read_lifecycle

    settings = get_settings()
    models_dir = models_dir or settings.models_dir
    try:
        cards = list_models(models_dir)
        lifecycle = read_lifecycle(models_dir)
        in_file = active_file_version(models_dir)
        in_redis: str | None = None
        redis_note = "not asked"
        if not no_redis:
            url = redis_url or settings.redis_url.get_secret_value()
            try:
                in_redis = get_active_in_redis(url, settings.redis_key_prefix)
                redis_note = in_redis or "unset"
            except FraudError as exc:
                redis_note = "unreachable"
                err_console.print(f"warning: {escape(str(exc))}", highlight=False, soft_wrap=True)
    except FraudError as exc:
        fail(escape(str(exc)), getattr(exc, "exit_code", 2))
        return
    if not cards:
        console.print(f"no models in {escape(str(models_dir))}", highlight=False)
        return
    table = Table(
        title=f"models in {escape(str(models_dir))}", title_justify="left",
        box=None, pad_edge=False, header_style="bold",
    )
    table.add_column("version", no_wrap=True, min_width=max(len(c.version) for c in cards))
    # each version's figures come from its own test window (and data): shown beside them
    sources = sorted({c.data.source for c in cards})
    table.add_column("test window", no_wrap=True)
    if len(sources) > 1:
        table.add_column("data", max_width=14, overflow="ellipsis", no_wrap=True)
    for col in ("AUC", "AP", "CP@100", "thresh", "status"):
        table.add_column(col, overflow="fold")
    for c in cards:
        active = "+".join(
            name for name, v in (("file", in_file), ("redis", in_redis)) if v == c.version
        )
        status = lifecycle.status(c.version)
        if status in ("shadow", "retired") and not active:
            active = status
        window = f"{c.data.test.start}..{c.data.test.end.isoformat()[5:]}"
        table.add_row(
            c.version, window, *([escape(c.data.source)] if len(sources) > 1 else []),
            _fmt(c.metrics.roc_auc), _fmt(c.metrics.average_precision),
            _fmt(c.metrics.card_precision_at_100), f"{c.alert_threshold:g}", active,
        )
    # piped (no terminal width), a wide table rather than folded figures
    (console if console.is_terminal else Console(width=120)).print(table)
    console.print(
        f"ACTIVE file: {in_file or 'absent'}; Redis {active_model_key(settings.redis_key_prefix)}"
        f": {redis_note}; status: where a version is active (file, redis), else shadow, "
        "retired, or blank for a candidate; figures are each version's own test window"
        + (f" of {escape(sources[0])}" if len(sources) == 1 else "")
        + " (rule of its card): `fraudctl models compare A B DATA` puts two on the same one",
        highlight=False,
        soft_wrap=True,
    )


@models_cli.command("show", epilog=settings_epilog("MODELS_DIR"))
def show_command(
    version: str = typer.Argument(..., help="A version, as in `fraudctl models list`."),
    models_dir: Path = typer.Option(
        None, "--models-dir", help="Model registry; default: MODELS_DIR.", show_default=False
    ),
) -> None:
    """Print a version's model card as JSON (its runtime says what serves it), and
    the runtime in one line on stderr."""
    from ..scoring.registry import read_card

    models_dir = models_dir or get_settings().models_dir
    try:
        card = read_card(version, models_dir)
    except FraudError as exc:
        fail(escape(str(exc)), getattr(exc, "exit_code", 2))
        return
    typer.echo(card.model_dump_json(indent=2))
    err_console.print(f"runtime: {escape(_runtime_line(card))}", highlight=False,
                      soft_wrap=True)


@models_cli.command(
    "activate",
    epilog=settings_epilog(
        "MODELS_DIR", "REDIS_URL", "REDIS_PASSWORD", "REDIS_KEY_PREFIX"
    ),
)
def activate_command(
    version: str = typer.Argument(..., help="The version to serve."),
    models_dir: Path = typer.Option(
        None, "--models-dir", help="Model registry; default: MODELS_DIR.", show_default=False
    ),
    redis_url: str = typer.Option(
        None, "--redis-url", help="Redis to write; default: REDIS_URL.", show_default=False
    ),
    no_redis: bool = typer.Option(
        False, "--no-redis", help="Only write models/ACTIVE (the default shipped version)."
    ),
) -> None:
    """Make a version active: the Redis key workers read, then models/ACTIVE."""
    from ..scoring.registry import activate, ensure_compiled

    settings = get_settings()
    models_dir = models_dir or settings.models_dir
    url = redis_url or settings.redis_url.get_secret_value()
    try:
        if no_redis:
            ensure_compiled(version, models_dir)
            activate(version, models_dir)
        else:
            _activate_everywhere(version, models_dir, url, settings.redis_key_prefix)
    except FraudError as exc:
        fail(escape(str(exc)), getattr(exc, "exit_code", 2))
        return
    where = "" if no_redis else "Redis and "
    console.print(
        f"activated {version} ({where}{escape(str(models_dir / 'ACTIVE'))})", highlight=False
    )


# --- lifecycle: promote, rollback, shadow ----------------------------------------------


def set_shadows_in_redis(url: str, prefix: str, versions: list[str]) -> None:
    """Write the JSON list ``versions`` to ``{prefix}model:shadows``.

    Raises
    ------
    RedisUnavailableError
    """
    import redis
    from ..redis_store import RedisUnavailableError, shadow_models_key

    client = _client(url)
    try:
        client.set(shadow_models_key(prefix), orjson.dumps(versions))
    except (redis.RedisError, OSError) as exc:
        raise RedisUnavailableError(
            f"cannot write {shadow_models_key(prefix)} to Redis at {_redacted(url)}: {exc}"
        ) from None
    finally:
        client.close()


def apply_lifecycle(new: Lifecycle, settings: Settings, models_dir: Path, redis_url: str,
                    by: str = "fraudctl") -> int:
    """Verify, publish, then record a planned lifecycle state (see the module doc).

    Returns
    -------
    int
        Offset of the control message.

    Raises
    ------
    ModelError, ModelIntegrityError
        A version is unknown or fails verification: nothing was changed.
    BrokerUnavailableError
        Not published: nothing was changed.
    RedisUnavailableError
        Published (workers switch) but Redis not written: run the command again.
    """
    from ..stream.control import CONTROL_KEY, publish
    from ..redis_store import RedisUnavailableError
    from ..scoring.registry import activate, ensure_compiled
    from ..scoring.lifecycle import write_lifecycle

    assert new.active is not None
    for v in [new.active, *new.shadows]:
        ensure_compiled(v, models_dir)  # compiled if not yet, checked against scikit-learn
    event = new.history[-1]
    message = ModelControl(
        action=event.action if event.action != "init" else "promote",
        active_version=new.active, shadow_versions=list(new.shadows),
        issued_time_ms=event.time_ms, issued_by=by,
    )
    offset = publish(settings, settings.control_topic, CONTROL_KEY, encode(message))
    prefix = settings.redis_key_prefix
    try:
        set_active_in_redis(redis_url, prefix, new.active)
        set_shadows_in_redis(redis_url, prefix, list(new.shadows))
    except RedisUnavailableError as exc:
        raise RedisUnavailableError(
            f"published on {settings.control_topic} (workers switch) but {exc}; run the "
            "command again to store the state in Redis"
        ) from None
    write_lifecycle(models_dir, new)
    activate(new.active, models_dir)
    return offset


def _lifecycle_command(plan, models_dir: Path | None, redis_url: str | None,
                       broker: str | None) -> None:
    from ..scoring.lifecycle import read_lifecycle
    from .replay import with_broker

    settings = with_broker(broker)
    models_dir = models_dir or settings.models_dir
    url = redis_url or settings.redis_url.get_secret_value()
    try:
        lc = read_lifecycle(models_dir)
        served = get_active_in_redis(url, settings.redis_key_prefix)
        if served is not None and served != lc.active:
            # Redis is what workers start from: a promote the workers refused, or one
            # made from another registry, left it elsewhere; plan from what is served
            lc = lc.model_copy(update={"active": served})
        new = plan(lc, int(time.time() * 1000))
        offset = apply_lifecycle(new, settings, models_dir, url)
    except FraudError as exc:
        fail(escape(str(exc)), getattr(exc, "exit_code", 2))
        return
    shadows = ", ".join(new.shadows) or "none"
    console.print(
        f"{new.history[-1].action}: active {new.active}, shadows {shadows} (published on "
        f"{settings.control_topic} at offset {offset}; Redis and "
        f"{escape(str(models_dir / 'LIFECYCLE.json'))} updated)",
        highlight=False, soft_wrap=True,
    )


_MODELS_DIR = typer.Option(None, "--models-dir", help="Model registry; default: MODELS_DIR.",
                           show_default=False)
_REDIS_URL = typer.Option(None, "--redis-url", help="Redis to write; default: REDIS_URL.",
                          show_default=False)


@models_cli.command(
    "promote",
    epilog=settings_epilog(
        "MODELS_DIR", "REDIS_URL", "REDIS_PASSWORD", "REDIS_KEY_PREFIX",
        *KAFKA_CLIENT_SETTINGS, "CONTROL_TOPIC"
    ),
)
def promote_command(
    version: str = typer.Argument(..., help="The version to serve."),
    models_dir: Path = _MODELS_DIR,
    redis_url: str = _REDIS_URL,
    broker: Optional[str] = broker_option(),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change; change nothing."),
    force: bool = typer.Option(False, "--force", help="Promote past a refusal of the gate."),
    reason: Optional[str] = typer.Option(
        None, "--reason", metavar="TEXT", help="Why (required with --force; recorded).",
        show_default=False,
    ),
) -> None:
    """Verify a version and make every running worker serve it from its next batch.

    The gate: refused unless the version's card is validated on a test window ending no
    earlier than the active one's, and it is no worse on card precision@100 (rule
    handbook-daily) on one same window (both cards', or `fraudctl models compare`).
    """
    from .compare import gated_promote

    gated_promote(version, models_dir, redis_url, broker, dry_run, force, reason)


@models_cli.command(
    "rollback",
    epilog=settings_epilog(
        "MODELS_DIR", "REDIS_URL", "REDIS_PASSWORD", "REDIS_KEY_PREFIX",
        *KAFKA_CLIENT_SETTINGS, "CONTROL_TOPIC"
    ),
)
def rollback_command(
    to: Optional[str] = typer.Option(
        None, "--to", help="A retired version; default: the one active before the current."
    ),
    models_dir: Path = _MODELS_DIR,
    redis_url: str = _REDIS_URL,
    broker: Optional[str] = broker_option(),
) -> None:
    """Serve the previously active version again (every running worker, next batch)."""
    from ..scoring.lifecycle import plan_rollback

    _lifecycle_command(lambda lc, now: plan_rollback(lc, now, to, "fraudctl"),
                       models_dir, redis_url, broker)


@shadow_cli.command(
    "set",
    epilog=settings_epilog(
        "MODELS_DIR", "REDIS_URL", "REDIS_PASSWORD", "REDIS_KEY_PREFIX",
        *KAFKA_CLIENT_SETTINGS, "CONTROL_TOPIC"
    ),
)
def shadow_set_command(
    versions: list[str] = typer.Argument(..., help="Versions to score in shadow."),
    models_dir: Path = _MODELS_DIR,
    redis_url: str = _REDIS_URL,
    broker: Optional[str] = broker_option(),
) -> None:
    """Score with these versions too: to scored-transactions and metrics, never alerts."""
    from ..scoring.lifecycle import plan_shadows

    _lifecycle_command(lambda lc, now: plan_shadows(lc, versions, now, "fraudctl"),
                       models_dir, redis_url, broker)


@shadow_cli.command(
    "clear",
    epilog=settings_epilog(
        "MODELS_DIR", "REDIS_URL", "REDIS_PASSWORD", "REDIS_KEY_PREFIX",
        *KAFKA_CLIENT_SETTINGS, "CONTROL_TOPIC"
    ),
)
def shadow_clear_command(
    models_dir: Path = _MODELS_DIR,
    redis_url: str = _REDIS_URL,
    broker: Optional[str] = broker_option(),
) -> None:
    """Stop every shadow model."""
    from ..scoring.lifecycle import plan_shadows

    _lifecycle_command(lambda lc, now: plan_shadows(lc, [], now, "fraudctl"),
                       models_dir, redis_url, broker)


@models_cli.command("compile", epilog=settings_epilog("MODELS_DIR"))
def compile_command(
    version: str = typer.Argument(..., help="A version, as in `fraudctl models list`."),
    data: Optional[Path] = typer.Option(
        None, "--data",
        help="The handbook data the model was trained on: recompute its validation rows "
        "(its test window) when the registry holds none.",
    ),
    models_dir: Path = _MODELS_DIR,
) -> None:
    """Compile a version for ONNX Runtime and check it against scikit-learn on its
    validation rows (largest score difference <= 1e-6, identical decisions at its
    threshold); the card's ``runtime`` names the compiled form and its sha256."""
    from ..scoring.registry import compile_version, load_model

    models_dir = models_dir or get_settings().models_dir
    try:
        rows = None
        if data is not None:
            from ..scoring.train import validation_rows

            loaded = load_model(version, models_dir, compiled=False)
            rows = validation_rows(data, loaded.card, loaded.estimator)
        card = compile_version(version, models_dir, rows)
    except FraudError as exc:
        fail(escape(str(exc)))
        return
    console.print(f"{version}: {escape(_runtime_line(card))}", highlight=False, soft_wrap=True)
