"""``ProcessedOnlyEvent``: an event no stream handed on is never acknowledged."""

from __future__ import annotations

import faust
import pytest
from faust.types import Message

from app.stream.streaming import ProcessedOnlyEvent


def _event() -> ProcessedOnlyEvent:
    app = faust.App("test-streaming", broker="kafka://127.0.0.1:9", autodiscover=False)
    message = Message("tx", 2, 596, 0.0, 0, {}, b"k", b"v", None)
    return ProcessedOnlyEvent(app, b"k", b"v", None, message)


def test_a_skipped_event_is_not_acknowledged():
    event = _event()
    assert event.taken is False
    assert event.ack() is False  # its offset stays uncommitted: fetched again
    assert event.message.acked is False


def test_reading_the_value_marks_the_event_handed_on():
    event = _event()
    assert event.value == b"v"
    assert event.taken is True
    assert event.key == b"k" and event.message.offset == 596


def test_the_worker_app_uses_it():
    from app.stream.main import app

    assert app.conf.Event is ProcessedOnlyEvent


class _AppWithProducer:
    """What :func:`app.stream.streaming.produce` uses of a Faust app: ``app.producer`` with
    ``_ensure_producer()`` (the aiokafka producer) and Faust's ``send`` signature."""

    def __init__(self, producer) -> None:
        self.producer = self
        self._producer = producer

    def _ensure_producer(self):
        return self._producer

    async def send(self, topic, key, value, partition, timestamp, headers):
        return await self._producer.send(topic, value, key=key, partition=partition)


def _stall_then_produce(bootstrap: str, tag: str) -> tuple[bool, bool]:
    """A record for a topic the producer's metadata knows but does not track, then one
    for a new topic before the first leaves (linger): returns whether the first record
    was acknowledged when sent with the producer's own ``send`` and with ``produce``."""
    import asyncio

    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from app.stream.streaming import produce

    async def run(use_produce: bool) -> bool:
        old, new = f"{tag}-old-{use_produce}", f"{tag}-new-{use_produce}"
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(old, 1, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=300)
        await producer.start()  # its first metadata answer lists every topic: `old` too
        app = _AppWithProducer(producer)
        try:
            if use_produce:
                first = await produce(app, old, b"first")
                await produce(app, new, b"second")
            else:
                first = await producer.send(old, b"first")
                await producer.send(new, b"second")  # tracked: metadata now asks for it only
            try:
                await asyncio.wait_for(asyncio.shield(first), 5.0)
                return True
            except asyncio.TimeoutError:
                # tracking the topic is what releases it (and lets the producer stop)
                await producer.client.add_topic(old)
                await asyncio.wait_for(first, 10.0)
                return False
        finally:
            await asyncio.wait_for(producer.stop(), 10.0)

    return asyncio.run(run(False)), asyncio.run(run(True))


def test_produce_tracks_the_topic_so_a_record_never_waits_for_a_leader_forever(broker, tmp_path):
    """aiokafka's producer does not track a topic it found in a metadata answer; once it
    tracks another, refreshes leave the first out and its pending record never leaves
    (a worker stalled on this mid-replay). ``produce`` tracks every topic it sends to."""
    plain, tracked = _stall_then_produce(broker.bootstrap, tmp_path.name.replace("_", "-")[-30:])
    assert plain is False, "aiokafka sent the record: the quirk is gone, `produce` may be simplified"
    assert tracked is True


