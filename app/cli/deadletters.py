"""``fraudctl dead-letters list|show|redrive``: work the dead-letter topic.

The selection and re-drive rules are in :mod:`app.deadletters` (pure); this module
reads the topic (no consumer group: every partition, from its beginning to its end as
it was at start), prints, produces the re-driven records and marks them in Redis
(``{REDIS_KEY_PREFIX}redriven:<source topic>:<partition>:<offset>``).
"""

from __future__ import annotations

import asyncio
import enum
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Optional

import orjson
import typer
from rich.table import Table

from ..config import Settings
from ..deadletters import (
    DeadLetterEntry,
    Selection,
    header_value,
    parse_id,
    plan_redrive,
    read_entry,
    select,
    source_of,
)
from ..encoding import ENCODING_HEADER
from ..events import REDRIVE_HEADER
from ..exceptions import BrokerUnavailableError
from .base import KAFKA_CLIENT_SETTINGS, broker_option, cli, console, fail, settings_epilog
from .replay import with_broker

if TYPE_CHECKING:  # imported where used: `fraudctl --help` loads none of them
    import redis

__all__ = ["dead_letters_cli", "read_dead_letters", "redriven_key"]

_POLL_MS = 200
_PROBE_SECONDS = 5.0

dead_letters_cli = typer.Typer(
    name="dead-letters",
    help="List, show and re-drive the records on DEAD_LETTER_TOPIC.",
    no_args_is_help=True,
)
cli.add_typer(dead_letters_cli, name="dead-letters")


class OutputFormat(str, enum.Enum):
    """How ``list`` prints."""

    table = "table"
    jsonl = "jsonl"


def redriven_key(prefix: str, source: tuple[str, int, int]) -> str:
    """Redis key marking a source record as re-driven."""
    topic, partition, offset = source
    return f"{prefix}redriven:{topic}:{partition}:{offset}"


async def _read(settings: Settings, topic: str) -> list[DeadLetterEntry]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaError

    from ..stream.offsets import client_options, start_on_topic, true_end_offsets

    consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
    try:
        tps = await start_on_topic(
            consumer, settings, topic,
            " (nothing was dead-lettered yet, or DEAD_LETTER_TOPIC is wrong)",
        )
        ends = await true_end_offsets(consumer, tps, _PROBE_SECONDS)
        starts = await consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, starts[tp])
        todo = {tp for tp in tps if ends[tp] > starts[tp]}
        out: list[DeadLetterEntry] = []
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=_POLL_MS)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        out.append(
                            read_entry(r.partition, r.offset, r.timestamp, r.value, r.headers)
                        )
                if records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
        return sorted(out, key=lambda e: (e.partition, e.offset))
    except KafkaError as exc:
        raise BrokerUnavailableError(f"reading {topic!r} failed ({exc})") from None
    finally:
        await consumer.stop()


def read_dead_letters(settings: Settings, topic: str | None = None) -> list[DeadLetterEntry]:
    """Every dead letter of ``topic`` (default DEAD_LETTER_TOPIC), by partition and offset.

    Raises
    ------
    BrokerUnavailableError, ConfigError
        Broker unreachable; topic missing.
    """
    return asyncio.run(_read(settings, topic or settings.dead_letter_topic))


