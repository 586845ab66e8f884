"""``app.stream.stack`` and ``fraudctl stack``: real Tansu and Redis processes on free ports."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import PROJECT_ROOT, Settings
from app.exceptions import StackError
from app.stream import stack

pytestmark = pytest.mark.broker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gone(pid: int) -> bool:
    """No such process, or only its zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return True
    return state == "Z"


def _invoke(env: dict[str, str], *args: str):
    """``fraudctl ARGS`` in this process, with ``env`` as its environment."""
    from typer.testing import CliRunner

    from app.cli import cli
    from app.config import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, list(args), env=env)
    finally:
        get_settings.cache_clear()
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _fraudctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """``fraudctl ARGS`` as a process of its own."""
    return subprocess.run(
        [sys.executable, "-c", "from app.cli import main; main()", *args],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def _partitions(bootstrap: str, topic: str) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    async def describe() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            (meta,) = await admin.describe_topics([topic])
            return len(meta["partitions"])
        finally:
            await admin.close()

    return asyncio.run(describe())


@pytest.fixture
def stack_env(tmp_path, redis_url) -> dict[str, str]:
    """Environment of a stack on a free broker port, RUN_DIR in tmp, the test Redis."""
    env = dict(os.environ)
    env.update(
        KAFKA_BROKER_URL=f"kafka://127.0.0.1:{_free_port()}",
        REDIS_URL=redis_url,
        RUN_DIR=str(tmp_path / "run"),
        TOPIC_PARTITIONS="2",
        TRANSACTIONS_TOPIC="stack-test-transactions",
        COLUMNS="200",
    )
    env.pop("TANSU_BIN", None)
    return env


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        kafka_broker_url=env["KAFKA_BROKER_URL"], redis_url=env["REDIS_URL"],
        run_dir=Path(env["RUN_DIR"]),
    )


def test_cli_up_status_down_starts_and_stops_tansu_only(stack_env):
    settings = _settings(stack_env)
    try:
        # a process of its own, as from a shell: the broker outlives it
        up = _fraudctl(stack_env, "stack", "up")
        assert up.returncode == 0, up.stderr
        assert "started broker" in up.stdout
        assert "started redis" not in up.stdout  # the test Redis already answers

        broker, redis_ = stack.status(settings)
        assert (broker.name, broker.running, broker.started_by_us) == ("broker", True, True)
        assert broker.pid is not None and not _gone(broker.pid)
        assert (redis_.name, redis_.running, redis_.started_by_us, redis_.pid) == (
            "redis", True, False, None
        )
        bootstrap = stack_env["KAFKA_BROKER_URL"].removeprefix("kafka://")
        assert stack.kafka_ready(bootstrap)
        assert _partitions(bootstrap, "stack-test-transactions") == 2

        shown = _invoke(stack_env, "stack", "status")
        assert shown.exit_code == 0, shown.output
        broker_row = next(line for line in shown.stdout.splitlines() if "broker" in line)
        assert "yes" in broker_row and str(broker.pid) in broker_row

        again = _invoke(stack_env, "stack", "up")
        assert again.exit_code == 0, again.output
        assert "nothing to start" in again.stdout
        assert stack.status(settings)[0].pid == broker.pid

        down = _invoke(stack_env, "stack", "down")
        assert down.exit_code == 0, down.output
        assert f"stopped broker (pid {broker.pid})" in down.stdout
        assert _gone(broker.pid)
        assert not stack.port_open("127.0.0.1", int(bootstrap.rsplit(":", 1)[1]))
        assert not (settings.run_dir / "broker.pid").exists()
        assert stack.redis_ping(stack_env["REDIS_URL"]), "Redis it did not start is left alone"

        nothing = _invoke(stack_env, "stack", "down")
        assert nothing.exit_code == 0, nothing.output
        assert "nothing to stop" in nothing.stdout
    finally:
        stack.down(settings, timeout_seconds=2)


