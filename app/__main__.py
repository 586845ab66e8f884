"""``python -m app worker``: run a Faust worker of the service.

Before handing the command line to Faust, ``worker`` checks what would otherwise fail
only after joining the consumer group (and cost the other workers two rebalances): the
settings, that the installed faust-streaming, aiokafka and mode-streaming are the
versions the service's corrections were verified against (:mod:`app.compat`), the web
port, Redis, the model (verified against its card without unpickling it; the scoring
agent loads it while Faust starts), the broker (a metadata request within
BROKER_CONNECT_TIMEOUT_SECONDS; the session timeout within the broker's bounds) and the
topics (missing ones created; source topics of TOPIC_PARTITIONS partitions). A failure is one line on stderr and exit status 2
(settings, port) or 78 (library versions, broker, Redis, model).
"""

import socket
import sys


def _fail(message: str, code: int) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _preflight(argv: list[str]) -> None:
    from pydantic import ValidationError

    try:
        from .config import get_settings

        settings = get_settings()
    except ValidationError as exc:
        from .config import settings_error_line

        _fail(settings_error_line(exc), 2)
    from .compat import require_verified_versions
    from .exceptions import UnverifiedVersionError

    try:
        unverified = require_verified_versions(settings.allow_unverified_versions)
    except UnverifiedVersionError as exc:
        _fail(f"cannot start the worker: {exc}", 78)
    if unverified:
        print(
            f"warning: unverified library versions ({'; '.join(unverified)}); starting "
            "anyway because ALLOW_UNVERIFIED_VERSIONS=true",
            file=sys.stderr,
        )
    if not any(a.startswith("--web-port") for a in argv) and "--without-web" not in argv:
        with socket.socket() as s:
            # as the worker's server binds: a port in TIME_WAIT (a scraper's closed
            # connections) is free for it
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((settings.web_host, settings.web_port))
            except OSError as exc:
                _fail(
                    f"WEB_PORT {settings.web_port} on {settings.web_host} is not free "
                    f"({exc.strerror}): give each worker its own WEB_PORT",
                    2,
                )
    import asyncio

    from .stream import runtime
    from .exceptions import FraudError
    from .stream.offsets import check_broker, ensure_worker_topics, use_idempotent_producer
    from .stream.streaming import idempotent_producer

    async def check() -> bool:
        rt = runtime.get_runtime()
        try:
            await rt.check_model()  # the scoring agent loads it
        finally:
            await rt.store.close()
        await check_broker(settings, settings.broker_connect_timeout_seconds)
        await ensure_worker_topics(settings)
        return await use_idempotent_producer(settings, settings.broker_connect_timeout_seconds)

    try:
        if asyncio.run(check()):
            idempotent_producer()
            print("producer: idempotent (PRODUCER_IDEMPOTENCE=%s)" % settings.producer_idempotence,
                  file=sys.stderr)
        else:
            print(
                "producer: not idempotent (PRODUCER_IDEMPOTENCE=%s%s): a send retried after a "
                "broker failure can be written twice" % (
                    settings.producer_idempotence,
                    ", the broker grants no producer id" if settings.producer_idempotence == "auto" else "",
                ),
                file=sys.stderr,
            )
    except FraudError as exc:
        _fail(f"cannot start the worker: {exc}", 78)
    finally:
        runtime._runtime = None  # rebuilt in the worker's own event loop


def main() -> None:
    """Check the worker's prerequisites, then hand the command line to Faust."""
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        _preflight(sys.argv[2:])
    from .stream.main import app

    app.main()


if __name__ == "__main__":
    main()
