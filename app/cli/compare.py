"""``fraudctl models compare`` and the gate of ``fraudctl models promote``.

The evaluation and the gate are pure (:mod:`app.scoring.compare`); this module parses
the window, prints the table or JSON, records the comparison in the registry, and
plans, checks and (unless ``--dry-run``) applies a promotion.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..config import get_settings
from ..exceptions import ConfigError, FraudError
from .base import KAFKA_CLIENT_SETTINGS, broker_option, console, err_console, fail, settings_epilog
from .data import mapping_option
from .models import models_cli

__all__ = ["compare_command", "parse_window", "gated_promote"]


def parse_window(text: str) -> tuple[date, int]:
    """``START..END`` (days, both inclusive) -> ``(start, n_days)``.

    >>> parse_window("2018-07-18..2018-07-24")
    (datetime.date(2018, 7, 18), 7)

    Raises
    ------
    ConfigError
        Not two ``YYYY-MM-DD`` dates, or ``END`` before ``START``.
    """
    try:
        a, b = (date.fromisoformat(x.strip()) for x in text.split(".."))
    except ValueError:
        raise ConfigError(f"--window: expected START..END as YYYY-MM-DD..YYYY-MM-DD, got "
                          f"{text!r}") from None
    if b < a:
        raise ConfigError(f"--window: end {b} is before start {a}")
    return a, (b - a).days + 1


def _resolve(version: str, models_dir: Path) -> str:
    """``active`` -> the registry's active version."""
    if version.lower() != "active":
        return version
    from ..scoring.lifecycle import read_lifecycle

    active = read_lifecycle(models_dir).active
    if active is None:
        raise ConfigError(f"{models_dir}: no active version (models/ACTIVE) to compare")
    return active


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


@models_cli.command("compare", epilog=settings_epilog(
    "MODELS_DIR", *KAFKA_CLIENT_SETTINGS, "LABELS_TOPIC"))
