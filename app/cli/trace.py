"""``fraudctl trace TRANSACTION_ID``: the story of one transaction, read from the topics.

Reads ``transactions``, ``transactions-dead-letter``, the internal by-terminal topic,
``scored-transactions``, ``fraud-alerts`` and ``transaction-labels`` with a consumer of
no group (nothing is committed), and prints what :func:`app.story.story_of` makes of
the records that mention the transaction. Keys pick the partitions: the account id
(``--account``, or the one found on ``transactions``) for transactions, scored records
and alerts; the terminal id for the by-terminal topic and labels (the Kafka default
partitioner, murmur2), so only those partitions are read to their end. Without
``--account`` every partition of ``transactions`` and of the dead-letter topic is read.
"""

from __future__ import annotations

import asyncio
import enum
import sys
from datetime import datetime, timezone
from typing import Any, Optional

import typer

from .base import KAFKA_CLIENT_SETTINGS, broker_option, cli, console, settings_epilog

__all__ = ["trace", "partition_for_key", "TraceFormat"]


class TraceFormat(str, enum.Enum):
    """How ``fraudctl trace`` prints the story."""

    table = "table"
    json = "json"


def partition_for_key(key: str | bytes, partitions: int) -> int:
    """The partition of ``key`` under the Kafka default partitioner (murmur2 of the
    key, as the Java client and aiokafka's ``DefaultPartitioner`` place it).

    Parameters
    ----------
    key : str or bytes
        A str is UTF-8 encoded.
    partitions : int
        Partitions of the topic, >= 1.

    Raises
    ------
    ValueError
        ``partitions < 1``.

    Examples
    --------
    >>> from aiokafka.partitioner import DefaultPartitioner
    >>> partition_for_key("42", 4) == DefaultPartitioner()(b"42", [0, 1, 2, 3], [0, 1, 2, 3])
    True
    """
    from aiokafka.partitioner import murmur2

    if partitions < 1:
        raise ValueError(f"partitions: expected >= 1; got {partitions}")
    raw = key.encode() if isinstance(key, str) else key
    return (murmur2(raw) & 0x7FFFFFFF) % partitions


@cli.command(
    epilog=settings_epilog(
        *KAFKA_CLIENT_SETTINGS, "TRANSACTIONS_TOPIC", "DEAD_LETTER_TOPIC", "SCORED_TOPIC",
        "ALERTS_TOPIC", "LABELS_TOPIC", "APP_ID",
    ),
)
def trace(
    transaction_id: str = typer.Argument(..., help="The transaction id to follow."),
    account: Optional[str] = typer.Option(
        None, "--account", metavar="ACCOUNT_ID",
        help="Its account id: only that account's partition of transactions is read "
        "(default: every partition until it is found).", show_default=False,
    ),
    output_format: TraceFormat = typer.Option(
        TraceFormat.table, "--format", help="table: the steps for a person; json: one JSON object."
    ),
    broker: Optional[str] = broker_option(),
) -> None:
    """The story of one transaction: where it entered (topic, partition, offset, key),
    whether it was dead-lettered and why, its account and terminal features, score,
    model and rule versions, outcome and rules fired, its alert and later labels, each
    with its Kafka timestamp and traceparent.

    APP_ID names the internal by-terminal topic. Exit 1 when nothing mentions the
    transaction.
    """
    from ..story import story_of
    from .replay import with_broker

    settings = with_broker(broker)
    records = asyncio.run(_find(settings, transaction_id, account))
    story = story_of(transaction_id, records)
    if output_format is TraceFormat.json:
        import orjson

        sys.stdout.write(orjson.dumps(story.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print(story)
    if not story.steps:
        raise typer.Exit(1)


# --- reading the topics ------------------------------------------------------------------


async def _find(settings, transaction_id: str, account: str | None) -> list:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    from ..exceptions import BrokerUnavailableError
    from ..stream.offsets import client_options, topic_partitions
    from ..story import FoundRecord, dead_letter_mentions, transaction_pattern
    from ..tracing import from_headers

    pattern = transaction_pattern(transaction_id)
    needle = transaction_id.encode()
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    found: list[FoundRecord] = []
    #: topic -> its partitions, read once: once partitions are assigned, the client's
    #: metadata covers only their topics
    partitions: dict[str, list[int]] = {}

    def tps(topic: str, key: str | bytes | None) -> list:
        parts = partitions.get(topic, [])
        if not parts:
            return []
        if key is None:
            return [TopicPartition(topic, p) for p in parts]
        return [TopicPartition(topic, partition_for_key(key, len(parts)))]

    async def scan(wanted: dict[Any, str]) -> None:
        """Read the partitions of ``wanted`` (partition -> kind) to their end."""
        from ..stream.offsets import true_end_offsets

        if not wanted:
            return
        ends = await true_end_offsets(consumer, list(wanted))
        starts = await consumer.beginning_offsets(list(wanted))
        todo = {tp for tp in wanted if ends[tp] > starts[tp]}
        for tp in todo:
            consumer.seek(tp, starts[tp])
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=500, max_records=5000)
            for tp, recs in batch.items():
                kind = wanted[tp]
                for r in recs:
                    value = r.value or b""
                    if needle not in value and kind != "dead-lettered":
                        continue
                    hit = (
                        dead_letter_mentions(value, pattern)
                        if kind == "dead-lettered" else bool(pattern.search(value))
                    )
                    if hit:
                        found.append(FoundRecord(
                            kind, r.topic, r.partition, r.offset, r.key, r.timestamp, r.value,
                            from_headers(r.headers),
                        ))
            for tp in list(todo):  # by position: the end may be a control record
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)

    try:
        try:
            await consumer.start()
            partitions.update(await topic_partitions(settings, await consumer.topics()))
        except KafkaError as exc:
            raise BrokerUnavailableError(
                f"Kafka broker {settings.kafka_broker_url} is unavailable ({exc})"
            ) from None
        first = {tp: "entered" for tp in tps(settings.transactions_topic, account)}
        first.update({tp: "dead-lettered" for tp in tps(settings.dead_letter_topic, None)})
        await scan(first)
        terminal = None
        for rec in found:
            if rec.kind == "entered":
                from ..story import story_of

                s = story_of(transaction_id, [rec])
                account = account or s.account_id
                terminal = terminal or s.terminal_id
        later: dict[Any, str] = {}
        if account is not None:
            later.update({tp: "scored" for tp in tps(settings.scored_topic, account)})
            later.update({tp: "alert" for tp in tps(settings.alerts_topic, account)})
        if terminal is not None:
            later.update({tp: "forwarded" for tp in tps(settings.by_terminal_topic, terminal)})
            later.update({tp: "label" for tp in tps(settings.labels_topic, terminal)})
        await scan(later)
    except KafkaError as exc:
        raise BrokerUnavailableError(f"reading the topics failed ({exc})") from None
    finally:
        await consumer.stop()
    return found