def test_the_worker_consumer_gets_the_configured_fetch_wait(monkeypatch):
    """Faust builds its group consumer with a fixed 1.5 s fetch wait; the worker's
    setting replaces it (no broker needed: the consumer is only built, not started)."""
    import pytest
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from app.stream.streaming import set_fetch_max_wait

    class _Client:
        pass

    class _Built:
        _fetch_max_wait_ms = 1500

        def __init__(self) -> None:
            self._client = _Client()

    monkeypatch.setattr(AIOKafkaConsumerThread, "_create_worker_consumer",
                        lambda self, transport: _Built())
    set_fetch_max_wait(0.02)
    built = AIOKafkaConsumerThread._create_worker_consumer(None, None)
    assert built._fetch_max_wait_ms == 20
    assert built._client._fetch_waits_ms == (20, 20)  # one fixed wait
    set_fetch_max_wait(0.5, 0.01)  # again: wraps Faust's method, not the previous wrapper
    built = AIOKafkaConsumerThread._create_worker_consumer(None, None)
    assert built._fetch_max_wait_ms == 500
    assert built._client._fetch_waits_ms == (500, 10)  # lagging, caught up
    with pytest.raises(ValueError, match="expected in"):
        set_fetch_max_wait(2.0)
    with pytest.raises(ValueError, match="caught_up_seconds"):
        set_fetch_max_wait(0.2, 0.5)  # the caught-up wait is the shorter one


