"""``fraudctl rules check|apply|show`` and ``fraudctl threshold``: decisions without a redeploy.

``rules apply FILE`` validates a rule set (:func:`app.decisions.load_rule_set`), refuses
one that is not newer than the rule set of the same id in force, publishes it on
``RULES_TOPIC`` (key: rule-set id; every worker applies it from its next batch, see
:mod:`app.stream.control`) and stores it in Redis (``{REDIS_KEY_PREFIX}rules:current``).

``threshold --budget N`` picks the lowest alert threshold that keeps a model's alerts
within N a day on a window of data scored offline with the stream's feature code
(:func:`app.scoring.train.read_features`), and prints what it gives.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..config import get_settings
from ..events import encode
from ..exceptions import DataError, FraudError, RuleSetError
from .base import KAFKA_CLIENT_SETTINGS, broker_option, cli, console, fail, settings_epilog

if TYPE_CHECKING:  # imported where used: `fraudctl --help` loads none of them
    from ..decisions import CompiledRuleSet

__all__ = ["rules_cli", "apply_command", "show_command", "check_command", "threshold_command",
           "get_rules_in_redis", "set_rules_in_redis"]

rules_cli = typer.Typer(
    name="rules",
    help="Decision rules: check a file, apply it to every worker, show the one in force.",
    no_args_is_help=True,
)
cli.add_typer(rules_cli, name="rules")


def get_rules_in_redis(url: str, prefix: str) -> bytes | None:
    """The rule-set JSON in ``{prefix}rules:current``, or None.

    Raises
    ------
    RedisUnavailableError
    """
    import redis
    from ..redis_store import RedisUnavailableError, rules_key
    from .models import _client, _redacted

    client = _client(url)
    try:
        return client.get(rules_key(prefix))
    except (redis.RedisError, OSError) as exc:
        raise RedisUnavailableError(
            f"cannot read {rules_key(prefix)} from Redis at {_redacted(url)}: {exc}"
        ) from None
    finally:
        client.close()


def set_rules_in_redis(url: str, prefix: str, value: bytes) -> None:
    """Write the rule-set JSON to ``{prefix}rules:current``.

    Raises
    ------
    RedisUnavailableError
    """
    import redis
    from ..redis_store import RedisUnavailableError, rules_key
    from .models import _client, _redacted

    client = _client(url)
    try:
        client.set(rules_key(prefix), value)
    except (redis.RedisError, OSError) as exc:
        raise RedisUnavailableError(
            f"cannot write {rules_key(prefix)} to Redis at {_redacted(url)}: {exc}"
        ) from None
    finally:
        client.close()


def _print_rules(rs: CompiledRuleSet) -> None:
    r = rs.rule_set
    console.print(
        f"rule set {r.label}: {escape(r.description) or '(no description)'}; review threshold "
        f"{r.review_threshold if r.review_threshold is not None else 'model card'}, block "
        f"threshold {r.block_threshold if r.block_threshold is not None else 'none'}",
        highlight=False, soft_wrap=True,
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("id", "when", "outcome", "enabled"):
        table.add_column(col, overflow="fold")
    for rule in r.rules:
        table.add_row(rule.id, escape(f"{rule.attribute} {rule.op} {rule.value!r}"),
                      rule.outcome, "yes" if rule.enabled else "no")
    console.print(table)
    for name, lst in (("allow", r.allow), ("block", r.block)):
        console.print(f"{name}: {len(lst.accounts)} accounts, {len(lst.terminals)} terminals",
                      highlight=False)


@rules_cli.command("check", epilog=settings_epilog("SCORE_OUTCOME"))
def check_command(
    path: Path = typer.Argument(..., help="Rule set, .json or .yaml."),
) -> None:
    """Validate a rule-set file and print it; exit 2 with the first error otherwise."""
    from ..decisions import load_rule_set
    from ..features import FEATURE_NAMES

    s = get_settings()
    try:
        _print_rules(load_rule_set(path, FEATURE_NAMES, s.score_outcome))
    except FraudError as exc:
        fail(escape(str(exc)), getattr(exc, "exit_code", 2))


@rules_cli.command(
    "apply",
    epilog=settings_epilog(
        "SCORE_OUTCOME", "REDIS_URL", "REDIS_PASSWORD", "REDIS_KEY_PREFIX",
        *KAFKA_CLIENT_SETTINGS, "RULES_TOPIC"
    ),
)
def apply_command(
    path: Path = typer.Argument(..., help="Rule set, .json or .yaml."),
    redis_url: Optional[str] = typer.Option(
        None, "--redis-url", help="Redis to write; default: REDIS_URL.", show_default=False
    ),
    broker: Optional[str] = broker_option(),
) -> None:
    """Validate a rule set, publish it to every worker (next batch) and store it in Redis."""
    from ..stream.control import publish
    from ..decisions import load_rule_set, parse_rule_set
    from ..features import FEATURE_NAMES
    from .replay import with_broker

    settings = with_broker(broker)
    url = redis_url or settings.redis_url.get_secret_value()
    try:
        rs = load_rule_set(path, FEATURE_NAMES, settings.score_outcome)
        current_raw = get_rules_in_redis(url, settings.redis_key_prefix)
        if current_raw:
            try:
                current = parse_rule_set(current_raw).rule_set
            except RuleSetError:
                current = None  # unreadable: replace it
            new = rs.rule_set
            if current is not None and current.id == new.id and new.version <= current.version:
                raise RuleSetError(
                    f"rule set {new.label} is not newer than {current.label} in force: "
                    "raise its version"
                )
        value = encode(rs.rule_set)
        offset = publish(settings, settings.rules_topic, rs.rule_set.id.encode(), value)
        set_rules_in_redis(url, settings.redis_key_prefix, value)
    except FraudError as exc:
        fail(escape(str(exc)), getattr(exc, "exit_code", 2))
        return
    console.print(
        f"applied rule set {rs.label} ({len(rs.rule_set.rules)} rules): published on "
        f"{settings.rules_topic} at offset {offset}, stored in Redis",
        highlight=False, soft_wrap=True,
    )


@rules_cli.command(
    "show",
    epilog=settings_epilog(
        "SCORE_OUTCOME", "REDIS_URL", "REDIS_PASSWORD", "REDIS_KEY_PREFIX"
    ),
)
def show_command(
    redis_url: Optional[str] = typer.Option(
        None, "--redis-url", help="Redis to read; default: REDIS_URL.", show_default=False
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the rule set as JSON."),
) -> None:
    """The rule set in force (from Redis)."""
    from ..decisions import parse_rule_set
    from ..features import FEATURE_NAMES

    settings = get_settings()
    url = redis_url or settings.redis_url.get_secret_value()
    try:
        raw = get_rules_in_redis(url, settings.redis_key_prefix)
        if raw is None:
            console.print("no rule set applied: workers decide by the score threshold only")
            return
        rs = parse_rule_set(raw, FEATURE_NAMES, settings.score_outcome)
    except FraudError as exc:
        fail(escape(str(exc)), getattr(exc, "exit_code", 2))
        return
    if as_json:
        typer.echo(rs.rule_set.model_dump_json(indent=2))
    else:
        _print_rules(rs)


@cli.command("threshold", epilog=settings_epilog("MODELS_DIR"))
def threshold_command(
    path: Path = typer.Argument(..., help="Handbook data: a .csv/.csv.gz file or a folder."),
    budget: int = typer.Option(..., "--budget", min=1, help="Alerts allowed per day."),
    per: str = typer.Option(
        "day", "--per", help="day: no day above the budget; mean-day: on average."
    ),
    version: Optional[str] = typer.Option(
        None, "--version", help="Model version; default: the registry's default."
    ),
    start: Optional[str] = typer.Option(
        None, "--start", metavar="YYYY-MM-DD",
        help="First day of the window; default: the card's test window.",
    ),
    end: Optional[str] = typer.Option(None, "--end", metavar="YYYY-MM-DD",
                                      help="Last day of the window."),
    write: bool = typer.Option(
        False, "--write", help="Write the threshold into the model card (alert_threshold)."
    ),
    models_dir: Optional[Path] = typer.Option(
        None, "--models-dir", help="Model registry; default: MODELS_DIR.", show_default=False
    ),
) -> None:
    """Lowest alert threshold giving at most BUDGET alerts a day on a window, offline."""
    import numpy as np
    from ..features import FEATURE_NAMES
    from ..scoring.model import Scorer
    from ..scoring.registry import default_version, load_model, read_card, set_alert_threshold
    from ..scoring.threshold import threshold_for_budget
    from ..scoring.train import read_features
    from ..data.handbook import parse_date

    settings = get_settings()
    models_dir = models_dir or settings.models_dir
    try:
        if per not in ("day", "mean-day"):
            raise DataError(f"--per: expected day or mean-day, got {per!r}")
        version = version or default_version(models_dir)
        card = read_card(version, models_dir)
        first = parse_date(start, "start") if start else card.data.test.start
        last = parse_date(end, "end") if end else (
            card.data.test.end if not start else first + timedelta(days=6))
        if last < first:
            raise DataError(f"--end {last} is before --start {first}")
        scorer = Scorer(load_model(version, models_dir))
        frame, _ = read_features(path, first, last)
        days = frame["TX_DATETIME"].dt.floor("D")
        keep = days.between(np.datetime64(first), np.datetime64(last)).to_numpy()
        window = frame.loc[keep]
        scores = scorer.score_many(window[list(FEATURE_NAMES)].to_numpy(dtype=np.float64))
        choice = threshold_for_budget(
            scores, days[keep].to_numpy(), window["TX_FRAUD"].to_numpy(), budget, per)
    except (FraudError, ValueError) as exc:
        fail(escape(str(exc)), getattr(exc, "exit_code", 2))
        return
    fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    rationale = (
        f"at most {budget} alerts per {per} on {first}..{last} (offline, stream features): "
        f"precision {fmt(choice.precision)}, recall {fmt(choice.recall)}, "
        f"{choice.mean_alerts_per_day:.1f} alerts/day (max {choice.max_alerts_per_day})"
    )
    console.print(
        f"model {version}: threshold {choice.threshold:g} -> {choice.alerts} alerts on "
        f"{choice.days} days, {choice.frauds_alerted} of {choice.frauds} frauds; "
        f"precision {fmt(choice.precision)}, recall {fmt(choice.recall)}, "
        f"{choice.mean_alerts_per_day:.1f} alerts/day on average, at most "
        f"{choice.max_alerts_per_day} (card's threshold: {card.alert_threshold:g})",
        highlight=False, soft_wrap=True,
    )
    if not choice.within_budget:
        fail(f"no threshold meets {budget} alerts per {per}: too many scores of 1.0")
        return
    if write:
        try:
            set_alert_threshold(version, choice.threshold, rationale, models_dir)
        except FraudError as exc:
            fail(escape(str(exc)), getattr(exc, "exit_code", 2))
            return
        console.print(f"wrote alert_threshold {choice.threshold:g} into {version}'s card "
                      "(workers read it when they load the model)", highlight=False)