# --- printing ------------------------------------------------------------------------------


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    t = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def _what(step) -> str:
    d = step.details
    if step.kind == "entered":
        if d.get("valid_json") is False:
            return f"not JSON: {d.get('raw')!r}"
        amount = d.get("amount_minor")
        money = f"{amount / 100:,.2f} {d.get('currency', '')}" if isinstance(amount, int) else "?"
        rekey = "" if d.get("key_is_account_id", True) else " (key is not the account id: re-keyed)"
        return (
            f"account {d.get('account_id')} terminal {d.get('terminal_id')} {money}, "
            f"event time {_when(d.get('event_time_ms'))}{rekey}"
        )
    if step.kind == "dead-lettered":
        return (
            f"reason {d.get('reason')}: {d.get('detail')} (from {d.get('source_topic')}"
            f"[{d.get('source_partition')}]@{d.get('source_offset')})"
        )
    if step.kind == "forwarded":
        return f"to the scoring stage in a micro-batch of {d.get('batch_size')}"
    if step.kind == "scored":
        rules = ", ".join(d.get("rules_fired") or []) or "none"
        return (
            f"score {d.get('score'):.4f}, decision {d.get('decision')}, outcome "
            f"{d.get('outcome')}, model {d.get('model_version')}, rules "
            f"{d.get('rule_set_version')} fired: {rules}"
        )
    if step.kind == "alert":
        reasons = "; ".join(
            f"{r['feature']} {r['contribution']:+.3f}" for r in d.get("reasons") or []
        )
        return (
            f"outcome {d.get('outcome')}, score {d.get('score'):.4f} >= threshold "
            f"{d.get('threshold'):.4f}, top reasons: {reasons or '-'}"
        )
    verdict = "fraud" if d.get("is_fraud") else "genuine"
    return f"{verdict}, label time {_when(d.get('label_time_ms'))}"


def _print(story) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # piped output is not folded at 80 columns: one step, one line
    out = console if console.is_terminal else Console(width=400)

    if not story.steps:
        out.print(f"transaction {story.transaction_id}: no record mentions it", highlight=False)
        return
    head = f"transaction {story.transaction_id}"
    if story.account_id:
        head += f", account {story.account_id}, terminal {story.terminal_id}"
    state = "dead-lettered" if story.dead_lettered else ("alerted" if story.alerted else "")
    out.print(f"[bold]{escape(head)}[/]" + (f" [red]{state}[/]" if state else ""), highlight=False)
    steps = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold")
    for name in ("Kafka time (UTC)", "step", "topic[partition]@offset", "key", "what", "traceparent"):
        steps.add_column(escape(name), overflow="fold")
    for s in story.steps:
        cells = (
            _when(s.timestamp_ms), s.kind, f"{s.topic}[{s.partition}]@{s.offset}", s.key or "-",
            _what(s), s.traceparent or "-",
        )
        steps.add_row(*(escape(c) for c in cells))
    out.print(steps)
    for title, feats in (
        ("account features", story.account_features), ("terminal features", story.terminal_features)
    ):
        if feats:
            line = ", ".join(f"{k} {v:.4g}" for k, v in feats.items())
            out.print(f"[bold]{title}[/]: {escape(line)}", highlight=False)