@pytest.mark.both_brokers
def test_fetch_wait_is_short_only_while_caught_up(broker, make_topic):
    """On both brokers: an aiokafka consumer marked as the worker's builds its
    fetch requests with the long wait until it has fetched every partition to its end,
    then with the short one; a record written while it is caught up is received."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.consumer.fetcher import Fetcher

    from app.stream.streaming import adapt_fetch_wait

    topic = make_topic("fetchwait", partitions=2)
    waits: list[tuple[int, int]] = []  # (records received so far, wait of the request)
    received: list = []

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
        await producer.start()
        for i in range(400):
            await producer.send(topic, b"v%d" % i, partition=i % 2)
        await producer.flush()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
        )
        adapt_fetch_wait(consumer, 400, 15)
        adaptive = Fetcher._get_actions_per_node

        def spy(self, assignment):  # noqa: ANN001
            result = adaptive(self, assignment)
            if result[0]:  # a fetch request is built
                waits.append((len(received), self._fetch_max_wait_ms))
            return result

        Fetcher._get_actions_per_node = spy
        try:
            await consumer.start()
            tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while len(received) < 400:
                for records in (await consumer.getmany(timeout_ms=2000)).values():
                    received.extend(records)
            await asyncio.sleep(0.2)  # caught up: a few idle fetches
            await producer.send_and_wait(topic, b"live", partition=1)
            deadline = asyncio.get_running_loop().time() + 10
            while not any(r.value == b"live" for r in received):
                assert asyncio.get_running_loop().time() < deadline, "live record not received"
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    received.extend(records)
        finally:
            Fetcher._get_actions_per_node = adaptive
            await consumer.stop()
            await producer.stop()

    asyncio.run(run())
    assert len(received) == 401
    assert waits[0] == (0, 400), waits[:3]  # nothing fetched yet: the long wait
    idle = [w for n, w in waits if n == 400]  # everything read, before the live record
    assert idle and set(idle) == {15}, waits


def test_tables_are_registered_without_a_fixed_wait():
    """Faust's table manager sleeps 1 s before it registers the tables' channels and
    starts recovery; with the correction it does both at once, in that order (a stand-in
    manager: Faust's ``sleep`` must not be called)."""
    import asyncio

    from faust.tables.manager import TableManager

    from app.stream.streaming import register_tables_at_once

    calls: list[str] = []

    class _Recovery:
        async def start(self) -> None:
            calls.append("recovery")

    class _Manager:
        should_stop = False
        recovery = _Recovery()

        async def sleep(self, seconds: float) -> None:
            raise AssertionError(f"slept {seconds} s")

        async def _update_channels(self) -> None:
            calls.append("channels")

    register_tables_at_once()
    register_tables_at_once()  # idempotent: wraps Faust's method once
    assert TableManager.on_start._at_once is True
    asyncio.run(TableManager.on_start(_Manager()))
    assert calls == ["channels", "recovery"]
    stopping = _Manager()
    stopping.should_stop = True
    calls.clear()
    asyncio.run(TableManager.on_start(stopping))
    assert calls == []


class _FakeConsumer:
    """What the gap guard reads of a Faust consumer (no broker): the app's flow
    control, the assignment, and the seeks it makes (recorded)."""

    def __init__(self, tps, flow_active=True, expected=0):
        self._tps = set(tps)
        self.seeks: list = []
        self.committed: dict = {}
        self._read_offset: dict = {}
        self.app = type("App", (), {"in_recovery": False, "rebalancing": False})()
        self.app.flow_control = type("Flow", (), {"is_active": lambda _self: flow_active})()
        self.app.conf = type("Conf", (), {"consumer_auto_offset_reset": "earliest"})()
        if expected is not None:  # as after Faust's seek to the committed offsets
            from app.stream import streaming

            streaming._next_offsets[self] = {tp: expected for tp in tps}

    def assignment(self):
        return self._tps


def _guard_over(monkeypatch, fetches, seek=None):
    """Install the gap guard over a scripted ``getmany`` (each call yields the next
    list of ``(tp, message, before)``, calling ``before()`` first when given) and a
    recording ``seek``; monkeypatch puts Faust's methods (guarded) back afterwards."""
    from faust.transport.consumer import Consumer
    from mode.utils.queues import FlowControlEvent

    from app.stream import streaming

    async def getmany(self, timeout):
        for tp, message, before in fetches.pop(0):
            if before is not None:
                before()
            yield tp, message

    async def recorded_seek(self, tp, offset):
        self.seeks.append((tp.partition, offset))

    seek = seek or recorded_seek

    async def perform_seek(self):  # Faust's: the read offsets become the committed ones
        self._read_offset.update(self.committed)

    def stop_flow(self):
        pass

    for name, value in (("getmany", getmany), ("seek", seek),
                        ("perform_seek", perform_seek), ("stop_flow", stop_flow),
                        ("_new_offset", Consumer._new_offset)):
        monkeypatch.setattr(Consumer, name, value)
    monkeypatch.setattr(FlowControlEvent, "clear", FlowControlEvent.clear)
    streaming.guard_offset_gaps(["tx"])
    return Consumer.getmany


def _handed_on(getmany, consumer) -> list[int]:
    import asyncio

    async def run():
        return [m.offset async for _tp, m in getmany(consumer, 0.1)]

    return asyncio.run(run())


def test_no_record_is_handed_on_before_an_earlier_one_a_stream_skipped(monkeypatch):
    """A rebalance made the stream skip offset 1 while the fetch in progress still
    yields offsets 2 and 3: they wait, the partition is sought back to 1, and the next
    fetch hands on 1, 2, 3 in order (an account's later transaction is never
    featurized before an earlier one)."""
    from faust.types import TP

    from app.stream import streaming

    tp = TP("tx", 0)
    consumer = _FakeConsumer([tp])
    msg = lambda o: Message("tx", 0, o, 0.0, 0, {}, b"k", b"v", None)  # noqa: E731
    skip_1 = lambda: streaming._remember_skipped(consumer, tp, 1)  # noqa: E731
    fetches = [
        [(tp, msg(0), None), (tp, msg(1), None), (tp, msg(2), skip_1), (tp, msg(3), None)],
        [(tp, msg(1), None), (tp, msg(2), None), (tp, msg(3), None)],
    ]
    getmany = _guard_over(monkeypatch, fetches)
    first = _handed_on(getmany, consumer)
    assert first == [0, 1], "a record after the skipped one was handed on before it"
    assert consumer.seeks == [(0, 1)]
    assert _handed_on(getmany, consumer) == [1, 2, 3]
    assert consumer.seeks == [(0, 1)]  # no second seek: the skipped record came again


def test_a_record_skipped_at_the_end_of_a_fetch_is_fetched_again_next_time(monkeypatch):
    """The last record handed on is skipped and nothing arrives after it: the next
    call seeks back to it (once flow is on), so the partition is not left behind."""
    from faust.types import TP

    from app.stream import streaming

    tp = TP("tx", 0)
    consumer = _FakeConsumer([tp])
    msg = lambda o: Message("tx", 0, o, 0.0, 0, {}, b"k", b"v", None)  # noqa: E731
    fetches = [[(tp, msg(0), None), (tp, msg(1), None)], [(tp, msg(5), None)], [(tp, msg(1), None)]]
    getmany = _guard_over(monkeypatch, fetches)
    assert _handed_on(getmany, consumer) == [0, 1]
    streaming._remember_skipped(consumer, tp, 1)
    # this call seeks back to 1 first; what the fetch in progress returns is dropped
    assert _handed_on(getmany, consumer) == []
    assert consumer.seeks == [(0, 1)]
    assert _handed_on(getmany, consumer) == [1]


def test_a_skip_at_the_next_expected_offset_seeks_nothing(monkeypatch):
    """Nothing after the skipped record was handed on (it is the next expected one):
    no seek; the next record fetched after it still waits for it (the gap check)."""
    from faust.types import TP

    from app.stream import streaming

    tp = TP("tx", 0)
    consumer = _FakeConsumer([tp])
    msg = lambda o: Message("tx", 0, o, 0.0, 0, {}, b"k", b"v", None)  # noqa: E731
    fetches = [[(tp, msg(0), None), (tp, msg(1), None)], [], [(tp, msg(3), None)]]
    getmany = _guard_over(monkeypatch, fetches)
    assert _handed_on(getmany, consumer) == [0, 1]
    streaming._remember_skipped(consumer, tp, 2)  # 2 was never handed on
    assert _handed_on(getmany, consumer) == []
    assert consumer.seeks == []
    assert _handed_on(getmany, consumer) == []  # 3 waits for 2
    assert consumer.seeks == [(0, 2)]


def test_no_seek_back_while_faust_recovers_tables(monkeypatch):
    """Queues cleared when flow resumes at the start of a recovery: no seek back then
    (Faust seeks every stream partition to its committed offset when the recovery
    ends); once it has ended, the seek back happens."""
    from faust.types import TP

    from app.stream import streaming

    tp = TP("tx", 0)
    consumer = _FakeConsumer([tp])
    msg = lambda o: Message("tx", 0, o, 0.0, 0, {}, b"k", b"v", None)  # noqa: E731
    fetches = [[(tp, msg(0), None), (tp, msg(1), None)], [], []]
    getmany = _guard_over(monkeypatch, fetches)
    assert _handed_on(getmany, consumer) == [0, 1]
    streaming._remember_skipped(consumer, tp, 0)
    consumer.app.in_recovery = True
    assert _handed_on(getmany, consumer) == [] and consumer.seeks == []
    consumer.app.in_recovery = False
    assert _handed_on(getmany, consumer) == [] and consumer.seeks == [(0, 0)]


def test_nothing_is_handed_on_between_a_rebalance_and_the_seek_to_the_committed_offsets(monkeypatch):
    """Faust resumes the stream partitions before it seeks them to their committed
    offsets: a fetch in between reads from wherever the consumer stood (on a partition
    new to the worker, near its end). From the moment flow stops at a rebalance until
    that seek, no record of a guarded partition is handed on; then reading starts at the
    committed offset, in order (records from near the end were featurized before the
    ones behind them, an account's state marked "revised")."""
    import asyncio

    from faust.transport.consumer import Consumer
    from faust.types import TP

    tp, new = TP("tx", 0), TP("tx", 2)
    consumer = _FakeConsumer([tp], expected=5)
    msg = lambda p, o: Message("tx", p, o, 0.0, 0, {}, b"k", b"v", None)  # noqa: E731
    fetches = [
        [(tp, msg(0, 5), None)],
        [(tp, msg(0, 9), None), (new, msg(2, 600), None), (new, msg(2, 601), None)],
        [(tp, msg(0, 6), None), (new, msg(2, 458), None), (new, msg(2, 459), None)],
    ]
    getmany = _guard_over(monkeypatch, fetches)
    assert _handed_on(getmany, consumer) == [5]
    Consumer.stop_flow(consumer)  # a rebalance begins; tx[2] is assigned to this worker
    consumer._tps.add(new)
    assert _handed_on(getmany, consumer) == []  # before Faust's seek: nothing
    assert consumer.seeks == []
    consumer.committed = {tp: 6, new: 458}
    asyncio.run(Consumer.perform_seek(consumer))
    # the records held back moved the position past them: both partitions sought again
    assert sorted(consumer.seeks) == [(0, 6), (2, 458)]
    assert _handed_on(getmany, consumer) == [6, 458, 459]


def test_a_partition_with_nothing_committed_and_no_known_beginning_reads_from_anywhere(monkeypatch):
    """After the seek to the committed offsets, a partition with nothing committed whose
    beginning the broker does not tell is not held back: it is sought to the first
    record held back before the seek (else it would wait for records that already came),
    and the records after it are checked as usual."""
    import asyncio

    from faust.transport.consumer import Consumer
    from faust.types import TP

    tp = TP("tx", 1)
    consumer = _FakeConsumer([tp], expected=None)

    async def earliest_offsets(*tps):
        return {t: None for t in tps}

    consumer.earliest_offsets = earliest_offsets
    msg = lambda o: Message("tx", 1, o, 0.0, 0, {}, b"k", b"v", None)  # noqa: E731
    fetches = [[(tp, msg(3), None)], [(tp, msg(3), None), (tp, msg(4), None), (tp, msg(6), None)]]
    getmany = _guard_over(monkeypatch, fetches)
    assert _handed_on(getmany, consumer) == []  # no seek to the committed offsets yet
    asyncio.run(Consumer.perform_seek(consumer))
    assert consumer.seeks == [(1, 3)]  # back to the first record held back
    assert _handed_on(getmany, consumer) == [3, 4]
    assert consumer.seeks == [(1, 3), (1, 5)]  # 6 came after a gap


def _skip_one_event(app_name: str) -> dict:
    """Put one event fetched under an older consumer generation into a real Faust
    stream and iterate it (the stream skips it); return what the gap guard remembers
    as skipped for the app's consumer (no broker: the consumer is a stand-in)."""
    import asyncio

    import faust

    from app.stream import streaming

    class Consumer:
        def __init__(self):
            self._unacked_messages = self.unacked = set()
            self._committed_offset: dict = {}

    consumer = Consumer()
    message = Message("tx", 0, 7, 0.0, 0, {}, b"k", b"v", None, generation_id=1)

    async def run():
        app = faust.App(app_name, broker="kafka://127.0.0.1:1", Event=ProcessedOnlyEvent,
                        autodiscover=False, value_serializer="raw", key_serializer="raw")
        app._consumer = consumer
        app.consumer_generation_id = 2  # a rebalance since the event was fetched
        app.flow_control.resume()
        channel = app.channel()
        stream = channel.stream()

        async def first():
            async for value in stream:
                return value

        task = asyncio.ensure_future(first())
        await asyncio.sleep(0.2)  # the stream subscribes to the channel
        await channel.put(ProcessedOnlyEvent(app, b"k", b"v", {}, message))
        try:
            return await asyncio.wait_for(task, timeout=1.0)
        except asyncio.TimeoutError:
            return None

    assert asyncio.run(run()) is None  # skipped, never handed on
    return dict(streaming._skipped.get(consumer, {}))


def test_an_event_a_stream_skips_is_remembered_for_the_gap_guard(monkeypatch):
    """A stream skips an event fetched before a rebalance: the gap guard learns its
    offset (so no later record of the partition is handed on before it). Faust's
    compiled stream iterator drops it without a word (shown first, where it is built),
    so the service selects the pure-Python one."""
    import faust.streams
    from faust.types import TP

    from app.stream import streaming

    compiled = faust.streams._CStreamIterator
    monkeypatch.setattr(faust.streams, "_CStreamIterator", compiled)
    if compiled is not None:
        assert _skip_one_event("skip-compiled") == {}
    streaming.acknowledge_skipped_events()
    assert faust.streams._CStreamIterator is None
    assert _skip_one_event("skip-python") == {TP("tx", 0): 7}


def test_a_seek_runs_on_the_consumer_thread(monkeypatch):
    """Faust's aiokafka driver fetches on a thread of its own; a seek from the worker's
    event loop must run there too, or aiokafka's fetcher deletes a partition's fetched
    records while that thread drains them (``KeyError`` in ``fetched_records``: the
    fetcher and the worker crash). Shown first with Faust's own ``_seek``, which seeks on
    the caller's thread, then with the service's."""
    import asyncio
    import threading
    from types import SimpleNamespace

    from faust.transport.consumer import ThreadDelegateConsumer
    from faust.types import TP
    from mode.threads import QueueServiceThread

    from app.stream import streaming

    class ConsumerThread(QueueServiceThread):
        """Stands for Faust's ``AIOKafkaConsumerThread``: ``seek`` calls aiokafka's
        consumer on whatever thread calls it."""

        def __init__(self) -> None:
            super().__init__()
            self.seeks: list = []

        def seek(self, partition, offset) -> None:
            self.seeks.append((partition, offset, threading.current_thread()))

    async def seek_through(faust_seek) -> list:
        thread = ConsumerThread()
        consumer = SimpleNamespace(_thread=thread)  # all that ``_seek`` reads
        await thread.start()
        try:
            await faust_seek(consumer, TP("tx", 1), 42)
        finally:
            await thread.stop()
        return thread.seeks

    faust_own = getattr(ThreadDelegateConsumer._seek, "original", ThreadDelegateConsumer._seek)
    monkeypatch.setattr(ThreadDelegateConsumer, "_seek", faust_own)  # as Faust ships it
    [(tp, offset, on)] = asyncio.run(seek_through(ThreadDelegateConsumer._seek))
    assert on is threading.main_thread()  # Faust's: on the event loop's thread
    streaming.seek_on_consumer_thread()
    [(tp, offset, on)] = asyncio.run(seek_through(ThreadDelegateConsumer._seek))
    assert (tp, offset) == (TP("tx", 1), 42)
    assert on is not threading.main_thread()  # the consumer's own thread


def test_no_record_of_a_partition_not_yet_sought_is_handed_on_while_another_is(monkeypatch):
    """After the seek to the committed offsets the partitions whose records were held
    back are sought again, one after another; each seek waits on the consumer's thread,
    and a fetch answered meanwhile carries records from where a partition not yet
    sought stood (near its end). With nothing committed for it, such a record was
    handed on, ahead of the records behind it (an account's earlier transaction then
    featurized after its later one); now every target is set before the first seek and
    such records are refused."""
    import asyncio

    from faust.transport.consumer import Consumer
    from faust.types import TP

    other, tp = TP("tx", 0), TP("tx", 3)
    consumer = _FakeConsumer([other, tp], expected=None)

    async def earliest_offsets(*tps):  # the broker does not tell (as Tansu)
        return {t: None for t in tps}

    consumer.earliest_offsets = earliest_offsets
    msg = lambda p, o: Message("tx", p, o, 0.0, 0, {}, b"k", b"v", None)  # noqa: E731
    fetches = [
        [(other, msg(0, 9), None), (tp, msg(3, 285), None), (tp, msg(3, 286), None)],
        [(tp, msg(3, 555), None), (tp, msg(3, 556), None)],  # during the seek of tx[0]
        [(other, msg(0, 6), None), (tp, msg(3, 285), None)],
    ]
    interleaved: list = []

    async def seek(self, partition, offset):  # the Fetcher runs while tx[0]'s seek waits
        self.seeks.append((partition.partition, offset))
        if partition == other and not interleaved:
            interleaved.append([m.offset async for _t, m in Consumer.getmany(self, 0.1)])

    getmany = _guard_over(monkeypatch, fetches, seek=seek)
    assert _handed_on(getmany, consumer) == []  # before Faust's seek: held back
    consumer.committed = {other: 6}  # nothing committed for tx[3]
    asyncio.run(Consumer.perform_seek(consumer))
    assert interleaved == [[]], interleaved  # 555, 556 not handed on
    assert (3, 285) in consumer.seeks
    assert _handed_on(getmany, consumer) == [6, 285]