def test_up_starts_redis_when_none_answers_and_down_stops_it(tmp_path, stack_env):
    redis_port = _free_port()
    settings = Settings(
        kafka_broker_url=stack_env["KAFKA_BROKER_URL"],
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
        run_dir=tmp_path / "run",
    )
    try:
        started = stack.up(settings, timeout_seconds=20, create_topics=False)
        assert [s.name for s in started] == ["broker", "redis"]
        redis_status = stack.status(settings)[1]
        assert redis_status.running and redis_status.started_by_us
        assert redis_status.pid == started[1].pid
        assert stack.redis_ping(f"redis://127.0.0.1:{redis_port}/0")

        assert stack.up(settings, timeout_seconds=20, create_topics=False) == []

        stopped = stack.down(settings, only=[started[1]])
        assert [s.name for s in stopped] == ["redis"]
        assert _gone(started[1].pid)
        assert not stack.redis_ping(f"redis://127.0.0.1:{redis_port}/0")
        assert stack.status(settings)[0].running, "`only` left the broker running"
    finally:
        stack.down(settings, timeout_seconds=2)
    assert all(_gone(s.pid) for s in started)
    assert [s.running for s in stack.status(settings)] == [False, False]


def test_stale_pid_file_is_ignored_and_removed(tmp_path, stack_env):
    settings = _settings(stack_env)
    settings.run_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file = settings.run_dir / "broker.pid"
    pid_file.write_text(f"{dead.pid}\n{stack.resolve_tansu_bin(settings)}\n")

    broker = stack.status(settings)[0]
    assert (broker.running, broker.pid, broker.started_by_us) == (False, None, False)
    assert not pid_file.exists()
    assert stack.down(settings) == []


def test_port_taken_by_something_else_than_kafka_fails_clearly(tmp_path, redis_url):
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        settings = Settings(
            kafka_broker_url=f"kafka://127.0.0.1:{port}", redis_url=redis_url,
            run_dir=tmp_path / "run",
        )
        with pytest.raises(StackError, match=f"127.0.0.1:{port} not ready after 1s"):
            stack.up(settings, timeout_seconds=1)
    assert not (tmp_path / "run" / "broker.pid").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            # not loopback, and connecting to it stays on this machine
            {"kafka_broker_url": f"kafka://0.0.0.0:{_free_port()}"},
            "only a broker on this machine",
            id="non-loopback-broker-not-started",
        ),
        pytest.param(
            {"tansu_bin": "/nonexistent/tansu"},
            "TANSU_BIN='/nonexistent/tansu' is not an executable file",
            id="bad-tansu-bin",
        ),
    ],
)
def test_up_refuses_what_it_cannot_start(tmp_path, redis_url, overrides, message):
    settings = Settings(
        kafka_broker_url=f"kafka://127.0.0.1:{_free_port()}", redis_url=redis_url,
        run_dir=tmp_path / "run",
    ).model_copy(update=overrides)
    with pytest.raises(StackError, match=message):
        stack.up(settings, timeout_seconds=2)
    assert not (tmp_path / "run" / "broker.pid").exists()


def test_cli_error_is_one_line_and_exit_2(stack_env):
    env = dict(stack_env, TANSU_BIN="/nonexistent/tansu")
    result = _fraudctl(env, "stack", "up")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: TANSU_BIN='/nonexistent/tansu' is not an executable file"
    ]


def test_every_stack_command_has_help(stack_env):
    for command in ("up", "down", "status"):
        result = _invoke(stack_env, "stack", command, "--help")
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output and len(result.stdout.splitlines()) > 3


def test_fresh_broker_is_a_broker_of_its_own(broker, fresh_broker, make_topic):
    topic = make_topic("only-on-session-broker")
    other = fresh_broker()
    assert other.port != broker.port
    assert stack.kafka_ready(other.bootstrap)

    async def topics(bootstrap: str) -> set[str]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    assert topic in asyncio.run(topics(broker.bootstrap))
    assert topic not in asyncio.run(topics(other.bootstrap))