def compare_command(
    a: str = typer.Argument(..., help="A version (e.g. the champion), or 'active'."),
    b: str = typer.Argument(..., help="Another version (e.g. the challenger)."),
    path: Optional[Path] = typer.Argument(
        None, help="Labelled data: file or folder (docs/data.md); not with --from-topic.",
        show_default=False,
    ),
    window: Optional[str] = typer.Option(
        None, "--window", metavar="START..END",
        help="Test days, both inclusive; default: the last --test-days days of the data.",
        show_default=False,
    ),
    test_days: int = typer.Option(7, "--test-days", min=1, help="Days of the default window."),
    gap_days: int = typer.Option(
        7, "--gap-days", min=0,
        help="Label delay before the window: cards with a fraud known by each test day "
        "are left out (known compromised), as in fraudctl evaluate.",
    ),
    mapping: Optional[Path] = mapping_option(),
    models_dir: Optional[Path] = typer.Option(
        None, "--models-dir", help="Model registry; default: MODELS_DIR.", show_default=False
    ),
    output: str = typer.Option("text", "--format", help="text or json."),
    record: bool = typer.Option(
        True, "--record/--no-record",
        help="Keep the result in the registry (COMPARISONS.json): the evidence "
        "`fraudctl models promote` checks.",
    ),
    from_topic: Optional[str] = typer.Option(
        None, "--from-topic", metavar="TOPIC",
        help="Live shadow instead of DATA: the records the stream wrote to TOPIC (e.g. "
        "scored-transactions) scored by A with B in shadow, and the labels on "
        "LABELS_TOPIC: overlap of their alerts, alerts only one raises, precision of each.",
        show_default=False,
    ),
    broker: Optional[str] = broker_option(),
) -> None:
    """Evaluate two versions on the same labelled window: AUC, AP, card precision@100
    (both known-compromised rules), alerts at each one's threshold and their precision;
    or, with --from-topic, on the same live traffic (A active, B in shadow)."""
    from ..scoring.compare import PRIMARY_RULE, compare_on_window, record_comparison

    if output not in ("text", "json"):
        fail(f"--format: expected text or json, got {output!r}")
    models_dir = models_dir or get_settings().models_dir
    if from_topic:
        _compare_shadow(a, b, from_topic, models_dir, broker, output,
                        conflicting=path is not None or window is not None or mapping is not None)
        return
    try:
        if path is None:
            raise ConfigError("name the labelled DATA, or --from-topic TOPIC for a live shadow")
        start, days = parse_window(window) if window else (None, test_days)
        versions = [_resolve(a, models_dir), _resolve(b, models_dir)]
        if versions[0] == versions[1]:
            raise ConfigError(f"both versions are {versions[0]}: name two")
        comparison = compare_on_window(path, versions, models_dir, test_start=start,
                                       test_days=days, gap_days=gap_days, mapping=mapping)
        where = record_comparison(models_dir, comparison) if record else None
    except FraudError as exc:
        fail(escape(str(exc)))
        return
    if output == "json":
        typer.echo(comparison.model_dump_json())
        return
    console.print(
        f"{versions[0]} against {versions[1]} on {comparison.test_start}.."
        f"{comparison.test_end} of {escape(comparison.data_source)} (gap {gap_days} d): "
        f"{comparison.test_transactions:,} transactions, {comparison.test_frauds:,} frauds "
        f"(rule {PRIMARY_RULE})", highlight=False, soft_wrap=True,
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("version", no_wrap=True)
    for col in ("rule", "AUC", "AP", "CP@100", "alerts", "alert precision"):
        table.add_column(col)
    for r in comparison.results:
        table.add_row(r.version, r.known_compromised_rule, _fmt(r.roc_auc),
                      _fmt(r.average_precision), _fmt(r.card_precision_at_100),
                      f"{r.alerts:,}", _fmt(r.alert_precision))
    # piped (no terminal width), a wide table rather than cut version names
    (console if console.is_terminal else Console(width=120)).print(table)
    if where:
        console.print(f"recorded in {escape(str(where))}", highlight=False)


def _decode_shadow(raw: bytes | None) -> tuple[str, str, float, dict[str, float]]:
    """``(transaction_id, model_version, score, shadow_scores)`` of a ScoredTransaction."""
    from ..events import ScoredTransaction

    try:
        r = ScoredTransaction.model_validate_json(raw or b"")
    except ValueError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None
    return r.transaction.transaction_id, r.model_version, r.score, dict(r.shadow_scores)


def _decode_label(raw: bytes | None) -> tuple[str, bool]:
    """``(transaction_id, is_fraud)`` of a Label."""
    from ..events import Label

    try:
        label = Label.model_validate_json(raw or b"")
    except ValueError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None
    return label.transaction_id, label.is_fraud


def _compare_shadow(a: str, b: str, topic: str, models_dir: Path, broker: str | None,
                    output: str, conflicting: bool) -> None:
    import asyncio

    from ..scoring.compare import compare_shadow
    from ..scoring.registry import read_card
    from .evaluate import read_scored
    from .replay import with_broker

    try:
        if conflicting:
            raise ConfigError("--from-topic compares live traffic: no DATA, --window or --mapping")
        settings = with_broker(broker)
        versions = [_resolve(a, models_dir), _resolve(b, models_dir)]
        cards = [read_card(v, models_dir) for v in versions]
        records, _ = asyncio.run(read_scored(settings, topic, _decode_shadow))
        labels, _ = asyncio.run(read_scored(settings, settings.labels_topic, _decode_label))
        result = compare_shadow(records, dict(labels), versions[0], versions[1],
                                (cards[0].alert_threshold, cards[1].alert_threshold))
        if not result.transactions:
            raise ConfigError(f"no record on {topic!r} was scored by {versions[0]} with "
                              f"{versions[1]} in shadow (fraudctl models shadow set)")
    except FraudError as exc:
        fail(escape(str(exc)))
        return
    if output == "json":
        typer.echo(result.model_dump_json())
        return
    r = result
    console.print(
        f"{r.champion} (active, threshold {r.champion_threshold:.3f}) against "
        f"{r.challenger} (shadow, threshold {r.challenger_threshold:.3f}) on {topic}: "
        f"{r.transactions:,} transactions scored by both; alerts by both {r.alerts_both:,}, "
        f"only by {r.champion} {r.alerts_only_champion:,}, only by {r.challenger} "
        f"{r.alerts_only_challenger:,}; labels arrived for {r.labelled:,}: alert precision "
        f"{_fmt(r.champion_alert_precision)} ({r.champion_alerts_labelled:,} labelled alerts) "
        f"against {_fmt(r.challenger_alert_precision)} ({r.challenger_alerts_labelled:,})",
        highlight=False, soft_wrap=True,
    )


def gated_promote(version: str, models_dir: Path | None, redis_url: str | None,
                  broker: str | None, dry_run: bool, force: bool, reason: str | None) -> None:
    """``fraudctl models promote``: gate, then dry run or apply (see the module doc)."""
    from ..scoring.compare import gate_text, promotion_gate, read_comparisons
    from ..scoring.lifecycle import plan_promote, read_lifecycle
    from ..scoring.registry import read_card
    from .models import _lifecycle_command, get_active_in_redis
    from .replay import with_broker

    if force and not (reason and reason.strip()):
        fail("--force needs --reason TEXT: the registry records why the gate was passed over")
    settings = with_broker(broker)
    models_dir = models_dir or settings.models_dir
    url = redis_url or settings.redis_url.get_secret_value()
    try:
        lc = read_lifecycle(models_dir)
        try:
            served = get_active_in_redis(url, settings.redis_key_prefix)
        except FraudError as exc:
            if not dry_run:
                raise
            err_console.print(f"warning: {escape(str(exc))}", highlight=False, soft_wrap=True)
            served = None
        champion = served or lc.active
        challenger = read_card(version, models_dir)
        champion_card = read_card(champion, models_dir) if champion else None
        verdict = promotion_gate(champion_card, challenger, read_comparisons(models_dir))
    except FraudError as exc:
        fail(escape(str(exc)))
        return
    forced = force and not verdict.allowed
    if dry_run:
        console.print(
            f"dry run: promote {version}: active {champion or 'none'} -> {version}, shadows "
            f"{', '.join(s for s in lc.shadows if s != version) or 'none'}; gate "
            f"{gate_text(verdict)}"
            + ("; would pass with --force, recording the reason" if forced else "")
            + (f"; would publish on {settings.control_topic}, write Redis and "
               f"{models_dir / 'LIFECYCLE.json'}, {models_dir / 'ACTIVE'}"
               if verdict.allowed or forced else "; nothing would change"),
            highlight=False, soft_wrap=True,
        )
        if not (verdict.allowed or forced):
            raise typer.Exit(2)
        return
    if not (verdict.allowed or forced):
        fail(escape(f"promotion of {version} {gate_text(verdict)} (--force --reason TEXT "
                    "promotes anyway, recorded in LIFECYCLE.json)"))
    _lifecycle_command(
        lambda lc, now: plan_promote(lc, version, now, "fraudctl", forced=forced,
                                     reason=(reason or "").strip()),
        models_dir, redis_url, broker,
    )
    if forced:
        console.print(f"forced past the gate ({escape(gate_text(verdict))}); reason recorded",
                      highlight=False, soft_wrap=True)