def _parse_time(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: expected an ISO date or time such as 2026-12-03T06:00, got {text!r}")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _selection(reason, since, until, source_partition, offset_from, offset_to, ids) -> Selection:
    try:
        parsed_ids = tuple(parse_id(i) for i in ids or ())
    except ValueError as exc:
        fail(f"--id: {exc}")
    if offset_from is not None and offset_to is not None and offset_from > offset_to:
        fail(f"--offset-from {offset_from} is after --offset-to {offset_to}")
    return Selection(
        reasons=tuple(reason or ()),
        since_ms=_parse_time(since, "--since"),
        until_ms=_parse_time(until, "--until"),
        source_partition=source_partition,
        offset_from=offset_from,
        offset_to=offset_to,
        ids=parsed_ids,
    )


# typer options shared by list and redrive
_REASON = typer.Option(None, "--reason", help="Only this reason (repeatable).", show_default=False)
_SINCE = typer.Option(None, "--since", help="Rejected at or after (ISO time, UTC).", show_default=False)
_UNTIL = typer.Option(None, "--until", help="Rejected before (ISO time, UTC).", show_default=False)
_SRC_PARTITION = typer.Option(
    None, "--source-partition", min=0, help="Source partition.", show_default=False
)
_OFFSET_FROM = typer.Option(
    None, "--offset-from", min=0, help="Source offset at least this.", show_default=False
)
_OFFSET_TO = typer.Option(
    None, "--offset-to", min=0, help="Source offset at most this.", show_default=False
)
_ID = typer.Option(
    None, "--id", metavar="P/O", help="Dead letter <partition>/<offset> (repeatable).",
    show_default=False,
)
_TOPIC = typer.Option(
    None, "--topic", help="Dead-letter topic (default: DEAD_LETTER_TOPIC).", show_default=False
)


def _ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _preview(raw: bytes | None, n: int = 60) -> str:
    if raw is None:
        return "-"
    text = raw[:n].decode("utf-8", "replace")
    return text + ("…" if len(raw) > n else "")


def _entry_json(e: DeadLetterEntry, redriven: bool) -> dict:
    return {
        "id": e.id,
        "reason": e.reason,
        "detail": e.detail,
        "source": f"{e.source_topic}/{e.source_partition}/{e.source_offset}",
        "rejected_time_ms": e.rejected_time_ms,
        "raw_size_bytes": e.raw_size_bytes,
        "raw_truncated": e.raw_truncated,
        "redriven_from": e.redriven_from,
        "redriven": redriven,
    }


def _redis(settings: Settings) -> "redis.Redis":
    import redis

    from ..redis_store import redis_client_options, redis_url_of

    return redis.Redis.from_url(
        redis_url_of(settings),
        socket_timeout=5,
        socket_connect_timeout=5,
        **redis_client_options(settings),
    )


def _marks(settings: Settings, entries: list[DeadLetterEntry]) -> set[tuple[str, int, int]]:
    """Source records of ``entries`` already re-driven (Redis)."""
    if not entries:
        return set()
    from redis.exceptions import RedisError

    sources = sorted({source_of(e) for e in entries})
    prefix = settings.redis_key_prefix
    try:
        client = _redis(settings)
        try:
            values = client.mget([redriven_key(prefix, s) for s in sources])
        finally:
            client.close()
    except RedisError as exc:
        fail(f"Redis at REDIS_URL is unavailable ({exc}); it holds the re-drive marks")
    return {s for s, v in zip(sources, values) if v is not None}


_READ_SETTINGS = (*KAFKA_CLIENT_SETTINGS, "DEAD_LETTER_TOPIC")
_MARK_SETTINGS = ("REDIS_URL", "REDIS_PASSWORD", "REDIS_TLS", "REDIS_KEY_PREFIX")


@dead_letters_cli.command("list", epilog=settings_epilog(*_READ_SETTINGS, *_MARK_SETTINGS))
def list_command(
    reason: Optional[list[str]] = _REASON,
    since: Optional[str] = _SINCE,
    until: Optional[str] = _UNTIL,
    source_partition: Optional[int] = _SRC_PARTITION,
    offset_from: Optional[int] = _OFFSET_FROM,
    offset_to: Optional[int] = _OFFSET_TO,
    ids: Optional[list[str]] = _ID,
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format"),
    topic: Optional[str] = _TOPIC,
    broker: Optional[str] = broker_option(),
) -> None:
    """List dead letters (id, rejected time, reason, source partition and offset, size,
    whether re-driven)."""
    settings = with_broker(broker)
    sel = _selection(reason, since, until, source_partition, offset_from, offset_to, ids)
    chosen = sorted(
        select(read_dead_letters(settings, topic), sel), key=lambda e: (e.partition, e.offset)
    )
    marks = _marks(settings, chosen)
    if output_format is OutputFormat.jsonl:
        for e in chosen:
            sys.stdout.write(orjson.dumps(_entry_json(e, source_of(e) in marks)).decode() + "\n")
        return
    table = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold")
    for name in ("id", "rejected (UTC)", "reason", "source", "bytes", "re-drive", "detail"):
        table.add_column(name, overflow="fold")
    for e in chosen:
        state = "done" if source_of(e) in marks else ("failed again" if e.redriven_from else "-")
        table.add_row(
            e.id, _ms(e.rejected_time_ms), e.reason,
            f"{e.source_topic}/{e.source_partition}/{e.source_offset}",
            f"{e.raw_size_bytes:,}", state, e.detail[:80],
        )
    console.print(table)
    counts: dict[str, int] = {}
    for e in chosen:
        counts[e.reason] = counts.get(e.reason, 0) + 1
    summary = ", ".join(f"{r} {n}" for r, n in sorted(counts.items())) or "none"
    console.print(f"{len(chosen)} dead letters: {summary}", highlight=False)


@dead_letters_cli.command("show", epilog=settings_epilog(*_READ_SETTINGS))
def show_command(
    dead_letter_id: str = typer.Argument(..., metavar="P/O", help="Dead letter <partition>/<offset>."),
    raw: bool = typer.Option(False, "--raw", help="Write only the payload's exact bytes to stdout."),
    topic: Optional[str] = _TOPIC,
    broker: Optional[str] = broker_option(),
) -> None:
    """Show one dead letter with its payload (text, and a hex dump when it is not UTF-8)."""
    settings = with_broker(broker)
    try:
        wanted = parse_id(dead_letter_id)
    except ValueError as exc:
        fail(str(exc))
    found = [e for e in read_dead_letters(settings, topic) if (e.partition, e.offset) == wanted]
    if not found:
        fail(f"no dead letter {dead_letter_id} on {topic or settings.dead_letter_topic}")
    e = found[0]
    if raw:
        sys.stdout.buffer.write(e.raw_value or b"")
        sys.stdout.flush()
        return
    lines = [
        f"id:             {e.id}",
        f"reason:         {e.reason}",
        f"detail:         {e.detail}",
        f"source:         {e.source_topic}/{e.source_partition}/{e.source_offset}",
        f"rejected:       {_ms(e.rejected_time_ms)} UTC",
        f"key:            {e.raw_key!r}",
        f"size:           {e.raw_size_bytes} bytes" + (" (kept truncated)" if e.raw_truncated else ""),
        f"re-driven from: {e.redriven_from or '-'}",
        f"encoding:       {(e.encoding or b'json').decode('utf-8', 'replace')}",
    ]
    payload = e.raw_value or b""
    try:
        lines.append("payload:\n" + payload.decode("utf-8"))
    except UnicodeDecodeError:
        dump = "\n".join(
            f"{i:08x}  {payload[i:i + 16].hex(' ')}" for i in range(0, min(len(payload), 4096), 16)
        )
        lines.append("payload (not UTF-8, hex):\n" + dump)
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


async def _send(settings: Settings, dlq_topic: str, entries: list[DeadLetterEntry]) -> list[str]:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    from ..stream.offsets import client_options

    producer = AIOKafkaProducer(
        **client_options(settings), acks="all", enable_idempotence=False, max_request_size=4 * 2**20
    )
    try:
        await producer.start()
    except KafkaError as exc:
        raise BrokerUnavailableError(
            f"Kafka broker {settings.kafka_broker_url} is unavailable ({exc})"
        ) from None
    try:
        futures = []
        for e in entries:
            headers = [(REDRIVE_HEADER, header_value(dlq_topic, e.partition, e.offset).encode())]
            if e.encoding is not None:
                headers.append((ENCODING_HEADER, e.encoding))
            futures.append(
                await producer.send(e.source_topic, e.raw_value, key=e.raw_key, headers=headers)
            )
        sent = []
        for fut in futures:
            md = await fut
            sent.append(f"{md.topic}/{md.partition}/{md.offset}")
        return sent
    except KafkaError as exc:
        raise BrokerUnavailableError(f"re-drive to the source topics failed ({exc})") from None
    finally:
        await producer.stop()


@dead_letters_cli.command(
    "redrive",
    epilog=settings_epilog(*_READ_SETTINGS, "TRANSACTIONS_TOPIC", "LABELS_TOPIC", *_MARK_SETTINGS),
)
def redrive_command(
    reason: Optional[list[str]] = _REASON,
    since: Optional[str] = _SINCE,
    until: Optional[str] = _UNTIL,
    source_partition: Optional[int] = _SRC_PARTITION,
    offset_from: Optional[int] = _OFFSET_FROM,
    offset_to: Optional[int] = _OFFSET_TO,
    ids: Optional[list[str]] = _ID,
    all_: bool = typer.Option(False, "--all", help="Select every dead letter."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, send nothing."),
    topic: Optional[str] = _TOPIC,
    broker: Optional[str] = broker_option(),
) -> None:
    """Send selected dead letters back to their source topic, once each, with the header
    fraud-redriven-from: <dead-letter topic>/<partition>/<offset>. Refuses records that
    were re-driven before or that failed again after a re-drive (re-drive marks in
    Redis)."""
    settings = with_broker(broker)
    sel = _selection(reason, since, until, source_partition, offset_from, offset_to, ids)
    if sel.empty and not all_:
        fail("select what to re-drive (--reason, --since/--until, --source-partition, "
             "--offset-from/--offset-to, --id) or pass --all")
    dlq_topic = topic or settings.dead_letter_topic
    chosen = select(read_dead_letters(settings, dlq_topic), sel)
    plan = plan_redrive(
        chosen, _marks(settings, chosen), [settings.transactions_topic, settings.labels_topic]
    )
    for e, why in plan.refused:
        console.print(f"refused {e.id} ({e.source_topic}/{e.source_partition}/{e.source_offset}): {why}",
                      markup=False, highlight=False)
    if dry_run:
        for e in plan.send:
            console.print(f"would re-drive {e.id} -> {e.source_topic} ({e.reason})",
                          markup=False, highlight=False)
        console.print(f"{len(plan.send)} to re-drive, {len(plan.refused)} refused (dry run)")
        return
    sent = asyncio.run(_send(settings, dlq_topic, plan.send)) if plan.send else []
    _mark(settings, dlq_topic, plan.send, sent)
    console.print(f"{len(sent)} re-driven, {len(plan.refused)} refused", highlight=False)


def _mark(settings: Settings, dlq_topic: str, entries: list[DeadLetterEntry], sent: list[str]) -> None:
    """Mark re-driven records in Redis (after the broker acknowledged them)."""
    if not entries:
        return
    from redis.exceptions import RedisError

    now = int(time.time() * 1000)
    try:
        client = _redis(settings)
        try:
            pipe = client.pipeline()
            for e, to in zip(entries, sent):
                origin = header_value(dlq_topic, e.partition, e.offset)
                value = orjson.dumps({"dead_letter": origin, "to": to, "at_ms": now})
                pipe.set(redriven_key(settings.redis_key_prefix, source_of(e)), value)
            pipe.execute()
        finally:
            client.close()
    except RedisError as exc:
        fail(f"{len(sent)} records re-driven but not marked in Redis ({exc}): do not re-drive "
             "the same selection again", code=1)
